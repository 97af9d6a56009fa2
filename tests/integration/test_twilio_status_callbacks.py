"""Twilio status callbacks, end to end over real HTTP: the WhatsApp sync creates its messages with the API's
StatusCallback URL, the Twilio emulator POSTs each status change signed with the account's auth token to the running
API, the API keeps the SID, status and error code (fsynced, no number or text), and the next run of the sync records
them in reverse_etl.message_sends, so that a message's `read` is known without polling Twilio."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from twilio.request_validator import RequestValidator

from emulators.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_WHATSAPP_SENDER, TwilioEmulator
from reverse_etl import status_callbacks
from reverse_etl.destinations.twilio import MESSAGE_SENDS

sys.path.insert(0, str(Path(__file__).parent))
from test_api_ingest import Server, start_server, stop_server  # a sibling test module's helpers
from test_destination_twilio import load, make_sync, row, run, warehouse_with_payload_table

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "api", {"TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN})
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def emu() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(callback_delay_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with warehouse_with_payload_table(tmp_path) as connection:
        yield connection


def waiting(landing: Path) -> list[dict]:
    """The callbacks the API wrote that no run has recorded yet (read without claiming)."""
    return [json.loads(line) for path in sorted(status_callbacks.status_dir(landing).glob("status-*.ndjson"))
            for line in path.read_text().splitlines()]


def test_status_callbacks_reach_message_sends_through_the_api(
        server: Server, emu: TwilioEmulator, con: duckdb.DuckDBPyConnection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    landing = server.home / "landing"
    for name, value in {"TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
                        "TWILIO_FROM_WHATSAPP": DEMO_WHATSAPP_SENDER, "TWILIO_API_BASE_URL": emu.url,
                        "TWILIO_STATUS_CALLBACK_URL": f"{server.url}/webhooks/twilio/status",
                        "CDP_LANDING_PATH": str(landing)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TWILIO_QUIET_HOURS", raising=False)
    load(con, row("c1", "p1", "+4915170000001", "Ana"), row("c2", "p2", "+4915170000002", "Ben"))

    first = run(con, make_sync())
    assert (first.status, first.succeeded) == ("succeeded", 2)
    sids = {m["sid"] for m in emu.messages()}
    assert all(m["status_callback"] == f"{server.url}/webhooks/twilio/status" for m in emu.messages())

    # queued, sent, delivered, read: each POSTed, signed, to the API, which answers 200 once it is on disk
    deadline = time.monotonic() + 30
    while {(e["MessageSid"], e["MessageStatus"]) for e in waiting(landing)} != {
            (sid, status) for sid in sids for status in ("queued", "sent", "delivered", "read")}:
        assert time.monotonic() < deadline, f"callbacks: {emu.callbacks()[-4:]}; written: {waiting(landing)}"
        time.sleep(0.05)
    assert all(c["status_code"] == 200 for c in emu.callbacks()), emu.callbacks()
    text = "".join(p.read_text() for p in status_callbacks.status_dir(landing).glob("status-*.ndjson"))
    assert "+49151" not in text and "Ana" not in text  # no number, no text kept
    assert all(set(e) == set(status_callbacks.FIELDS) for e in waiting(landing))

    fetches_before = sum(1 for r in emu.requests_log() if r["method"] == "GET" and "/Messages/SM" in r["path"])
    second = run(con, make_sync())  # nothing new to send: the run records the callbacks first

    assert second.sent == 0
    rows = {r[0]: r[1:] for r in con.execute(
        f"select trigger_key, delivery_status, status_history from {MESSAGE_SENDS}").fetchall()}
    for key in ("c1", "c2"):
        status, history = rows[key]
        assert status == "read"  # beyond `delivered`, which polling treats as final
        callbacks = [h["status"] for h in json.loads(history) if h["source"] == "callback"]
        assert callbacks == ["queued", "sent", "delivered", "read"]
    fetches_after = sum(1 for r in emu.requests_log() if r["method"] == "GET" and "/Messages/SM" in r["path"])
    assert fetches_after == fetches_before  # final by callback: nothing left to poll
    assert waiting(landing) == [] and not list(status_callbacks.status_dir(landing).glob("*.claimed"))

    # recorded once: a third run has nothing new, and the history does not grow
    run(con, make_sync())
    again = {r[0]: r[1] for r in con.execute(f"select trigger_key, status_history from {MESSAGE_SENDS}").fetchall()}
    assert again == {key: value[1] for key, value in rows.items()}


def test_status_callback_signature_and_shape_are_checked(server: Server) -> None:
    url = f"{server.url}/webhooks/twilio/status"
    validator = RequestValidator(DEMO_AUTH_TOKEN)
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered", "AccountSid": DEMO_ACCOUNT_SID,
              "To": "whatsapp:+4915170000009", "From": DEMO_WHATSAPP_SENDER}
    assert httpx.post(url, data=params).status_code == 403
    wrong = RequestValidator("another-token").compute_signature(url, params)
    assert httpx.post(url, data=params, headers={"X-Twilio-Signature": wrong}).status_code == 403
    no_status = {k: v for k, v in params.items() if k != "MessageStatus"}
    answer = httpx.post(url, data=no_status, headers={"X-Twilio-Signature": validator.compute_signature(url,
                                                                                                     no_status)})
    assert answer.status_code == 400 and "MessageStatus missing" in answer.text
    ok = httpx.post(url, data=params, headers={"X-Twilio-Signature": validator.compute_signature(url, params)})
    assert ok.status_code == 200
    assert waiting(server.home / "landing") == [
        {"MessageSid": params["MessageSid"], "MessageStatus": "delivered", "ErrorCode": None,
         "ReceivedAt": waiting(server.home / "landing")[0]["ReceivedAt"]}]

    # a status callback posted to the inbound webhook is recorded as a status, not landed as a message
    inbound = f"{server.url}/webhooks/twilio"
    sent = {**params, "MessageStatus": "read"}
    answer = httpx.post(inbound, data=sent, headers={"X-Twilio-Signature": validator.compute_signature(inbound, sent)})
    assert answer.status_code == 200
    assert [e["MessageStatus"] for e in waiting(server.home / "landing")] == ["delivered", "read"]
