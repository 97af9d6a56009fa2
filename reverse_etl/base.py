"""The destination interface: what every reverse-ETL destination (Salesforce, Twilio, email) implements.

The runner (reverse_etl/runner.py) owns diffing, batching, retries, bookkeeping and the audit; a destination knows
only its API. It turns a batch of records into API calls and reports, per record, what happened.

The contract
------------
- `fields(object)` is the object's catalogue (the fields gate 4 checks the mapping and the values against).
- `max_batch(object, mode)` is the most records one `write` / `delete` call accepts (the API's limit, e.g. 200 for
  the Salesforce composite API). The runner never passes more (and less when the sync sets `batch_size`).
- `start()` (optional): work a destination does at the start of each run, e.g. polling the delivery statuses of
  earlier messages (Twilio). The runner calls it first thing in a run that is not a dry run, so that the API calls
  it makes count in the run's `api_calls`; a destination without it simply has none. Creating a destination should
  make no API call.
- `check()` raises `DestinationError` with a clear message when the endpoint or the credentials are wrong; the
  runner calls it once before the first batch. `RetryableError` there ends the run as failed (with the reason; the
  next scheduled run tries again), `BudgetExhausted` as budget_exhausted.
- `write(object, records, mode)` returns exactly one `RecordResult` per record (same `key`), in any order:
  * `upsert` / `mirror`: create or update the record matched by the sync's match key (`records[i].key` is its
    value; `records[i].fields` holds it too). Writing the same record twice must leave the same state: after a
    crash the runner resends at most the batch that was in flight, unchanged.
  * `insert` (messages: they cannot be updated or recalled): send each key at most once. The runner delivers
    each key at least once and, after a crash, may resend the in-flight batch, so the destination must make a
    resend harmless itself: e.g. remember the keys it sent (an idempotency key on the request, or a lookup of
    the key on the service before sending). `fields` holds the key under the sync's match key field.
  * `destination_id`: the id of the record on the service (Salesforce Id, message SID, contact/list ids...).
    The runner stores it and gives it back on later updates and deletes (`Record.destination_id`); it is opaque to
    the runner, so a destination may pack what it needs (e.g. "list_id/contact_id").
- `delete(object, records)` (mirror mode only): remove what an earlier write created; `records` carry the key, the
  match key field in `fields` and the stored `destination_id`. Deleting what is already gone is a success.
- Failures:
  * one record refused -> its `RecordResult(ok=False, error_code=..., message=...)`, with the service's own
    error code (e.g. `INVALID_EMAIL_ADDRESS`, `21211`). `retryable=True` (or a code in
    `RETRYABLE_RECORD_CODES`) for a per-record transient error such as `UNABLE_TO_LOCK_ROW`: the runner resends
    such records a few times within the run, then records them as rejected. Rejected rows are retried on later runs.
  * one record not to be sent now, by design (`DEFERRED_RECORD_CODES`: quiet hours, a frequency cap) ->
    `RecordResult(ok=False, error_code="QUIET_HOURS", ...)`: a deferral, not a failure. The runner does not resend
    it within the run, does not count it as an attempt (it is never parked), keeps the reason in sync_rejected for
    visibility, and counts it as `deferred` in the run's audit; the next run offers it again.
  * the whole call failed transiently (throttling, a lock, HTTP 5xx, a reset connection) -> raise
    `RetryableError(message, retry_after=seconds or None)`. The runner resends the whole batch with exponential
    backoff and jitter (capped); when the retries run out, the rows stay pending for the next run.
  * the whole call failed for good (bad credentials, an unknown object) -> raise `DestinationError`: the run stops
    as failed, its rows stay pending.
  * the daily API budget is spent -> `ApiBudget.spend()` raises `BudgetExhausted` before the request: the run
    stops cleanly (status budget_exhausted) and the rows stay pending for the next day.
  Raise these only when nothing of the batch was applied, or when applying it again is harmless (see above).
- API calls: call `budget.spend()` before every HTTP request (the destination gets the `ApiBudget` when it is
  created, see reverse_etl/destinations/__init__.py), so the runner can respect and report the daily budget.
- `close()` releases connections; the runner calls it at the end of the run.

Values in `Record.fields` are Python values as DuckDB returns them (str, int, float, Decimal, bool, date, datetime
(naive, UTC), None): the destination formats them for its wire format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from orchestration.quality.gate_4 import DestinationField
from reverse_etl.state import API_BUDGET, ensure_tables

if TYPE_CHECKING:
    import duckdb

Mode = Literal["upsert", "mirror", "insert"]
MODES: tuple[str, ...] = get_args(Mode)

# Per-record error codes that mean "try this record again soon", whatever the destination says in `retryable`:
# Salesforce row locks and timeouts, HTTP throttling and server errors reported per record (composite APIs),
# Twilio's rate-limit code 20429 and queue-overflow 30001.
RETRYABLE_RECORD_CODES: frozenset[str] = frozenset({
    "UNABLE_TO_LOCK_ROW",
    "REQUEST_RUNNING_TOO_LONG",
    "SERVER_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "TOO_MANY_REQUESTS",
    "429",
    "500",
    "502",
    "503",
    "504",
    "20429",
    "30001",
})


# Per-record codes that mean "not now, by design": the record is offered again by the next run, not resent within
# this one, not counted as a failed attempt. Quiet hours in the recipient's local time; a frequency cap per profile.
DEFERRED_RECORD_CODES: frozenset[str] = frozenset({"QUIET_HOURS", "FREQUENCY_CAP"})


class DestinationError(Exception):
    """A permanent failure of a whole call (or of `check()`): bad credentials, an unknown object, a bad request.
    The message says what is wrong and how to fix it."""


class DestinationNotConfigured(DestinationError):
    """The destination's endpoint or credentials are not in the environment: the sync is not enabled here. The
    message names the variables to set. The Dagster asset then only plans (gate 4 + dry run) and says so."""


class RetryableError(Exception):
    """A transient failure of a whole call: throttling (HTTP 429), a lock, HTTP 5xx, a reset connection.

    `retry_after`: seconds the service asked to wait (Retry-After), None when it did not say.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(Exception):
    """The destination's daily API budget is spent: stop this run cleanly, the rows stay pending."""


@dataclass(frozen=True)
class Record:
    """One row to write (or delete), keyed by the sync's match key value."""

    key: str  # the match key value (text), unique within a sync
    fields: dict[str, Any]  # {destination_field: value}; for a delete only the match key field
    row_hash: str  # md5 of the mapped values in canonical form (what the runner compares run to run)
    destination_id: str | None = None  # what the destination returned when it last wrote this key, if any


@dataclass(frozen=True)
class RecordResult:
    """The outcome of one record of a `write` or `delete` call."""

    key: str
    ok: bool
    destination_id: str | None = None
    error_code: str | None = None  # the service's own code when not ok
    message: str | None = None
    retryable: bool = False  # a transient per-record error: the runner resends the record within the run

    def is_deferred(self) -> bool:
        """Not sent now by design (quiet hours, a frequency cap): the next run offers it again."""
        return not self.ok and (self.error_code or "") in DEFERRED_RECORD_CODES

    def is_retryable(self) -> bool:
        return not self.ok and not self.is_deferred() and (
            self.retryable or (self.error_code or "") in RETRYABLE_RECORD_CODES)


@runtime_checkable
class Destination(Protocol):
    """A reverse-ETL destination (see the module docstring for the contract)."""

    name: str  # "salesforce" | "twilio" | "email": as in syncs.yml

    def fields(self, object: str) -> dict[str, DestinationField]: ...

    def max_batch(self, object: str, mode: Mode) -> int: ...

    def check(self) -> None: ...

    def write(self, object: str, records: list[Record], mode: Mode) -> list[RecordResult]: ...

    def delete(self, object: str, records: list[Record]) -> list[RecordResult]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------------------------
# The daily API budget

@dataclass
class ApiBudget:
    """API calls per UTC day for one destination, persisted in `reverse_etl.api_budget` of the warehouse.

    Destinations call `spend()` before each request; it raises BudgetExhausted when the day's limit is reached.
    Each call is written at once (one small update): the count survives a crash, and two runs on one day share it.
    `daily_limit` None means no limit (the calls are still counted). `now` is the clock (UTC), for tests.
    """

    con: duckdb.DuckDBPyConnection
    destination: str
    daily_limit: int | None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    spent_this_run: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.daily_limit is not None and self.daily_limit < 0:
            raise ValueError(f"api budget of {self.destination}: daily_limit must be >= 0, not {self.daily_limit}")
        ensure_tables(self.con)

    def _today(self) -> date:
        return self.now().astimezone(UTC).date()

    def _calls(self, day: date) -> int | None:
        row = self.con.execute(
            f"select calls from {API_BUDGET} where destination = ? and day = ?", [self.destination, day]
        ).fetchone()
        return None if row is None else int(row[0])

    def used_today(self) -> int:
        return self._calls(self._today()) or 0

    def remaining(self) -> int | None:
        return None if self.daily_limit is None else max(0, self.daily_limit - self.used_today())

    def spend(self, calls: int = 1) -> None:
        """Count `calls` requests about to be made; BudgetExhausted (nothing counted) if they do not fit today."""
        if calls < 1:
            return
        with self._lock:
            day = self._today()
            known = self._calls(day)
            used = known or 0
            if self.daily_limit is not None and used + calls > self.daily_limit:
                raise BudgetExhausted(
                    f"{self.destination}: daily API budget spent ({used:,} of {self.daily_limit:,} calls on {day} "
                    "UTC); the remaining rows are sent by the next run after midnight UTC"
                )
            stamp = self.now().astimezone(UTC).replace(tzinfo=None)
            if known is None:
                self.con.execute(
                    f"insert into {API_BUDGET} (destination, day, calls, daily_limit, updated_at) "
                    "values (?, ?, ?, ?, ?)",
                    [self.destination, day, calls, self.daily_limit, stamp],
                )
            else:
                self.con.execute(
                    f"update {API_BUDGET} set calls = calls + ?, daily_limit = ?, updated_at = ? "
                    "where destination = ? and day = ?",
                    [calls, self.daily_limit, stamp, self.destination, day],
                )
            self.spent_this_run += calls
