"""The email destination (reverse_etl/destinations/email.py) end to end: the real runner, a DuckDB warehouse holding
the email_segment_lists payload, and the SendGrid emulator on 127.0.0.1 (port 0) with faults injected."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from emulators.sendgrid import DEMO_API_KEY, SendGridEmulator
from orchestration.quality.gate_4 import LastSyncStore
from reverse_etl.base import ApiBudget, DestinationError, DestinationNotConfigured, Record
from reverse_etl.config import SyncConfig, load_syncs
from reverse_etl.destinations import DESTINATIONS, open_destination
from reverse_etl.destinations.email import (
    EmailDestination,
    SendGridClient,
    erase_subject,
    find_subject_contacts,
)
from reverse_etl.runner import RetryPolicy, SyncResult, plan, run_sync

SEGMENTS = {  # segment -> which profiles are members (i % modulus < members)
    "high_intent_mba_prospect": (2, 1),
    "alumni_engaged": (3, 1),
    "engaged_prospect": (5, 3),
}
PREFIX = "CDP: "
FAULTS = {"seed": 11, "rate_429": 0.03, "rate_5xx": 0.03, "drop_after_commit": 0.02, "rate_import_error": 0.01}
FAST = RetryPolicy(batch_attempts=8, record_attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=5.0)


def fast_sleep(seconds: float) -> None:
    """Waits the runner and the destination ask for, shortened: the emulator's faults are random, not load."""
    time.sleep(min(seconds, 0.03))


@pytest.fixture
def emu() -> Iterator[SendGridEmulator]:
    with SendGridEmulator(import_delay_seconds=0.02, faults={}) as emulator:
        yield emulator


@pytest.fixture
def env(emu: SendGridEmulator, monkeypatch: pytest.MonkeyPatch) -> SendGridEmulator:
    monkeypatch.setenv("SENDGRID_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("SENDGRID_API_BASE_URL", emu.url)
    return emu


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield connection
    connection.close()


def the_sync() -> SyncConfig:
    """The declared sync (batches of 10,000, the consent column re-checked), plus two custom fields, declared in its
    options and mapped like any field of the catalogue (reverse_etl/config.py adds them to it)."""
    declared = load_syncs()["email_segment_lists"]
    assert declared.mode == "mirror" and declared.options["list_prefix"] == PREFIX
    assert (declared.batch_size, declared.mapping["email_consent"]) == (10_000, "email_consent")
    sync = dataclasses.replace(
        declared,
        mapping={**declared.mapping, "lifecycle_stage": "lifecycle_stage", "engagement_score": "engagement_score"},
        options={**declared.options, "custom_fields": {"lifecycle_stage": "Text", "engagement_score": "Number"},
                 "poll_seconds": 0.02},
    )
    assert sync.fields["engagement_score"].type == "number"  # gate 4 checks the custom fields' values too
    return sync


def make_payload(con: duckdb.DuckDBPyConnection, profiles: int) -> None:
    """activation.sync_email_segment_lists as the dbt model builds it (one row per profile and email segment)."""
    segments = " union all ".join(f"select '{s}' as segment, {m} as modulus, {k} as members"
                                  for s, (m, k) in SEGMENTS.items())
    con.execute("create schema if not exists activation")
    con.execute(f"""
        create or replace table activation.sync_email_segment_lists as
        with profiles as (
            select i, 'p' || lpad(cast(i as varchar), 7, '0') as profile_id,
                'student' || i || '@uni.example.org' as email, 'First' || i as first_name, 'Last' || i as last_name,
                case i % 3 when 0 then 'inquiry' when 1 then 'applicant' else 'alumni' end as lifecycle_stage,
                cast(i % 100 as integer) as engagement_score,
                case when i % 7 = 0 then 'opted_in' else 'implied' end as email_consent
            from range({profiles}) as t(i)
        ),
        segments as ({segments})
        select p.profile_id || ':' || s.segment as membership_id, p.profile_id, s.segment, p.email, p.first_name,
            p.last_name, p.email_consent, p.lifecycle_stage, p.engagement_score
        from profiles as p
        inner join segments as s
            on p.i % s.modulus < s.members
    """)


def expected_lists(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute("""
        select segment, list(email order by email) from activation.sync_email_segment_lists
        where email_consent in ('opted_in', 'implied') group by segment
    """).fetchall()
    return {PREFIX + segment: emails for segment, emails in rows}


def emulator_lists(emu: SendGridEmulator) -> dict[str, list[str]]:
    names = sorted(li["name"] for li in emu.state()["lists"].values())
    return {name: emu.list_members(name) for name in names}


def run(con: duckdb.DuckDBPyConnection, sync: SyncConfig, tmp_path: Path) -> SyncResult:
    budget = ApiBudget(con, "email", None)
    destination = EmailDestination(sync, budget, sleep=fast_sleep)
    return run_sync(con, sync, destination, budget=budget, last_sync=LastSyncStore(tmp_path / "last_sync.json"),
                    policy=FAST, sleep=fast_sleep)


def converge(con: duckdb.DuckDBPyConnection, sync: SyncConfig, tmp_path: Path, runs: int = 5) -> list[SyncResult]:
    """Run until nothing is left to send (faults may leave a batch or a refused contact to the next run)."""
    results = []
    for _ in range(runs):
        results.append(run(con, sync, tmp_path))
        assert results[-1].status in ("succeeded", "partial"), results[-1].summary()
        if plan(con, sync).to_send == 0:
            return results
    raise AssertionError(f"still rows to send after {runs} runs: {[r.summary() for r in results]}")


def upsert_jobs(emu: SendGridEmulator) -> dict[str, dict[str, Any]]:
    return {jid: job for jid, job in emu.state()["jobs"].items() if job["job_type"] == "upsert"}


def rejected(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("select key, error_code from reverse_etl.sync_rejected").fetchall())


def test_mirror_sync_under_faults_matches_the_payload_exactly_then_sends_only_changes(env, con, tmp_path) -> None:
    emu = env
    sync = the_sync()
    make_payload(con, 36_000)
    memberships = con.execute("select count(*) from activation.sync_email_segment_lists").fetchone()[0]
    assert 45_000 <= memberships <= 60_000
    emu.set_faults(FAULTS)

    # first load with 429s, 5xx, answers lost after commit and contacts failing to import
    started = time.perf_counter()
    results = converge(con, sync, tmp_path)
    first_seconds = time.perf_counter() - started
    first = results[0]
    assert first.planned_adds == memberships and first.sent == memberships
    log = emu.requests_log()
    assert {429, 500, 503} <= {r["status"] for r in log} and any(r["dropped"] for r in log)
    assert any(job["results"]["errored_count"] for job in upsert_jobs(emu).values())
    assert sum(r.retried for r in results) > 0
    assert sum(r.succeeded for r in results) >= memberships

    # the lists hold exactly the payload's members; every contact exists once, with its fields
    assert emulator_lists(emu) == expected_lists(con)
    contacts = emu.contacts_by_email()
    profiles = dict(con.execute("""select email, any_value(profile_id) from activation.sync_email_segment_lists
                                   group by email""").fetchall())
    assert sorted(contacts) == sorted(profiles) and len(emu.state()["contacts"]) == len(profiles)
    sample = contacts["student21@uni.example.org"]
    assert (sample["external_id"], sample["first_name"], sample["last_name"]) == ("p0000021", "First21", "Last21")
    assert sample["custom_fields"] == {"lifecycle_stage": "inquiry", "engagement_score": 21}

    # nothing changed: nothing is sent, not one API call
    second = run(con, sync, tmp_path)
    assert (second.status, second.planned_adds, second.planned_updates, second.planned_deletes) == (
        "succeeded", 0, 0, 0)
    assert (second.sent, second.api_calls, second.unchanged) == (0, 0, memberships)

    # 1 % of the profiles change their name: only their memberships go, and only they reach SendGrid
    emu.set_faults({})
    con.execute("update activation.sync_email_segment_lists set first_name = first_name || 'x' "
                "where cast(substr(profile_id, 2) as integer) % 100 = 42")
    changed = con.execute("select count(*) from activation.sync_email_segment_lists "
                          "where first_name like '%x'").fetchone()[0]
    jobs_before = set(upsert_jobs(emu))
    third = run(con, sync, tmp_path)
    assert (third.status, third.planned_adds, third.planned_updates, third.planned_deletes) == (
        "succeeded", 0, changed, 0)
    assert third.sent == third.succeeded == changed
    new_jobs = [job for jid, job in upsert_jobs(emu).items() if jid not in jobs_before]
    assert sum(job["results"]["requested_count"] for job in new_jobs) == changed
    assert emu.contacts_by_email()["student42@uni.example.org"]["first_name"] == "First42x"
    assert emu.contacts_by_email()["student44@uni.example.org"]["first_name"] == "First44"

    # segment exits and a consent the model let through by mistake, with the faults back on
    emu.set_faults({**FAULTS, "seed": 12, "rate_import_error": 0})
    exits = [row[0] for row in con.execute("""
        select membership_id from activation.sync_email_segment_lists
        where segment = 'alumni_engaged' and cast(substr(profile_id, 2) as integer) % 300 = 0""").fetchall()]
    con.execute("delete from activation.sync_email_segment_lists where membership_id in "
                "(select unnest(?))", [exits])
    con.execute("update activation.sync_email_segment_lists set email_consent = 'opted_out' "
                "where profile_id in ('p0000004', 'p0000005')")
    withdrawn = {row[0] for row in con.execute("select membership_id from activation.sync_email_segment_lists "
                                               "where email_consent = 'opted_out'").fetchall()}
    fourth = run(con, sync, tmp_path)
    assert fourth.planned_deletes == len(exits) and fourth.planned_updates == len(withdrawn)
    assert fourth.status == "partial" and fourth.rejected == len(withdrawn)
    assert {k: c for k, c in rejected(con).items()} == dict.fromkeys(withdrawn, "NO_CONSENT")
    assert emulator_lists(emu) == expected_lists(con)
    assert "student300@uni.example.org" not in emu.list_members(PREFIX + "alumni_engaged")
    assert "student300@uni.example.org" in emu.list_members(PREFIX + "engaged_prospect")  # still on its other list
    assert "student4@uni.example.org" in emu.contacts_by_email()  # off the lists, not deleted
    fifth = run(con, sync, tmp_path)  # the refused rows are tried again (and refused again); nothing else moves
    assert (fifth.planned_deletes, fifth.planned_adds, fifth.sent, fifth.rejected) == (
        0, 0, len(withdrawn), len(withdrawn))
    assert emulator_lists(emu) == expected_lists(con)
    print(f"\n{memberships:,} memberships of {len(profiles):,} contacts: first load {first_seconds:.1f} s in "
          f"{len(results)} run(s), {sum(r.api_calls for r in results):,} API calls, "
          f"{sum(r.retried for r in results):,} records retried; 1 % change: {third.api_calls} API calls")


def test_refused_contacts_are_reported_per_record_and_the_others_delivered(env, con, tmp_path) -> None:
    emu = env
    sync = the_sync()
    make_payload(con, 300)
    # an address SendGrid refuses (gate 4 lets it through) and, after a first run, an email change of a profile:
    # SendGrid refuses updates that drop an identifier the contact has (the email)
    con.execute("update activation.sync_email_segment_lists set email = 'ab..cd@uni.example.org' "
                "where profile_id = 'p0000030'")
    first = run(con, sync, tmp_path)
    assert first.status == "partial" and first.rejected == 3  # p0000030 is in all three segments
    assert set(rejected(con).values()) == {"INVALID_EMAIL"}
    con.execute("update activation.sync_email_segment_lists set email = 'new.address@uni.example.org' "
                "where profile_id = 'p0000020'")
    second = run(con, sync, tmp_path)
    codes = rejected(con)
    assert {k for k, c in codes.items() if c == "IDENTIFIER_CONFLICT"} == {
        "p0000020:high_intent_mba_prospect", "p0000020:engaged_prospect"}
    assert second.succeeded == 0 and second.rejected == 5
    message = con.execute("select message from reverse_etl.sync_rejected where key = 'p0000020:engaged_prospect'"
                          ).fetchone()[0]
    assert "identifiers" in message and "SendGrid import" in message
    assert "student20@uni.example.org" in emu.list_members(PREFIX + "engaged_prospect")  # the old contact stays
    assert "ab..cd@uni.example.org" not in emu.contacts_by_email()


def test_erase_subject_deletes_the_contacts_and_the_sweep_finds_none(env, con, tmp_path) -> None:
    emu = env
    sync = the_sync()
    make_payload(con, 60)
    converge(con, sync, tmp_path)
    emu.set_faults({"seed": 3, "rate_429": 0.2, "rate_5xx": 0.2, "drop_after_commit": 0.3})
    client = SendGridClient.from_env(sleep=fast_sleep)
    try:
        subject = ["Student6@uni.example.org"]  # as a person writes it; SendGrid stores emails lower-cased
        assert len(find_subject_contacts(client, subject, ["p0000008"])) == 2
        assert erase_subject(client, subject, ["p0000008"]) == 2
        assert find_subject_contacts(client, subject, ["p0000008"]) == set()
        assert erase_subject(client, subject, ["p0000008"]) == 0
    finally:
        client.close()
    contacts = emu.contacts_by_email()
    assert "student6@uni.example.org" not in contacts and "student8@uni.example.org" not in contacts
    assert "student7@uni.example.org" in contacts
    assert "student6@uni.example.org" not in emu.list_members(PREFIX + "high_intent_mba_prospect")
    # a mirror delete of an erased contact's membership is a success (the membership is gone with it)
    emu.set_faults({})
    con.execute("delete from activation.sync_email_segment_lists where profile_id = 'p0000006'")
    result = run(con, sync, tmp_path)
    assert (result.status, result.planned_deletes, result.succeeded) == ("succeeded", 3, 3)


def test_configuration_and_credential_errors_are_clear(emu, con, tmp_path, monkeypatch) -> None:
    sync = the_sync()
    make_payload(con, 30)
    budget = ApiBudget(con, "email", None)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    with pytest.raises(DestinationNotConfigured, match="SENDGRID_API_KEY"):
        open_destination(sync, budget)
    assert DESTINATIONS["email"] is EmailDestination

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    monkeypatch.setenv("SENDGRID_API_BASE_URL", emu.url)
    destination = open_destination(sync, budget)
    result = run_sync(con, sync, destination, budget=budget, policy=FAST, sleep=fast_sleep)
    assert result.status == "failed" and "HTTP 401" in result.error and "SENDGRID_API_KEY" in result.error
    assert result.sent == 0 and emu.state()["contacts"] == {}

    monkeypatch.setenv("SENDGRID_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("SENDGRID_API_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    unreachable = EmailDestination(sync, budget, sleep=fast_sleep)
    with pytest.raises(DestinationError, match=r"not answering.*SENDGRID_API_BASE_URL"):
        unreachable.check()
    unreachable.close()
    monkeypatch.setenv("SENDGRID_API_BASE_URL", "api.sendgrid.com")
    with pytest.raises(DestinationError, match="not an http"):
        EmailDestination(sync, budget)
    bad_fields = dataclasses.replace(sync, options={"custom_fields": {"email": "Text", "score": "Float"}})
    monkeypatch.setenv("SENDGRID_API_BASE_URL", emu.url)
    with pytest.raises(DestinationError, match=r"reserved.*Float"):
        EmailDestination(bad_fields, budget)


def test_a_large_list_is_split_into_requests_within_the_api_limits(env, con) -> None:
    """35,000 members of one list with long fields (~8 MB as JSON): more than one PUT may carry (30,000 contacts,
    6 MB), so the destination sends several, each accepted (no 400/413), and every member lands on the list."""
    emu = env
    sync = dataclasses.replace(the_sync(), batch_size=None)
    destination = EmailDestination(sync, ApiBudget(con, "email", None), sleep=fast_sleep)
    assert destination.max_batch("contacts", "mirror") == 30_000
    records = [
        Record(key=f"p{i:07d}:alumni_engaged", row_hash="h", fields={
            "membership_id": f"p{i:07d}:alumni_engaged", "email": f"a.rather.long.address.{i}@uni.example.org",
            "first_name": "F" * 50, "last_name": "L" * 50, "external_id": f"p{i:07d}", "list_name": "alumni_engaged",
            "email_consent": "implied", "lifecycle_stage": "alumni" * 10, "engagement_score": 12.5})
        for i in range(35_000)
    ]
    try:
        destination.check()
        results = destination.write("contacts", records[:30_000], "mirror")
        results += destination.write("contacts", records[30_000:], "mirror")
    finally:
        destination.close()
    assert all(r.ok for r in results) and len(results) == 35_000
    list_id = next(iter(emu.state()["lists"]))
    assert {r.destination_id for r in results[:2]} == {f"{list_id}/external_id:p0000000",
                                                       f"{list_id}/external_id:p0000001"}
    puts = [r for r in emu.requests_log() if r["method"] == "PUT"]
    assert len(puts) == 3 and {r["status"] for r in puts} == {202}  # 30,000 records (~7 MB) took two requests
    assert len(emu.list_members(PREFIX + "alumni_engaged")) == 35_000
    assert emu.contacts_by_email()["a.rather.long.address.7@uni.example.org"]["custom_fields"] == {
        "lifecycle_stage": "alumni" * 10, "engagement_score": 12.5}
