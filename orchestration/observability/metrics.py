"""Per-run metrics: what a run landed, quarantined and built, its gates and how long its steps took.

Measured by the `ops/run_metrics` asset at the end of every run that builds gold, and kept one row per run in
the warehouse table `ops.run_metrics` (DuckDB). What comes from where:

- rows_landed (per source): records that arrived in the landing zone since the previous run that materialized the
  source's landing asset, and that this run picked up: the growth of the asset's `records_total` metadata between
  that run and this one. It counts `cdp land` batches and inbox files alike (`new_records` counts only the latter).
- rows_quarantined (per source): silver.quarantine rows whose bronze load happened during this run
  (bronze_loaded_at >= the run's start). silver_events_new likewise for silver.events.
- profiles / known_profiles: gold.profiles rows; known = lifecycle_stage <> 'anonymous', i.e. the profile holds at
  least one crm_id, user_id, email or phone identifier (profiles.sql).
- identity_match_rate: the share of silver events that belong to a known profile. Computed from gold.profiles'
  per-source event counts (sum over known profiles / count of silver.events): one pass over the profiles, instead
  of joining every event to its profile through gold.profile_events (the same figure, many times the cost).
  Events without a profile (a blocklisted anchor: test or system traffic) count as not matched.
- gates: the asset check evaluations of this run named gate_*; dbt_tests / dbt_test_failures: those of dbt tests.
- step_durations: the instance's step stats of this run (finished steps); run_seconds: from the run's start until
  the metrics were taken (the last step).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:
    import dagster as dg

TABLE = "ops.run_metrics"

_COLUMNS = """
    run_id varchar not null,
    job_name varchar,
    run_started_at timestamp,
    measured_at timestamp not null,
    run_seconds double,
    rows_landed bigint not null,
    rows_landed_by_source varchar,
    rows_quarantined bigint,
    rows_quarantined_by_source varchar,
    silver_events bigint,
    silver_events_new bigint,
    profiles bigint,
    known_profiles bigint,
    identity_match_rate double,
    gates_passed integer not null,
    gates_failed integer not null,
    gate_results varchar,
    dbt_tests integer not null,
    dbt_test_failures integer not null,
    step_durations varchar
"""
_JSON_COLUMNS = ("rows_landed_by_source", "rows_quarantined_by_source", "gate_results", "step_durations")


@dataclass(frozen=True)
class GateOutcome:
    check: str
    asset: str
    passed: bool


@dataclass
class RunMetrics:
    run_id: str
    job_name: str | None
    run_started_at: datetime | None  # UTC, naive (as the warehouse's timestamps)
    measured_at: datetime
    run_seconds: float | None
    rows_landed: int = 0
    rows_landed_by_source: dict[str, int] = field(default_factory=dict)
    rows_quarantined: int | None = None  # None: not measured (no DuckDB warehouse)
    rows_quarantined_by_source: dict[str, int] | None = None
    silver_events: int | None = None
    silver_events_new: int | None = None
    profiles: int | None = None
    known_profiles: int | None = None
    identity_match_rate: float | None = None
    gate_results: list[GateOutcome] = field(default_factory=list)
    dbt_tests: int = 0
    dbt_test_failures: int = 0
    step_durations: dict[str, float] = field(default_factory=dict)  # step key -> seconds

    @property
    def gates_passed(self) -> int:
        return sum(gate.passed for gate in self.gate_results)

    @property
    def gates_failed(self) -> int:
        return sum(not gate.passed for gate in self.gate_results)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["gates_passed"], row["gates_failed"] = self.gates_passed, self.gates_failed
        for column in _JSON_COLUMNS:
            row[column] = None if row[column] is None else json.dumps(row[column], sort_keys=True)
        return row


# --- from the Dagster instance ------------------------------------------------------------------------------------

def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _metadata_int(materialization: Any, key: str) -> int | None:
    value = materialization.metadata.get(key) if materialization is not None else None
    return None if value is None else int(value.value)


def collect_from_instance(instance: dg.DagsterInstance, run_id: str) -> RunMetrics:
    """Everything the instance knows of the run: start, landed rows, gates, dbt tests, step durations."""
    import dagster as dg

    record = instance.get_run_record_by_id(run_id)
    started = None
    job_name = None
    if record is not None:
        job_name = record.dagster_run.job_name
        started = record.start_time or record.create_timestamp.timestamp()
    now = time.time()
    metrics = RunMetrics(
        run_id=run_id,
        job_name=job_name,
        run_started_at=_utc(started),
        measured_at=_utc(now) or datetime.now(UTC).replace(tzinfo=None),
        run_seconds=None if started is None else round(now - started, 2),
    )

    for event in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        key = event.asset_key
        if key is None or len(key.path) != 2 or key.path[0] != "landing":
            continue
        total = _metadata_int(event.asset_materialization, "records_total")
        if total is None:
            continue
        # The source's latest materialization in an earlier run: what the zone held then. (Not by storage id: the
        # SQLite event log numbers each run's events apart from the asset index.)
        previous = [
            record for record in instance.fetch_materializations(key, limit=3).records
            if record.run_id != run_id and record.timestamp < event.timestamp
        ]
        before = _metadata_int(previous[0].asset_materialization, "records_total") if previous else 0
        # a batch file taken out of the zone by hand makes the total shrink: nothing was landed then
        metrics.rows_landed_by_source[key.path[1]] = max(0, total - (before or 0))
    metrics.rows_landed = sum(metrics.rows_landed_by_source.values())

    checks = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for event in checks:
        evaluation = event.event_log_entry.dagster_event.event_specific_data
        if evaluation.check_name.startswith("gate_"):
            metrics.gate_results.append(
                GateOutcome(evaluation.check_name, evaluation.asset_key.to_user_string(), bool(evaluation.passed))
            )
            continue
        unique_id = evaluation.metadata.get("unique_id")
        if unique_id is not None and str(unique_id.value).startswith("test."):  # dagster-dbt's test results
            metrics.dbt_tests += 1
            metrics.dbt_test_failures += not evaluation.passed
    metrics.gate_results.sort(key=lambda gate: (gate.check, gate.asset))

    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is not None and stats.end_time is not None:
            metrics.step_durations[stats.step_key] = round(stats.end_time - stats.start_time, 2)
    return metrics


# --- from the warehouse -------------------------------------------------------------------------------------------

def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {f"{schema}.{name}" for schema, name in con.execute(
        "select table_schema, table_name from information_schema.tables"
    ).fetchall()}


def add_warehouse_figures(con: duckdb.DuckDBPyConnection, metrics: RunMetrics) -> RunMetrics:
    """Quarantined and new rows of the run, silver and profile totals, the identity match rate."""
    tables = _tables(con)
    # Loaded during this run: bronze_loaded_at is UTC (cdp.current_utc_timestamp), like run_started_at.
    since = metrics.run_started_at or metrics.measured_at
    if "silver.quarantine" in tables:
        by_source = dict(con.execute(
            "select source, count(*) from silver.quarantine where bronze_loaded_at >= ? group by 1 order by 1",
            [since],
        ).fetchall())
        metrics.rows_quarantined_by_source = {source: int(n) for source, n in by_source.items()}
        metrics.rows_quarantined = sum(metrics.rows_quarantined_by_source.values())
    if "silver.events" in tables:
        total, new = con.execute(
            "select count(*), count(*) filter (where bronze_loaded_at >= ?) from silver.events", [since]
        ).fetchone()
        metrics.silver_events, metrics.silver_events_new = int(total), int(new)
    if "gold.profiles" in tables:
        profiles, known, known_events = con.execute("""
            select
                count(*),
                count(*) filter (where lifecycle_stage <> 'anonymous'),
                coalesce(sum(web_events + app_events + crm_versions + email_events + whatsapp_messages)
                         filter (where lifecycle_stage <> 'anonymous'), 0)
            from gold.profiles
        """).fetchone()
        metrics.profiles, metrics.known_profiles = int(profiles), int(known)
        if metrics.silver_events:
            metrics.identity_match_rate = round(int(known_events) / metrics.silver_events, 4)
    return metrics


def collect_run_metrics(instance: dg.DagsterInstance, run_id: str, warehouse_path: Path | None) -> RunMetrics:
    """The run's metrics; the warehouse figures only when `warehouse_path` (a DuckDB file) is given."""
    metrics = collect_from_instance(instance, run_id)
    if warehouse_path is not None and Path(warehouse_path).exists():
        with duckdb.connect(str(warehouse_path), read_only=True) as con:
            add_warehouse_figures(con, metrics)
    return metrics


# --- the table ----------------------------------------------------------------------------------------------------

def write_run_metrics(warehouse_path: Path, metrics: RunMetrics) -> None:
    """One row per run in ops.run_metrics (created when missing); writing a run again replaces its row."""
    row = metrics.as_row()
    columns = list(row)
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("create schema if not exists ops")
        con.execute(f"create table if not exists {TABLE} ({_COLUMNS})")
        con.execute("begin")
        try:
            con.execute(f"delete from {TABLE} where run_id = ?", [metrics.run_id])
            con.execute(
                f"insert into {TABLE} ({', '.join(columns)}) values ({', '.join('?' for _ in columns)})",
                [row[c] for c in columns],
            )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise


def read_run_metrics(warehouse_path: Path, limit: int = 20) -> list[RunMetrics]:
    """The latest `limit` runs' metrics, newest first; empty when the warehouse or the table does not exist."""
    if not Path(warehouse_path).exists():
        return []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        if TABLE not in _tables(con):
            return []
        cursor = con.execute(
            f"select * exclude (gates_passed, gates_failed) from {TABLE} "
            "order by measured_at desc, run_id limit ?",
            [limit],
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    result = []
    for row in rows:
        for column in _JSON_COLUMNS:
            row[column] = None if row[column] is None else json.loads(row[column])
        row["gate_results"] = [GateOutcome(**gate) for gate in row["gate_results"] or []]
        row["rows_landed_by_source"] = row["rows_landed_by_source"] or {}
        row["step_durations"] = row["step_durations"] or {}
        result.append(RunMetrics(**row))
    return result
