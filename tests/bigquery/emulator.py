"""bqemulator (a DuckDB-backed BigQuery emulator) with the shims the CDP's BigQuery build needs.

Runs in its own venv (.venv-bqemulator, built by the Makefile from requirements-bqemulator.lock):
    .venv-bqemulator/bin/python tests/bigquery/emulator.py start --rest-port 9050 --project cdp-test

Each shim is an emulator gap, not a change to what the project sends: the models keep the SQL real
BigQuery runs, and the shim makes the emulator's BigQuery-to-DuckDB translation accept it.
"""
import datetime
import re
import sys

from bqemulator.domain.result import Ok
from bqemulator.sql import builtin_udfs, translator
from bqemulator.storage import engine

# 1. DuckDB's spatial extension is a download at start-up: impossible offline, and unused.
engine.DuckDBEngine._load_spatial = lambda self: None

# 2. CREATE TABLE t (column definitions) AS SELECT: valid BigQuery (what dbt emits for enforced contracts) that
#    the emulator cannot translate. The column list is dropped: dbt has already checked the model's columns and
#    types against the contract before it sends the DDL; the NOT NULL constraints are not enforced here.
_CTAS_COLUMNS = re.compile(
    r"(create\s+(?:or\s+replace\s+)?table\s+[`\w.\-]+(?:\.[`\w\-]+)*)\s*\((?:[^()]|\([^()]*\))*\)\s*"
    r"(?=(?:partition\s+by|cluster\s+by|options\s*\(|as\s*\())", re.IGNORECASE)

# 3. BigQuery's seconds-with-fraction format elements, which the emulator passes to DuckDB untranslated:
#    PARSE_TIMESTAMP's %E*S (any number of fraction digits, or none) becomes DuckDB strptime's list of
#    formats (with and without a fraction); FORMAT_TIMESTAMP, which the emulator runs in Python (strftime),
#    gets %E3S / %E6S rendered as seconds and milliseconds / microseconds before strftime sees them.
_ANY_FRACTION = re.compile(r"'([^'\n]*?)%E\*S([^'\n]*)'")


def _duckdb_formats(sql: str) -> str:
    return _ANY_FRACTION.sub(lambda m: f"['{m[1]}%S.%f{m[2]}', '{m[1]}%S{m[2]}']", sql)


# 4. EDIT_DISTANCE over BYTES: the emulator calls DuckDB's levenshtein on BLOBs, which DuckDB only has for
#    VARCHAR. Inside each levenshtein call the BLOB casts become VARCHAR casts: the same distance for the
#    ASCII match keys the project compares (macros/identity/similarity.sql).
def _levenshtein_on_text(sql: str) -> str:
    out, start = [], 0
    while (at := sql.find("LEVENSHTEIN(", start)) >= 0:
        depth, end = 0, at + len("LEVENSHTEIN")
        while end < len(sql):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                break
            end += 1
        out.append(sql[start:at] + sql[at:end + 1].replace(" AS BLOB)", " AS TEXT)"))
        start = end + 1
    return "".join(out) + sql[start:]


_format_timestamp = builtin_udfs.bqemu_format_timestamp_iso


def format_timestamp(fmt, ts, zone):
    if fmt is not None and ts is not None and ("%E3S" in fmt or "%E6S" in fmt):
        utc = ts if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)
        fmt = (fmt.replace("%E3S", f"%S.{utc.microsecond // 1000:03d}")
               .replace("%E6S", f"%S.{utc.microsecond:06d}"))
    return _format_timestamp(fmt, ts, zone)


builtin_udfs.bqemu_format_timestamp_iso = format_timestamp


# 5. Triple-quoted strings, which dbt writes for unit-test fixture values: the emulator keeps their backslash
#    escapes (a backslash and a quote stay two characters). One without a raw quote or a line break is the same
#    string single-quoted, whose escapes the emulator reads.
_TRIPLE_QUOTED = re.compile(r"'''((?:[^'\\\n]|\\.)*?)'''")

# 6. Day partitions on a TIMESTAMP column, as dbt-bigquery writes them (`partition by timestamp_trunc(c, day)`),
#    which the emulator cannot parse; `partition by date(c)`, which it can, is the same partitioning in BigQuery.
_TIMESTAMP_DAY_PARTITION = re.compile(r"partition\s+by\s+timestamp_trunc\(\s*([`\w]+)\s*,\s*day\s*\)", re.IGNORECASE)

_translate = translator.SQLTranslator.translate


def translate(self, bq_sql, **kwargs):
    bq_sql = _TRIPLE_QUOTED.sub(r"'\1'", _CTAS_COLUMNS.sub(r"\1 ", bq_sql))
    bq_sql = _TIMESTAMP_DAY_PARTITION.sub(r"partition by date(\1)", bq_sql)
    result = _translate(self, bq_sql, **kwargs)
    if isinstance(result, Ok) and ("%E*S" in result.value or "LEVENSHTEIN(" in result.value):
        return Ok(_levenshtein_on_text(_duckdb_formats(result.value)))
    return result


translator.SQLTranslator.translate = translate

from bqemulator.cli import main  # noqa: E402

sys.exit(main())
