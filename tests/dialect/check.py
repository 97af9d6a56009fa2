"""The strict dialect check: SQL that dbt compiled (or ran) for one target uses only that warehouse's functions.

sqlglot parses much SQL of other dialects without complaint (DuckDB's `::` casts, unknown functions), so the
check reads the SQL as the warehouse's own tokens and rejects:
- a function call whose name is not a function of the target: for DuckDB, any name not in the running
  engine's catalogue (`duckdb_functions()`); for BigQuery, any name not in bigquery_functions.txt (BigQuery's
  function reference) or the project's UDFs;
- for BigQuery, DuckDB's `::` cast;
- SQL the target's sqlglot parser cannot read.

    python -m tests.dialect.check --dialect bigquery target/compiled
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlglot
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

HERE = Path(__file__).resolve().parent
# sqlglot logs a warning for each statement it keeps as an opaque command (COPY ... FROM, a seed's load)
logging.getLogger("sqlglot").setLevel(logging.ERROR)
DIALECTS = ("bigquery", "duckdb")
# Functions the project defines itself (none yet: a persistent UDF would be listed here by name).
PROJECT_UDFS: frozenset[str] = frozenset()
# BigQuery DDL that reads like a call: `create table t options(...) as`.
BIGQUERY_SPECIAL_FORMS = frozenset({"options"})
# DuckDB syntax that reads like a call but is no entry of duckdb_functions().
DUCKDB_SPECIAL_FORMS = frozenset({"cast", "try_cast", "coalesce", "extract"})
# Tokens after which `name (` is not a call: a table's or an alias's column list, `* exclude (...)`.
_NOT_A_CALL_AFTER = {TokenType.INTO, TokenType.TABLE, TokenType.ALIAS, TokenType.VIEW, TokenType.INSERT,
                     TokenType.STAR}


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@cache
def known_functions(dialect: str) -> frozenset[str]:
    if dialect == "bigquery":
        lines = (HERE / "bigquery_functions.txt").read_text().splitlines()
        names = {line.strip().lower() for line in lines if line.strip() and not line.startswith("#")}
        names |= BIGQUERY_SPECIAL_FORMS
    elif dialect == "duckdb":
        import duckdb

        with duckdb.connect() as con:
            rows = con.execute("select distinct function_name from duckdb_functions()").fetchall()
        names = {row[0].lower() for row in rows} | DUCKDB_SPECIAL_FORMS
    else:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")
    return frozenset(names | PROJECT_UDFS)


def called_functions(tokens: list[Token], dialect: str) -> list[tuple[str, int]]:
    """The names of the functions the SQL of `tokens` calls, as written, with their line numbers."""
    calls = []
    for i, token in enumerate(tokens[:-1]):
        if token.token_type != TokenType.VAR or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        previous = tokens[i - 1] if i else None
        if previous is not None and previous.token_type in _NOT_A_CALL_AFTER:
            continue
        # `safe.f(` is BigQuery's error-to-null prefix on a function; any other `a.f(` is not a builtin call
        if (previous is not None and previous.token_type == TokenType.DOT
                and not (i >= 2 and tokens[i - 2].text.lower() == "safe" and dialect == "bigquery")):
            continue
        calls.append((token.text.lower(), token.line))
    return calls


def check_sql(sql: str, dialect: str, where: str = "<sql>") -> list[Problem]:
    known = known_functions(dialect)
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError as error:
        return [Problem(where, f"not {dialect} SQL: {error}")]
    problems = [Problem(f"{where}:{line}", f"{name}() is not a {dialect} function")
                for name, line in called_functions(tokens, dialect) if name not in known]
    if dialect == "bigquery":
        problems += [Problem(f"{where}:{t.line}", "`::` casts are DuckDB/Postgres syntax, not BigQuery")
                     for t in tokens if t.token_type == TokenType.DCOLON]
    try:
        sqlglot.parse(sql, read=dialect)
    except ParseError as error:
        problems.append(Problem(where, f"{dialect} cannot parse it: {str(error).splitlines()[0]}"))
    return problems


def check_files(paths: Iterable[Path], dialect: str) -> list[Problem]:
    problems: list[Problem] = []
    for path in paths:
        problems += check_sql(path.read_text(), dialect, str(path))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialect", choices=DIALECTS, required=True)
    parser.add_argument("paths", nargs="+", type=Path, help="SQL files or folders of them (e.g. target/compiled)")
    args = parser.parse_args(argv)
    files = [f for p in args.paths for f in (sorted(p.rglob("*.sql")) if p.is_dir() else [p])]
    problems = check_files(files, args.dialect)
    for problem in problems:
        print(problem)
    print(f"{len(files)} files, {len(problems)} problems ({args.dialect})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
