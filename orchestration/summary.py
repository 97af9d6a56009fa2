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
class RunSummary:
    sources: list[SourceCounts]
    events: int
    top_reasons: list[tuple[str, str, int]]


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
    return RunSummary(
        sources=[SourceCounts(*row) for row in rows],
        events=events,
        top_reasons=[(s, r, n) for s, r, n in top],
    )
