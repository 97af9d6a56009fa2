"""A local Twilio REST API (Programmable Messaging + Content API) that the real `twilio` library drives unchanged.

Emulated (base path `/2010-04-01` for api.twilio.com, `/v1` for content.twilio.com, both on one port):

- HTTP Basic auth with an Account SID + Auth Token, or an API key (`SK...` + secret) bound to an account. Wrong or
  missing credentials: 401 with Twilio's error 20003; an account SID in the path that is not the authenticated one:
  404 with error 20404.
- `GET /2010-04-01/Accounts/{AccountSid}.json` (the account, handy as a destination's connection check).
- Messages: `POST .../Messages.json` (create), `GET .../Messages.json` (list with To, From, DateSent, DateSent<,
  DateSent> and Twilio's paging: PageSize, Page, PageToken, next/previous/first_page_uri, newest first),
  `GET|POST|DELETE .../Messages/{Sid}.json` (fetch; update with Body="" to redact or Status=canceled to cancel a
  scheduled message; delete with 204) and `GET .../Messages/{Sid}/Media.json`.
  Create validates with Twilio's codes: 21604 missing To, 21211 invalid To, 21603 missing From and
  MessagingServiceSid, 21212 invalid From, 21910 From/To channel mismatch, 21606 SMS From not owned by the account,
  63007 WhatsApp From not a known channel sender, 21705/21701 malformed/unknown MessagingServiceSid, 21704 service
  without a sender for the channel, 21654 ContentVariables without ContentSid, 21655 unknown ContentSid (Twilio's
  real code; the Content API itself answers 20404 for an unknown sid), 21656 invalid ContentVariables (not a JSON
  object, a null/empty value, a newline/tab/5+ spaces, or a variable of the template left out), 63027 template not
  approved for WhatsApp, 21602 no Body/ContentSid/MediaUrl, 21617 body over 1600 characters, 21609 bad
  StatusCallback, 35118/35111/35114 scheduling without a service / without SendAt / SendAt outside 300 s..35 days,
  63016 WhatsApp freeform message outside the 24 h customer-service window.
- The 24 h WhatsApp window: a Body-only message (no ContentSid) to `whatsapp:+...` is allowed only if that number
  sent an inbound message within `session_window_seconds` (default 86,400). `session_window` chooses what happens
  otherwise: "reject" (default) answers 400 with code 63016 at once; "fail" is what real Twilio does: the message is
  created (201, queued) and then fails with error_code 63016 (status callback "failed"); "off" disables the check.
  The same switch governs unapproved templates (63027).
- Content API: `GET /v1/Content`, `GET /v1/Content/{HX...}`, `GET /v1/Content/{HX...}/ApprovalRequests`, with
  templates preloaded from `templates=` plus one demo template (`advisor_mba_intro`, variables 1 = first name,
  2 = programme: the text of the sync whatsapp_advisor_intro). A message with ContentSid gets its body rendered from
  `types["twilio/text"].body` (or the first type with a body). Missing variables are an error (21656), where real
  Twilio would substitute the template's sample values: deliberate, so that the CDP never sends a template with a
  placeholder left in.
- Status progression in a background worker: queued (accepted -> queued with a messaging service) -> sent ->
  delivered (-> read for WhatsApp when `whatsapp_read_receipts`), one step every `callback_delay_seconds`; the
  stored status follows, and when the message has a StatusCallback each step is POSTed form-encoded with the fields
  Twilio sends (MessageSid, MessageStatus, SmsSid, SmsStatus, AccountSid, From, To, ApiVersion, ErrorCode on
  failure, ChannelPrefix/ChannelInstallSid/ChannelToAddress/StructuredMessage/EventType for WhatsApp,
  MessagingServiceSid), signed with X-Twilio-Signature by `twilio.request_validator.RequestValidator` and the
  account's auth token over the exact URL. Deliveries that fail (connection error, 429 or 5xx) are retried
  (`callback_max_attempts`, doubling from `callback_retry_seconds`); every attempt is logged in state["callbacks"].
- Faults (see `Faults`): rate_429 (error 20429), rate_5xx (500 20500 / 503 20503), latency_ms, drop_after_commit
  (create/update/delete applied, callbacks still go out, connection closed without a response),
  hold_after_commit_ms (a create/update/delete applied, its answer held back that long: a client killed meanwhile
  never learns that it was sent) and rate_undelivered (the message ends "undelivered" with 63024 on WhatsApp,
  30008 on SMS).
- Inbound simulation: `POST /__emulator/inbound` {"from": "whatsapp:+...", "to": ..., "body": ..., "webhook_url":
  ..., "profile_name": ...} stores an inbound message, opens the session window for that number and POSTs Twilio's
  signed inbound webhook to webhook_url (answer: the webhook's status code and body).
- Inspection: `/__emulator/state|reset|faults|requests|save|inbound` (no auth).

Not emulated: calls, Conversations, Verify, Lookup and every other product; MMS media download; price (always null);
message feedback; Messaging Service configuration (services are constructor data); the Content API's create, delete
and approval-create endpoints; ValidityPeriod expiry (stored, never enforced); subaccounts; edge/region hosts;
per-account senders (the sender list is shared by all accounts).

Demo account (default when `accounts` is not given): Account SID `ACc0ffee00000000000000000000000001`, Auth Token
`emulator-auth-token`; senders `whatsapp:+14155238886` (the Twilio WhatsApp sandbox number) and `+15005550006`;
messaging service `MGc0ffee00000000000000000000000001` with both senders.

Point the real client at it with a `TwilioHttpClient` subclass whose `request()` replaces `https://api.twilio.com`
and `https://content.twilio.com` with the emulator URL (see tests/integration/test_emulator_twilio.py).

Start: `python -m emulators.twilio [--host H] [--port P] [--state-file F] [--faults JSON]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import hmac
import json
import math
import os
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
API_HOST = "https://api.twilio.com"
CONTENT_HOST = "https://content.twilio.com"
DEMO_ACCOUNT_SID = "ACc0ffee00000000000000000000000001"
DEMO_AUTH_TOKEN = "emulator-auth-token"
DEMO_WHATSAPP_SENDER = "whatsapp:+14155238886"
DEMO_SMS_NUMBER = "+15005550006"
DEMO_MESSAGING_SERVICE_SID = "MGc0ffee00000000000000000000000001"
DEMO_TEMPLATE_SID = "HXc0ffee00000000000000000000000001"
# The text the sync whatsapp_advisor_intro sends (dbt_project/models/activation/sync_whatsapp_advisor_intro.sql
# renders the same text into its body column): reverse_etl/syncs.yml uses this template's SID against the emulator.
DEMO_TEMPLATE: dict[str, Any] = {
    "friendly_name": "advisor_mba_intro",
    "language": "en",
    "variables": {"1": "first_name", "2": "programme"},
    "types": {
        "twilio/text": {
            "body": "Hi {{1}}, I am your admissions advisor at Northbridge University. I saw you are looking at the "
            "{{2}} programme: would you like a short call this week?"
        }
    },
    "approval": "approved",
    "category": "MARKETING",
}
FAULTS_ENV = "CDP_EMULATOR_FAULTS"
REQUEST_LOG_SIZE = 10_000
FINAL_STATUSES = {"delivered", "undelivered", "failed", "read", "received", "canceled"}

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
_ALPHANUMERIC = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_SID = {prefix: re.compile(rf"^{prefix}[0-9a-f]{{32}}$") for prefix in ("AC", "SM", "MM", "MG", "HX", "SK")}
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")

_ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+?)\.json$")
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_MESSAGE_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+?)\.json$")
_MEDIA_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)/Media\.json$")
_CONTENTS_PATH = re.compile(r"^/v1/Content/?$")
_CONTENT_PATH = re.compile(r"^/v1/Content/([^/]+)$")
_APPROVAL_PATH = re.compile(r"^/v1/Content/([^/]+)/ApprovalRequests$")


@dataclass
class Faults:
    """Injected failures, drawn from one seeded RNG so that a run is reproducible."""

    seed: int = 0
    rate_429: float = 0
    rate_5xx: float = 0
    latency_ms: float = 0
    drop_after_commit: float = 0
    hold_after_commit_ms: float = 0
    rate_undelivered: float = 0

    @classmethod
    def coerce(cls, value: Faults | dict[str, Any] | str | None) -> Faults:
        """Faults from an instance, a dict, a JSON string, or (None) the CDP_EMULATOR_FAULTS environment variable."""
        if isinstance(value, Faults):
            return value
        if value is None:
            value = os.environ.get(FAULTS_ENV) or {}
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"faults must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        faults = cls(**value)
        for name in known - {"seed"}:
            number = getattr(faults, name)
            if (
                not isinstance(number, int | float)
                or number < 0
                or (name.startswith(("rate_", "drop_")) and number > 1)
            ):
                raise ValueError(f"fault {name} must be a number (a fraction in [0, 1] for rates), got {number!r}")
        return faults


class TwilioError(Exception):
    """An error answered in Twilio's JSON error format."""

    def __init__(
        self, status: int, code: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code}
        if self.detail:
            body["detail"] = self.detail
        body["message"] = self.message
        body["more_info"] = f"https://www.twilio.com/docs/errors/{self.code}"
        body["status"] = self.status
        return body


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] | None = None
    drop: bool = False


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment)  # "Thu, 24 Aug 2023 05:01:45 +0000", as Twilio writes it


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp() -> str:
    """A millisecond timestamp for the status history: steps are often less than a second apart."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _split_address(address: str) -> tuple[str, str]:
    """'whatsapp:+4915...' -> ('whatsapp', '+4915...'); '+1555...' -> ('sms', '+1555...')."""
    if ":" in address:
        prefix, number = address.split(":", 1)
        return prefix.lower(), number
    return "sms", address


def _segments(body: str, channel: str) -> int:
    if channel != "sms":
        return 1
    if all(ch in _GSM7 or ch in _GSM7_EXTENDED for ch in body):
        length, single, multi = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in body), 160, 153
    else:
        length, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else math.ceil(length / multi)


def _parse_date(value: str) -> tuple[datetime, bool]:
    """A DateSent filter value: 'YYYY-MM-DD' (a whole day) or an ISO 8601 timestamp. Returns (moment, is_date)."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC), True
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), False
    except ValueError as exc:
        raise TwilioError(400, 20001, f"Invalid DateSent value: {value}") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, 40 ms delayed-ACK stalls
    server_version = "Twilio.Emulator"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the emulator keeps its own request log; stderr stays quiet for the demo

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        emulator = self.server.emulator
        try:
            reply = emulator._handle(method, split.path, split.query, self.headers, body)
        except TwilioError as exc:
            reply = _Reply(exc.status, exc.body(), exc.headers)
        except Exception:  # a bug in the emulator must still answer in Twilio's format
            traceback.print_exc()
            reply = _Reply(500, TwilioError(500, 20500, "Internal Server Error").body())
        if not split.path.startswith("/__emulator/"):
            emulator._log_request(method, self.path, None if reply.drop else reply.status, started)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Twilio-Request-Id", _new_sid("RQ"))
        for name, value in (reply.headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: TwilioEmulator


class TwilioEmulator:
    """A local Twilio Messaging + Content API; `with TwilioEmulator() as emu:` or `emu = TwilioEmulator().start()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | dict[str, Any] | None = None,
        state_file: Path | str | None = None,
        accounts: dict[str, str] | None = None,
        api_keys: dict[str, tuple[str, str]] | None = None,
        senders: list[str] | None = None,
        messaging_services: dict[str, list[str]] | None = None,
        templates: dict[str, dict[str, Any]] | None = None,
        callback_delay_seconds: float = 0.05,
        callback_max_attempts: int = 4,
        callback_retry_seconds: float = 0.2,
        callback_timeout_seconds: float = 5.0,
        session_window: str = "reject",
        session_window_seconds: float = 86_400,
        whatsapp_read_receipts: bool = True,
    ) -> None:
        self.host, self._port = host, port
        self.state_file = Path(state_file) if state_file else None
        self.accounts = dict(accounts or {DEMO_ACCOUNT_SID: DEMO_AUTH_TOKEN})
        for sid in self.accounts:
            if not _SID["AC"].match(sid):
                raise ValueError(f"account sid {sid!r} must be 'AC' followed by 32 lower-case hex digits")
        self.api_keys = dict(api_keys or {})
        for key, (_secret, account) in self.api_keys.items():
            if not _SID["SK"].match(key) or account not in self.accounts:
                raise ValueError(f"api key {key!r} must look like SK + 32 hex and belong to a configured account")
        self.senders = list(senders if senders is not None else [DEMO_WHATSAPP_SENDER, DEMO_SMS_NUMBER])
        self.messaging_services = dict(
            messaging_services
            if messaging_services is not None
            else {DEMO_MESSAGING_SERVICE_SID: [DEMO_WHATSAPP_SENDER, DEMO_SMS_NUMBER]}
        )
        self._initial_templates = self._check_templates({DEMO_TEMPLATE_SID: DEMO_TEMPLATE, **(templates or {})})
        if session_window not in ("reject", "fail", "off"):
            raise ValueError(f"session_window must be 'reject', 'fail' or 'off', got {session_window!r}")
        self.session_window = session_window
        self.session_window_seconds = session_window_seconds
        self.callback_delay_seconds = callback_delay_seconds
        self.callback_max_attempts = callback_max_attempts
        self.callback_retry_seconds = callback_retry_seconds
        self.callback_timeout_seconds = callback_timeout_seconds
        self.whatsapp_read_receipts = whatsapp_read_receipts

        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._faults = Faults.coerce(faults)
        self._fault_rng = random.Random(self._faults.seed)
        self._outcome_rng = random.Random(self._faults.seed + 1)
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._clear_state()
        self._queue: list[tuple[float, int, str, Any]] = []
        self._queue_counter = 0
        self._stopping = False
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._deliveries: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        if self.state_file and self.state_file.exists():
            self._load(json.loads(self.state_file.read_text()))
        self._stopping = False
        self._server = _Server((self.host, self._port), _Handler)
        self._server.emulator = self
        self._deliveries = ThreadPoolExecutor(max_workers=4, thread_name_prefix="twilio-callback")
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="twilio-emulator", daemon=True)
        worker = threading.Thread(target=self._work, name="twilio-emulator-worker", daemon=True)
        self._threads = [serve, worker]
        for thread in self._threads:
            thread.start()
        with self._lock:
            for record in self._messages.values():
                if record["pending_statuses"]:
                    self._schedule(record.get("next_transition_at") or time.time(), "advance", record["sid"])
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._deliveries:
            self._deliveries.shutdown(wait=True, cancel_futures=True)
        self._server = None
        if self.state_file:
            self.save()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ public inspection API

    def state(self) -> dict[str, Any]:
        """Everything stored: messages (oldest first, with status history), callback deliveries, windows, templates."""
        with self._lock:
            return json.loads(
                json.dumps(
                    {
                        "messages": sorted(self._messages.values(), key=lambda r: r["seq"]),
                        "callbacks": list(self._callbacks),
                        "session_windows": self._session_windows,
                        "templates": self._templates,
                        "seq": self._seq,
                    }
                )
            )

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        """Stored messages, oldest first, optionally only those sent to `to`."""
        return [m for m in self.state()["messages"] if to is None or m["to"] == to]

    def callbacks(self) -> list[dict[str, Any]]:
        return self.state()["callbacks"]

    def requests_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget messages, callbacks, windows and the request log; templates go back to the constructor's."""
        with self._lock:
            self._clear_state()
            self._queue.clear()
            self._requests.clear()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def set_faults(self, faults: Faults | dict[str, Any] | None = None, **settings: Any) -> Faults:
        """Replace the fault configuration (and reseed the fault RNGs): set_faults(rate_429=0.5, seed=3)."""
        new = Faults.coerce(faults if faults is not None else settings)
        with self._lock:
            self._faults = new
            self._fault_rng = random.Random(new.seed)
            self._outcome_rng = random.Random(new.seed + 1)
        return new

    def save(self) -> None:
        """Write the state atomically to state_file (temp file + os.replace)."""
        if not self.state_file:
            raise RuntimeError("no state_file configured")
        data = json.dumps(self.state(), indent=1)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=self.state_file.name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, self.state_file)

    def open_session_window(self, address: str, at: datetime | None = None) -> None:
        """Record an inbound message from `address` (e.g. 'whatsapp:+49...') at `at` (default now)."""
        with self._lock:
            self._session_windows[address] = (at or _now()).timestamp()

    def inbound(
        self,
        from_: str,
        body: str,
        *,
        to: str = DEMO_WHATSAPP_SENDER,
        webhook_url: str | None = None,
        profile_name: str | None = None,
        account_sid: str | None = None,
    ) -> dict[str, Any]:
        """Simulate an inbound message: store it, open the session window, POST the signed webhook."""
        account = account_sid or next(iter(self.accounts))
        if account not in self.accounts:
            raise TwilioError(400, 20404, f"Unknown account {account}")
        channel, number = _split_address(from_)
        if channel not in ("sms", "whatsapp") or not _E164.match(number):
            raise TwilioError(400, 21212, f"The 'From' number {from_} is not a valid phone number.")
        if _split_address(to)[0] != channel:
            raise TwilioError(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
        now = _now()
        sid = _new_sid("SM")
        with self._lock:
            self._seq += 1
            record = self._new_record(sid, account, from_, to, body, "inbound", "received", now)
            record["date_sent"] = _rfc2822(now)
            record["status_history"] = [{"status": "received", "at": _stamp()}]
            self._messages[sid] = record
            self._session_windows[from_] = now.timestamp()
        result: dict[str, Any] = {"message": self._resource(record), "webhook": None}
        if webhook_url:
            params = {
                "SmsMessageSid": sid,
                "NumMedia": "0",
                "ProfileName": profile_name or "",
                "MessageType": "text",
                "SmsSid": sid,
                "SmsStatus": "received",
                "Body": body,
                "To": to,
                "NumSegments": "1",
                "ReferralNumMedia": "0",
                "MessageSid": sid,
                "AccountSid": account,
                "From": from_,
                "ApiVersion": API_VERSION,
            }
            if channel == "whatsapp":
                params["WaId"] = number.lstrip("+")
            else:
                params.pop("ProfileName")
                params.pop("MessageType")
                params.pop("ReferralNumMedia")
            delivery = self._new_delivery("inbound", sid, webhook_url, params, account)
            self._deliver(delivery, retry=False)
            result["webhook"] = {
                k: delivery.get(k) for k in ("url", "status_code", "error", "response_body", "signature")
            }
        return result

    # ------------------------------------------------------------------ state helpers

    @staticmethod
    def _check_templates(templates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        checked = {}
        for sid, template in templates.items():
            if not _SID["HX"].match(sid):
                raise ValueError(f"template sid {sid!r} must be 'HX' followed by 32 lower-case hex digits")
            types = template.get("types")
            if not isinstance(types, dict) or not types:
                raise ValueError(f"template {sid} needs 'types', e.g. {{'twilio/text': {{'body': 'Hi {{{{1}}}}'}}}}")
            checked[sid] = {
                "friendly_name": template.get("friendly_name", sid),
                "language": template.get("language", "en"),
                "variables": dict(template.get("variables") or {}),
                "types": types,
                "approval": template.get("approval", "approved"),
                "category": template.get("category", "UTILITY"),
                "account_sid": template.get("account_sid"),
                "date_created": template.get("date_created") or _iso(_now()),
            }
        return checked

    def _clear_state(self) -> None:
        self._messages: dict[str, dict[str, Any]] = {}
        self._sid_seq: dict[str, int] = {}
        self._callbacks: list[dict[str, Any]] = []
        self._session_windows: dict[str, float] = {}
        self._templates = json.loads(json.dumps(self._initial_templates))
        self._seq = 0

    def _load(self, data: dict[str, Any]) -> None:
        with self._lock:
            self._clear_state()
            for record in data.get("messages", []):
                self._messages[record["sid"]] = record
                self._sid_seq[record["sid"]] = record["seq"]
            self._callbacks = list(data.get("callbacks", []))
            self._session_windows = dict(data.get("session_windows", {}))
            self._templates.update(data.get("templates", {}))
            self._seq = int(data.get("seq", len(self._messages)))

    def _log_request(self, method: str, path: str, status: int | None, started: float) -> None:
        entry = {
            "method": method,
            "path": path,
            "status": status,
            "dropped": status is None,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
        }
        with self._lock:
            self._requests.append(entry)

    def _account_of(self, template: dict[str, Any]) -> str:
        return template.get("account_sid") or next(iter(self.accounts))

    # ------------------------------------------------------------------ HTTP routing

    def _handle(self, method: str, path: str, query: str, headers: Any, body: bytes) -> _Reply:
        if path.startswith("/__emulator/"):
            return self._control(method, path, body)
        if not (path.startswith(f"/{API_VERSION}/") or path == "/v1/Content" or path.startswith("/v1/Content/")):
            raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        # Faults hit only the real API paths, before anything is read or written
        with self._lock:
            faults = self._faults
            latency = faults.latency_ms
            throttled = faults.rate_429 > 0 and self._fault_rng.random() < faults.rate_429
            broken = faults.rate_5xx > 0 and self._fault_rng.random() < faults.rate_5xx
            unavailable = broken and self._fault_rng.random() < 0.5
        if latency:
            time.sleep(latency / 1000)
        if throttled:
            raise TwilioError(429, 20429, "Too Many Requests")
        if broken:
            if unavailable:
                raise TwilioError(503, 20503, "Service Unavailable")
            raise TwilioError(500, 20500, "Internal Server Error")

        account = self._authenticate(headers.get("Authorization"))
        if account is None:
            raise TwilioError(
                401,
                20003,
                "Authenticate",
                detail="Your AccountSid or AuthToken was incorrect.",
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if body else {}
        params = parse_qs(query, keep_blank_values=True)
        reply = self._route(method, path, params, form, account)
        if (
            method in ("POST", "DELETE")
            and 200 <= reply.status < 300
            and path.startswith(f"/{API_VERSION}/")
            and faults.drop_after_commit > 0
        ):
            with self._lock:
                dropped = self._fault_rng.random() < faults.drop_after_commit
            if dropped:
                return _Reply(reply.status, drop=True)
        if method in ("POST", "DELETE") and 200 <= reply.status < 300 and faults.hold_after_commit_ms > 0:
            time.sleep(faults.hold_after_commit_ms / 1000)
        return reply

    def _authenticate(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        token = self.accounts.get(user)
        if token is not None and hmac.compare_digest(token.encode(), password.encode()):
            return user
        key = self.api_keys.get(user)
        if key is not None and hmac.compare_digest(key[0].encode(), password.encode()):
            return key[1]
        return None

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], form: dict[str, list[str]], account: str
    ) -> _Reply:
        if match := _CONTENTS_PATH.match(path):
            self._allow(method, "GET")
            return _Reply(200, self._list_contents(query, account))
        if match := _APPROVAL_PATH.match(path):
            self._allow(method, "GET")
            return _Reply(200, self._approval(match.group(1), account, path))
        if match := _CONTENT_PATH.match(path):
            self._allow(method, "GET")
            return _Reply(200, self._content_resource(self._content(match.group(1), account, path)[0]))
        for pattern in (_ACCOUNT_PATH, _MESSAGES_PATH, _MESSAGE_PATH, _MEDIA_PATH):
            if (match := pattern.match(path)) and match.group(1) != account:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
        if _ACCOUNT_PATH.match(path):
            self._allow(method, "GET")
            return _Reply(200, self._account_resource(account))
        if _MESSAGES_PATH.match(path):
            self._allow(method, "GET", "POST")
            if method == "POST":
                return _Reply(201, self._create_message(account, form))
            return _Reply(200, self._list_messages(account, query))
        if match := _MEDIA_PATH.match(path):
            self._allow(method, "GET")
            return _Reply(200, self._media_list(account, match.group(2), path))
        if match := _MESSAGE_PATH.match(path):
            self._allow(method, "GET", "POST", "DELETE")
            sid = match.group(2)
            if method == "GET":
                return _Reply(200, self._resource(self._message(account, sid, path)))
            if method == "POST":
                return _Reply(200, self._update_message(account, sid, form, path))
            self._delete_message(account, sid, path)
            return _Reply(204)
        raise TwilioError(404, 20404, f"The requested resource {path} was not found")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise TwilioError(405, 20004, "Method not allowed")

    # ------------------------------------------------------------------ control endpoints

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        try:
            payload = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return _Reply(400, {"error": f"body is not JSON: {exc}"})
        try:
            if path == "/__emulator/state" and method == "GET":
                return _Reply(200, self.state())
            if path == "/__emulator/reset" and method == "POST":
                self.reset()
                return _Reply(200, {"reset": True})
            if path == "/__emulator/faults" and method == "GET":
                return _Reply(200, asdict(self.faults))
            if path == "/__emulator/faults" and method == "PUT":
                return _Reply(200, asdict(self.set_faults(payload)))
            if path == "/__emulator/requests" and method == "GET":
                return _Reply(200, {"requests": self.requests_log()})
            if path == "/__emulator/save" and method == "POST":
                self.save()
                return _Reply(200, {"saved": str(self.state_file)})
            if path == "/__emulator/inbound" and method == "POST":
                if not isinstance(payload, dict) or not payload.get("from") or "body" not in payload:
                    return _Reply(400, {"error": "inbound needs a JSON object with 'from' and 'body'"})
                unknown = set(payload) - {"from", "to", "body", "webhook_url", "profile_name", "account_sid"}
                if unknown:
                    return _Reply(400, {"error": f"unknown inbound field(s): {sorted(unknown)}"})
                result = self.inbound(
                    payload["from"],
                    str(payload["body"]),
                    to=payload.get("to") or DEMO_WHATSAPP_SENDER,
                    webhook_url=payload.get("webhook_url"),
                    profile_name=payload.get("profile_name"),
                    account_sid=payload.get("account_sid"),
                )
                return _Reply(201, result)
        except (ValueError, RuntimeError) as exc:
            return _Reply(400, {"error": str(exc)})
        return _Reply(404, {"error": f"no emulator endpoint {method} {path}"})

    # ------------------------------------------------------------------ resources

    def _account_resource(self, account: str) -> dict[str, Any]:
        created = _rfc2822(datetime(2024, 1, 1, tzinfo=UTC))
        base = f"/{API_VERSION}/Accounts/{account}"
        return {
            "auth_token": self.accounts[account],
            "date_created": created,
            "date_updated": created,
            "friendly_name": "CDP emulator account" if account == DEMO_ACCOUNT_SID else account,
            "owner_account_sid": account,
            "sid": account,
            "status": "active",
            "subresource_uris": {"messages": f"{base}/Messages.json"},
            "type": "Full",
            "uri": f"{base}.json",
        }

    @staticmethod
    def _new_record(
        sid: str, account: str, from_: str | None, to: str, body: str, direction: str, status: str, now: datetime
    ) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}"
        return {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(now),
            "date_sent": None,
            "date_updated": _rfc2822(now),
            "direction": direction,
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
            # emulator bookkeeping, kept in state() but not in the API resource
            "seq": 0,
            "status_history": [],
            "pending_statuses": [],
            "next_transition_at": None,
            "planned_error": None,
            "assigned_from": from_,
            "status_callback": None,
            "content_sid": None,
            "content_variables": None,
            "media": [],
            "send_at": None,
            "validity_period": None,
        }

    # The Message resource's fields, in the order Twilio's JSON has them
    _RESOURCE_KEYS = (
        *("account_sid", "api_version", "body", "date_created", "date_sent", "date_updated", "direction"),
        *("error_code", "error_message", "from", "messaging_service_sid", "num_media", "num_segments", "price"),
        *("price_unit", "sid", "status", "subresource_uris", "to", "uri"),
    )

    def _resource(self, record: dict[str, Any]) -> dict[str, Any]:
        return {key: record[key] for key in self._RESOURCE_KEYS}

    def _message(self, account: str, sid: str, path: str) -> dict[str, Any]:
        with self._lock:
            record = self._messages.get(sid)
            if record is None or record["account_sid"] != account:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            return record

    # ------------------------------------------------------------------ create

    def _create_message(self, account: str, form: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = form.get(name)
            return values[-1] if values else None

        to, from_ = one("To"), one("From")
        body, content_sid, content_variables = one("Body"), one("ContentSid"), one("ContentVariables")
        service_sid, callback = one("MessagingServiceSid"), one("StatusCallback")
        media_urls = [url for url in form.get("MediaUrl", []) if url]
        schedule_type, send_at_text = one("ScheduleType"), one("SendAt")

        if not to:
            raise TwilioError(400, 21604, "A 'To' phone number is required.")
        to_channel, to_number = _split_address(to)
        if to_channel not in ("sms", "whatsapp") or not _E164.match(to_number):
            raise TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        # A messaging service may also be passed in From (Twilio allows From=MG...)
        if from_ and from_.startswith("MG") and not service_sid:
            service_sid, from_ = from_, None
        if not from_ and not service_sid:
            raise TwilioError(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
        if service_sid:
            if not _SID["MG"].match(service_sid):
                raise TwilioError(400, 21705, "The Messaging Service is invalid")
            if service_sid not in self.messaging_services:
                raise TwilioError(400, 21701, f"The Messaging Service {service_sid} does not exist")
        if from_:
            from_channel, from_number = _split_address(from_)
            valid = from_channel == "whatsapp" and _E164.match(from_number)
            valid = valid or (
                from_channel == "sms"
                and (_E164.match(from_number) or _SHORT_CODE.match(from_number) or _ALPHANUMERIC.match(from_number))
            )
            if not valid:
                raise TwilioError(
                    400,
                    21212,
                    f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric sender ID.",
                )
            if from_channel != to_channel:
                raise TwilioError(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
            pool = self.messaging_services.get(service_sid, []) if service_sid else []
            if from_ not in self.senders and from_ not in pool:
                if from_channel == "whatsapp":
                    raise TwilioError(400, 63007, "Twilio could not find a Channel with the specified From address")
                raise TwilioError(
                    400,
                    21606,
                    f"The From phone number {from_} is not a valid, SMS-capable inbound phone number or "
                    "short code for your account.",
                )
            sender = from_
        else:
            candidates = [s for s in self.messaging_services[service_sid] if _split_address(s)[0] == to_channel]
            if not candidates:
                raise TwilioError(400, 21704, "The Messaging Service contains no phone numbers")
            sender = candidates[0]

        if content_variables is not None and not content_sid:
            raise TwilioError(400, 21654, "ContentSid Required")
        planned_error: tuple[int, str] | None = None
        if content_sid:
            template = self._templates.get(content_sid)
            if template is None or not _SID["HX"].match(content_sid) or self._account_of(template) != account:
                raise TwilioError(400, 21655, "The ContentSid is Invalid")
            # Twilio sends the template, not Body, when both are given
            body = self._render(template, content_variables, whatsapp=to_channel == "whatsapp")
            if to_channel == "whatsapp" and template["approval"] != "approved":
                planned_error = self._policy_error(63027, "Template does not exist for a language and locale")
        elif not body and not media_urls:
            raise TwilioError(400, 21602, "Message body is required.")
        body = body or ""
        if len(body) > 1600:
            raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if callback is not None:
            parsed = urlsplit(callback)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or "_" in parsed.hostname:
                raise TwilioError(400, 21609, f"The StatusCallback URL {callback} is not a valid URL.")

        send_at: datetime | None = None
        if schedule_type is not None:
            if schedule_type != "fixed":
                raise TwilioError(400, 20001, f"Invalid ScheduleType: {schedule_type}. Allowed value: fixed")
            if not service_sid:
                raise TwilioError(400, 35118, "MessagingServiceSid is required to schedule a message")
            if not send_at_text:
                raise TwilioError(400, 35111, "SendAt timestamp is missing")
            send_at, _ = _parse_date(send_at_text)
            lead = (send_at - _now()).total_seconds()
            if not 300 <= lead <= 35 * 86_400:
                raise TwilioError(400, 35114, "Scheduling does not support this timestamp")

        if to_channel == "whatsapp" and not content_sid and planned_error is None and self.session_window != "off":
            with self._lock:
                last_inbound = self._session_windows.get(to)
            if last_inbound is None or time.time() - last_inbound > self.session_window_seconds:
                planned_error = self._policy_error(
                    63016,
                    "Failed to send freeform message because you are outside the allowed window. If you are using "
                    "WhatsApp, please use a Message Template.",
                )

        now = _now()
        sid = _new_sid("SM" if not media_urls else "MM")
        status = "scheduled" if send_at else ("accepted" if service_sid else "queued")
        record = self._new_record(
            sid, account, None if service_sid and not from_ else sender, to, body, "outbound-api", status, now
        )
        record.update(
            messaging_service_sid=service_sid,
            num_media=str(len(media_urls)),
            num_segments="0" if service_sid else str(_segments(body, to_channel)),
            assigned_from=sender,
            status_callback=callback,
            content_sid=content_sid,
            content_variables=content_variables,
            send_at=_iso(send_at) if send_at else None,
            validity_period=one("ValidityPeriod"),
            status_history=[{"status": status, "at": _stamp()}],
            media=[{"sid": _new_sid("ME"), "url": url} for url in media_urls],
        )
        with self._lock:
            undelivered = (
                planned_error is None
                and self._faults.rate_undelivered > 0
                and self._outcome_rng.random() < self._faults.rate_undelivered
            )
        if planned_error:
            pending = ["queued", "failed"]
        elif undelivered:
            pending = ["queued", "sent", "undelivered"]
            planned_error = (
                (63024, "Invalid message recipient") if to_channel == "whatsapp" else (30008, "Unknown error")
            )
        else:
            pending = ["queued", "sent", "delivered"]
            if to_channel == "whatsapp" and self.whatsapp_read_receipts:
                pending.append("read")
        record["pending_statuses"] = pending
        record["planned_error"] = list(planned_error) if planned_error else None
        first_due = send_at.timestamp() if send_at else time.time() + self.callback_delay_seconds
        record["next_transition_at"] = first_due
        with self._lock:
            self._seq += 1
            record["seq"] = self._seq
            self._messages[sid] = record
            self._sid_seq[sid] = self._seq
            self._schedule(first_due, "advance", sid)
            return self._resource(record)

    def _policy_error(self, code: int, message: str) -> tuple[int, str]:
        """A WhatsApp policy failure: rejected at once ('reject') or accepted and failed later ('fail', as Twilio)."""
        if self.session_window == "reject":
            raise TwilioError(400, code, message)
        return code, message

    @staticmethod
    def _render(template: dict[str, Any], content_variables: str | None, *, whatsapp: bool) -> str:
        invalid = TwilioError(400, 21656, "The ContentVariables Parameter is invalid.")
        try:
            variables = json.loads(content_variables) if content_variables is not None else {}
        except ValueError:
            raise invalid from None
        if not isinstance(variables, dict):
            raise invalid
        for value in variables.values():
            if value is None or isinstance(value, dict | list) or str(value) == "":
                raise invalid
            if whatsapp and re.search(r"[\n\t]| {5,}", str(value)):
                raise invalid
        types = template["types"]
        text = (types.get("twilio/text") or {}).get("body")
        if text is None:
            text = next((t["body"] for t in types.values() if isinstance(t, dict) and "body" in t), "")
        missing = [name for name in _PLACEHOLDER.findall(text) if name not in variables]
        if missing or "{{}}" in text.replace(" ", ""):
            raise invalid
        return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), text)

    # ------------------------------------------------------------------ list, update, delete, media

    def _list_messages(self, account: str, query: dict[str, list[str]]) -> dict[str, Any]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        to, from_ = one("To"), one("From")
        date_filters = [(op, _parse_date(v)) for op in ("DateSent", "DateSent<", "DateSent>") if (v := one(op))]
        try:
            page_size = min(max(int(one("PageSize") or 50), 1), 1000)
            page = max(int(one("Page") or 0), 0)
        except ValueError as exc:
            raise TwilioError(400, 20001, f"Invalid paging parameter: {exc}") from exc
        token = one("PageToken")

        def sent_at(record: dict[str, Any]) -> datetime:
            return parsedate_to_datetime(record["date_sent"] or record["date_created"])

        def keep(record: dict[str, Any]) -> bool:
            if record["account_sid"] != account or (to and record["to"] != to) or (from_ and record["from"] != from_):
                return False
            moment = sent_at(record) if date_filters else None
            for op, (bound, is_date) in date_filters:
                value: Any = moment.date() if is_date else moment
                limit: Any = bound.date() if is_date else bound
                if (op == "DateSent" and value != limit) or (op == "DateSent<" and value > limit):
                    return False
                if op == "DateSent>" and value < limit:
                    return False
            return True

        with self._lock:
            matching = sorted((r for r in self._messages.values() if keep(r)), key=lambda r: -r["seq"])
            if token:
                if len(token) < 3 or token[:2] not in ("PA", "PB") or token[2:] not in self._sid_seq:
                    raise TwilioError(400, 20001, f"Invalid PageToken: {token}")
                anchor = self._sid_seq[token[2:]]
                if token.startswith("PA"):
                    chunk = [r for r in matching if r["seq"] < anchor][:page_size]
                else:
                    chunk = [r for r in matching if r["seq"] > anchor][-page_size:]
            else:
                chunk = matching[page * page_size : (page + 1) * page_size]
            start = page * page_size
            remaining_after = bool(chunk) and any(r["seq"] < chunk[-1]["seq"] for r in matching)
            items = [self._resource(r) for r in chunk]

        base = f"/{API_VERSION}/Accounts/{account}/Messages.json"
        filters = [(k, v) for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if (v := one(k))]

        def uri(page_number: int, page_token: str | None = None) -> str:
            params = [*filters, ("PageSize", page_size), ("Page", page_number)]
            if page_token:
                params.append(("PageToken", page_token))
            return f"{base}?{urlencode(params)}"

        return {
            "end": start + len(items) - 1 if items else start,
            "first_page_uri": uri(0),
            "messages": items,
            "next_page_uri": uri(page + 1, "PA" + items[-1]["sid"]) if remaining_after else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri(page - 1, "PB" + items[0]["sid"]) if page > 0 and items else None,
            "start": start,
            "uri": uri(page, token),
        }

    def _update_message(self, account: str, sid: str, form: dict[str, list[str]], path: str) -> dict[str, Any]:
        body = form.get("Body", [None])[-1]
        status = form.get("Status", [None])[-1]
        with self._lock:
            record = self._message(account, sid, path)
            if status is not None:
                if status != "canceled":
                    raise TwilioError(400, 20001, f"Invalid Status: {status}. Allowed value: canceled")
                if record["status"] != "scheduled":
                    raise TwilioError(
                        400, 20009, f"Message {sid} cannot be canceled: its status is {record['status']}, not scheduled"
                    )
                record["pending_statuses"] = []
                self._set_status(record, "canceled")
                self._queue_callback(record, "canceled")
            if body is not None:
                if body != "":
                    raise TwilioError(400, 20001, "A message body can only be redacted: pass Body as an empty string")
                if record["status"] not in FINAL_STATUSES:
                    raise TwilioError(
                        400,
                        20009,
                        f"Cannot redact message {sid} in state {record['status'].upper()}: wait until it is "
                        "final (delivered, undelivered, failed, read, received or canceled)",
                    )
                record["body"] = ""
                record["date_updated"] = _rfc2822(_now())
            return self._resource(record)

    def _delete_message(self, account: str, sid: str, path: str) -> None:
        with self._lock:
            record = self._message(account, sid, path)
            if record["status"] not in FINAL_STATUSES | {"scheduled"}:
                raise TwilioError(400, 20009, f"Cannot delete message in state {record['status'].upper()}")
            del self._messages[sid]

    def _media_list(self, account: str, sid: str, path: str) -> dict[str, Any]:
        record = self._message(account, sid, path)
        base = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media"
        items = [
            {
                "account_sid": account,
                "content_type": _guess_content_type(m["url"]),
                "date_created": record["date_created"],
                "date_updated": record["date_created"],
                "parent_sid": sid,
                "sid": m["sid"],
                "uri": f"{base}/{m['sid']}.json",
            }
            for m in record["media"]
        ]
        first = f"{base}.json?PageSize=50&Page=0"
        return {
            "end": max(len(items) - 1, 0),
            "first_page_uri": first,
            "media_list": items,
            "next_page_uri": None,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": None,
            "start": 0,
            "uri": first,
        }

    # ------------------------------------------------------------------ Content API

    def _content(self, sid: str, account: str, path: str) -> tuple[dict[str, Any], str]:
        with self._lock:
            template = self._templates.get(sid)
            if template is None or self._account_of(template) != account:
                raise TwilioError(404, 20404, f"The requested resource {path} was not found")
            return {**template, "sid": sid}, sid

    def _content_resource(self, template: dict[str, Any]) -> dict[str, Any]:
        sid = template["sid"]
        url = f"{CONTENT_HOST}/v1/Content/{sid}"
        return {
            "account_sid": self._account_of(template),
            "date_created": template["date_created"],
            "date_updated": template["date_created"],
            "friendly_name": template["friendly_name"],
            "language": template["language"],
            "links": {
                "approval_create": f"{url}/ApprovalRequests/whatsapp",
                "approval_fetch": f"{url}/ApprovalRequests",
            },
            "sid": sid,
            "types": template["types"],
            "url": url,
            "variables": template["variables"],
        }

    def _list_contents(self, query: dict[str, list[str]], account: str) -> dict[str, Any]:
        try:
            page_size = min(max(int((query.get("PageSize") or ["50"])[-1]), 1), 500)
            page = max(int((query.get("Page") or ["0"])[-1]), 0)
        except ValueError as exc:
            raise TwilioError(400, 20001, f"Invalid paging parameter: {exc}") from exc
        with self._lock:
            owned = [{**t, "sid": sid} for sid, t in self._templates.items() if self._account_of(t) == account]
        chunk = owned[page * page_size : (page + 1) * page_size]

        def url(number: int) -> str:
            return f"{CONTENT_HOST}/v1/Content?PageSize={page_size}&Page={number}"

        return {
            "contents": [self._content_resource(t) for t in chunk],
            "meta": {
                "page": page,
                "page_size": page_size,
                "first_page_url": url(0),
                "previous_page_url": url(page - 1) if page > 0 else None,
                "url": url(page),
                "next_page_url": url(page + 1) if (page + 1) * page_size < len(owned) else None,
                "key": "contents",
            },
        }

    def _approval(self, sid: str, account: str, path: str) -> dict[str, Any]:
        template, _ = self._content(sid, account, path)
        return {
            "account_sid": self._account_of(template),
            "sid": sid,
            "url": f"{CONTENT_HOST}/v1/Content/{sid}/ApprovalRequests",
            "whatsapp": {
                "allow_category_change": True,
                "category": template["category"],
                "content_type": next(iter(template["types"])),
                "name": template["friendly_name"],
                "rejection_reason": "" if template["approval"] != "rejected" else "INVALID_FORMAT",
                "status": template["approval"],
                "type": "whatsapp",
            },
        }

    # ------------------------------------------------------------------ status progression and callbacks

    def _schedule(self, due: float, kind: str, payload: Any) -> None:
        with self._wake:
            self._queue_counter += 1
            heapq.heappush(self._queue, (due, self._queue_counter, kind, payload))
            self._wake.notify_all()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.time()):
                    self._wake.wait(None if not self._queue else max(self._queue[0][0] - time.time(), 0.001))
                if self._stopping:
                    return
                _, _, kind, payload = heapq.heappop(self._queue)
                if kind == "advance":
                    self._advance(payload)
                    continue
            self._submit(payload)

    def _advance(self, sid: str) -> None:
        """Apply the next planned status of a message (called by the worker with the lock held)."""
        record = self._messages.get(sid)
        if record is None or not record["pending_statuses"]:
            return
        status = record["pending_statuses"].pop(0)
        if status == "queued" and record["from"] is None:
            record["from"] = record["assigned_from"]
            record["num_segments"] = str(_segments(record["body"], _split_address(record["to"])[0]))
        self._set_status(record, status)
        self._queue_callback(record, status)
        if record["pending_statuses"]:
            due = time.time() + self.callback_delay_seconds
            record["next_transition_at"] = due
            self._schedule(due, "advance", sid)
        else:
            record["next_transition_at"] = None

    def _set_status(self, record: dict[str, Any], status: str) -> None:
        now = _now()
        if status in ("failed", "undelivered") and record["planned_error"]:
            record["error_code"], record["error_message"] = record["planned_error"]
        if status == "sent":
            record["date_sent"] = _rfc2822(now)
        if status != record["status"]:
            record["status"] = status
            record["status_history"].append({"status": status, "at": _stamp()})
        record["date_updated"] = _rfc2822(now)

    def _queue_callback(self, record: dict[str, Any], status: str) -> None:
        url = record["status_callback"]
        if not url:
            return
        channel, to_number = _split_address(record["to"])
        params = {
            "AccountSid": record["account_sid"],
            "ApiVersion": API_VERSION,
            "From": record["from"] or record["assigned_from"],
            "MessageSid": record["sid"],
            "MessageStatus": status,
            "SmsSid": record["sid"],
            "SmsStatus": status,
            "To": record["to"],
        }
        if record["messaging_service_sid"]:
            params["MessagingServiceSid"] = record["messaging_service_sid"]
        if status in ("failed", "undelivered") and record["error_code"]:
            params["ErrorCode"] = str(record["error_code"])
        if channel == "whatsapp":
            params.update(
                ChannelPrefix="whatsapp",
                ChannelInstallSid="XE" + uuid.uuid5(uuid.NAMESPACE_URL, record["assigned_from"]).hex,
                ChannelToAddress=to_number,
                StructuredMessage="false",
            )
            if status in ("delivered", "read"):
                params["EventType"] = status.upper()
        elif status == "delivered":
            params["RawDlrDoneDate"] = _now().strftime("%y%m%d%H%M")
        delivery = self._new_delivery("status", record["sid"], url, params, record["account_sid"])
        self._schedule(time.time(), "deliver", delivery)

    def _new_delivery(self, kind: str, sid: str, url: str, params: dict[str, str], account: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "message_sid": sid,
            "url": url,
            "params": params,
            "signature": RequestValidator(self.accounts[account]).compute_signature(url, params),
            "attempt": 0,
            "idempotency_token": uuid.uuid4().hex,
        }

    def _submit(self, delivery: dict[str, Any]) -> None:
        if self._deliveries is None:
            return
        with contextlib.suppress(RuntimeError):  # the pool is shutting down with the emulator
            self._deliveries.submit(self._deliver, delivery)

    def _deliver(self, delivery: dict[str, Any], retry: bool = True) -> None:
        """POST one signed webhook; log the attempt; retry connection errors, 429 and 5xx with doubling backoff."""
        delivery["attempt"] += 1
        request = urllib.request.Request(
            delivery["url"],
            data=urlencode(delivery["params"]).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "X-Twilio-Signature": delivery["signature"],
                "I-Twilio-Idempotency-Token": delivery["idempotency_token"],
                "User-Agent": "TwilioProxy/1.1",
            },
        )
        status_code: int | None = None
        error: str | None = None
        response_body = ""
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.callback_timeout_seconds) as response:
                status_code = response.status
                response_body = response.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            status_code, error = exc.code, f"HTTP {exc.code}"
            response_body = exc.read(4096).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        retryable = status_code is None or status_code == 429 or status_code >= 500
        entry = {
            "kind": delivery["kind"],
            "message_sid": delivery["message_sid"],
            "url": delivery["url"],
            "message_status": delivery["params"].get("MessageStatus", delivery["params"].get("SmsStatus")),
            "params": delivery["params"],
            "signature": delivery["signature"],
            "attempt": delivery["attempt"],
            "status_code": status_code,
            "error": error,
            "ok": status_code is not None and 200 <= status_code < 300,
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        delivery.update(status_code=status_code, error=error, response_body=response_body)
        with self._lock:
            self._callbacks.append(entry)
            if retry and retryable and delivery["attempt"] < self.callback_max_attempts and not self._stopping:
                backoff = self.callback_retry_seconds * 2 ** (delivery["attempt"] - 1)
                self._schedule(time.time() + backoff, "deliver", delivery)


def _guess_content_type(url: str) -> str:
    suffix = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    return {
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "png": "image/png",
        "gif": "image/gif",
        "pdf": "application/pdf",
    }.get(suffix, "application/octet-stream")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.twilio", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--faults", help='JSON, e.g. \'{"rate_429": 0.1, "seed": 7}\'')
    parser.add_argument("--callback-delay", type=float, default=0.05, help="seconds between status steps")
    parser.add_argument("--session-window", choices=["reject", "fail", "off"], default="reject")
    args = parser.parse_args(argv)
    try:
        faults = Faults.coerce(args.faults) if args.faults else None
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    emulator = TwilioEmulator(
        args.host,
        args.port,
        faults=faults,
        state_file=args.state_file,
        callback_delay_seconds=args.callback_delay,
        session_window=args.session_window,
    ).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"twilio emulator listening on {emulator.url}", flush=True)
    while not stop.wait(0.5):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
