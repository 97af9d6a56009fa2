"""What a run produced, read from the warehouse after dbt has released it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class SourceCounts:
    source: str
    landed: int
    silver: int
    quarantined: int
    duplicates: int
    is_reconciled: bool


@dataclass(frozen=True)
class IdentityCounts:
    profiles: int
    known_profiles: int  # with an identifier other than anonymous or device ids
    identifiers: int
    shared_identifiers: int
    blocklisted_identifiers: int
    match_candidates: dict[str, int]  # decision -> pairs
    retired_profile_ids: int


@dataclass(frozen=True)
class RunSummary:
    sources: list[SourceCounts]
    events: int
    top_reasons: list[tuple[str, str, int]]
    identity: IdentityCounts | None  # None until identity and gold were built


def read_summary(warehouse: Path, reasons: int = 8) -> RunSummary:
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}: run `cdp run` first")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select source, landed, silver, quarantined, duplicates, is_reconciled "
            "from silver.source_reconciliation order by source"
        ).fetchall()
        events = con.execute("select count(*) from silver.events").fetchone()[0]
        # Duplicate deliveries each carry their own first-seen position: group them as one reason.
        top = con.execute(
            """
            select source,
                   case when reason like 'duplicate%' then 'duplicate delivery of an accepted record'
                        else reason end as reason_kind,
                   count(*) as n
            from silver.quarantine
            group by all
            order by n desc, source
            limit ?
            """,
            [reasons],
        ).fetchall()
        identity = _identity_counts(con)
    return RunSummary(
        sources=[SourceCounts(*row) for row in rows],
        events=events,
        top_reasons=[(s, r, n) for s, r, n in top],
        identity=identity,
    )


def _identity_counts(con: duckdb.DuckDBPyConnection) -> IdentityCounts | None:
    built = con.execute(
        "select count(*) from information_schema.tables where table_schema = 'gold' "
        "and table_name in ('profiles', 'identity_match_candidates', 'profile_merges')"
    ).fetchone()[0]
    if built < 3:
        return None
    profiles, known = con.execute(
        "select count(*), count(*) filter (where lifecycle_stage <> 'anonymous') from gold.profiles"
    ).fetchone()
    identifiers, shared, blocked = con.execute(
        "select count(*), count(*) filter (where is_shared), count(*) filter (where is_blocked) "
        "from identity.int_identity__nodes"
    ).fetchone()
    decisions = dict(con.execute(
        "select decision, count(*) from gold.identity_match_candidates group by 1 order by 1"
    ).fetchall())
    retired = con.execute("select count(*) from gold.profile_merges").fetchone()[0]
    return IdentityCounts(profiles, known, identifiers, shared, blocked, decisions, retired)
