"""The Twilio emulator driven by the real twilio Client (9.x), pointed at it by `EmulatorHttpClient`.

Every test starts a real emulator on 127.0.0.1 with a free port; status callbacks and inbound webhooks go to a real
local HTTP server started by the test, and their signatures are checked with twilio's own RequestValidator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from emulators.twilio import (
    DEMO_ACCOUNT_SID,
    DEMO_AUTH_TOKEN,
    DEMO_MESSAGING_SERVICE_SID,
    DEMO_SMS_NUMBER,
    DEMO_TEMPLATE_SID,
    DEMO_WHATSAPP_SENDER,
    Faults,
    TwilioEmulator,
)

ROOT = Path(__file__).resolve().parents[2]

PROSPECT = "whatsapp:+4915112345678"
PROSPECT_SMS = "+4915112345678"
DRAFT_TEMPLATE_SID = "HX" + "d" * 32


class EmulatorHttpClient(TwilioHttpClient):
    """The real TwilioHttpClient, with Twilio's hosts replaced by the emulator's base URL (paging links included)."""

    HOSTS = ("https://api.twilio.com", "https://content.twilio.com")

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        for host in self.HOSTS:
            if url.startswith(host):
                url = self.base_url + url[len(host) :]
        return super().request(method, url, *args, **kwargs)


def twilio_client(emu: TwilioEmulator, sid: str = DEMO_ACCOUNT_SID, token: str = DEMO_AUTH_TOKEN) -> Client:
    return Client(sid, token, http_client=EmulatorHttpClient(emu.url))


class WebhookReceiver:
    """A real local HTTP server that records form posts and answers with scripted status codes."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.script: dict[str, list[int]] = {}  # MessageStatus -> status codes for its next posts; then 200
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver.arrived:
                    params = dict(parse_qsl(body))
                    planned = receiver.script.get(params.get("MessageStatus", ""), [])
                    code = planned.pop(0) if planned else 200
                    receiver.posts.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "params": params,
                            "code": code,
                        }
                    )
                    receiver.arrived.notify_all()
                reply = b"<Response/>"
                self.send_response(code)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.posts):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out; received {[p['params'].get('MessageStatus') for p in self.posts]}"
                self.arrived.wait(remaining)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def emu() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(
        templates={
            DRAFT_TEMPLATE_SID: {
                "friendly_name": "draft_offer",
                "variables": {"1": "first_name"},
                "types": {"twilio/text": {"body": "Hello {{1}}"}},
                "approval": "pending",
            }
        }
    ) as emulator:
        yield emulator


@pytest.fixture
def client(emu: TwilioEmulator) -> Client:
    return twilio_client(emu)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def send_template(client: Client, to: str = PROSPECT, **kwargs: Any) -> Any:
    return client.messages.create(
        to=to,
        from_=DEMO_WHATSAPP_SENDER,
        content_sid=DEMO_TEMPLATE_SID,
        content_variables=json.dumps({"1": "Mara", "2": "MBA"}),
        **kwargs,
    )


# ---------------------------------------------------------------------------- messages


def test_whatsapp_template_message_is_rendered_and_read_back(emu: TwilioEmulator, client: Client) -> None:
    sent = send_template(client)

    assert re.fullmatch(r"SM[0-9a-f]{32}", sent.sid)
    assert sent.status == "queued" and sent.direction == "outbound-api"
    assert sent.body == ("Hi Mara, I am your admissions advisor at Northbridge University. I saw you are looking at "
                         "the MBA programme: would you like a short call this week?")
    assert "{{" not in sent.body
    assert (sent.to, sent.from_, sent.account_sid) == (PROSPECT, DEMO_WHATSAPP_SENDER, DEMO_ACCOUNT_SID)
    assert sent.api_version == "2010-04-01" and sent.num_segments == "1" and sent.num_media == "0"
    assert sent.error_code is None and sent.price is None and sent.price_unit == "USD"
    assert sent.uri == f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages/{sent.sid}.json"
    assert sent.subresource_uris["media"].endswith(f"/Messages/{sent.sid}/Media.json")
    assert abs(sent.date_created - datetime.now(UTC)) < timedelta(seconds=5)
    assert sent.date_sent is None  # Twilio fills date_sent once the message is sent

    fetched = client.messages(sent.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.to) == (sent.sid, sent.body, PROSPECT)
    wait_until(lambda: client.messages(sent.sid).fetch().status == "read")
    final = client.messages(sent.sid).fetch()
    assert final.date_sent is not None and final.date_updated >= final.date_created

    [stored] = emu.messages(to=PROSPECT)
    assert [h["status"] for h in stored["status_history"]] == ["queued", "sent", "delivered", "read"]
    assert stored["content_sid"] == DEMO_TEMPLATE_SID


def test_raw_wire_format_matches_twilio(emu: TwilioEmulator) -> None:
    auth = (DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)
    base = f"{emu.url}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}"
    with httpx.Client(auth=auth) as http:
        created = http.post(f"{base}/Messages.json", data={"To": PROSPECT_SMS, "From": DEMO_SMS_NUMBER, "Body": "Hi"})
        assert created.status_code == 201 and created.headers["content-type"].startswith("application/json")
        resource = created.json()
        assert list(resource) == sorted(resource)  # Twilio's JSON keys are alphabetical
        assert parsedate_to_datetime(resource["date_created"]).tzinfo is not None
        assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000", resource["date_created"])

        unauthenticated = http.get(f"{base}/Messages.json", auth=(DEMO_ACCOUNT_SID, "wrong"))
        assert unauthenticated.status_code == 401
        assert unauthenticated.json() == {
            "code": 20003,
            "detail": "Your AccountSid or AuthToken was incorrect.",
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
        assert unauthenticated.headers["www-authenticate"].startswith("Basic")
        assert http.get(f"{base}/Messages.json", auth=None).status_code == 401


def test_list_filters_by_to_and_pages_over_more_than_50(emu: TwilioEmulator, client: Client) -> None:
    others = "+4915199999999"
    sids = [client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body=f"note {i}").sid for i in range(57)]
    for i in range(3):
        client.messages.create(to=others, from_=DEMO_SMS_NUMBER, body=f"other {i}")

    listed = client.messages.list(to=PROSPECT_SMS, page_size=20)
    assert [m.sid for m in listed] == list(reversed(sids))  # newest first, across three pages
    assert {m.to for m in listed} == {PROSPECT_SMS}
    assert len(client.messages.list()) == 60  # default page size 50: two pages

    first = client.messages.page(to=PROSPECT_SMS, page_size=25)
    payload = first._payload
    assert payload["page"] == 0 and payload["page_size"] == 25 and payload["start"] == 0 and payload["end"] == 24
    assert payload["first_page_uri"].startswith(f"/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages.json?To=%2B49")
    assert "PageToken=PA" + sids[-25] in payload["next_page_uri"] and payload["previous_page_uri"] is None
    second = first.next_page()
    assert [m.sid for m in second] == list(reversed(sids))[25:50]
    assert second._payload["page"] == 1 and second._payload["previous_page_uri"]
    third = second.next_page()
    assert [m.sid for m in third] == list(reversed(sids))[50:]
    assert third.next_page() is None
    assert [m.sid for m in third.previous_page()] == list(reversed(sids))[25:50]

    today = datetime.now(UTC)
    assert len(client.messages.list(date_sent_after=today - timedelta(days=1), page_size=100)) == 60
    assert client.messages.list(date_sent_before=today - timedelta(days=1)) == []
    assert len(client.messages.list(from_=DEMO_SMS_NUMBER, to=others)) == 3


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": DEMO_SMS_NUMBER, "body": "x"}, 21604),
        ({"to": "+12", "from_": DEMO_SMS_NUMBER, "body": "x"}, 21211),
        ({"to": "whatsapp:4915112345678", "from_": DEMO_WHATSAPP_SENDER, "body": "x"}, 21211),
        ({"to": PROSPECT_SMS, "body": "x"}, 21603),
        ({"to": PROSPECT_SMS, "from_": "+1-not-a-number", "body": "x"}, 21212),
        ({"to": PROSPECT_SMS, "from_": "+15017122661", "body": "x"}, 21606),
        ({"to": PROSPECT, "from_": "whatsapp:+15017122661", "body": "x"}, 63007),
        ({"to": PROSPECT, "from_": DEMO_SMS_NUMBER, "body": "x"}, 21910),
        ({"to": PROSPECT_SMS, "from_": DEMO_SMS_NUMBER}, 21602),
        ({"to": PROSPECT_SMS, "from_": DEMO_SMS_NUMBER, "body": "x" * 1601}, 21617),
        ({"to": PROSPECT, "from_": DEMO_WHATSAPP_SENDER, "body": "Hi, any questions?"}, 63016),
        ({"to": PROSPECT, "from_": DEMO_WHATSAPP_SENDER, "content_variables": '{"1": "Mara"}'}, 21654),
        ({"to": PROSPECT, "from_": DEMO_WHATSAPP_SENDER, "content_sid": "HX" + "0" * 32}, 21655),
        ({"to": PROSPECT, "from_": DEMO_WHATSAPP_SENDER, "content_sid": DEMO_TEMPLATE_SID}, 21656),
        (
            {"to": PROSPECT, "from_": DEMO_WHATSAPP_SENDER, "content_sid": DEMO_TEMPLATE_SID, "content_variables": "{"},
            21656,
        ),
        (
            {
                "to": PROSPECT,
                "from_": DEMO_WHATSAPP_SENDER,
                "content_sid": DEMO_TEMPLATE_SID,
                "content_variables": '{"1": "Mara", "2": ""}',
            },
            21656,
        ),
        (
            {
                "to": PROSPECT,
                "from_": DEMO_WHATSAPP_SENDER,
                "content_sid": DRAFT_TEMPLATE_SID,
                "content_variables": '{"1": "Mara"}',
            },
            63027,
        ),
        ({"to": PROSPECT_SMS, "messaging_service_sid": "MG123", "body": "x"}, 21705),
        ({"to": PROSPECT_SMS, "messaging_service_sid": "MG" + "9" * 32, "body": "x"}, 21701),
        ({"to": PROSPECT_SMS, "from_": DEMO_SMS_NUMBER, "body": "x", "status_callback": "ftp://x"}, 21609),
        ({"to": PROSPECT_SMS, "from_": DEMO_SMS_NUMBER, "body": "x", "schedule_type": "fixed"}, 35118),
        (
            {
                "to": PROSPECT_SMS,
                "messaging_service_sid": DEMO_MESSAGING_SERVICE_SID,
                "body": "x",
                "schedule_type": "fixed",
            },
            35111,
        ),
        (
            {
                "to": PROSPECT_SMS,
                "messaging_service_sid": DEMO_MESSAGING_SERVICE_SID,
                "body": "x",
                "schedule_type": "fixed",
                "send_at": datetime.now(UTC) + timedelta(seconds=30),
            },
            35114,
        ),
    ],
)
def test_validation_errors_surface_as_twilio_rest_exception(
    emu: TwilioEmulator, client: Client, kwargs: dict[str, Any], code: int
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(**kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert caught.value.method == "POST" and "Unable to create record: " in caught.value.msg
    assert emu.messages() == []  # a rejected request stores nothing


def test_unknown_resources_and_wrong_credentials(emu: TwilioEmulator, client: Client) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages("SM" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert "was not found" in caught.value.msg

    with pytest.raises(TwilioRestException) as caught:
        twilio_client(emu, token="not-the-token").messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="x")
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert "Authenticate" in caught.value.msg

    with pytest.raises(TwilioRestException) as caught:  # authenticated, but another account's path
        client.api.v2010.accounts("AC" + "1" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)
    with pytest.raises(TwilioException) as listing:  # list() wraps errors in a plain TwilioException
        client.api.v2010.accounts("AC" + "1" * 32).messages.list()
    assert json.loads(listing.value.args[1].text)["code"] == 20404

    with pytest.raises(TwilioRestException) as caught:
        client.content.v1.contents("HX" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)
    assert emu.messages() == []


def test_api_key_authentication() -> None:
    key, secret = "SK" + "a" * 32, "key-secret"
    with TwilioEmulator(api_keys={key: (secret, DEMO_ACCOUNT_SID)}) as emu:
        keyed = Client(key, secret, DEMO_ACCOUNT_SID, http_client=EmulatorHttpClient(emu.url))
        assert keyed.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="via key").status == "queued"
        with pytest.raises(TwilioRestException) as caught:
            Client(key, "wrong", DEMO_ACCOUNT_SID, http_client=EmulatorHttpClient(emu.url)).api.v2010.accounts(
                DEMO_ACCOUNT_SID
            ).fetch()
        assert caught.value.code == 20003


def test_messaging_service_accepts_then_assigns_sender(emu: TwilioEmulator, client: Client) -> None:
    sent = client.messages.create(to=PROSPECT_SMS, messaging_service_sid=DEMO_MESSAGING_SERVICE_SID, body="hello")
    assert sent.status == "accepted" and sent.from_ is None and sent.num_segments == "0"
    assert sent.messaging_service_sid == DEMO_MESSAGING_SERVICE_SID
    wait_until(lambda: client.messages(sent.sid).fetch().status == "delivered")
    assert client.messages(sent.sid).fetch().from_ == DEMO_SMS_NUMBER


def test_redact_cancel_and_delete(client: Client) -> None:
    sent = client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="private details")
    with pytest.raises(TwilioRestException) as caught:  # not final yet
        client.messages(sent.sid).delete()
    assert (caught.value.status, caught.value.code) == (400, 20009)
    wait_until(lambda: client.messages(sent.sid).fetch().status == "delivered")
    assert client.messages(sent.sid).update(body="").body == ""
    assert client.messages(sent.sid).fetch().body == ""
    assert client.messages(sent.sid).delete() is True
    with pytest.raises(TwilioRestException) as caught:
        client.messages(sent.sid).fetch()
    assert caught.value.code == 20404

    scheduled = client.messages.create(
        to=PROSPECT_SMS,
        messaging_service_sid=DEMO_MESSAGING_SERVICE_SID,
        body="see you tomorrow",
        schedule_type="fixed",
        send_at=datetime.now(UTC) + timedelta(hours=1),
    )
    assert scheduled.status == "scheduled"
    assert client.messages(scheduled.sid).update(status="canceled").status == "canceled"
    with pytest.raises(TwilioRestException) as caught:
        client.messages(scheduled.sid).update(status="canceled")
    assert caught.value.code == 20009


# ---------------------------------------------------------------------------- content API


def test_content_api_lists_fetches_and_reports_approval(client: Client) -> None:
    templates = {t.sid: t for t in client.content.v1.contents.list()}
    assert set(templates) == {DEMO_TEMPLATE_SID, DRAFT_TEMPLATE_SID}
    demo = client.content.v1.contents(DEMO_TEMPLATE_SID).fetch()
    assert demo.friendly_name == "advisor_mba_intro" and demo.language == "en"
    assert demo.variables == {"1": "first_name", "2": "programme"}
    assert "{{1}}" in demo.types["twilio/text"]["body"] and "{{2}}" in demo.types["twilio/text"]["body"]
    assert demo.account_sid == DEMO_ACCOUNT_SID and demo.date_created is not None
    approval = client.content.v1.contents(DEMO_TEMPLATE_SID).approval_fetch().fetch()
    assert approval.whatsapp["status"] == "approved" and approval.whatsapp["name"] == "advisor_mba_intro"
    draft = client.content.v1.contents(DRAFT_TEMPLATE_SID).approval_fetch().fetch()
    assert draft.whatsapp["status"] == "pending"
    assert [t.sid for t in client.content.v1.contents.list(page_size=1)] == list(templates)  # pages via next_page_url


# ---------------------------------------------------------------------------- status callbacks


def test_status_callbacks_are_signed_and_follow_the_message(
    emu: TwilioEmulator, client: Client, receiver: WebhookReceiver
) -> None:
    url = f"{receiver.base}/twilio/status?tenant=demo"
    sent = send_template(client, status_callback=url)
    posts = receiver.wait_for(lambda posts: len(posts) >= 4)
    validator = RequestValidator(DEMO_AUTH_TOKEN)
    for post in posts:
        assert post["path"] == "/twilio/status?tenant=demo"
        assert validator.validate(url, post["params"], post["headers"]["X-Twilio-Signature"])
        assert not validator.validate(
            url, {**post["params"], "MessageStatus": "forged"}, post["headers"]["X-Twilio-Signature"]
        )
        params = post["params"]
        assert (params["MessageSid"], params["SmsSid"], params["AccountSid"]) == (sent.sid, sent.sid, DEMO_ACCOUNT_SID)
        assert (params["From"], params["To"], params["ApiVersion"]) == (DEMO_WHATSAPP_SENDER, PROSPECT, "2010-04-01")
        assert params["ChannelPrefix"] == "whatsapp" and params["ChannelToAddress"] == PROSPECT[len("whatsapp:") :]
        assert params["SmsStatus"] == params["MessageStatus"] and "ErrorCode" not in params
    assert sorted(p["params"]["MessageStatus"] for p in posts) == ["delivered", "queued", "read", "sent"]
    wait_until(lambda: len(emu.callbacks()) == 4)
    assert all(c["status_code"] == 200 and c["ok"] and c["attempt"] == 1 for c in emu.callbacks())
    assert client.messages(sent.sid).fetch().status == "read"


def test_rate_undelivered_marks_messages_undelivered(receiver: WebhookReceiver) -> None:
    with TwilioEmulator(faults={"rate_undelivered": 1.0}) as emu:
        client = twilio_client(emu)
        url = f"{receiver.base}/status"
        sms = client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="hi", status_callback=url)
        whatsapp = send_template(client, status_callback=url)
        posts = receiver.wait_for(lambda posts: sum(p["params"]["MessageStatus"] == "undelivered" for p in posts) == 2)
        final = {p["params"]["MessageSid"]: p["params"] for p in posts if p["params"]["MessageStatus"] == "undelivered"}
        assert final[sms.sid]["ErrorCode"] == "30008" and final[whatsapp.sid]["ErrorCode"] == "63024"
        for post in posts:
            assert RequestValidator(DEMO_AUTH_TOKEN).validate(
                url, post["params"], post["headers"]["X-Twilio-Signature"]
            )
        fetched = client.messages(sms.sid).fetch()
        assert (fetched.status, fetched.error_code, fetched.error_message) == ("undelivered", 30008, "Unknown error")

    with TwilioEmulator(faults={"rate_undelivered": 0.5, "seed": 11}, callback_delay_seconds=0.01) as emu:
        client = twilio_client(emu)
        for i in range(40):
            client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body=f"m{i}")
        wait_until(lambda: all(m["status"] in ("delivered", "undelivered") for m in emu.messages()))
        undelivered = sum(m["status"] == "undelivered" for m in emu.messages())
        assert 8 <= undelivered <= 32


def test_failed_callback_deliveries_are_retried_and_logged(receiver: WebhookReceiver) -> None:
    receiver.script = {"queued": [500, 503]}
    with TwilioEmulator(callback_retry_seconds=0.05, callback_max_attempts=3) as emu:
        client = twilio_client(emu)
        sent = client.messages.create(
            to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="hi", status_callback=f"{receiver.base}/s"
        )
        receiver.wait_for(lambda posts: sum(p["code"] == 200 for p in posts) == 3)  # queued (3rd try), sent, delivered
        wait_until(lambda: len(emu.callbacks()) == 5)
        queued = [c for c in emu.callbacks() if c["message_status"] == "queued"]
        assert [(c["attempt"], c["status_code"], c["ok"]) for c in queued] == [
            (1, 500, False),
            (2, 503, False),
            (3, 200, True),
        ]
        assert all(c["message_sid"] == sent.sid for c in emu.callbacks())

        closed_port_url = f"http://127.0.0.1:{_free_port()}/gone"
        client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="hi", status_callback=closed_port_url)
        wait_until(lambda: sum(c["url"] == closed_port_url for c in emu.callbacks()) == 9)  # 3 statuses x 3 attempts
        failures = [c for c in emu.callbacks() if c["url"] == closed_port_url]
        assert all(c["status_code"] is None and c["error"] and not c["ok"] for c in failures)
        assert max(c["attempt"] for c in failures) == 3


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- inbound and the 24 h window


def test_inbound_posts_a_signed_webhook_and_opens_the_session_window(
    emu: TwilioEmulator, client: Client, receiver: WebhookReceiver
) -> None:
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="Any questions?")
    assert caught.value.code == 63016

    webhook_url = f"{receiver.base}/twilio/inbound"
    answer = httpx.post(
        f"{emu.url}/__emulator/inbound",
        json={"from": PROSPECT, "body": "Yes, tell me more", "webhook_url": webhook_url, "profile_name": "Mara"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["webhook"]["status_code"] == 200 and answer.json()["webhook"]["response_body"] == "<Response/>"
    [post] = receiver.posts
    params = post["params"]
    assert RequestValidator(DEMO_AUTH_TOKEN).validate(webhook_url, params, post["headers"]["X-Twilio-Signature"])
    assert (params["From"], params["To"], params["Body"]) == (PROSPECT, DEMO_WHATSAPP_SENDER, "Yes, tell me more")
    assert params["WaId"] == "4915112345678" and params["ProfileName"] == "Mara" and params["NumMedia"] == "0"
    assert (
        params["MessageSid"] == params["SmsMessageSid"] == params["SmsSid"] and params["AccountSid"] == DEMO_ACCOUNT_SID
    )
    assert params["SmsStatus"] == "received"

    reply = client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="Any questions?")
    assert reply.status == "queued"
    inbound = client.messages.list(from_=PROSPECT)
    assert [(m.direction, m.status, m.sid) for m in inbound] == [("inbound", "received", params["MessageSid"])]

    emu.open_session_window(PROSPECT, at=datetime.now(UTC) - timedelta(hours=25))  # the window has lapsed
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="Still there?")
    assert caught.value.code == 63016


def test_session_window_fail_mode_fails_asynchronously_like_twilio(receiver: WebhookReceiver) -> None:
    with TwilioEmulator(session_window="fail") as emu:
        client = twilio_client(emu)
        url = f"{receiver.base}/s"
        sent = client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="freeform", status_callback=url)
        assert sent.status == "queued"
        posts = receiver.wait_for(lambda posts: any(p["params"]["MessageStatus"] == "failed" for p in posts))
        assert posts[-1]["params"]["ErrorCode"] == "63016"
        fetched = client.messages(sent.sid).fetch()
        assert (fetched.status, fetched.error_code) == ("failed", 63016)
    with TwilioEmulator(session_window="off") as emu:
        assert twilio_client(emu).messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="x").status == "queued"


# ---------------------------------------------------------------------------- faults


def test_429_and_5xx_faults_surface_as_twilio_errors(emu: TwilioEmulator, client: Client) -> None:
    emu.set_faults(rate_429=1.0)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="x")
    assert (caught.value.status, caught.value.code) == (429, 20429) and "Too Many Requests" in caught.value.msg
    with pytest.raises(TwilioRestException) as caught:
        client.content.v1.contents(DEMO_TEMPLATE_SID).fetch()
    assert (caught.value.status, caught.value.code) == (429, 20429)
    with pytest.raises(TwilioException) as listing:  # list() raises a plain TwilioException carrying the response
        client.messages.list()
    assert listing.value.args[1].status_code == 429

    emu.set_faults({"rate_5xx": 1.0, "seed": 3})
    seen = set()
    for _ in range(12):
        with pytest.raises(TwilioRestException) as caught:
            client.messages("SM" + "0" * 32).fetch()
        seen.add((caught.value.status, caught.value.code))
    assert seen == {(500, 20500), (503, 20503)}

    assert httpx.get(f"{emu.url}/__emulator/state").status_code == 200  # control endpoints are never faulted
    emu.set_faults()
    assert client.messages.list() == [] and emu.messages() == []


def test_faults_are_deterministic_for_a_seed() -> None:
    def outcomes(seed: int) -> list[int]:
        with TwilioEmulator(faults=Faults(seed=seed, rate_429=0.3, rate_5xx=0.2)) as emu:
            base = f"{emu.url}/2010-04-01/Accounts/{DEMO_ACCOUNT_SID}/Messages.json"
            with httpx.Client(auth=(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN)) as http:
                return [http.get(base).status_code for _ in range(40)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert {200, 429} <= set(first) and set(first) & {500, 503}
    assert first != outcomes(8)


def test_drop_after_commit_creates_the_message_but_never_answers(
    emu: TwilioEmulator, client: Client, receiver: WebhookReceiver
) -> None:
    emu.set_faults(drop_after_commit=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.messages.create(
            to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="exactly once", status_callback=f"{receiver.base}/s"
        )
    emu.set_faults()
    [message] = client.messages.list(to=PROSPECT_SMS)  # how a caller reconciles after a lost response
    assert message.body == "exactly once"
    posts = receiver.wait_for(lambda posts: any(p["params"]["MessageStatus"] == "delivered" for p in posts))
    assert {p["params"]["MessageSid"] for p in posts} == {message.sid}
    assert [r["dropped"] for r in emu.requests_log()][:1] == [True]


def test_latency_fault_delays_answers(emu: TwilioEmulator, client: Client) -> None:
    emu.set_faults(latency_ms=250)
    started = time.monotonic()
    client.messages.list()
    assert time.monotonic() - started >= 0.25


def test_faults_from_environment_and_bad_fault_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_EMULATOR_FAULTS", '{"rate_429": 0.25, "seed": 9}')
    assert TwilioEmulator().faults == Faults(seed=9, rate_429=0.25)
    with pytest.raises(ValueError, match="unknown fault"):
        TwilioEmulator(faults={"rate_teapot": 1})
    with pytest.raises(ValueError, match="fraction"):
        Faults.coerce({"rate_5xx": 2})


# ---------------------------------------------------------------------------- control endpoints, state, CLI


def test_control_endpoints(emu: TwilioEmulator, client: Client) -> None:
    client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="x")
    with httpx.Client(base_url=emu.url) as http:
        state = http.get("/__emulator/state").json()
        assert [m["body"] for m in state["messages"]] == ["x"] and "callbacks" in state
        assert http.put("/__emulator/faults", json={"rate_429": 0.5}).json()["rate_429"] == 0.5
        assert http.get("/__emulator/faults").json()["rate_429"] == 0.5
        assert http.put("/__emulator/faults", json={"nope": 1}).status_code == 400
        log = http.get("/__emulator/requests").json()["requests"]
        assert log[0]["method"] == "POST" and log[0]["status"] == 201 and "/Messages.json" in log[0]["path"]
        assert http.post("/__emulator/inbound", json={"body": "no sender"}).status_code == 400
        assert http.post("/__emulator/reset").status_code == 200
        assert http.get("/__emulator/state").json()["messages"] == []
        assert http.get("/__emulator/requests").json()["requests"] == []


def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "twilio.json"
    with TwilioEmulator(state_file=state_file) as emu:
        client = twilio_client(emu)
        emu.inbound(PROSPECT, "hello")
        delivered = send_template(client)
        wait_until(lambda: client.messages(delivered.sid).fetch().status == "read")
        emu.callback_delay_seconds = 1.0  # the next message is still queued when the emulator stops
        in_flight = client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="in the window")
        saved = httpx.post(f"{emu.url}/__emulator/save")
        assert saved.status_code == 200 and json.loads(state_file.read_text())["messages"]
    assert not list(tmp_path.glob("*.tmp"))

    with TwilioEmulator(state_file=state_file) as emu:
        client = twilio_client(emu)
        assert client.messages(delivered.sid).fetch().status == "read"
        assert {m.sid for m in client.messages.list()} >= {delivered.sid, in_flight.sid}
        wait_until(lambda: client.messages(in_flight.sid).fetch().status == "read")  # pending steps resume
        again = client.messages.create(to=PROSPECT, from_=DEMO_WHATSAPP_SENDER, body="window still open")
        assert again.status == "queued"


def test_cli_prints_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "cli-state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.twilio", "--port", "0", "--state-file", str(state_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CDP_EMULATOR_FAULTS": ""},
    )
    try:
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"twilio emulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        client = Client(DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, http_client=EmulatorHttpClient(match.group(1)))
        assert client.api.v2010.accounts(DEMO_ACCOUNT_SID).fetch().status == "active"
        sid = client.messages.create(to=PROSPECT_SMS, from_=DEMO_SMS_NUMBER, body="from the CLI").sid
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert sid in {m["sid"] for m in json.loads(state_file.read_text())["messages"]}
