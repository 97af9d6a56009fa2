"""The Salesforce destination through the real runner, against the Salesforce emulator on 127.0.0.1 (port 0), with
the real simple-salesforce SDK: a DuckDB file in tmp_path holds a payload table shaped like
activation.sync_salesforce_contacts, the declared sync salesforce_contacts reads it, and every assertion compares the
emulator's Contacts with the payload."""

from __future__ import annotations

import dataclasses
import math
import re
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from emulators.salesforce import SalesforceEmulator
from orchestration.quality.gate_4 import LastSyncStore
from reverse_etl.base import ApiBudget, DestinationError, DestinationNotConfigured, Record
from reverse_etl.config import SyncConfig, load_syncs
from reverse_etl.destinations import open_destination
from reverse_etl.destinations.salesforce import (
    SalesforceDestination,
    connect_from_env,
    erase_subject,
    subject_record_ids,
)
from reverse_etl.runner import RetryPolicy, SyncResult, run_sync

# 20k keeps this file under a minute; the 100k contacts are timed by benchmarks/reverse_etl_salesforce.py
ROWS = 20_000
FAULTS = {"seed": 7, "rate_lock": 0.05, "rate_5xx": 0.05, "rate_429": 0.05, "drop_after_commit": 0.05}
# More attempts than the default policy, so that one run outlasts 20 % faults (0.05^6 per record); no real waiting.
POLICY = RetryPolicy(batch_attempts=10, record_attempts=6, base_delay=0.001, max_delay=0.005)
ENV = ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD",
       "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_DOMAIN", "SALESFORCE_DAILY_API_BUDGET")
FIELDS = ("FirstName", "LastName", "Email", "MobilePhone", "CDP_Lifecycle_Stage__c", "CDP_Engagement_Score__c",
          "CDP_Segments__c", "CDP_Last_Seen_At__c", "HasOptedOutOfEmail", "CDP_Email_Consent__c",
          "CDP_WhatsApp_Consent__c")


@pytest.fixture
def emu() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(bulk_processing_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def token_env(env: pytest.MonkeyPatch, emu: SalesforceEmulator) -> None:
    env.setenv("SALESFORCE_INSTANCE_URL", emu.url)
    env.setenv("SALESFORCE_ACCESS_TOKEN", emu.access_token)


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def payload(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """activation.sync_salesforce_contacts as the dbt model shapes it (types, nulls, consent text)."""
    con.execute("create schema if not exists activation")
    con.execute(f"""
        create or replace table activation.sync_salesforce_contacts as
        select
            'p' || lpad(cast(i as varchar), 9, '0') as profile_id,
            case when i % 7 = 0 then null else 'First' || i end as first_name,
            case when i % 11 = 0 then '[not provided]' else 'Last' || i end as last_name,
            case when i % 13 = 0 then null else 'student' || i || '@uni.example.org' end as email,
            case when i % 5 = 0 then null else '+4477' || lpad(cast(i as varchar), 8, '0') end as phone,
            (['inquiry', 'applicant', 'enrolled', 'active', 'alumni'])[i % 5 + 1] as lifecycle_stage,
            round((i % 1000) / 10.0, 1)::double as engagement_score,
            case when i % 3 = 0 then null when i % 3 = 1 then 'high_intent_mba_prospect'
                else 'high_intent_mba_prospect;recent_applicant' end as segments,
            timestamp '2026-01-01 08:00:00' + to_seconds(i * 37) as last_seen_at,
            i % 4 = 0 as has_opted_out_of_email,
            (['opted_in', 'implied', 'opted_out', 'unknown'])[i % 4 + 1] as email_consent,
            (['opted_in', 'unknown', 'opted_out'])[i % 3 + 1] as whatsapp_consent
        from range({rows}) as t(i)
    """)


def expected(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """The payload as the emulator stores it (doubles rounded to 2 places, datetimes in REST format)."""
    sync = contacts_sync()
    cursor = con.execute("select * from activation.sync_salesforce_contacts")
    names = [d[0] for d in cursor.description]
    result = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        record = {field: row[column] for field, column in sync.mapping.items()}
        record["CDP_Engagement_Score__c"] = round(record["CDP_Engagement_Score__c"], 2)
        moment: datetime = record["CDP_Last_Seen_At__c"]
        record["CDP_Last_Seen_At__c"] = moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        result[row["profile_id"]] = record
    return result


def emulator_contacts(emu: SalesforceEmulator) -> dict[str, dict[str, Any]]:
    contacts: dict[str, dict[str, Any]] = {}
    for record in emu.records("Contact"):
        key = record["CDP_Profile_Id__c"]
        assert key not in contacts, f"{key} is on two Contacts"
        contacts[key] = record
    return contacts


def assert_emulator_equals_payload(emu: SalesforceEmulator, con: duckdb.DuckDBPyConnection) -> None:
    want = expected(con)
    have = emulator_contacts(emu)
    assert sorted(have) == sorted(want)
    for key, record in want.items():
        got = {field: have[key][field] for field in record}
        assert got == record, key
    # the runner stored each Contact's Id
    stored = dict(con.execute("select key, destination_id from reverse_etl.sync_state where sync = ?",
                              ["salesforce_contacts"]).fetchall())
    assert stored == {key: record["Id"] for key, record in have.items()}


def contacts_sync(**changes: Any) -> SyncConfig:
    return dataclasses.replace(load_syncs()["salesforce_contacts"], **changes)


DECLARED = load_syncs()["salesforce_contacts"]
# the declared sync: Bulk API 2.0 for large batches (jobs of 10,000; 2,000 or fewer go through Collections), polled
# often (the emulator finishes a job in 0.05 s)
BULK = contacts_sync(options={**DECLARED.options, "bulk_poll_seconds": 0.05})
# sObject Collections only, 200 records per call
COMPOSITE = contacts_sync(batch_size=200, options={"api": "composite"})


def run(con: duckdb.DuckDBPyConnection, sync: SyncConfig, tmp_path: Path, budget: ApiBudget | None = None,
        **kwargs: Any) -> SyncResult:
    budget = budget or ApiBudget(con, "salesforce", sync.daily_api_calls)
    destination = open_destination(sync, budget)
    return run_sync(con, sync, destination, budget=budget, last_sync=LastSyncStore(tmp_path / "last_sync.json"),
                    policy=POLICY, **kwargs)


def api_usage(emu: SalesforceEmulator) -> int:
    return int(emu.state()["api_usage"])


def modstamps(emu: SalesforceEmulator) -> dict[str, str]:
    return {r["CDP_Profile_Id__c"]: r["SystemModstamp"] for r in emu.records("Contact")}


# ---- end to end, with faults


def upsert_jobs(emu: SalesforceEmulator) -> list[dict[str, Any]]:
    return [job for job in emu.state()["jobs"].values() if job["operation"] == "upsert"]


def test_20k_contacts_with_20_percent_faults_arrive_once_then_nothing_then_exactly_the_changes(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    payload(con, ROWS)
    emu.set_faults(FAULTS)
    first = run(con, BULK, tmp_path)
    assert first.status == "succeeded", first.summary()
    assert (first.sent, first.succeeded, first.rejected) == (ROWS, ROWS, 0)
    assert first.retried > 0  # the faults were hit (locks, 5xx, 403 limits, dropped connections)
    assert_emulator_equals_payload(emu, con)
    jobs = upsert_jobs(emu)
    assert sum(job["numberRecordsProcessed"] for job in jobs if job["state"] == "JobComplete") >= ROWS
    assert any(job["numberRecordsFailed"] for job in jobs)  # locked rows: read from failedResults, resent
    # every API call was counted before it was made: the budget saw what the emulator served
    assert first.api_calls == api_usage(emu)

    emu.set_faults(None)
    before, stamps = api_usage(emu), modstamps(emu)
    second = run(con, BULK, tmp_path)
    assert (second.status, second.sent, second.unchanged) == ("succeeded", 0, ROWS)
    assert api_usage(emu) == before and modstamps(emu) == stamps  # nothing sent, not even a describe

    changed = {row[0] for row in con.execute(
        "update activation.sync_salesforce_contacts set engagement_score = engagement_score + 1, "
        "email_consent = 'opted_out' where cast(substr(profile_id, 2) as int) % 100 = 42 returning profile_id"
    ).fetchall()}
    assert len(changed) == ROWS // 100
    third = run(con, BULK, tmp_path)
    assert (third.status, third.planned_updates, third.sent, third.succeeded) == (
        "succeeded", len(changed), len(changed), len(changed))
    after = modstamps(emu)
    assert {key for key in after if after[key] != stamps[key]} == changed  # exactly those Contacts were written
    # 1 % of the rows (up to 2,000) is no bulk job: describe + Collections calls of 200
    assert api_usage(emu) - before == third.api_calls == 1 + math.ceil(len(changed) / 200)
    assert len(upsert_jobs(emu)) == len(jobs)
    assert_emulator_equals_payload(emu, con)

    # None in a bulk upsert clears the field (#N/A): an empty cell would have left the old value
    con.execute("update activation.sync_salesforce_contacts set email = null, first_name = null "
                "where cast(substr(profile_id, 2) as int) < 2500")
    cleared = run(con, BULK, tmp_path)
    assert cleared.succeeded == 2_500 - len([i for i in range(2_500) if i % 7 == 0 and i % 13 == 0])
    [job] = upsert_jobs(emu)[len(jobs):]
    assert (job["state"], job["numberRecordsProcessed"], job["numberRecordsFailed"]) == (
        "JobComplete", cleared.succeeded, 0)
    assert_emulator_equals_payload(emu, con)


def test_the_declared_sync_is_bulk_above_2000_rows_and_collections_below(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    assert (DECLARED.batch_size, DECLARED.options["api"]) == (None, "bulk2")
    token_env(env, emu)
    payload(con, 2_500)
    first = run(con, BULK, tmp_path)
    assert (first.status, first.succeeded) == ("succeeded", 2_500)
    [job] = upsert_jobs(emu)
    assert (job["state"], job["numberRecordsProcessed"]) == ("JobComplete", 2_500)
    con.execute("update activation.sync_salesforce_contacts set engagement_score = engagement_score + 1 "
                "where cast(substr(profile_id, 2) as int) < 2000")
    before = api_usage(emu)
    second = run(con, BULK, tmp_path)
    assert (second.sent, second.succeeded) == (2_000, 2_000) and len(upsert_jobs(emu)) == 1  # no second job
    assert api_usage(emu) - before == second.api_calls == 1 + 10  # describe + 10 Collections calls of 200
    assert_emulator_equals_payload(emu, con)


def test_collections_only_with_faults_delivers_every_contact_once(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    rows = 5_000
    payload(con, rows)
    emu.set_faults(FAULTS)
    sync = COMPOSITE
    first = run(con, sync, tmp_path)
    assert first.status == "succeeded", first.summary()
    assert (first.sent, first.succeeded, first.retried > 0) == (rows, rows, True)
    assert first.api_calls == api_usage(emu) > rows // 200
    assert emu.state()["jobs"] == {}
    assert_emulator_equals_payload(emu, con)
    emu.set_faults(None)
    assert run(con, sync, tmp_path).sent == 0


def test_mirror_deletes_by_the_stored_id_despite_faults(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    payload(con, 1_000)
    sync = contacts_sync(mode="mirror")
    assert run(con, sync, tmp_path).succeeded == 1_000
    ids = {r["CDP_Profile_Id__c"]: r["Id"] for r in emu.records("Contact")}
    removed = {row[0] for row in con.execute(
        "delete from activation.sync_salesforce_contacts where cast(substr(profile_id, 2) as int) % 20 = 0 "
        "returning profile_id").fetchall()}
    emu.set_faults(seed=3, rate_5xx=0.2, drop_after_commit=0.2)
    result = run(con, sync, tmp_path)
    assert (result.status, result.planned_deletes, result.succeeded) == ("succeeded", 50, 50)
    assert set(emu.state()["deleted"]["Contact"]) == {ids[key] for key in removed}
    emu.set_faults(None)
    assert_emulator_equals_payload(emu, con)


# ---- wrong input, wrong credentials, budget


def test_values_salesforce_refuses_fail_those_records_only(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """Values gate 4 lets through but Salesforce refuses: each record is refused with Salesforce's code and the field
    named, the others are delivered, and the run does not fail."""
    token_env(env, emu)
    payload(con, 30)
    con.execute("update activation.sync_salesforce_contacts set email = 'student,1@uni.example.org' "
                "where profile_id = 'p000000001'")
    con.execute("update activation.sync_salesforce_contacts set engagement_score = 1e17 "
                "where profile_id = 'p000000002'")
    result = run(con, COMPOSITE, tmp_path)
    assert (result.status, result.sent, result.succeeded, result.rejected) == ("partial", 30, 28, 2)
    refused = dict(con.execute("select key, error_code || ': ' || message from reverse_etl.sync_rejected").fetchall())
    assert refused == {
        "p000000001": "INVALID_EMAIL_ADDRESS: Email: invalid email address: student,1@uni.example.org (Email)",
        "p000000002": "NUMBER_OUTSIDE_VALID_RANGE: CDP Engagement Score: value outside of valid range on numeric "
                      "field: 1e+17 (CDP_Engagement_Score__c)",
    }
    contacts = emulator_contacts(emu)
    assert len(contacts) == 28 and contacts["p000000003"]["CDP_Email_Consent__c"] == "unknown"  # consent as text


def test_a_value_the_field_cannot_take_is_refused_before_the_call(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection) -> None:
    """Text for a checkbox (an org whose fields differ from the catalogue): that record is refused with Salesforce's
    INVALID_TYPE_ON_FIELD_IN_RECORD, instead of a JSON_PARSER_ERROR failing the whole call."""
    token_env(env, emu)
    destination = SalesforceDestination(COMPOSITE, ApiBudget(con, "salesforce", None))
    good = {"CDP_Profile_Id__c": "p1", "LastName": "A", "HasOptedOutOfEmail": True, "CDP_Email_Consent__c": "implied"}
    bad = {**good, "CDP_Profile_Id__c": "p2", "HasOptedOutOfEmail": "maybe"}
    results = {r.key: r for r in destination.write("Contact", [Record("p1", good, "h"), Record("p2", bad, "h")],
                                                   "upsert")}
    assert results["p1"].ok and not results["p2"].ok
    assert (results["p2"].error_code, results["p2"].message) == (
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "Email Opt Out: value not of required type: maybe (HasOptedOutOfEmail is a boolean field)")
    [contact] = emu.records("Contact")
    assert (contact["CDP_Profile_Id__c"], contact["HasOptedOutOfEmail"], contact["CDP_Email_Consent__c"]) == (
        "p1", True, "implied")
    destination.close()


def test_a_row_lock_on_every_attempt_rejects_with_salesforce_code_and_the_next_run_delivers(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    payload(con, 50)
    emu.set_faults(rate_lock=1.0)
    result = run(con, COMPOSITE, tmp_path)
    assert (result.status, result.succeeded, result.rejected) == ("partial", 0, 50)
    assert result.retried == 50 * (POLICY.record_attempts - 1)  # UNABLE_TO_LOCK_ROW is retried within the run
    codes = con.execute("select distinct error_code, message from reverse_etl.sync_rejected").fetchall()
    assert codes == [("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records")]
    emu.set_faults(None)
    assert run(con, COMPOSITE, tmp_path).succeeded == 50
    assert con.execute("select count(*) from reverse_etl.sync_rejected").fetchone() == (0,)
    assert_emulator_equals_payload(emu, con)


def test_bad_token_fails_the_run_with_salesforce_message_and_sends_nothing(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    env.setenv("SALESFORCE_INSTANCE_URL", emu.url)
    env.setenv("SALESFORCE_ACCESS_TOKEN", "00Dexpired")
    payload(con, 10)
    result = run(con, contacts_sync(), tmp_path)
    assert result.status == "failed"
    assert "HTTP 401 INVALID_SESSION_ID: Session expired or invalid" in result.error
    assert "SALESFORCE_ACCESS_TOKEN" in result.error and emu.records("Contact") == []


def test_an_unreachable_instance_fails_the_run_with_a_clear_message(
        env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env.setenv("SALESFORCE_INSTANCE_URL", f"http://127.0.0.1:{port}")
    env.setenv("SALESFORCE_ACCESS_TOKEN", "token")
    payload(con, 10)
    result = run(con, contacts_sync(), tmp_path)
    assert result.status == "failed" and "Salesforce describe Contact: connection lost (ConnectionError" in result.error
    assert con.execute("select count(*) from reverse_etl.sync_state").fetchone() == (0,)


def test_missing_or_partial_configuration_names_the_variables(env: pytest.MonkeyPatch) -> None:
    sync = contacts_sync()
    with pytest.raises(DestinationNotConfigured, match="set SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN, or "
                                                       "SALESFORCE_USERNAME, SALESFORCE_PASSWORD and "
                                                       "SALESFORCE_SECURITY_TOKEN"):
        SalesforceDestination(sync)
    env.setenv("SALESFORCE_USERNAME", "cdp@example.com")
    with pytest.raises(DestinationNotConfigured, match="SALESFORCE_PASSWORD, SALESFORCE_SECURITY_TOKEN missing"):
        connect_from_env()
    env.setenv("SALESFORCE_ACCESS_TOKEN", "x")
    with pytest.raises(DestinationNotConfigured, match="SALESFORCE_INSTANCE_URL is not"):
        connect_from_env()
    env.setenv("SALESFORCE_INSTANCE_URL", "ftp://example")
    with pytest.raises(DestinationError, match="is not a URL"):
        connect_from_env()
    env.setenv("SALESFORCE_INSTANCE_URL", "https://example.my.salesforce.com")
    env.setenv("SALESFORCE_DAILY_API_BUDGET", "lots")
    with pytest.raises(DestinationError, match="SALESFORCE_DAILY_API_BUDGET='lots' is not a whole number"):
        SalesforceDestination(sync)
    with pytest.raises(DestinationError, match=re.escape("options.api 'soap' is not one of composite, bulk2")):
        SalesforceDestination(contacts_sync(options={"api": "soap"}))


def test_username_login_through_the_login_host_and_a_refused_login(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    env.setenv("SALESFORCE_INSTANCE_URL", emu.url)  # http: the login host is sent there too
    env.setenv("SALESFORCE_USERNAME", "cdp@example.com")
    env.setenv("SALESFORCE_PASSWORD", "password")
    env.setenv("SALESFORCE_SECURITY_TOKEN", "token")
    env.setenv("SALESFORCE_DOMAIN", "test")
    sf = connect_from_env()
    assert sf.session_id != emu.access_token and sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    payload(con, 300)
    assert run(con, contacts_sync(), tmp_path).succeeded == 300
    assert_emulator_equals_payload(emu, con)
    env.setenv("SALESFORCE_SECURITY_TOKEN", "wrong")
    with pytest.raises(DestinationError, match=r"login refused \(INVALID_LOGIN: Invalid username, password, "
                                               r"security token.*SALESFORCE_DOMAIN \(now 'test'\)"):
        connect_from_env()


def test_the_daily_budget_stops_the_run_cleanly_and_counts_what_the_org_counts(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    env.setenv("SALESFORCE_DAILY_API_BUDGET", "4")  # lower than syncs.yml's daily_api_calls: this one applies
    payload(con, 5_000)
    budget = ApiBudget(con, "salesforce", 50_000)
    result = run(con, COMPOSITE, tmp_path, budget=budget)
    assert result.status == "budget_exhausted" and "SALESFORCE_DAILY_API_BUDGET" in result.error
    assert result.api_calls == 4 == api_usage(emu) == budget.used_today()  # describe + 3 upserts
    assert result.succeeded == 600 and len(emu.records("Contact")) == 600
    # a bulk job is not started without the calls it needs
    env.setenv("SALESFORCE_DAILY_API_BUDGET", "9")
    bulk = contacts_sync(batch_size=None, options={"api": "bulk2"})
    result = run(con, bulk, tmp_path, budget=budget)
    assert result.status == "budget_exhausted" and "a Bulk API job needs at least 7" in result.error
    assert api_usage(emu) == 5 and emu.state()["jobs"] == {}  # only the describe
    env.setenv("SALESFORCE_DAILY_API_BUDGET", "5")  # spent before the first call: stops cleanly, calls nothing
    result = run(con, COMPOSITE, tmp_path, budget=budget)
    assert (result.status, result.api_calls, api_usage(emu)) == ("budget_exhausted", 0, 5)


def test_an_org_out_of_api_requests_ends_the_run_as_budget_exhausted(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    emu.set_faults(daily_api_limit=3)
    payload(con, 1_000)
    result = run(con, COMPOSITE, tmp_path)
    assert result.status == "budget_exhausted" and "TotalRequests Limit exceeded" in result.error
    assert result.succeeded == 400


# ---- erasure


def test_erase_subject_deletes_the_contacts_found_by_profile_id_or_email(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    payload(con, 100)
    run(con, contacts_sync(), tmp_path)
    emu.seed_records("Contact", [{"LastName": "O'Brien", "Email": "student7@uni.example.org"}])  # made in the CRM
    sf = connect_from_env()
    found = subject_record_ids(sf, ["student7@uni.example.org"], ["p000000007", "p000000008"])
    assert len(found["Contact"]) == 3
    assert erase_subject(sf, ["student7@uni.example.org"], ["p000000007", "p000000008"]) == 3
    assert subject_record_ids(sf, ["student7@uni.example.org"], ["p000000007", "p000000008"]) == {"Contact": []}
    assert erase_subject(sf, ["student7@uni.example.org"], ["p000000007"]) == 0  # gone already: nothing to do
    assert len(emu.records("Contact")) == 98
    assert erase_subject(sf, ["x'); DELETE"], []) == 0  # quoted in SOQL


def test_delete_without_a_stored_id_finds_it_by_the_match_key(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    token_env(env, emu)
    first, third = emu.seed_records("Contact", [{"LastName": "A", "CDP_Profile_Id__c": "p1"},
                                                {"LastName": "C", "CDP_Profile_Id__c": "p3"}])
    destination = SalesforceDestination(contacts_sync(mode="mirror"), ApiBudget(con, "salesforce", None))
    results = destination.delete("Contact", [
        Record("p1", {"CDP_Profile_Id__c": "p1"}, "h"), Record("p2", {"CDP_Profile_Id__c": "p2"}, "h"),
        Record("p3", {"CDP_Profile_Id__c": "p3"}, "h", destination_id=third)])
    assert sorted((r.key, r.ok) for r in results) == [("p1", True), ("p2", True), ("p3", True)]
    assert sorted(emu.state()["deleted"]["Contact"]) == sorted([first, third]) and emu.records("Contact") == []
    destination.close()


def test_check_names_missing_fields_and_a_match_key_that_is_no_external_id(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection) -> None:
    token_env(env, emu)
    budget = ApiBudget(con, "salesforce", None)
    mapping = {"Email": "email", "LastName": "last_name", "Nickname__c": "nick"}
    destination = SalesforceDestination(contacts_sync(match_key="Email", mapping=mapping), budget)
    with pytest.raises(DestinationError) as error:
        destination.check()
    assert "Contact has no field Nickname__c (create it in Setup" in str(error.value)
    assert "Contact.Email is not an External ID field" in str(error.value)
    SalesforceDestination(contacts_sync(), budget).check()
    assert budget.used_today() == 2 == api_usage(emu)  # one describe each


# ---- the Dagster asset: gate 4 blocks the sync


def test_the_sync_asset_sends_when_gate_4_passes_and_nothing_when_it_fails(
        emu: SalesforceEmulator, env: pytest.MonkeyPatch, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    import dagster as dg

    from orchestration.defs.activation import build_sync_asset
    from orchestration.defs.dbt import warehouse_lock

    token_env(env, emu)
    path = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()[0]
    env.setenv("CDP_HOME", str(tmp_path))
    env.setenv("CDP_WAREHOUSE_PATH", path)
    payload(con, 50)
    con.close()  # the asset opens the warehouse itself, under the warehouse lock
    asset = build_sync_asset(DECLARED)

    def materialize() -> dg.ExecuteInProcessResult:
        return dg.materialize([asset], resources={"warehouse_lock": warehouse_lock}, raise_on_error=False)

    passed = materialize()
    assert passed.success
    [check] = passed.get_asset_check_evaluations()
    assert check.check_name == "gate_4_salesforce_contacts" and check.passed
    assert len(emu.records("Contact")) == 50

    # an email in a name field: gate 4 fails, the step fails like gates 1-3, and nothing is sent
    with duckdb.connect(path) as warehouse:
        warehouse.execute("update activation.sync_salesforce_contacts set first_name = 'ana@example.org', "
                          "engagement_score = 1 where profile_id = 'p000000003'")
    before = {r["CDP_Profile_Id__c"]: r["SystemModstamp"] for r in emu.records("Contact")}
    blocked = materialize()
    assert not blocked.success
    [check] = blocked.get_asset_check_evaluations()
    assert not check.passed and check.metadata["failed"].value.count("first_name") >= 1
    [materialization] = blocked.asset_materializations_for_node(asset.node_def.name)
    assert materialization.metadata["status"].value == "blocked"
    assert {r["CDP_Profile_Id__c"]: r["SystemModstamp"] for r in emu.records("Contact")} == before
    with duckdb.connect(path, read_only=True) as warehouse:
        statuses = [r[0] for r in warehouse.execute(
            "select status from reverse_etl.sync_runs order by started_at").fetchall()]
    assert statuses == ["succeeded", "blocked"]
