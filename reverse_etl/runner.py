"""The reverse-ETL runner: diff, gate, batch, retry, bookkeeping and audit for one declared sync.

    plan(con, sync)                       what a run would send: adds, updates, deletes (mirror), unchanged, samples
    run_sync(con, sync, destination, ...) gate 4, then send the plan in batches and record every outcome

Change detection: the sync's model is copied into a temp table with a row hash per key (md5 of the mapped values
as canonical JSON text {destination_field: value}, fields sorted), and compared in SQL with `reverse_etl.sync_state`
(what the destination holds): keys not in the state are adds, keys whose hash differs are updates (upsert, mirror),
state keys gone from the model are deletes (mirror). Insert mode sends new keys only: a message is not updated.
Rows the destination refused (`reverse_etl.sync_rejected`) are neither in the state nor equal to it, so they come
back by themselves; one refused `max_record_attempts` runs with the same data waits ("parked") until it changes.

Bookkeeping: after each batch, in one transaction, the delivered rows go into the state and the refused ones into
the rejected table. A crash loses at most the batch in flight, which the next run sends again: safe, because upserts
and deletes are idempotent by key and insert-mode destinations deduplicate by key (the contract in base.py).

The caller holds the warehouse lock (orchestration/runlock.py): DuckDB has one writer.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from orchestration.quality.gate_4 import LastSyncStore, _relation_sql, read_sync_frame, run_gate_4
from orchestration.quality.gates import GateResult
from reverse_etl.base import (
    ApiBudget,
    BudgetExhausted,
    Destination,
    DestinationError,
    Record,
    RecordResult,
    RetryableError,
)
from reverse_etl.state import REJECTED, RUNS, STATE, ensure_tables

if TYPE_CHECKING:
    import duckdb

    from reverse_etl.config import SyncConfig

log = logging.getLogger("cdp.progress")

SAMPLE_ROWS = 5
FETCH_ROWS = 10_000  # work rows read from the plan per query (bounded memory on a first sync of millions)
PROGRESS_EVERY_SECONDS = 10.0


class SyncError(Exception):
    """A sync cannot be planned or run (its model cannot be read, keys are missing or repeated)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the runner tries within one run; what is left is sent by the next run."""

    batch_attempts: int = 5  # calls of one batch on RetryableError (throttling, lock, 5xx) before leaving it
    record_attempts: int = 3  # sends of a record refused with a retryable per-record code before rejecting it
    base_delay: float = 0.5  # seconds before the first retry; doubles each retry
    max_delay: float = 30.0  # cap of one backoff
    max_retry_after: float = 120.0  # a service asking to wait longer than this: leave the batch to the next run
    jitter: float = 0.5  # each delay is scaled by uniform(1 - jitter, 1), so retries of parallel syncs spread out

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(1 - self.jitter, 1)
        return max(backoff, retry_after or 0.0)


@dataclass
class Plan:
    """What a run of `sync` sends (dry run: would send)."""

    sync: str
    mode: str
    rows_in_model: int
    adds: int
    updates: int
    deletes: int
    retries: int  # of the adds and updates: rows refused by an earlier run, sent again
    parked: int  # refused max_record_attempts runs with the same data: not sent until the row changes
    unchanged: int
    samples: dict[str, list[dict[str, Any]]]  # "add" | "update" | "delete" -> up to 5 rows {key, field: value}
    seconds: float
    payload_table: str  # temp tables of this connection, read by run_sync
    work_table: str

    @property
    def to_send(self) -> int:
        return self.adds + self.updates + self.deletes


@dataclass
class SyncResult:
    """The outcome of one run: the audit row of `reverse_etl.sync_runs`, and the Dagster metadata."""

    run_id: str
    sync: str
    destination: str
    object: str
    mode: str
    dry_run: bool
    started_at: datetime
    status: str = "running"
    gate_status: str | None = None  # passed | failed
    rows_in_model: int | None = None
    planned_adds: int | None = None
    planned_updates: int | None = None
    planned_deletes: int | None = None
    planned_retries: int | None = None
    unchanged: int | None = None
    parked: int | None = None
    sent: int = 0  # distinct records handed to the destination
    succeeded: int = 0
    failed: int = 0  # sent, not delivered by this run (rejected, or left pending after the retries)
    retried: int = 0  # records sent again within the run (batch retries and per-record retries)
    rejected: int = 0  # records recorded in sync_rejected by this run (refused; deferrals not included)
    deferred: int = 0  # records the destination put off by design (quiet hours, frequency cap): the next run's
    api_calls: int = 0
    seconds: float | None = None
    error: str | None = None
    ended_at: datetime | None = None
    gate: GateResult | None = field(default=None, repr=False)
    plan: Plan | None = field(default=None, repr=False)

    COUNTS = ("rows_in_model", "planned_adds", "planned_updates", "planned_deletes", "planned_retries", "unchanged",
              "parked", "sent", "succeeded", "failed", "retried", "rejected", "deferred", "api_calls")

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name) or 0) for name in self.COUNTS}

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata (and logs): status, gate, counts, seconds."""
        values: dict[str, Any] = {"run_id": self.run_id, "status": self.status, "gate_status": self.gate_status or "",
                                  "dry_run": self.dry_run, **self.counts(), "seconds": round(self.seconds or 0, 2)}
        if self.error:
            values["error"] = self.error
        return values

    def summary(self) -> str:
        text = (f"sync {self.sync}: {self.status}"
                + (" (dry run)" if self.dry_run else "")
                + f"; planned {self.planned_adds or 0:,} adds, {self.planned_updates or 0:,} updates, "
                f"{self.planned_deletes or 0:,} deletes, {self.unchanged or 0:,} unchanged")
        if not self.dry_run and self.status != "blocked":
            text += (f"; sent {self.sent:,}, delivered {self.succeeded:,}, failed {self.failed:,}, retried "
                     f"{self.retried:,}, rejected {self.rejected:,}, deferred {self.deferred:,}, "
                     f"{self.api_calls:,} API calls")
        if self.error:
            text += f"; {self.error}"
        return text


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the warehouse stores naive UTC timestamps


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _temp_name(kind: str, sync: SyncConfig) -> str:
    return f"_reverse_etl_{kind}_{sync.name}"


# ----------------------------------------------------------------------------------------------------------------
# Plan


def _row_hash_sql(sync: SyncConfig) -> str:
    """md5 of the mapped values as canonical JSON {field: value}, fields sorted: the same data gives the same hash
    whatever the YAML order, and a new, renamed or remapped field changes every hash (so the destination gets it).
    DuckDB spelling; BigQuery's is TO_HEX(MD5(TO_JSON_STRING(STRUCT(...)))) if the state moves there."""
    pairs = ", ".join(f"{_quote(f)} := {_quote(sync.mapping[f])}" for f in sorted(sync.mapping))
    return f"md5(cast(to_json(struct_pack({pairs})) as varchar))"


def _snapshot(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> tuple[str, int]:
    """Copy the sync's model (mapped columns, key, row hash) into a temp table: what is validated, diffed and sent
    is one consistent copy. Returns the table and its row count."""
    try:
        relation = _relation_sql(sync.relation)
        description = con.execute(f"select * from {relation} limit 0").description
    except Exception as error:  # duckdb.Error, or QualityGateError for a malformed relation name
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SyncError(f"sync {sync.name}: its model {sync.relation} cannot be read: {first_line} "
                        f"(build it with dbt: the activation model {sync.model})") from error
    present = {column[0].lower() for column in description}
    columns = list(dict.fromkeys(sync.mapping.values()))
    missing = [column for column in columns if column.lower() not in present]
    if missing:
        raise SyncError(f"sync {sync.name}: {sync.relation} has no column {', '.join(missing)} "
                        f"(mapped in reverse_etl/syncs.yml)")
    payload = _temp_name("payload", sync)
    con.execute(
        f"create or replace temp table {payload} as select cast({_quote(sync.key_column)} as varchar) as __key, "
        f"{_row_hash_sql(sync)} as __row_hash, {', '.join(_quote(c) for c in columns)} from {relation}"
    )
    return payload, int(con.execute(f"select count(*) from {payload}").fetchall()[0][0])


def _check_keys(con: duckdb.DuckDBPyConnection, sync: SyncConfig, payload: str) -> None:
    rows, keyed, distinct = con.execute(
        f"select count(*), count(__key), count(distinct __key) from {payload}"
    ).fetchall()[0]
    if keyed < rows:
        raise SyncError(f"sync {sync.name}: {rows - keyed:,} rows of {sync.relation} have no {sync.key_column} "
                        f"(the match key {sync.match_key})")
    if distinct < keyed:
        repeated = [row[0] for row in con.execute(
            f"select __key from {payload} group by __key having count(*) > 1 order by __key limit 3").fetchall()]
        raise SyncError(f"sync {sync.name}: {keyed - distinct:,} repeated keys in {sync.relation}.{sync.key_column} "
                        f"(e.g. {', '.join(repeated)}); one row per {sync.match_key}")


def _diff(con: duckdb.DuckDBPyConnection, sync: SyncConfig, payload: str, rows: int, started: float) -> Plan:
    _check_keys(con, sync, payload)
    work = _temp_name("work", sync)
    columns = list(dict.fromkeys(sync.mapping.values()))
    payload_columns = ", ".join(f"p.{_quote(c)}" for c in columns)
    null_columns = ", ".join(f"null as {_quote(c)}" for c in columns)
    deletes = ""
    if sync.mode == "mirror":
        deletes = f"""
        union all
        select 'delete' as op, s.key, s.row_hash, s.destination_id, r.attempts as rejected_attempts,
            coalesce(r.attempts >= {int(sync.max_record_attempts)} and r.row_hash = s.row_hash, false) as parked,
            {null_columns}
        from state as s
        left join rejected as r
            on r.key = s.key and r.operation = 'delete'
        where not exists (select 1 from {payload} as p where p.__key = s.key)"""
    changed = "" if sync.mode == "insert" else " or s.row_hash <> p.__row_hash"
    con.execute(
        f"""
        create or replace temp table {work} as
        with state as (
            select key, row_hash, destination_id from {STATE} where sync = $sync
        ),
        rejected as (
            select key, operation, row_hash, attempts from {REJECTED} where sync = $sync
        ),
        work as (
            select case when s.key is null then 'add' else 'update' end as op, p.__key as key,
                p.__row_hash as row_hash, s.destination_id, r.attempts as rejected_attempts,
                coalesce(r.attempts >= {int(sync.max_record_attempts)} and r.row_hash = p.__row_hash, false) as parked,
                {payload_columns}
            from {payload} as p
            left join state as s
                on s.key = p.__key
            left join rejected as r
                on r.key = p.__key and r.operation = 'write'
            where s.key is null{changed}
            {deletes}
        )
        select
            row_number() over (
                order by parked, case op when 'delete' then 0 when 'add' then 1 else 2 end, key
            ) as seq,
            *
        from work
        order by seq
        """,
        {"sync": sync.name},
    )
    counts = {"add": 0, "update": 0, "delete": 0}
    retries = parked = parked_writes = 0
    for op, is_parked, count, retried in con.execute(
        f"select op, parked, count(*), count(rejected_attempts) from {work} group by op, parked"
    ).fetchall():
        if is_parked:
            parked += count
            parked_writes += count if op != "delete" else 0
        else:
            counts[op] += count
            retries += retried
    samples: dict[str, list[dict[str, Any]]] = {}
    for op in ("add", "update", "delete"):
        result = con.execute(
            f"select key, {', '.join(_quote(c) for c in columns)} from {work} "
            f"where not parked and op = ? order by seq limit {SAMPLE_ROWS}",
            [op],
        )
        names = [d[0] for d in result.description]
        samples[op] = [_sample_row(sync, op, dict(zip(names, row, strict=True))) for row in result.fetchall()]
    return Plan(
        sync=sync.name,
        mode=sync.mode,
        rows_in_model=rows,
        adds=counts["add"],
        updates=counts["update"],
        deletes=counts["delete"],
        retries=retries,
        parked=parked,
        unchanged=rows - counts["add"] - counts["update"] - parked_writes,
        samples=samples,
        seconds=time.perf_counter() - started,
        payload_table=payload,
        work_table=work,
    )


def _sample_row(sync: SyncConfig, op: str, row: dict[str, Any]) -> dict[str, Any]:
    if op == "delete":
        return {"key": row["key"]}
    return {"key": row["key"], **{f: row[c] for f, c in sync.mapping.items() if f != sync.match_key}}


def plan(con: duckdb.DuckDBPyConnection, sync: SyncConfig) -> Plan:
    """The diff of `sync`'s model against what its destination holds (nothing is sent, only temp tables written)."""
    started = time.perf_counter()
    ensure_tables(con)
    payload, rows = _snapshot(con, sync)
    return _diff(con, sync, payload, rows, started)


# ----------------------------------------------------------------------------------------------------------------
# Run


class _GaveUp(Exception):
    """A batch kept failing transiently; its rows stay pending for the next run."""


@dataclass
class _BatchOutcome:
    final: dict[str, RecordResult]  # delivered, or refused for this run
    stop: str | None = None  # why the run stops after this batch: budget | retries | destination
    error: str | None = None


class _Runner:
    def __init__(self, con: duckdb.DuckDBPyConnection, sync: SyncConfig, destination: Destination,
                 result: SyncResult, policy: RetryPolicy, sleep: Callable[[float], None],
                 progress: Callable[[str], None]) -> None:
        self.con = con
        self.sync = sync
        self.destination = destination
        self.result = result
        self.policy = policy
        self.sleep = sleep
        self.progress = progress

    # -- calls ------------------------------------------------------------------------------------------------

    def _call(self, op: str, records: list[Record]) -> list[RecordResult]:
        """One call, retried with backoff on RetryableError; _GaveUp when the retries run out."""
        for attempt in range(self.policy.batch_attempts):
            try:
                if op == "delete":
                    return list(self.destination.delete(self.sync.object, records))
                return list(self.destination.write(self.sync.object, records, self.sync.mode))
            except RetryableError as error:
                wait = self.policy.delay(attempt, error.retry_after)
                if attempt + 1 >= self.policy.batch_attempts or (error.retry_after or 0) > self.policy.max_retry_after:
                    raise _GaveUp(f"{self.destination.name} kept failing after {attempt + 1} attempt(s): {error}"
                                  ) from error
                log.info(f"sync {self.sync.name}: {error}; retrying {len(records)} records in {wait:.1f} s")
                self.result.retried += len(records)
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, op: str, batch: list[Record]) -> _BatchOutcome:
        """Send one batch; records refused with a retryable code are resent a few times within the run."""
        outcome = _BatchOutcome(final={})
        pending = batch
        for round_ in range(self.policy.record_attempts):
            try:
                results = self._call(op, pending)
            except BudgetExhausted as error:  # raised before the request: nothing of this call was sent
                outcome.stop, outcome.error = "budget", str(error)
                break
            except _GaveUp as error:
                outcome.stop, outcome.error = "retries", str(error)
                self.result.sent += len(batch) if round_ == 0 else 0
                break
            except DestinationError as error:
                outcome.stop, outcome.error = "destination", f"{self.destination.name}: {error}"
                self.result.sent += len(batch) if round_ == 0 else 0
                break
            if round_ == 0:
                self.result.sent += len(batch)
            by_key = {result.key: result for result in results}
            retry = []
            for record in pending:
                result = by_key.get(record.key) or RecordResult(
                    record.key, False, error_code="NO_RESULT",
                    message=f"{self.destination.name} returned no result for this record")
                if result.is_retryable() and round_ + 1 < self.policy.record_attempts:
                    retry.append(record)
                else:
                    outcome.final[record.key] = result
            if not retry:
                break
            self.result.retried += len(retry)
            self.sleep(self.policy.delay(round_))
            pending = retry
        return outcome

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def commit(self, op: str, batch: list[Record], outcome: _BatchOutcome) -> None:
        """Record the batch's outcomes in one transaction (delivered -> state, refused -> rejected)."""
        if not outcome.final:
            return
        frame = pd.DataFrame(
            [(r.key, r.ok, r.is_deferred(), r.destination_id, r.error_code, (r.message or "")[:2000])
             for r in outcome.final.values()],
            columns=["key", "ok", "deferred", "destination_id", "error_code", "message"],
        ).astype({"key": "string", "destination_id": "string", "error_code": "string", "message": "string"})
        hashes = pd.DataFrame([(r.key, r.row_hash, r.destination_id) for r in batch],
                              columns=["key", "row_hash", "previous_id"]).astype("string")
        frame = frame.merge(hashes, on="key", how="inner")
        now = _now()
        params = {"sync": self.sync.name, "now": now, "run_id": self.result.run_id}
        operation = "delete" if op == "delete" else "write"
        con = self.con
        con.register("_reverse_etl_batch", frame)
        try:
            con.begin()
            try:
                con.execute(f"delete from {STATE} where sync = $sync and key in "
                            "(select key from _reverse_etl_batch where ok)", {"sync": self.sync.name})
                if op != "delete":
                    con.execute(
                        f"insert into {STATE} (sync, key, row_hash, destination_id, delivered_at, run_id) "
                        "select $sync, key, row_hash, coalesce(destination_id, previous_id), $now, $run_id "
                        "from _reverse_etl_batch where ok", params)
                # a deferral (quiet hours, frequency cap) keeps its reason visible but is no attempt: never parked
                failed = con.execute(
                    f"""
                    select b.key, b.row_hash, b.error_code, b.message,
                        case when r.operation = $operation and r.row_hash is not distinct from b.row_hash
                            then r.attempts else 0 end + case when b.deferred then 0 else 1 end as attempts,
                        case when r.operation = $operation and r.row_hash is not distinct from b.row_hash
                            then r.first_failed_at else $now end as first_failed_at
                    from _reverse_etl_batch as b
                    left join {REJECTED} as r
                        on r.sync = $sync and r.key = b.key
                    where not b.ok
                    """, {"sync": self.sync.name, "now": now, "operation": operation}).fetchall()
                con.execute(f"delete from {REJECTED} where sync = $sync and key in "
                            "(select key from _reverse_etl_batch)", {"sync": self.sync.name})
                if failed:
                    con.executemany(
                        f"insert into {REJECTED} (sync, key, operation, row_hash, error_code, message, attempts, "
                        "first_failed_at, last_failed_at, run_id) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[self.sync.name, key, operation, row_hash, code, message, attempts, first, now,
                          self.result.run_id] for key, row_hash, code, message, attempts, first in failed],
                    )
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.unregister("_reverse_etl_batch")
        delivered = sum(1 for r in outcome.final.values() if r.ok)
        deferred = sum(1 for r in outcome.final.values() if r.is_deferred())
        self.result.succeeded += delivered
        self.result.deferred += deferred
        self.result.rejected += len(outcome.final) - delivered - deferred

    # -- the loop ---------------------------------------------------------------------------------------------

    def batches(self, work: str, to_send: int, size: int) -> Iterator[tuple[str, list[Record]]]:
        """The plan's rows in order (deletes first: they are often consent withdrawn), as batches of one op."""
        columns = list(dict.fromkeys(self.sync.mapping.values()))
        select = ", ".join(_quote(c) for c in columns)
        current_op, current = "", []
        for low in range(0, to_send, FETCH_ROWS):
            rows = self.con.execute(
                f"select op, key, row_hash, destination_id, {select} from {work} "
                "where seq > ? and seq <= ? and not parked order by seq",
                [low, min(low + FETCH_ROWS, to_send)],
            ).fetchall()
            for op, key, row_hash, destination_id, *values in rows:
                row = dict(zip(columns, values, strict=True))
                if op == "delete":
                    fields = {self.sync.match_key: key}
                else:
                    fields = {f: row[c] for f, c in self.sync.mapping.items()}
                kind = "delete" if op == "delete" else "write"
                if current and (kind != current_op or len(current) >= size):
                    yield current_op, current
                    current = []
                current_op = kind
                current.append(Record(key=key, fields=fields, row_hash=row_hash, destination_id=destination_id))
        if current:
            yield current_op, current

    def run(self, planned: Plan) -> None:
        size = max(1, min(self.sync.batch_size or 10**9, self.destination.max_batch(self.sync.object, self.sync.mode)))
        started = time.perf_counter()
        last_report = started
        for batches, (op, batch) in enumerate(self.batches(planned.work_table, planned.to_send, size), start=1):
            outcome = self.send(op, batch)
            self.commit(op, batch, outcome)
            if outcome.stop:
                self.result.error = outcome.error
                self.result.status = {"budget": "budget_exhausted", "destination": "failed"}.get(
                    outcome.stop, "partial" if self.result.succeeded else "failed")
                break
            now = time.perf_counter()
            if now - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = now
                done = self.result.succeeded + self.result.rejected + self.result.deferred
                self.progress(f"sync {self.sync.name}: {done:,}/{planned.to_send:,} rows "
                              f"({done / planned.to_send:.0%}) in {batches:,} batches, "
                              f"{done / (now - started):,.0f} rows/s, {self.result.rejected:,} rejected")
        self.result.failed = self.result.sent - self.result.succeeded - self.result.deferred
        if self.result.status == "running":
            self.result.status = "partial" if self.result.rejected or planned.parked else "succeeded"


# Audit columns added after reverse_etl.sync_runs was first created (reverse_etl/state.py): added in place to older
# warehouses, so that their earlier runs stay readable (null for runs that did not count them).
ADDED_RUN_COLUMNS = {"deferred": "bigint"}


def ensure_audit_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Add the audit columns an older reverse_etl.sync_runs lacks (idempotent)."""
    for column, kind in ADDED_RUN_COLUMNS.items():
        con.execute(f"alter table {RUNS} add column if not exists {column} {kind}")


def _write_audit(con: duckdb.DuckDBPyConnection, result: SyncResult, *, insert: bool) -> None:
    row = asdict(result)
    columns = ["run_id", "sync", "destination", "object", "mode", "started_at", "ended_at", "status", "gate_status",
               *[c for c in SyncResult.COUNTS], "dry_run", "seconds", "error"]
    values = [row[c] for c in columns]
    if insert:
        con.execute(f"insert into {RUNS} ({', '.join(columns)}) values ({', '.join('?' for _ in columns)})", values)
    else:
        assignments = ", ".join(f"{c} = ?" for c in columns[1:])
        con.execute(f"update {RUNS} set {assignments} where run_id = ?", [*values[1:], result.run_id])


def run_sync(
    con: duckdb.DuckDBPyConnection,
    sync: SyncConfig,
    destination: Destination | None,
    *,
    budget: ApiBudget | None = None,
    last_sync: LastSyncStore | None = None,
    dry_run: bool = False,
    policy: RetryPolicy | None = None,
    docs_dir: Path | None = None,
    run_id: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
) -> SyncResult:
    """Run `sync` once: gate 4 on its model, then (unless `dry_run`) send the plan to `destination`.

    - Gate 4 runs on the copy of the model that is diffed and sent (`last_sync` gives the row count of the last
      successful run; None: no baseline). A failed gate sends nothing: status `blocked`.
    - `dry_run`: gate and plan only; nothing is sent and `destination` may be None. The plan is in result.plan.
    - `budget`: the ApiBudget the destination spends (for the api_calls count, which includes the calls of the
      destination's optional `start()`, called first in a run that is not a dry run).
    - Every run leaves an audit row in reverse_etl.sync_runs (status `running` while it runs, then its outcome,
      also when it fails: try/finally). Destination errors (also a RetryableError from `start()` / `check()`) end
      the run as `failed` with the error in the result, a spent budget as `budget_exhausted`; other exceptions
      (bugs, a crash of the destination) are recorded and raised.
    - Records the destination defers (quiet hours, frequency cap: base.DEFERRED_RECORD_CODES) are counted as
      `deferred`, not as failures: they do not make the run partial, and the next run offers them again.
    - The baseline of gate 4 is updated after a run that delivered (succeeded, partial).
    """
    policy = policy or RetryPolicy()
    say = progress or log.info
    result = SyncResult(
        run_id=run_id or uuid.uuid4().hex, sync=sync.name, destination=sync.destination, object=sync.object,
        mode=sync.mode, dry_run=dry_run, started_at=_now(),
    )
    started = time.perf_counter()
    spent_before = budget.spent_this_run if budget is not None else 0
    ensure_tables(con)
    ensure_audit_columns(con)
    _write_audit(con, result, insert=True)
    try:
        if destination is not None and not dry_run and not _destination_step(result, destination, "start"):
            return result
        payload, rows = _snapshot(con, sync)
        result.rows_in_model = rows
        spec = sync.spec(destination.fields(sync.object) if destination is not None else None)
        frame = read_sync_frame(con, f"temp.main.{payload}", spec)
        gate = run_gate_4(spec, frame, last_synced_rows=last_sync.get(sync.name) if last_sync else None,
                          docs_dir=docs_dir)
        del frame
        result.gate, result.gate_status = gate, "passed" if gate.success else "failed"
        if not gate.success:
            result.status = "blocked"
            result.error = gate.summary()
            return result
        planned = _diff(con, sync, payload, rows, started)
        result.plan = planned
        result.planned_adds, result.planned_updates, result.planned_deletes = (
            planned.adds, planned.updates, planned.deletes)
        result.planned_retries, result.unchanged, result.parked = planned.retries, planned.unchanged, planned.parked
        if dry_run:
            result.status = "succeeded"
            return result
        if destination is None:
            raise SyncError(f"sync {sync.name}: no destination to send to (only a dry run works without one)")
        # a refused row whose key left the model is no longer wanted anywhere
        con.execute(f"delete from {REJECTED} where sync = ? and operation = 'write' and key not in "
                    f"(select __key from {payload})", [sync.name])
        if planned.to_send:
            if not _destination_step(result, destination, "check"):
                return result
            say(f"sync {sync.name}: sending {planned.adds:,} adds, {planned.updates:,} updates, "
                f"{planned.deletes:,} deletes to {destination.name} {sync.object}")
            _Runner(con, sync, destination, result, policy, sleep, say).run(planned)
        else:
            result.status = "partial" if planned.parked else "succeeded"
        if result.status in ("succeeded", "partial") and last_sync is not None:
            last_sync.record_success(sync.name, rows)
        return result
    except SyncError as error:
        result.status, result.error = "failed", str(error)
        return result
    except BaseException as error:
        result.status = "failed"
        result.error = f"{type(error).__name__}: {error}"
        raise
    finally:
        if budget is not None:
            result.api_calls = budget.spent_this_run - spent_before
        result.ended_at = _now()
        result.seconds = time.perf_counter() - started
        if result.status == "running":  # an exception between the steps above
            result.status = "failed"
        _finish(con, sync, result)
        if destination is not None and not dry_run:
            try:
                destination.close()
            except Exception as error:  # closing must not hide the run's outcome
                log.warning(f"sync {sync.name}: closing {destination.name} failed: {error}")


def _destination_step(result: SyncResult, destination: Destination, step: str) -> bool:
    """Call the destination's `start()` (optional) or `check()`; False, with the run's status and reason set, when
    the run cannot go on: a permanent error or one that outlasted the destination's own retries -> failed (the next
    scheduled run tries again), the daily API budget spent -> budget_exhausted."""
    method = getattr(destination, step, None)
    if method is None:
        return True
    try:
        method()
    except BudgetExhausted as error:
        result.status, result.error = "budget_exhausted", f"{destination.name}: {error}"
    except RetryableError as error:
        result.status, result.error = "failed", f"{destination.name} unavailable ({step}): {error}"
    except DestinationError as error:
        result.status, result.error = "failed", f"{destination.name}: {error}"
    else:
        return True
    return False


def _finish(con: duckdb.DuckDBPyConnection, sync: SyncConfig, result: SyncResult) -> None:
    with contextlib.suppress(Exception):  # none open is the usual case
        con.rollback()  # a transaction left open by an exception in the middle of a batch's bookkeeping
    _write_audit(con, result, insert=False)
    for kind in ("payload", "work"):
        con.execute(f"drop table if exists {_temp_name(kind, sync)}")
