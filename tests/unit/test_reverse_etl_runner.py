"""The reverse-ETL runner against a real in-process destination that keeps records in a dict and injects faults
deterministically: throttled / failing calls, per-record lock errors, permanent per-record errors and a crash after
N batches. Every run reads a payload table of a real DuckDB file and writes the real state, rejected and audit
tables; gate 4 (Great Expectations) runs on every run."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestration.quality.gate_4 import DestinationField, LastSyncStore
from reverse_etl.base import (
    ApiBudget,
    BudgetExhausted,
    Destination,
    DestinationError,
    Mode,
    Record,
    RecordResult,
    RetryableError,
)
from reverse_etl.config import CATALOGUES, SyncConfig, SyncConfigError, load_syncs, parse_syncs
from reverse_etl.runner import RetryPolicy, SyncResult, plan, run_sync
from reverse_etl.state import ensure_tables

FAST = RetryPolicy(base_delay=0.0005, max_delay=0.001)


class MemoryCRM:
    """A destination that stores Contacts in a dict. Faults (all deterministic):
    - every `fail_every`-th call raises RetryableError (throttling / HTTP 503), before applying anything;
    - `lock_share` of the keys (by hash) are refused once with UNABLE_TO_LOCK_ROW, then accepted (`lock_always`:
      every attempt);
    - keys in `bad_keys` are refused with INVALID_EMAIL_ADDRESS (permanent);
    - after `crash_after` successful calls, the next call applies its batch, then raises (a process killed before
      the runner could record it);
    - keys in `defer_keys` are put off with QUIET_HOURS (a deferral, not a failure);
    - `check_error` / `start_error` is raised by check() / start(); start() makes `start_calls` API calls."""

    name = "salesforce"

    def __init__(self, budget: ApiBudget | None = None, *, max_batch: int = 200, fail_every: int = 0,
                 lock_share: float = 0.0, bad_keys: set[str] | None = None, crash_after: int | None = None,
                 always_fail: bool | str = False, lock_always: bool = False, defer_keys: set[str] | None = None,
                 check_error: Exception | None = None, start_error: Exception | None = None,
                 start_calls: int = 0) -> None:
        self.budget = budget
        self.size = max_batch
        self.fail_every = fail_every
        self.lock_share = lock_share
        self.bad_keys = set(bad_keys or ())
        self.crash_after = crash_after
        self.always_fail = always_fail
        self.lock_always = lock_always
        self.defer_keys = set(defer_keys or ())
        self.check_error = check_error
        self.start_error = start_error
        self.start_calls = start_calls
        self.started = 0
        self.records: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.deleted: Counter[str] = Counter()
        self.locked: set[str] = set()
        self.calls = 0
        self.applied_calls = 0
        self.last_batch: list[str] = []
        self.closed = False

    def fields(self, object: str) -> dict[str, DestinationField]:
        return CATALOGUES["salesforce"][object]

    def max_batch(self, object: str, mode: Mode) -> int:
        return self.size

    def start(self) -> None:
        self.started += 1
        for _ in range(self.start_calls):  # e.g. delivery statuses polled at the start of a run
            if self.budget is not None:
                self.budget.spend()
        if self.start_error is not None:
            raise self.start_error

    def check(self) -> None:
        if self.always_fail == "check":
            raise DestinationError("INVALID_SESSION_ID: Session expired or invalid")
        if self.check_error is not None:
            raise self.check_error

    def _call(self) -> None:
        if self.budget is not None:
            self.budget.spend()
        self.calls += 1
        if self.always_fail or (self.fail_every and self.calls % self.fail_every == 0):
            raise RetryableError("HTTP 503 Service Unavailable", retry_after=None)

    def _locks(self, key: str) -> bool:
        share = int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return self.lock_always or (share < self.lock_share and key not in self.locked)

    def write(self, object: str, records: list[Record], mode: Mode) -> list[RecordResult]:
        self._call()
        results = []
        for record in records:
            if record.key in self.defer_keys:
                results.append(RecordResult(record.key, False, error_code="QUIET_HOURS",
                                            message="quiet hours 21:00-08:00 for this profile: deferred"))
            elif record.key in self.bad_keys:
                results.append(RecordResult(record.key, False, error_code="INVALID_EMAIL_ADDRESS",
                                            message=f"Email: invalid email address: {record.fields.get('Email')}"))
            elif self._locks(record.key):
                self.locked.add(record.key)
                results.append(RecordResult(record.key, False, error_code="UNABLE_TO_LOCK_ROW",
                                            message="unable to obtain exclusive access to this record"))
            else:
                assert record.fields["CDP_Profile_Id__c"] == record.key
                self.records[record.key] = dict(record.fields)
                self.writes[record.key] += 1
                destination_id = record.destination_id or "003" + record.key
                results.append(RecordResult(record.key, True, destination_id=destination_id))
        self.applied_calls += 1
        self.last_batch = [record.key for record in records]
        if self.crash_after is not None and self.applied_calls > self.crash_after:
            raise RuntimeError("worker killed")
        return results

    def delete(self, object: str, records: list[Record]) -> list[RecordResult]:
        self._call()
        for record in records:
            assert record.destination_id == "003" + record.key
            self.records.pop(record.key, None)
            self.deleted[record.key] += 1
        return [RecordResult(record.key, True) for record in records]

    def close(self) -> None:
        self.closed = True


def test_memory_crm_is_a_destination() -> None:
    assert isinstance(MemoryCRM(), Destination)


def sync_config(mode: Mode = "upsert", **overrides: Any) -> SyncConfig:
    values: dict[str, Any] = dict(
        name="contacts", model="contacts", destination="salesforce", object="Contact", mode=mode,
        match_key="CDP_Profile_Id__c",
        mapping={"CDP_Profile_Id__c": "profile_id", "LastName": "last_name", "Email": "email",
                 "CDP_Engagement_Score__c": "score"},
        schedule="*/15 * * * *", relation="main.contacts",
    )
    return SyncConfig(**{**values, **overrides})


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def payload(con: duckdb.DuckDBPyConnection, rows: int) -> list[str]:
    con.execute(f"""
        create or replace table contacts as
        select 'p' || lpad(cast(i as varchar), 7, '0') as profile_id, 'Example' || i as last_name,
            'student' || i || '@uni.example.org' as email, round((i % 1000) / 10.0, 1) as score
        from range({rows}) as t(i)
    """)
    return [row[0] for row in con.execute("select profile_id from contacts order by 1").fetchall()]


def state(con: duckdb.DuckDBPyConnection, sync: str = "contacts") -> dict[str, str]:
    return dict(con.execute("select key, row_hash from reverse_etl.sync_state where sync = ?", [sync]).fetchall())


def rejected(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int]]:
    rows = con.execute("select key, error_code, attempts from reverse_etl.sync_rejected").fetchall()
    return {key: (code, attempts) for key, code, attempts in rows}


def audit(con: duckdb.DuckDBPyConnection, result: SyncResult) -> dict[str, Any]:
    cursor = con.execute("select * from reverse_etl.sync_runs where run_id = ?", [result.run_id])
    names = [d[0] for d in cursor.description]
    (row,) = cursor.fetchall()
    return dict(zip(names, row, strict=True))


def run(con: duckdb.DuckDBPyConnection, sync: SyncConfig, crm: MemoryCRM, tmp_path: Path, **kwargs: Any) -> SyncResult:
    return run_sync(con, sync, crm, budget=crm.budget, last_sync=LastSyncStore(tmp_path / "last_sync.json"),
                    policy=kwargs.pop("policy", FAST), **kwargs)


def test_first_run_delivers_every_row_once_and_a_second_run_sends_nothing(con, tmp_path) -> None:
    keys = payload(con, 2_000)
    crm = MemoryCRM(ApiBudget(con, "salesforce", None))
    first = run(con, sync_config(), crm, tmp_path)
    assert first.status == "succeeded" and first.gate_status == "passed"
    assert (first.planned_adds, first.sent, first.succeeded, first.failed) == (2_000, 2_000, 2_000, 0)
    assert sorted(crm.records) == keys and set(crm.writes.values()) == {1}
    assert crm.records["p0000007"] == {"CDP_Profile_Id__c": "p0000007", "LastName": "Example7",
                                       "Email": "student7@uni.example.org", "CDP_Engagement_Score__c": 0.7}
    assert sorted(state(con)) == keys
    assert first.api_calls == crm.calls == 10 and crm.closed
    row = audit(con, first)
    assert (row["status"], row["sent"], row["succeeded"], row["api_calls"], row["dry_run"]) == (
        "succeeded", 2_000, 2_000, 10, False)
    assert LastSyncStore(tmp_path / "last_sync.json").get("contacts") == 2_000

    second = run(con, sync_config(), crm, tmp_path)
    assert second.status == "succeeded"
    assert (second.planned_adds, second.planned_updates, second.sent, second.unchanged) == (0, 0, 0, 2_000)
    assert crm.calls == 10 and sum(crm.writes.values()) == 2_000


def test_changing_one_percent_sends_exactly_those_rows(con, tmp_path) -> None:
    payload(con, 10_000)
    crm = MemoryCRM()
    run(con, sync_config(), crm, tmp_path)
    changed = {row[0] for row in con.execute(
        "update contacts set score = score + 1 where cast(substr(profile_id, 2) as int) % 100 = 3 "
        "returning profile_id").fetchall()}
    assert len(changed) == 100
    result = run(con, sync_config(), crm, tmp_path)
    assert (result.planned_adds, result.planned_updates, result.unchanged) == (0, 100, 9_900)
    assert (result.sent, result.succeeded) == (100, 100)
    assert {key for key, count in crm.writes.items() if count == 2} == changed
    assert sum(crm.writes.values()) == 10_100
    hashes = state(con)
    assert crm.records["p0000003"]["CDP_Engagement_Score__c"] == 1.3
    assert run(con, sync_config(), crm, tmp_path).sent == 0 and state(con) == hashes


def test_mirror_deletes_exactly_the_removed_keys(con, tmp_path) -> None:
    keys = payload(con, 3_000)
    crm = MemoryCRM()
    run(con, sync_config("mirror"), crm, tmp_path)
    removed = {row[0] for row in con.execute(
        "delete from contacts where cast(substr(profile_id, 2) as int) % 50 = 0 returning profile_id").fetchall()}
    result = run(con, sync_config("mirror"), crm, tmp_path)
    assert (result.planned_adds, result.planned_updates, result.planned_deletes) == (0, 0, 60)
    assert set(crm.deleted) == removed and set(crm.deleted.values()) == {1}
    assert sorted(crm.records) == sorted(set(keys) - removed) == sorted(state(con))
    # upsert mode never deletes: the removed rows stay in the destination
    upsert_crm = MemoryCRM()
    run(con, sync_config(name="contacts_upsert"), upsert_crm, tmp_path)
    con.execute("delete from contacts where profile_id = 'p0000001'")
    result = run(con, sync_config(name="contacts_upsert"), upsert_crm, tmp_path)
    assert result.planned_deletes == 0 and "p0000001" in upsert_crm.records and not upsert_crm.deleted


def test_20_percent_faults_on_100k_rows_deliver_every_row_exactly_once(con, tmp_path) -> None:
    keys = payload(con, 100_000)
    bad = {"p0000042", "p0050000", "p0099999"}
    crm = MemoryCRM(ApiBudget(con, "salesforce", 1_000_000), max_batch=1_000, fail_every=5, lock_share=0.2,
                    bad_keys=bad)
    result = run(con, sync_config(), crm, tmp_path)
    assert result.status == "partial"  # the three refused rows
    assert (result.sent, result.succeeded, result.rejected) == (100_000, 99_997, 3)
    assert result.retried > 20_000  # a fifth of the calls failed whole, a fifth of the rows were locked once
    assert sorted(crm.records) == sorted(set(keys) - bad)
    assert set(crm.writes.values()) == {1}  # nothing written twice, despite the faults
    assert sorted(state(con)) == sorted(set(keys) - bad)
    assert rejected(con) == {key: ("INVALID_EMAIL_ADDRESS", 1) for key in bad}
    assert audit(con, result)["rejected"] == 3 and result.api_calls == crm.calls

    # the refused rows are fixed in the model: the next run sends exactly them and clears them
    con.execute("update contacts set email = 'fixed' || email where profile_id in ('p0000042', 'p0050000', 'p0099999')")
    crm.bad_keys = set()
    again = run(con, sync_config(), crm, tmp_path)
    assert again.status == "succeeded"
    assert (again.planned_adds, again.planned_retries, again.sent, again.succeeded) == (3, 3, 3, 3)
    assert rejected(con) == {} and sorted(state(con)) == keys and set(crm.writes.values()) == {1}
    assert len(crm.writes) == 100_000


def test_a_crash_mid_run_loses_at_most_the_batch_in_flight(con, tmp_path) -> None:
    keys = payload(con, 5_000)
    crm = MemoryCRM(max_batch=500, crash_after=3)
    with pytest.raises(RuntimeError, match="worker killed"):
        run(con, sync_config(), crm, tmp_path)
    in_flight = set(crm.last_batch)
    assert len(in_flight) == 500 and len(state(con)) == 1_500 and not in_flight & set(state(con))
    failed_run = con.execute("select status, error from reverse_etl.sync_runs").fetchall()
    assert failed_run == [("failed", "RuntimeError: worker killed")]

    crm.crash_after = None
    result = run(con, sync_config(), crm, tmp_path)
    assert result.status == "succeeded" and result.planned_adds == 3_500
    assert sorted(state(con)) == keys == sorted(crm.records)
    assert {key for key, count in crm.writes.items() if count > 1} == in_flight  # resent: the in-flight batch only
    assert sum(crm.writes.values()) == 5_000 + 500


def test_rejected_rows_are_retried_next_run_cleared_on_success_and_parked_after_max_attempts(con, tmp_path) -> None:
    payload(con, 100)
    crm = MemoryCRM(bad_keys={"p0000010", "p0000020"})
    sync = sync_config(max_record_attempts=2)
    run(con, sync, crm, tmp_path)
    assert rejected(con) == {"p0000010": ("INVALID_EMAIL_ADDRESS", 1), "p0000020": ("INVALID_EMAIL_ADDRESS", 1)}
    second = run(con, sync, crm, tmp_path)  # same data: retried, refused again
    assert (second.planned_retries, second.sent, second.rejected, second.status) == (2, 2, 2, "partial")
    assert rejected(con)["p0000010"] == ("INVALID_EMAIL_ADDRESS", 2)
    third = run(con, sync, crm, tmp_path)  # two attempts with the same data: parked until the row changes
    assert (third.parked, third.sent, third.status) == (2, 0, "partial")
    con.execute("update contacts set email = 'new' || email where profile_id = 'p0000010'")
    crm.bad_keys = {"p0000020"}
    fourth = run(con, sync, crm, tmp_path)
    assert (fourth.planned_retries, fourth.sent, fourth.succeeded, fourth.parked) == (1, 1, 1, 1)
    assert set(rejected(con)) == {"p0000020"} and "p0000010" in state(con)


def test_a_row_locked_on_every_attempt_is_rejected_with_the_lock_code_and_retried_next_run(con, tmp_path) -> None:
    payload(con, 50)
    crm = MemoryCRM(lock_always=True)  # every attempt of the run hits the lock
    result = run(con, sync_config(), crm, tmp_path)
    assert (result.sent, result.succeeded, result.rejected) == (50, 0, 50)
    assert result.retried == 100  # FAST.record_attempts = 3: two resends of every row within the run
    assert set(code for code, _ in rejected(con).values()) == {"UNABLE_TO_LOCK_ROW"}
    crm.lock_always = False
    assert run(con, sync_config(), crm, tmp_path).succeeded == 50 and rejected(con) == {}


def test_a_destination_down_for_the_whole_run_leaves_every_row_pending(con, tmp_path) -> None:
    payload(con, 300)
    crm = MemoryCRM(always_fail=True)
    result = run(con, sync_config(), crm, tmp_path)
    assert result.status == "failed" and "kept failing after 5 attempt(s)" in result.error
    assert crm.calls == 5 and state(con) == {} and rejected(con) == {}
    assert LastSyncStore(tmp_path / "last_sync.json").get("contacts") is None  # a failed run is no baseline
    crm.always_fail = False
    assert run(con, sync_config(), crm, tmp_path).succeeded == 300


def test_bad_credentials_fail_the_run_with_the_destination_message(con, tmp_path) -> None:
    payload(con, 10)
    crm = MemoryCRM(always_fail="check")
    result = run(con, sync_config(), crm, tmp_path)
    assert result.status == "failed" and result.error == "salesforce: INVALID_SESSION_ID: Session expired or invalid"
    assert crm.calls == 0 and audit(con, result)["status"] == "failed"


def test_gate_4_failure_blocks_the_sync_and_sends_nothing(con, tmp_path) -> None:
    payload(con, 1_000)
    crm = MemoryCRM()
    run(con, sync_config(), crm, tmp_path)
    con.execute("update contacts set last_name = 'mail me: a@b.org' where profile_id = 'p0000001'")
    blocked = run(con, sync_config(), crm, tmp_path)
    assert blocked.status == "blocked" and blocked.gate_status == "failed" and blocked.sent == 0
    assert "expect_column_values_to_not_match_regex(last_name, email)" in blocked.error
    assert crm.calls == 5 and audit(con, blocked)["status"] == "blocked"
    con.execute("update contacts set last_name = 'Example1' where profile_id = 'p0000001'")
    con.execute("delete from contacts where cast(substr(profile_id, 2) as int) >= 700")  # -30 % rows
    shrunk = run(con, sync_config("mirror"), crm, tmp_path)
    assert shrunk.status == "blocked" and not crm.deleted  # a mirror would have deleted 300 contacts


def test_dry_run_plans_and_audits_but_sends_nothing(con, tmp_path) -> None:
    payload(con, 500)
    crm = MemoryCRM()
    result = run(con, sync_config(), crm, tmp_path, dry_run=True)
    assert (result.status, result.dry_run, result.planned_adds, result.sent) == ("succeeded", True, 500, 0)
    assert crm.calls == 0 and state(con) == {} and not crm.closed
    assert result.plan is not None and [s["key"] for s in result.plan.samples["add"]] == [
        "p0000000", "p0000001", "p0000002", "p0000003", "p0000004"]
    assert audit(con, result)["dry_run"] is True
    assert LastSyncStore(tmp_path / "last_sync.json").get("contacts") is None
    assert run_sync(con, sync_config(), None, dry_run=True).planned_adds == 500  # no destination needed


def test_budget_exhaustion_stops_cleanly_and_the_next_day_sends_the_rest(con, tmp_path) -> None:
    keys = payload(con, 1_000)
    today = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    budget = ApiBudget(con, "salesforce", daily_limit=4, now=lambda: today)
    crm = MemoryCRM(budget, max_batch=100)
    result = run(con, sync_config(), crm, tmp_path)
    assert (result.status, result.sent, result.succeeded, result.api_calls) == ("budget_exhausted", 400, 400, 4)
    assert "daily API budget spent (4 of 4 calls on 2026-03-01 UTC)" in result.error
    assert len(state(con)) == 400 and rejected(con) == {}
    with pytest.raises(BudgetExhausted):
        budget.spend()
    tomorrow = ApiBudget(con, "salesforce", daily_limit=6, now=lambda: today + timedelta(hours=2))
    crm.budget = tomorrow
    rest = run(con, sync_config(), crm, tmp_path)
    assert (rest.status, rest.planned_adds, rest.succeeded, rest.api_calls) == ("succeeded", 600, 600, 6)
    assert sorted(state(con)) == keys and set(crm.writes.values()) == {1}
    assert con.execute("select day, calls from reverse_etl.api_budget order by day").fetchall() == [
        (today.date(), 4), (today.date() + timedelta(days=1), 6)]


def test_insert_mode_sends_each_key_once_and_never_an_update(con, tmp_path) -> None:
    payload(con, 200)
    crm = MemoryCRM()
    run(con, sync_config("insert"), crm, tmp_path)
    con.execute("update contacts set score = score + 5")
    con.execute("insert into contacts values ('p9999999', 'New', 'new@uni.example.org', 1.0)")
    result = run(con, sync_config("insert"), crm, tmp_path)
    assert (result.planned_adds, result.planned_updates, result.sent, result.unchanged) == (1, 0, 1, 200)


def test_plan_reports_a_missing_model_or_column_clearly(con) -> None:
    result = run_sync(con, sync_config(), MemoryCRM())
    assert result.status == "failed" and "its model main.contacts cannot be read" in result.error
    payload(con, 5)
    with pytest.raises(Exception, match="has no column nickname"):
        plan(con, sync_config(mapping={"CDP_Profile_Id__c": "profile_id", "LastName": "nickname"}))


def test_the_declared_syncs_load_and_build_gate_4_specs() -> None:
    syncs = load_syncs()
    assert set(syncs) == {"salesforce_contacts", "whatsapp_advisor_intro", "email_segment_lists"}
    assert [syncs[name].mode for name in syncs] == ["upsert", "insert", "mirror"]
    spec = syncs["salesforce_contacts"].spec()
    assert spec.match_key == "CDP_Profile_Id__c" and spec.fields["LastName"].required
    assert syncs["email_segment_lists"].relation == "activation.sync_email_segment_lists"


def test_bad_sync_declarations_are_reported_all_at_once() -> None:
    document = {"destinations": {"salesforce": {"daily_api_calls": -1}}, "syncs": [{
        "name": "crm", "model": "sync_crm", "destination": "salesforce", "object": "Contact", "mode": "mirrror",
        "match_key": "CDP_Profile_Id__c", "mapping": {"CDP_Profile_Id__c": "profile_id", "Nickname": "nick"},
        "schedule": "*/15 * * *", "colour": "red",
    }, {"name": "sms", "model": "m", "destination": "twilio", "object": "Message", "mode": "mirror",
        "match_key": "IdempotencyKey", "mapping": {"IdempotencyKey": "k", "To": "phone"}, "schedule": "@daily"}]}
    with pytest.raises(SyncConfigError) as error:
        parse_syncs(document, "reverse_etl/syncs.yml", check_models=False)
    message = str(error.value)
    for expected in (
        "reverse_etl/syncs.yml: destinations: salesforce: daily_api_calls: -1 is not a whole number >= 0",
        "reverse_etl/syncs.yml: sync crm: colour: unknown key; allowed: name, model",
        "reverse_etl/syncs.yml: sync crm: mode: 'mirrror' is not one of upsert, mirror, insert",
        "reverse_etl/syncs.yml: sync crm: mapping: Nickname (from column nick) is not a field of salesforce Contact",
        "reverse_etl/syncs.yml: sync crm: mapping: salesforce Contact requires LastName",
        "reverse_etl/syncs.yml: sync crm: schedule: '*/15 * * *' has 4 fields",
        "reverse_etl/syncs.yml: sync sms: mode: twilio supports insert, not mirror",
    ):
        assert expected in message, message


def test_deferred_records_are_neither_failures_nor_resent_nor_parked(con, tmp_path) -> None:
    payload(con, 100)
    deferred = {"p0000005", "p0000006"}
    crm = MemoryCRM(ApiBudget(con, "salesforce", None), defer_keys=deferred)
    sync = sync_config(max_record_attempts=1)  # a refusal would be parked after one run: a deferral never is
    first = run(con, sync, crm, tmp_path)
    assert (first.status, first.sent, first.succeeded, first.deferred, first.rejected, first.failed) == (
        "succeeded", 100, 98, 2, 0, 0)
    assert first.retried == 0 and crm.calls == 1  # not resent within the run
    assert rejected(con) == {key: ("QUIET_HOURS", 0) for key in deferred}  # the reason stays visible, no attempt
    row = audit(con, first)
    assert (row["deferred"], row["rejected"], row["failed"]) == (2, 0, 0)
    assert "deferred 2" in first.summary() and first.metadata()["deferred"] == 2

    second = run(con, sync, crm, tmp_path)  # offered again, deferred again, still not parked
    assert (second.planned_adds, second.parked, second.sent, second.deferred) == (2, 0, 2, 2)
    crm.defer_keys = set()
    third = run(con, sync, crm, tmp_path)
    assert (third.status, third.sent, third.succeeded, third.deferred) == ("succeeded", 2, 2, 0)
    assert rejected(con) == {} and len(state(con)) == 100 and set(crm.writes.values()) == {1}


def test_an_audit_table_from_before_the_deferred_column_gains_it(con, tmp_path) -> None:
    ensure_tables(con)
    con.execute("alter table reverse_etl.sync_runs drop column if exists deferred")  # a warehouse from before it
    con.execute("insert into reverse_etl.sync_runs (run_id, sync, destination, object, mode, started_at, status, "
                "dry_run) values ('old', 'contacts', 'salesforce', 'Contact', 'upsert', now(), 'succeeded', false)")
    payload(con, 10)
    result = run(con, sync_config(), MemoryCRM(defer_keys={"p0000001"}), tmp_path)
    rows = dict(con.execute("select run_id, deferred from reverse_etl.sync_runs").fetchall())
    assert rows == {"old": None, result.run_id: 1}


def test_check_failing_transiently_or_on_budget_ends_the_run_cleanly(con, tmp_path) -> None:
    payload(con, 10)
    down = MemoryCRM(check_error=RetryableError("HTTP 503 Service Unavailable"))
    result = run(con, sync_config(), down, tmp_path)
    assert (result.status, result.sent) == ("failed", 0)
    assert result.error == "salesforce unavailable (check): HTTP 503 Service Unavailable"
    assert audit(con, result)["status"] == "failed" and down.closed
    spent = MemoryCRM(check_error=BudgetExhausted("salesforce: daily API budget spent"))
    result = run(con, sync_config(), spent, tmp_path)
    assert (result.status, result.sent, result.error) == (
        "budget_exhausted", 0, "salesforce: salesforce: daily API budget spent")
    assert state(con) == {} and run(con, sync_config(), MemoryCRM(), tmp_path).succeeded == 10


def test_start_runs_first_and_its_api_calls_count_in_the_run(con, tmp_path) -> None:
    payload(con, 300)
    budget = ApiBudget(con, "salesforce", None)
    crm = MemoryCRM(budget, start_calls=3)
    result = run(con, sync_config(), crm, tmp_path)
    assert crm.started == 1 and result.api_calls == 3 + 2 == budget.used_today()  # start, then two batches
    assert audit(con, result)["api_calls"] == 5
    dry = run(con, sync_config(), crm, tmp_path, dry_run=True)
    assert crm.started == 1 and dry.api_calls == 0  # a dry run calls nothing
    crm.start_error = RetryableError("HTTP 429 Too Many Requests")
    failed = run(con, sync_config(), crm, tmp_path)
    assert (failed.status, failed.error) == ("failed", "salesforce unavailable (start): HTTP 429 Too Many Requests")


def test_email_custom_fields_declared_in_options_extend_the_catalogue() -> None:
    def email_sync(custom_fields: Any) -> dict[str, Any]:
        return {"name": "lists", "model": "m", "destination": "email", "object": "contacts", "mode": "mirror",
                "match_key": "membership_id", "schedule": "@hourly",
                "mapping": {"membership_id": "membership_id", "email": "email", "list_name": "segment",
                            "lifecycle_stage": "lifecycle_stage"},
                "options": {"custom_fields": custom_fields}}

    [sync] = parse_syncs({"syncs": [email_sync({"lifecycle_stage": "Text"})]}, check_models=False).values()
    assert sync.fields["lifecycle_stage"].type == "string" and "lifecycle_stage" in sync.spec().fields
    assert "lifecycle_stage" not in CATALOGUES["email"]["contacts"]  # for that sync only
    with pytest.raises(SyncConfigError) as error:
        parse_syncs({"syncs": [email_sync({"lifecycle_stage": "Float", "email": "Text"})]}, "syncs.yml",
                    check_models=False)
    message = str(error.value)
    assert "sync lists: options: custom_fields: lifecycle_stage: type 'Float' is not one of Text, Number, Date" \
        in message
    assert "sync lists: options: custom_fields: email is a field of email contacts already" in message
    assert "sync lists: mapping: lifecycle_stage (from column lifecycle_stage) is not a field of email contacts" \
        in message
