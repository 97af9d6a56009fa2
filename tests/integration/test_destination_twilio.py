"""The Twilio destination driven by the real runner against the Twilio emulator (real HTTP, real twilio Client).

Each test starts the emulator on a free port, points the destination at it with TWILIO_* variables, writes a payload
table shaped like dbt's activation.sync_whatsapp_advisor_intro into a DuckDB file in tmp_path, and runs the sync with
reverse_etl.runner.run_sync: what the emulator holds is compared with the payload, message by message.

Quiet hours depend on the wall clock, so the tests pick fixed-offset zones (Etc/GMT±N) where it is now midday or
night, instead of faking time (reconciliation compares Twilio's real timestamps with the intent's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from emulators.twilio import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_TEMPLATE,
    DEMO_TEMPLATE_SID,
    DEMO_WHATSAPP_SENDER,
    TwilioEmulator,
)
from reverse_etl.base import ApiBudget, DestinationError, DestinationNotConfigured
from reverse_etl.config import SyncConfig, load_syncs
from reverse_etl.destinations import open_destination
from reverse_etl.destinations.twilio import (
    MESSAGE_SENDS,
    TwilioDestination,
    in_quiet_hours,
    parse_quiet_hours,
    profile_timezone,
    twilio_client,
)
from reverse_etl.runner import RetryPolicy, SyncResult, run_sync
from reverse_etl.state import REJECTED, STATE

CONTENT_SID = DEMO_TEMPLATE_SID  # what syncs.yml declares: the emulator's demo template
TEMPLATE_TEXT = DEMO_TEMPLATE["types"]["twilio/text"]["body"]
FAST = RetryPolicy(batch_attempts=10, record_attempts=2, base_delay=0.0, max_delay=0.0, jitter=0.0)


def zone_at(hour: int) -> str:
    """A fixed-offset zone where the local hour is now `hour` (Etc/GMT-5 is UTC+5)."""
    offset = ((hour - datetime.now(UTC).hour + 12) % 24) - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


DAY, NIGHT = zone_at(12), zone_at(23)


def body(name: str, programme: str = "MBA") -> str:
    """The text the model writes into `body` (sync_whatsapp_advisor_intro.sql), which the template renders too."""
    return TEMPLATE_TEXT.replace("{{1}}", name).replace("{{2}}", programme)


def row(key: str, profile: str, phone: str, name: str, consent: str | None = "opted_in",
        timezone: str | None = DAY, country: str | None = None, variables: dict[str, str] | None = None
        ) -> tuple[Any, ...]:
    return (key, profile, phone, body(name), json.dumps(variables or {"1": name, "2": "MBA"}),
            datetime(2025, 1, 1), consent, timezone, country)


@pytest.fixture
def emu() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(callback_delay_seconds=0.02) as emulator:
        yield emulator


@pytest.fixture
def env(emu: TwilioEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEMO_ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEMO_AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_FROM_WHATSAPP", DEMO_WHATSAPP_SENDER)
    monkeypatch.setenv("TWILIO_API_BASE_URL", emu.url)
    monkeypatch.delenv("TWILIO_QUIET_HOURS", raising=False)  # the sync's own quiet hours, not the shell's override


@contextlib.contextmanager
def warehouse_with_payload_table(folder: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB file with an empty activation.sync_whatsapp_advisor_intro (the model's columns, plus timezone)."""
    connection = duckdb.connect(str(folder / "warehouse.duckdb"))
    connection.execute("create schema activation")
    connection.execute(
        "create table activation.sync_whatsapp_advisor_intro (message_key varchar, profile_id varchar, "
        "phone varchar, body varchar, content_variables varchar, entered_at timestamp, whatsapp_consent varchar, "
        "timezone varchar, country varchar)")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse_with_payload_table(tmp_path) as connection:
        yield connection


def make_sync(**options: Any) -> SyncConfig:
    """The declared sync, plus an IANA time zone per profile (the model carries the country only), so that the tests
    choose where it is day or night."""
    declared = load_syncs()["whatsapp_advisor_intro"]
    assert declared.options["content_sid"] == CONTENT_SID
    assert {"ProfileId", "Consent", "Country"} <= set(declared.mapping)
    return dataclasses.replace(declared, mapping={**declared.mapping, "Timezone": "timezone"},
                               options={**declared.options, **options})


def load(con: duckdb.DuckDBPyConnection, *rows: tuple[Any, ...]) -> None:
    con.executemany("insert into activation.sync_whatsapp_advisor_intro values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    list(rows))


def run(con: duckdb.DuckDBPyConnection, sync: SyncConfig, limit: int | None = None,
        destination: TwilioDestination | None = None) -> SyncResult:
    budget = destination.budget if destination else ApiBudget(con, "twilio", limit)
    target = destination or open_destination(sync, budget)
    return run_sync(con, sync, target, budget=budget, policy=FAST, sleep=lambda _: None)


def delivered(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute(f"select key, destination_id from {STATE}").fetchall())


def rejected(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute(f"select key, error_code from {REJECTED}").fetchall())


def sends(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    result = con.execute(f"select * from {MESSAGE_SENDS}")
    names = [d[0] for d in result.description]
    return {r["trigger_key"]: r for r in (dict(zip(names, values, strict=True)) for values in result.fetchall())}


def per_recipient(emu: TwilioEmulator) -> Counter[str]:
    return Counter(m["to"] for m in emu.messages() if m["direction"] == "outbound-api")


def creates(emu: TwilioEmulator) -> list[dict[str, Any]]:
    return [r for r in emu.requests_log() if r["method"] == "POST" and r["path"].endswith("/Messages.json")]


# ----------------------------------------------------------------------------------------------------------------


def test_sends_each_entry_once_from_the_template_with_consent(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    load(con,
         row("m1", "p1", "+4915110000001", "Ana"),
         row("m2", "p2", "+4915110000002", "Ben", consent="implied"),  # a conversation the person started
         row("m3", "p3", "+4915110000003", "Cleo", country="DE", timezone=None),  # judged in Berlin's time
         row("m4", "p4", "+4915110000004", "Dan", consent="opted_out"),
         row("m5", "p5", "+4915110000005", "Eve", consent=None))
    berlin_night = in_quiet_hours(datetime.now(ZoneInfo("Europe/Berlin")), parse_quiet_hours("21:00-08:00"))
    sync = make_sync()

    result = run(con, sync)

    assert result.gate_status == "passed", result.error
    state, refused = delivered(con), rejected(con)
    assert refused == {"m4": "NO_CONSENT", "m5": "NO_CONSENT", **({"m3": "QUIET_HOURS"} if berlin_night else {})}
    sent_keys = {"m1", "m2"} | (set() if berlin_night else {"m3"})
    assert set(state) == sent_keys
    messages = {m["sid"]: m for m in emu.messages()}
    assert set(messages) == set(state.values())  # one message per delivered key, nothing else
    names = {"m1": ("Ana", "+4915110000001"), "m2": ("Ben", "+4915110000002"), "m3": ("Cleo", "+4915110000003")}
    for key, sid in state.items():
        name, phone = names[key]
        message = messages[sid]
        assert (message["to"], message["from"], message["body"]) == (f"whatsapp:{phone}", DEMO_WHATSAPP_SENDER,
                                                                     body(name))
        assert message["content_sid"] == CONTENT_SID
        assert json.loads(message["content_variables"]) == {"1": name, "2": "MBA"}
    recorded = sends(con)
    assert {k: (r["status"], r["message_sid"]) for k, r in recorded.items()} == {k: ("sent", state[k]) for k in state}
    assert recorded["m1"]["send_key"] == "whatsapp_advisor_intro|p1|m1" and recorded["m1"]["to"] == "+4915110000001"
    # one call to check the template, one create per message: nothing else
    assert result.api_calls == 1 + len(sent_keys) and len(creates(emu)) == len(sent_keys)

    # the next run sends nothing again, and polls the delivery statuses first (start(), counted in its API calls)
    deadline = time.monotonic() + 5
    while any(m["status"] != "read" for m in emu.messages()) and time.monotonic() < deadline:
        time.sleep(0.02)
    budget = ApiBudget(con, "twilio", None)
    destination = TwilioDestination(sync, budget)
    assert budget.spent_this_run == 0  # creating the destination calls nothing
    again = run(con, sync, destination=destination)
    assert destination.statuses_polled == len(sent_keys)  # one fetch per message
    assert again.succeeded == 0 and len(creates(emu)) == len(sent_keys)
    # the polls, and the check: the refused rows came back, and were refused again without a call
    assert again.api_calls == len(sent_keys) + 1
    recorded = sends(con)
    assert {recorded[k]["delivery_status"] for k in sent_keys} == {"read"}
    history = json.loads(recorded["m1"]["status_history"])
    assert [(h["status"], h["source"]) for h in history] == [("queued", "create"), ("read", "poll")]
    final = TwilioDestination(sync, ApiBudget(con, "twilio", None))
    final.start()
    assert final.statuses_polled == 0  # final statuses are not polled again
    final.close()


def test_crash_between_the_send_and_its_bookkeeping_does_not_send_twice(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    load(con, *(row(f"m{i}", f"p{i}", f"+49151200000{i:02d}", f"N{i}") for i in range(4)))
    sync = make_sync()
    budget = ApiBudget(con, "twilio", None)
    destination = TwilioDestination(sync, budget)
    sent_before_crash = []

    def crash(send_key: str, message: Any, *, source: str) -> None:
        sent_before_crash.append(message.sid)
        raise RuntimeError("killed after Twilio answered, before message_sends was updated")

    monkeypatch.setattr(destination, "_mark_sent", crash)
    with pytest.raises(RuntimeError, match="killed after Twilio answered"):
        run(con, sync, destination=destination)
    assert len(sent_before_crash) == 1 and [m["sid"] for m in emu.messages()] == sent_before_crash
    assert delivered(con) == {} and sends(con)["m0"]["status"] == "intent"

    result = run(con, sync)  # a new process: reconciles m0, sends the others

    assert result.status == "succeeded", result.error
    state = delivered(con)
    assert set(state) == {"m0", "m1", "m2", "m3"} and state["m0"] == sent_before_crash[0]
    assert per_recipient(emu) == {f"whatsapp:+49151200000{i:02d}": 1 for i in range(4)}
    assert len(creates(emu)) == 4
    assert {r["status"] for r in sends(con).values()} == {"sent"}
    assert json.loads(sends(con)["m0"]["status_history"])[0]["source"] == "reconcile"


# A real crash: the sync runs in its own process and is killed with SIGKILL after Twilio committed the first message
# and before its answer arrived (the emulator holds the answer back). The intent record written before the call is
# what survives; the next run, in a new process, reconciles it against Twilio and sends nothing twice.
SYNC_PROCESS = """
import dataclasses, sys
import duckdb
from reverse_etl.base import ApiBudget
from reverse_etl.config import load_syncs
from reverse_etl.destinations import open_destination
from reverse_etl.runner import run_sync

declared = load_syncs()["whatsapp_advisor_intro"]
sync = dataclasses.replace(declared, batch_size=1, mapping={**declared.mapping, "Timezone": "timezone"})
con = duckdb.connect(sys.argv[1])
budget = ApiBudget(con, "twilio", None)
print("sending", flush=True)
run_sync(con, sync, open_destination(sync, budget), budget=budget)
"""


def test_sigkill_between_the_send_and_its_bookkeeping_does_not_send_twice(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    load(con, *(row(f"k{i}", f"p{i}", f"+49151400000{i:02d}", f"K{i}") for i in range(3)))
    path = con.execute("select path from duckdb_databases() where database_name = current_database()").fetchone()[0]
    con.close()  # the sync process is the only writer, as under the warehouse lock
    emu.set_faults(hold_after_commit_ms=20_000)
    process = subprocess.Popen([sys.executable, "-c", SYNC_PROCESS, path], env=os.environ.copy(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not emu.messages() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert len(emu.messages()) == 1, process.communicate(timeout=5) if process.poll() is not None else "no send"
        os.killpg(process.pid, signal.SIGKILL)  # Twilio has the message, the process never learns it
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    emu.set_faults(None)

    with duckdb.connect(path) as after:
        (first,) = emu.messages()
        intents = after.execute(f"select trigger_key, status, message_sid from {MESSAGE_SENDS}").fetchall()
        assert intents == [("k0", "intent", None)]  # committed before the call; the answer never came
        assert after.execute(f"select count(*) from {STATE}").fetchone()[0] == 0

        result = run(after, make_sync())  # a new process' run: reconciles k0, sends k1 and k2

        assert result.status == "succeeded", result.error
        assert per_recipient(emu) == {f"whatsapp:+49151400000{i:02d}": 1 for i in range(3)}
        assert delivered(after)["k0"] == first["sid"]
        assert {r["status"] for r in sends(after).values()} == {"sent"}


def test_lost_answers_are_reconciled_not_resent(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    load(con, *(row(f"m{i}", f"p{i}", f"+49151300000{i:02d}", f"N{i}") for i in range(3)))
    emu.set_faults(drop_after_commit=1.0)  # every create is stored, and its answer never arrives

    result = run(con, make_sync())

    assert result.status == "succeeded", result.error
    assert result.retried > 0
    state = delivered(con)
    assert set(state) == {"m0", "m1", "m2"}
    assert per_recipient(emu) == {f"whatsapp:+49151300000{i:02d}": 1 for i in range(3)}
    assert set(state.values()) == {m["sid"] for m in emu.messages()}
    assert all(r["dropped"] for r in creates(emu)) and len(creates(emu)) == 3
    lookups = [r for r in emu.requests_log() if r["method"] == "GET" and "/Messages.json?" in r["path"]]
    assert len(lookups) == 3 and all("PageSize=50" in r["path"] for r in lookups)
    emu.set_faults(None)
    listed = twilio_client().messages.list(from_=DEMO_WHATSAPP_SENDER, limit=10)  # a client outside any sync
    assert {m.sid for m in listed} == set(state.values())


def test_throttling_and_server_errors_still_send_exactly_once(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    load(con, *(row(f"m{i:02d}", f"p{i:02d}", f"+49151400000{i:02d}", f"N{i}") for i in range(12)))
    emu.set_faults(rate_429=0.25, rate_5xx=0.25, seed=11)
    sync = make_sync()
    results = []
    for _ in range(8):
        results.append(run(con, sync))
        if len(delivered(con)) == 12:
            break

    assert len(delivered(con)) == 12, [r.summary() for r in results]
    statuses = Counter(r["status"] for r in emu.requests_log())
    assert statuses[429] and (statuses[500] or statuses[503])
    assert per_recipient(emu) == {f"whatsapp:+49151400000{i:02d}": 1 for i in range(12)}
    assert set(delivered(con).values()) == {m["sid"] for m in emu.messages()}


def test_frequency_cap_per_profile_over_a_rolling_window(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    # the same profile enters twice (two triggers); another profile shares nothing
    load(con, row("entry-1", "p1", "+4915150000001", "Ana"), row("entry-2", "p1", "+4915150000001", "Ana"),
         row("entry-3", "p2", "+4915150000002", "Ben"))
    sync = make_sync()

    run(con, sync)

    assert set(delivered(con)) == {"entry-1", "entry-3"}
    assert rejected(con) == {"entry-2": "FREQUENCY_CAP"}
    assert per_recipient(emu) == {"whatsapp:+4915150000001": 1, "whatsapp:+4915150000002": 1}

    # eight days later the window has rolled past the first message
    con.execute(f"update {MESSAGE_SENDS} set attempted_at = attempted_at - interval 8 day")
    run(con, sync)
    assert set(delivered(con)) == {"entry-1", "entry-2", "entry-3"} and rejected(con) == {}
    assert per_recipient(emu)["whatsapp:+4915150000001"] == 2

    # a cap of 2 per 7 days: a third trigger of one profile waits
    load(con, *(row(f"entry-{i}", "p3", "+4915150000003", "Cleo") for i in (4, 5, 6)))
    run(con, make_sync(max_messages_per_profile=2))
    assert {"entry-4", "entry-5"} <= set(delivered(con)) and rejected(con) == {"entry-6": "FREQUENCY_CAP"}
    assert per_recipient(emu)["whatsapp:+4915150000003"] == 2


def test_quiet_hours_defer_the_message_to_a_later_run(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    load(con, row("night", "p1", "+4915160000001", "Ana", timezone=NIGHT),
         row("day", "p2", "+4915160000002", "Ben", timezone=DAY),
         row("default", "p3", "+4915160000003", "Cleo", timezone=None))

    result = run(con, make_sync(default_timezone=NIGHT))

    assert set(delivered(con)) == {"day"}
    assert rejected(con) == {"night": "QUIET_HOURS", "default": "QUIET_HOURS"}  # the reason, kept visible
    message, attempts = con.execute(f"select message, attempts from {REJECTED} where key = 'night'").fetchone()
    assert f"timezone {NIGHT}" in message and "deferred" in message and attempts == 0  # a deferral is no attempt
    # deferred, not failed: not resent within the run, and the run succeeded
    assert (result.status, result.deferred, result.rejected, result.failed, result.retried) == (
        "succeeded", 2, 0, 0, 0)
    assert per_recipient(emu) == {"whatsapp:+4915160000002": 1}

    # later (here: the profile's zone is now daytime): the deferred message goes out, once
    con.execute("update activation.sync_whatsapp_advisor_intro set timezone = ? where message_key = 'night'", [DAY])
    run(con, make_sync(default_timezone=NIGHT))
    assert set(delivered(con)) == {"night", "day"} and rejected(con) == {"default": "QUIET_HOURS"}

    # the operator's override (TWILIO_QUIET_HOURS=off, as `cdp demo` sets it) lifts the sync's quiet hours
    monkeypatch.setenv("TWILIO_QUIET_HOURS", "off")
    run(con, make_sync(default_timezone=NIGHT))
    assert set(delivered(con)) == {"night", "day", "default"} and rejected(con) == {}
    assert sum(per_recipient(emu).values()) == 3
    monkeypatch.setenv("TWILIO_QUIET_HOURS", "9pm")
    with pytest.raises(DestinationError, match=r"quiet_hours '9pm' is not HH:MM-HH:MM .*\(TWILIO_QUIET_HOURS\)"):
        TwilioDestination(make_sync(), ApiBudget(con, "twilio", None))


def test_twilio_refusals_are_per_record_with_twilio_codes(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    load(con, row("ok", "p1", "+4915170000001", "Ana"),
         row("no-programme", "p2", "+4915170000002", "Ben", variables={"1": "Ben"}),
         row("empty-name", "p3", "+4915170000003", "Cleo", variables={"1": "", "2": "MBA"}))

    result = run(con, make_sync())

    assert result.status == "partial"
    assert set(delivered(con)) == {"ok"}
    assert rejected(con) == {"no-programme": "21656", "empty-name": "21656"}
    assert {k: r["status"] for k, r in sends(con).items()} == {"ok": "sent", "no-programme": "failed",
                                                               "empty-name": "failed"}
    assert per_recipient(emu) == {"whatsapp:+4915170000001": 1}


def test_budget_exhaustion_stops_cleanly_and_the_next_run_finishes(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection) -> None:
    load(con, *(row(f"m{i}", f"p{i}", f"+49151800000{i:02d}", f"N{i}") for i in range(4)))
    sync = make_sync()

    spent = run(con, sync, limit=0)
    assert spent.status == "budget_exhausted" and spent.api_calls == 0 and emu.requests_log() == []

    first = run(con, sync, limit=3)  # the template check and two messages

    assert first.status == "budget_exhausted" and first.api_calls == 3
    # the batch's outcome was not returned (BudgetExhausted), but message_sends knows what went out
    assert delivered(con) == {} and len(emu.messages()) == 2
    assert Counter(r["status"] for r in sends(con).values()) == {"sent": 2, "failed": 1}
    con.execute("delete from reverse_etl.api_budget")  # the next day
    second = run(con, sync, limit=100)
    assert second.status == "succeeded" and len(delivered(con)) == 4
    # the statuses of the two sent messages polled, the check, and the two messages not sent yet
    assert second.api_calls == 2 + 1 + 2
    assert per_recipient(emu) == {f"whatsapp:+49151800000{i:02d}": 1 for i in range(4)}


def test_configuration_and_credential_errors(
        emu: TwilioEmulator, env: None, con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    load(con, row("m1", "p1", "+4915190000001", "Ana"))
    budget = ApiBudget(con, "twilio", None)
    declared = load_syncs()["whatsapp_advisor_intro"]

    # a sync that maps no consent: the destination refuses to send at all
    without_consent = {field: column for field, column in declared.mapping.items() if field != "Consent"}
    result = run(con, dataclasses.replace(make_sync(), mapping=without_consent))
    assert result.status == "failed" and "does not map Consent" in (result.error or "")
    with pytest.raises(DestinationError, match=r"content_sid 'HX0+a1' is not a Content SID"):
        TwilioDestination(make_sync(content_sid="HX00000000a1"), budget)
    with pytest.raises(DestinationError, match="quiet_hours '9pm' is not HH:MM-HH:MM"):
        TwilioDestination(make_sync(quiet_hours="9pm"), budget)

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")
    result = run(con, make_sync())
    assert result.status == "failed" and "401" in (result.error or "") and "TWILIO_AUTH_TOKEN" in result.error

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEMO_AUTH_TOKEN)
    result = run(con, make_sync(content_sid="HX" + "f" * 32))
    assert result.status == "failed" and "does not exist for this account" in (result.error or "")

    monkeypatch.delenv("TWILIO_FROM_WHATSAPP")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    with pytest.raises(DestinationNotConfigured, match="set TWILIO_AUTH_TOKEN, TWILIO_FROM_WHATSAPP"):
        TwilioDestination(make_sync(), budget)
    with pytest.raises(DestinationNotConfigured, match=r"set TWILIO_AUTH_TOKEN$"):
        twilio_client()
    assert emu.messages() == [] and delivered(con) == {}


def test_timezones_and_quiet_hour_windows() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert profile_timezone("America/Chicago", "DE", berlin)[0].key == "America/Chicago"
    assert profile_timezone(None, "de", berlin)[0].key == "Europe/Berlin"
    assert profile_timezone("Not/AZone", "Germany", berlin)[0].key == "Europe/Berlin"
    assert profile_timezone(None, "US", berlin)[0].key == "America/New_York"
    assert profile_timezone("", "Atlantis", berlin) == (berlin, "default Europe/Berlin")
    window = parse_quiet_hours("21:00-08:00")
    at = datetime(2025, 3, 1, tzinfo=UTC)
    assert [in_quiet_hours(at + timedelta(hours=h), window) for h in (7, 8, 12, 20, 21, 23)] == [
        True, False, False, False, True, True]
    assert not in_quiet_hours(at, parse_quiet_hours("off"))
    assert in_quiet_hours(at + timedelta(hours=13), parse_quiet_hours("12:30-14:00"))
