"""How far gold is behind landing, per source, against the freshness policy.

Policy (ARCHITECTURE.md, issue 4): gold is no more than 5 minutes behind landing for the streaming sources (web,
app, email, WhatsApp) and 4 hours for the CRM bulk source (Salesforce).

"Behind" is measured on data, not on the clock of the last run: a batch is pending when it landed after the last
run that built gold started (bronze reads the zone after its run starts, so everything landed before is in gold);
the lag of a source is the age of its oldest pending batch, 0 when nothing is pending. An idle source is therefore
never stale, and a source whose batches wait while runs fail or stop is, after its window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from connectors.landing import SOURCES, LandingZone

POLICY: dict[str, timedelta] = {
    "web": timedelta(minutes=5),
    "app": timedelta(minutes=5),
    "email": timedelta(minutes=5),
    "whatsapp": timedelta(minutes=5),
    "salesforce": timedelta(hours=4),
}
assert set(POLICY) == set(SOURCES)


@dataclass(frozen=True)
class SourceLag:
    source: str
    pending_batches: int
    lag_seconds: float
    allowed_seconds: float

    @property
    def ok(self) -> bool:
        return self.lag_seconds <= self.allowed_seconds


def gold_lag(zone: LandingZone, gold_built_from: float | None, now: float | None = None) -> list[SourceLag]:
    """Per source, the batches landed after `gold_built_from` (Unix time the last gold-building run started;
    None: gold never built, every batch is pending) and the age of the oldest of them."""
    now = time.time() if now is None else now
    lags = []
    for source in SOURCES:
        times = [path.stat().st_mtime for path in zone.batch_files(source)]
        pending = [t for t in times if gold_built_from is None or t > gold_built_from]
        lag = max(0.0, now - min(pending)) if pending else 0.0
        lags.append(SourceLag(source, len(pending), lag, POLICY[source].total_seconds()))
    return lags


def describe(lags: list[SourceLag]) -> str:
    late = [lag for lag in lags if not lag.ok]
    if not late:
        worst = max(lags, key=lambda lag: lag.lag_seconds / lag.allowed_seconds)
        return f"gold is within its freshness policy (worst: {worst.source} {worst.lag_seconds:.0f} s behind)"
    return "gold is behind landing: " + ", ".join(
        f"{lag.source} {lag.lag_seconds:.0f} s (> {lag.allowed_seconds:.0f} s, {lag.pending_batches} batches waiting)"
        for lag in late
    )
