"""A local server speaking the SendGrid v3 Marketing Campaigns API (contacts, lists, custom fields).

What is emulated (paths, bodies and status codes as in Twilio SendGrid's OpenAPI specs tsg_mc_contacts_v3,
tsg_mc_lists_v3 and tsg_mc_custom_fields_v3):

- Auth: ``Authorization: Bearer <api key>``; a missing or unknown key gives 401
  ``{"errors": [{"field": null, "message": "authorization required"}]}``. Every API response carries
  ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (Unix seconds).
- Contacts: ``PUT /v3/marketing/contacts`` (at most 30,000 contacts and 6 MB per request; answered 202
  ``{"job_id"}`` and applied ASYNCHRONOUSLY by a background worker after ``import_delay_seconds``),
  ``GET /v3/marketing/contacts/imports/{id}``, ``GET /v3/marketing/contacts`` (sample of 50),
  ``GET /v3/marketing/contacts/{id}``, ``GET /v3/marketing/contacts/count``, ``POST .../contacts/batch``,
  ``POST .../contacts/search/emails``, ``POST .../contacts/search/identifiers/{type}``,
  ``POST .../contacts/search`` (an SGQL subset, below), ``DELETE /v3/marketing/contacts?ids=`` or
  ``?delete_all_contacts=true`` (async, job_type "delete").
- Lists: create, list (``page_size``/``page_token``, ``_metadata.next``), get (``contact_sample=true``), rename
  (PATCH), delete (204, or 200 ``{"job_id"}`` with ``delete_contacts=true``), remove contacts
  (``DELETE /lists/{id}/contacts?contact_ids=``, 202 ``{"job_id"}``), ``GET /lists/{id}/contacts/count``.
- Custom fields: ``GET/POST /v3/marketing/field_definitions``, ``PATCH/DELETE .../field_definitions/{id}``; ids like
  ``e1_T`` / ``e2_N`` / ``e3_D``; values are sent keyed by field id and returned keyed by field name.

Identity and validation (from the docs): a contact needs one of email, phone_number_id, external_id,
anonymous_id; emails are lower-cased; an update must carry all of the contact's existing identifiers; a contact id
cannot be used to update. Malformed requests (bad email, too long reserved field, unknown top-level field, no
identifier, > 30,000 contacts) are rejected as a whole with 400 and a field path such as ``contacts[3].email``.
Problems only found while applying a contact (unknown custom field id, a value of the wrong type, identifiers that
belong to different contacts, missing existing identifiers, injected ``rate_import_error``) are reported per contact
in the import job; valid contacts of the same job are applied. Job status follows the docs: ``completed`` (no
errors), ``errored`` (some contacts errored), ``failed`` (all errored); ``errors_url`` (only when there are errors)
points to a CSV served by this emulator.

Choices where the docs are silent: list names must be unique (the real API answers 400 to a duplicate); the
messages of 400/404/413 errors are this emulator's own wording in SendGrid's ``{"errors": [{"field", "message"}]}``
shape; "6 MB" is 6 MiB (6,291,456 bytes) -> 413; list_ids that do not exist -> 404 (as the CSV import endpoint);
removing unknown contact ids from a list -> 404 (as documented); deleting unknown contact ids counts them as
errored in the delete job. Without ``rate_limit_per_second`` the rate-limit headers describe a nominal 600
requests/minute window per key that is reported but not enforced. Email search and the SGQL subset treat emails
case-insensitively (stored lower case). List removals are jobs of type ``list_removal`` (an emulator name).

SGQL subset for ``POST /v3/marketing/contacts/search``: ``field = 'v'``, ``!=``/``<>``, ``<``, ``>``, ``<=``,
``>=``, ``LIKE 'a%'``, ``NOT LIKE``, ``IN ('a', 'b')``, ``NOT IN``, ``IS [NOT] NULL``, ``CONTAINS(list_ids, 'id')``,
``CONTAINS(alternate_emails, 'e')``, ``lower(...)``, ``AND``, ``OR``, ``NOT`` and parentheses, over reserved fields,
identifiers, ``contact_id``, ``created_at``/``updated_at`` and custom field names. Results: the first 50 and
``contact_count``.

Not emulated: segments, single sends, mail send, CSV imports (``PUT /contacts/imports``), exports, identifier
deletion endpoints, subusers (``on-behalf-of``), API key scopes (403), billable breakdowns, email-event webhooks.

Start: ``python -m emulators.sendgrid [--host H] [--port P] [--state-file F] [--faults JSON] [--api-key K]``
(prints ``sendgrid emulator listening on http://127.0.0.1:PORT``), or in Python
``with SendGridEmulator() as emu: httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {key}"})``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import io
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
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

DEMO_API_KEY = "SG.emulator.demo-key"
MAX_CONTACTS_PER_UPSERT = 30_000
MAX_UPSERT_BYTES = 6 * 1024 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # beyond this the body is not even read: 413 and the connection is closed
MAX_CUSTOM_FIELDS = 500
NOMINAL_RATE_LIMIT = 600  # requests per minute reported when no rate_limit_per_second is configured
SEARCH_RESULT_LIMIT = 50
REQUEST_LOG_SIZE = 10_000

IDENTIFIERS = ("email", "phone_number_id", "external_id", "anonymous_id")
# Reserved text fields with their documented maximum lengths (None: no documented limit).
RESERVED_TEXT: dict[str, int | None] = {
    "first_name": 50,
    "last_name": 50,
    "unique_name": None,
    "address_line_1": 100,
    "address_line_2": 100,
    "city": 60,
    "state_province_region": 50,
    "country": 50,
    "postal_code": None,
    "phone_number": None,
    "whatsapp": None,
    "line": None,
    "facebook": None,
}
IDENTIFIER_MAX = {"email": 254, "external_id": 254, "anonymous_id": 254, "phone_number_id": 254}
RESERVED_FIELD_DEFINITIONS: list[dict[str, Any]] = [
    {"id": f"_rf{i}_{t[0]}", "name": name, "field_type": t} | ({"read_only": True} if ro else {})
    for i, (name, t, ro) in enumerate(
        [
            ("first_name", "Text", False),
            ("last_name", "Text", False),
            ("email", "Text", False),
            ("alternate_emails", "Text", False),
            ("address_line_1", "Text", False),
            ("address_line_2", "Text", False),
            ("city", "Text", False),
            ("state_province_region", "Text", False),
            ("postal_code", "Text", False),
            ("country", "Text", False),
            ("phone_number", "Text", False),
            ("whatsapp", "Text", False),
            ("line", "Text", False),
            ("facebook", "Text", False),
            ("unique_name", "Text", False),
            ("email_domains", "Text", True),
            ("last_clicked", "Date", True),
            ("last_opened", "Date", True),
            ("last_emailed", "Date", True),
            ("singlesend_id", "Text", True),
            ("automation_id", "Text", True),
            ("created_at", "Date", True),
            ("updated_at", "Date", True),
            ("contact_id", "Text", True),
        ]
    )
]
RESERVED_NAMES = {f["name"].lower() for f in RESERVED_FIELD_DEFINITIONS} | set(IDENTIFIERS)
FIELD_TYPES = {"Text": "T", "Number": "N", "Date": "D"}

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _err(message: str, field: str | None = None) -> dict[str, Any]:
    return {"field": field, "message": message}


def valid_email(value: str) -> bool:
    """The address check used for contacts and searches: one @, a dotted domain, a local part of <= 64 chars."""
    return len(value) <= 254 and bool(_EMAIL_RE.match(value)) and len(value.split("@", 1)[0]) <= 64


class ApiError(Exception):
    """An API error answered in SendGrid's ``{"errors": [...]}`` shape."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else str(status))
        self.status = status
        self.errors = errors


@dataclass
class Faults:
    """Injected failures, deterministic for a given seed (see emulators_common)."""

    seed: int = 0
    rate_429: float = 0
    rate_5xx: float = 0
    latency_ms: float = 0
    drop_after_commit: float = 0
    rate_import_error: float = 0  # fraction of contacts of an upsert job that fail to import
    rate_limit_per_second: float = 0  # token bucket per API key (burst = one second's worth); 0 = not enforced

    @classmethod
    def coerce(cls, value: Faults | dict[str, Any] | None) -> Faults:
        if value is None:
            return cls()
        if isinstance(value, Faults):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"faults must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        out = cls()
        for name, raw in value.items():
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError(f"fault {name!r} must be a number, got {raw!r}")
            if name.startswith("rate_") and name != "rate_limit_per_second" and not 0 <= raw <= 1:
                raise ValueError(f"fault {name!r} is a fraction between 0 and 1, got {raw}")
            if raw < 0:
                raise ValueError(f"fault {name!r} must not be negative, got {raw}")
            setattr(out, name, int(raw) if name == "seed" else float(raw))
        return out

    @classmethod
    def from_env(cls) -> Faults:
        raw = os.environ.get("CDP_EMULATOR_FAULTS", "").strip()
        if not raw:
            return cls()
        try:
            return cls.coerce(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ValueError(f"CDP_EMULATOR_FAULTS is not valid JSON: {exc}") from exc


class _TokenBucket:
    """Per-key limiter: ``rate`` tokens per second, a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> tuple[bool, int, int]:
        """Returns (allowed, remaining, reset as Unix seconds)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        allowed = self.tokens >= 1
        if allowed:
            self.tokens -= 1
        wait = 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
        return allowed, int(self.tokens), math.ceil(time.time() + wait)


# --------------------------------------------------------------------------------------------------- SGQL subset


_SGQL_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)(?![A-Za-z_])|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_Pred = Callable[[dict[str, Any]], bool]
_Operand = Callable[[dict[str, Any]], Any]


class _SgqlParser:
    """Recursive descent over a small SGQL grammar; compiles to a predicate on internal contacts."""

    def __init__(self, text: str, getter: Callable[[dict[str, Any], str], Any], known: Callable[[str], bool]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            m = _SGQL_TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ApiError(400, [_err(f"invalid SGQL near {text[pos : pos + 20]!r}", "query")])
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0
        self.getter = getter
        self.known = known

    def parse(self) -> _Pred:
        if not self.tokens:
            raise ApiError(400, [_err("query must not be empty", "query")])
        pred = self._or()
        if self.i != len(self.tokens):
            raise ApiError(400, [_err(f"unexpected {self.tokens[self.i][1]!r} in SGQL query", "query")])
        return pred

    def _peek_word(self, *words: str) -> bool:
        return (
            self.i < len(self.tokens) and self.tokens[self.i][0] == "word" and self.tokens[self.i][1].upper() in words
        )

    def _expect(self, value: str) -> None:
        if self.i >= len(self.tokens) or self.tokens[self.i][1].upper() != value:
            got = self.tokens[self.i][1] if self.i < len(self.tokens) else "end of query"
            raise ApiError(400, [_err(f"expected {value!r} in SGQL query, got {got!r}", "query")])
        self.i += 1

    def _or(self) -> _Pred:
        parts = [self._and()]
        while self._peek_word("OR"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda c, ps=tuple(parts): any(p(c) for p in ps))

    def _and(self) -> _Pred:
        parts = [self._not()]
        while self._peek_word("AND"):
            self.i += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda c, ps=tuple(parts): all(p(c) for p in ps))

    def _not(self) -> _Pred:
        if self._peek_word("NOT"):
            self.i += 1
            inner = self._not()
            return lambda c: not inner(c)
        return self._primary()

    def _primary(self) -> _Pred:
        if self.i < len(self.tokens) and self.tokens[self.i][1] == "(":
            self.i += 1
            pred = self._or()
            self._expect(")")
            return pred
        if self._peek_word("CONTAINS"):
            self.i += 1
            self._expect("(")
            field = self._field_name()
            self._expect(",")
            value = self._literal()
            self._expect(")")
            getter = self.getter
            return lambda c: value in (getter(c, field) or [])
        left = self._operand()
        if self._peek_word("IS"):
            self.i += 1
            negate = self._peek_word("NOT")
            if negate:
                self.i += 1
            self._expect("NULL")
            return lambda c: (left(c) in (None, "")) != negate
        negate = self._peek_word("NOT")
        if negate:
            self.i += 1
        if self._peek_word("LIKE"):
            self.i += 1
            pattern = self._operand()
            return lambda c: _like(left(c), pattern(c)) != negate
        if self._peek_word("IN"):
            self.i += 1
            self._expect("(")
            values = [self._literal()]
            while self.i < len(self.tokens) and self.tokens[self.i][1] == ",":
                self.i += 1
                values.append(self._literal())
            self._expect(")")
            keys = {_cmp_key(v) for v in values}
            return lambda c: (_cmp_key(left(c)) in keys) != negate
        if negate:
            raise ApiError(400, [_err("NOT must be followed by LIKE or IN here", "query")])
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != "op":
            got = self.tokens[self.i][1] if self.i < len(self.tokens) else "end of query"
            raise ApiError(400, [_err(f"expected a comparison operator in SGQL query, got {got!r}", "query")])
        op = self.tokens[self.i][1]
        self.i += 1
        right = self._operand()
        return lambda c: _compare(left(c), op, right(c))

    def _field_name(self) -> str:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] != "word":
            raise ApiError(400, [_err("expected a field name in SGQL query", "query")])
        name = self.tokens[self.i][1]
        if not self.known(name):
            raise ApiError(400, [_err(f"unknown field {name!r} in SGQL query", "query")])
        self.i += 1
        return name

    def _literal(self) -> Any:
        if self.i >= len(self.tokens) or self.tokens[self.i][0] not in ("str", "num"):
            raise ApiError(400, [_err("expected a quoted string or a number in SGQL query", "query")])
        kind, raw = self.tokens[self.i]
        self.i += 1
        return raw[1:-1].replace("''", "'") if kind == "str" else float(raw)

    def _operand(self) -> _Operand:
        if self._peek_word("LOWER", "UPPER"):
            fn = self.tokens[self.i][1].upper()
            self.i += 1
            self._expect("(")
            inner = self._operand()
            self._expect(")")
            if fn == "LOWER":
                return lambda c: inner(c).lower() if isinstance(inner(c), str) else inner(c)
            return lambda c: inner(c).upper() if isinstance(inner(c), str) else inner(c)
        if self.i < len(self.tokens) and self.tokens[self.i][0] in ("str", "num"):
            value = self._literal()
            return lambda c: value
        field = self._field_name()
        getter = self.getter
        return lambda c: getter(c, field)


def _cmp_key(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _compare(left: Any, op: str, right: Any) -> bool:
    a, b = _cmp_key(left), _cmp_key(right)
    if op == "=":
        return a == b
    if op in ("!=", "<>"):
        return a != b
    if a is None or b is None or type(a) is not type(b):
        return False
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def _like(value: Any, pattern: Any) -> bool:
    if not isinstance(value, str) or not isinstance(pattern, str):
        return False
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


# ------------------------------------------------------------------------------------------------------ emulator


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        if not self.body.strip():
            raise ApiError(400, [_err("request body is required")])
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, [_err("invalid JSON")]) from None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class _Reply:
    status: int
    payload: Any = None
    headers: dict[str, str] | None = None
    raw: bytes | None = None
    content_type: str = "application/json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on each accepted socket: headers and body go out in separate writes, and with Nagle's algorithm
    # the second waits for the client's delayed ACK (~40-45 ms per request on Linux).
    disable_nagle_algorithm = True
    server_version = "SendGridEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the emulator keeps its own request log
        pass

    def do_GET(self) -> None:
        self.server.emulator._handle(self)  # type: ignore[attr-defined]

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class SendGridEmulator:
    """In-memory SendGrid Marketing Campaigns API over HTTP; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | dict[str, Any] | None = None,
        state_file: Path | str | None = None,
        api_keys: Iterable[str] | None = None,
        import_delay_seconds: float = 0.1,
    ) -> None:
        self.host = host
        self.port = port
        self.state_file = Path(state_file) if state_file else None
        self.api_keys = list(api_keys) if api_keys is not None else [DEMO_API_KEY]
        if not self.api_keys or not all(isinstance(k, str) and k for k in self.api_keys):
            raise ValueError("api_keys must be a non-empty list of non-empty strings")
        self.import_delay_seconds = float(import_delay_seconds)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._faults = Faults.coerce(faults) if faults is not None else Faults.from_env()
        self._rng = random.Random(self._faults.seed)
        self._buckets: dict[str, _TokenBucket] = {}
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (minute, count), for the nominal headers
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._queue: deque[tuple[float, str]] = deque()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._clear()

    # ------------------------------------------------------------------------------------------- lifecycle

    def _clear(self) -> None:
        self._contacts: dict[str, dict[str, Any]] = {}
        self._index: dict[str, dict[str, str]] = {k: {} for k in IDENTIFIERS}
        self._alt_index: dict[str, str] = {}
        self._lists: dict[str, dict[str, Any]] = {}
        self._custom_fields: dict[str, dict[str, Any]] = {}
        self._field_counter = 0
        self._jobs: dict[str, dict[str, Any]] = {}
        self._job_seq = 0
        self._billable: dict[str, Any] = {"month": datetime.now(UTC).strftime("%Y-%m"), "ids": set()}
        self._queue.clear()

    def start(self) -> Self:
        if self._server is not None:
            return self
        if self.state_file and self.state_file.exists():
            self._load(json.loads(self.state_file.read_text()))
        self._server = _Server((self.host, self.port), _Handler)
        self._server.emulator = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._stopping = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sendgrid-emulator", daemon=True
        )
        self._thread.start()
        self._worker = threading.Thread(target=self._worker_loop, name="sendgrid-emulator-jobs", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker:
            self._worker.join(timeout=10)
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)
        self._server = None
        if self.state_file:
            self.save()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # --------------------------------------------------------------------------------------- python mirror

    def state(self) -> dict[str, Any]:
        """Everything stored, contacts rendered as the API does (custom fields keyed by name)."""
        with self._lock:
            return {
                "contacts": {cid: self._render(c) for cid, c in self._contacts.items()},
                "lists": {
                    lid: {"name": li["name"], "contact_ids": list(li["contact_ids"])} for lid, li in self._lists.items()
                },
                "field_definitions": list(self._custom_fields.values()),
                "jobs": {jid: self._job_view(j, with_errors=True) for jid, j in self._jobs.items()},
            }

    def reset(self) -> None:
        """Forget all data and the request log; faults and API keys stay."""
        with self._lock:
            self._clear()
            self._requests.clear()
            self._buckets.clear()
            self._windows.clear()

    def set_faults(self, faults: Faults | dict[str, Any] | None) -> None:
        """Replace the fault configuration (and restart its random sequence from the seed)."""
        new = Faults.coerce(faults)
        with self._lock:
            self._faults = new
            self._rng = random.Random(new.seed)
            self._buckets.clear()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def requests_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def contacts_by_email(self) -> dict[str, dict[str, Any]]:
        """Contacts that have an email, keyed by it, rendered as the API does."""
        with self._lock:
            return {c["email"]: self._render(c) for c in self._contacts.values() if c.get("email")}

    def list_members(self, list_name: str) -> list[str]:
        """Sorted emails of the contacts on the list named ``list_name`` (contacts without email are left out)."""
        with self._lock:
            matches = [li for li in self._lists.values() if li["name"] == list_name]
            if not matches:
                raise KeyError(
                    f"no list named {list_name!r}; lists: {sorted(li['name'] for li in self._lists.values())}"
                )
            emails = {self._contacts[cid].get("email") for cid in matches[0]["contact_ids"] if cid in self._contacts}
            return sorted(e for e in emails if e)

    def wait_for_jobs(self, timeout: float = 30) -> None:
        """Block until no job is pending (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(j["status"] == "pending" for j in self._jobs.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("SendGrid emulator jobs still pending")
                self._cond.wait(min(left, 0.05))

    def save(self) -> None:
        """Write the state file atomically (temp file + os.replace)."""
        if not self.state_file:
            raise ValueError("no state_file configured")
        with self._lock:
            data = json.dumps(self._dump())
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sendgrid-", suffix=".tmp", dir=self.state_file.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # ----------------------------------------------------------------------------------------- persistence

    def _dump(self) -> dict[str, Any]:
        return {
            "version": 1,
            "contacts": list(self._contacts.values()),
            "lists": {
                lid: {"name": li["name"], "contact_ids": list(li["contact_ids"])} for lid, li in self._lists.items()
            },
            "custom_fields": list(self._custom_fields.values()),
            "field_counter": self._field_counter,
            "jobs": self._jobs,
            "job_seq": self._job_seq,
            "billable": {"month": self._billable["month"], "ids": sorted(self._billable["ids"])},
        }

    def _load(self, data: dict[str, Any]) -> None:
        with self._lock:
            self._clear()
            for c in data.get("contacts", []):
                self._contacts[c["id"]] = c
                self._index_contact(c)
            for lid, li in data.get("lists", {}).items():
                self._lists[lid] = {"name": li["name"], "contact_ids": dict.fromkeys(li["contact_ids"])}
            self._custom_fields = {f["id"]: f for f in data.get("custom_fields", [])}
            self._field_counter = data.get("field_counter", len(self._custom_fields))
            self._jobs = data.get("jobs", {})
            self._job_seq = data.get("job_seq", len(self._jobs))
            bill = data.get("billable", {})
            self._billable = {"month": bill.get("month", ""), "ids": set(bill.get("ids", []))}
            due = time.monotonic() + self.import_delay_seconds
            for jid, job in sorted(self._jobs.items(), key=lambda kv: kv[1].get("_seq", 0)):
                if job["status"] == "pending":
                    self._queue.append((due, jid))

    # ------------------------------------------------------------------------------------------------ HTTP

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        started = time.time()
        split = urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        request = _Request(h.command, path, parse_qs(split.query, keep_blank_values=True), b"")
        try:
            request.body = self._read_body(h)
        except ApiError as exc:
            h.close_connection = True
            self._send(h, _Reply(exc.status, {"errors": exc.errors}, self._nominal_headers(None)))
            return
        if path.startswith("/__emulator"):
            try:
                reply = self._control(request)
            except ApiError as exc:
                reply = _Reply(exc.status, {"errors": exc.errors})
            self._send(h, reply)
            return
        reply, drop = self._api(request, h.headers.get("Authorization", ""))
        with self._lock:
            self._requests.append(
                {
                    "method": h.command,
                    "path": path,
                    "query": split.query,
                    "status": reply.status,
                    "dropped": drop,
                    "time": datetime.fromtimestamp(started, UTC).isoformat(),
                    "duration_ms": round((time.time() - started) * 1000, 2),
                }
            )
        if drop:
            # The change is committed; the client gets no response, as after a crash or a network cut.
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(h, reply)

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise ApiError(413, [_err("request body too large")])
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, [_err(f"request body of {length} bytes is too large")])
        return h.rfile.read(length) if length else b""

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, reply: _Reply) -> None:
        if reply.raw is not None:
            data = reply.raw
        else:
            data = b"" if reply.payload is None else json.dumps(reply.payload).encode()
        try:
            h.send_response(reply.status)
            if data:
                h.send_header("Content-Type", reply.content_type)
            if reply.status != 204:
                h.send_header("Content-Length", str(len(data)))
            for name, value in (reply.headers or {}).items():
                h.send_header(name, value)
            h.end_headers()
            if data:
                h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _nominal_headers(self, key: str | None) -> dict[str, str]:
        minute = int(time.time() // 60)
        with self._lock:
            used = 0
            if key is not None:
                last_minute, count = self._windows.get(key, (minute, 0))
                used = (count if last_minute == minute else 0) + 1
                self._windows[key] = (minute, used)
        return {
            "X-RateLimit-Limit": str(NOMINAL_RATE_LIMIT),
            "X-RateLimit-Remaining": str(max(0, NOMINAL_RATE_LIMIT - used)),
            "X-RateLimit-Reset": str((minute + 1) * 60),
        }

    def _api(self, request: _Request, authorization: str) -> tuple[_Reply, bool]:
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or key not in self.api_keys:
            return _Reply(401, {"errors": [_err("authorization required")]}, self._nominal_headers(None)), False
        with self._lock:
            faults = self._faults
            if faults.rate_limit_per_second > 0:
                bucket = self._buckets.setdefault(key, _TokenBucket(faults.rate_limit_per_second))
                allowed, remaining, reset = bucket.take()
                headers = {
                    "X-RateLimit-Limit": str(int(bucket.capacity)),
                    "X-RateLimit-Remaining": str(remaining),
                    "X-RateLimit-Reset": str(reset),
                }
                if not allowed:
                    return _Reply(429, {"errors": [_err("too many requests")]}, headers), False
            else:
                headers = {}
            # Four draws per request, always, so that the sequence depends only on the seed and request order.
            draw_429, draw_5xx, draw_drop, draw_code = (self._rng.random() for _ in range(4))
        if not headers:
            headers = self._nominal_headers(key)
        if faults.latency_ms > 0:
            time.sleep(faults.latency_ms / 1000)
        if draw_429 < faults.rate_429:
            limited = headers | {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 1)}
            return _Reply(429, {"errors": [_err("too many requests")]}, limited), False
        if draw_5xx < faults.rate_5xx:
            if draw_code < 0.5:
                return _Reply(500, {"errors": [_err("internal error")]}, headers), False
            return _Reply(503, {"errors": [_err("service unavailable")]}, headers), False
        try:
            reply = self._route(request)
        except ApiError as exc:
            reply = _Reply(exc.status, {"errors": exc.errors})
        except Exception as exc:  # a bug here must still answer in the API's shape
            reply = _Reply(500, {"errors": [_err(f"internal error: {type(exc).__name__}: {exc}")]})
        reply.headers = headers | (reply.headers or {})
        drop = request.method != "GET" and 200 <= reply.status < 300 and draw_drop < faults.drop_after_commit
        return reply, drop

    def _control(self, request: _Request) -> _Reply:
        route = (request.method, request.path)
        if route == ("GET", "/__emulator/state"):
            return _Reply(200, self.state())
        if route == ("POST", "/__emulator/reset"):
            self.reset()
            return _Reply(200, {"ok": True})
        if route == ("GET", "/__emulator/faults"):
            return _Reply(200, asdict(self.faults))
        if route == ("PUT", "/__emulator/faults"):
            try:
                self.set_faults(request.json())
            except ValueError as exc:
                raise ApiError(400, [_err(str(exc))]) from None
            return _Reply(200, asdict(self.faults))
        if route == ("GET", "/__emulator/requests"):
            return _Reply(200, {"requests": self.requests_log()})
        if route == ("POST", "/__emulator/save"):
            if not self.state_file:
                raise ApiError(400, [_err("the emulator was started without a state file")])
            self.save()
            return _Reply(200, {"saved": str(self.state_file)})
        m = re.fullmatch(r"/__emulator/imports/([^/]+)/errors\.csv", request.path)
        if m and request.method == "GET":
            return self._errors_csv(m.group(1))
        raise ApiError(404, [_err(f"no emulator endpoint {request.method} {request.path}")])

    # --------------------------------------------------------------------------------------------- routing

    _ROUTES: ClassVar[list[tuple[str, re.Pattern[str], str]]] = [
        (m, re.compile(p), h)
        for m, p, h in [
            ("PUT", r"/v3/marketing/contacts", "_put_contacts"),
            ("GET", r"/v3/marketing/contacts", "_get_contacts_sample"),
            ("DELETE", r"/v3/marketing/contacts", "_delete_contacts"),
            ("GET", r"/v3/marketing/contacts/count", "_get_contacts_count"),
            ("GET", r"/v3/marketing/contacts/imports/(?P<id>[^/]+)", "_get_import"),
            ("POST", r"/v3/marketing/contacts/search", "_search_contacts"),
            ("POST", r"/v3/marketing/contacts/search/emails", "_search_emails"),
            ("POST", r"/v3/marketing/contacts/search/identifiers/(?P<type>[^/]+)", "_search_identifiers"),
            ("POST", r"/v3/marketing/contacts/batch", "_batch_contacts"),
            ("GET", r"/v3/marketing/contacts/(?P<id>[^/]+)", "_get_contact"),
            ("POST", r"/v3/marketing/lists", "_create_list"),
            ("GET", r"/v3/marketing/lists", "_get_lists"),
            ("GET", r"/v3/marketing/lists/(?P<id>[^/]+)", "_get_list"),
            ("PATCH", r"/v3/marketing/lists/(?P<id>[^/]+)", "_patch_list"),
            ("DELETE", r"/v3/marketing/lists/(?P<id>[^/]+)", "_delete_list"),
            ("DELETE", r"/v3/marketing/lists/(?P<id>[^/]+)/contacts", "_remove_from_list"),
            ("GET", r"/v3/marketing/lists/(?P<id>[^/]+)/contacts/count", "_get_list_count"),
            ("GET", r"/v3/marketing/field_definitions", "_get_fields"),
            ("POST", r"/v3/marketing/field_definitions", "_create_field"),
            ("PATCH", r"/v3/marketing/field_definitions/(?P<id>[^/]+)", "_patch_field"),
            ("DELETE", r"/v3/marketing/field_definitions/(?P<id>[^/]+)", "_delete_field"),
        ]
    ]

    def _route(self, request: _Request) -> _Reply:
        allowed = False
        for method, pattern, handler in self._ROUTES:
            m = pattern.fullmatch(request.path)
            if not m:
                continue
            if method != request.method:
                allowed = True
                continue
            return getattr(self, handler)(request, **m.groupdict())
        if allowed:
            raise ApiError(405, [_err(f"method {request.method} not allowed on {request.path}")])
        raise ApiError(404, [_err(f"resource not found: {request.path}")])

    # --------------------------------------------------------------------------------------------- helpers

    def _index_contact(self, c: dict[str, Any]) -> None:
        for k in IDENTIFIERS:
            if c.get(k):
                self._index[k][c[k]] = c["id"]
        for alt in c.get("alternate_emails", []):
            self._alt_index[alt] = c["id"]

    def _unindex_contact(self, c: dict[str, Any]) -> None:
        for k in IDENTIFIERS:
            if c.get(k) and self._index[k].get(c[k]) == c["id"]:
                del self._index[k][c[k]]
        for alt in c.get("alternate_emails", []):
            if self._alt_index.get(alt) == c["id"]:
                del self._alt_index[alt]

    def _render(self, c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": c["id"]}
        for k in IDENTIFIERS:
            if c.get(k):
                out[k] = c[k]
        out["alternate_emails"] = list(c.get("alternate_emails", []))
        for k in RESERVED_TEXT:
            out[k] = c.get(k, "")
        out["list_ids"] = list(c["list_ids"])
        out["segment_ids"] = []
        out["custom_fields"] = {
            self._custom_fields[fid]["name"]: v for fid, v in c["custom_fields"].items() if fid in self._custom_fields
        }
        out["created_at"] = c["created_at"]
        out["updated_at"] = c["updated_at"]
        out["_metadata"] = {"self": f"{self.url}/v3/marketing/contacts/{c['id']}"}
        return out

    def _list_view(self, lid: str) -> dict[str, Any]:
        li = self._lists[lid]
        return {
            "id": lid,
            "name": li["name"],
            "contact_count": len(li["contact_ids"]),
            "_metadata": {"self": f"{self.url}/v3/marketing/lists/{lid}"},
        }

    def _job_view(self, job: dict[str, Any], *, with_errors: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if not k.startswith("_") and k != "errors"}
        out["results"] = dict(job["results"])
        if job.get("finished_at") is None:
            out.pop("finished_at", None)
        if with_errors:
            out["errors"] = list(job.get("errors", []))
        return out

    def _new_job(self, job_type: str, requested: int, payload: dict[str, Any]) -> str:
        job_id = str(uuid.uuid4())
        self._job_seq += 1
        self._jobs[job_id] = {
            "id": job_id,
            "status": "pending",
            "job_type": job_type,
            "results": {
                "requested_count": requested,
                "created_count": 0,
                "updated_count": 0,
                "deleted_count": 0,
                "errored_count": 0,
            },
            "started_at": _now_iso(),
            "finished_at": None,
            "errors": [],
            "_seq": self._job_seq,
            "_payload": payload,
        }
        self._queue.append((time.monotonic() + self.import_delay_seconds, job_id))
        self._cond.notify_all()
        return job_id

    def _custom_field_by_name(self, name: str) -> dict[str, Any] | None:
        for f in self._custom_fields.values():
            if f["name"].lower() == name.lower():
                return f
        return None

    def _list_or_404(self, lid: str) -> dict[str, Any]:
        li = self._lists.get(lid)
        if li is None:
            raise ApiError(404, [_err(f"list {lid} not found", "id")])
        return li

    @staticmethod
    def _body_object(request: _Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, [_err("request body must be a JSON object")])
        return body

    # -------------------------------------------------------------------------------------------- contacts

    def _put_contacts(self, request: _Request) -> _Reply:
        if len(request.body) > MAX_UPSERT_BYTES:
            raise ApiError(
                413,
                [_err(f"request body is {len(request.body)} bytes; the limit is 6 MB ({MAX_UPSERT_BYTES} bytes)")],
            )
        body = self._body_object(request)
        contacts = body.get("contacts")
        if not isinstance(contacts, list) or not contacts:
            raise ApiError(400, [_err("contacts is required and must be a non-empty array", "contacts")])
        if len(contacts) > MAX_CONTACTS_PER_UPSERT:
            raise ApiError(
                400,
                [
                    _err(
                        f"contacts must contain at most {MAX_CONTACTS_PER_UPSERT} items, got {len(contacts)}",
                        "contacts",
                    )
                ],
            )
        list_ids = body.get("list_ids", [])
        if list_ids is None:
            list_ids = []
        if not isinstance(list_ids, list) or not all(isinstance(x, str) for x in list_ids):
            raise ApiError(400, [_err("list_ids must be an array of list ID strings", "list_ids")])
        unknown_keys = sorted(set(body) - {"contacts", "list_ids"})
        if unknown_keys:
            raise ApiError(400, [_err(f"unknown field(s) {unknown_keys}", unknown_keys[0])])
        errors: list[dict[str, Any]] = []
        normalized = []
        for i, raw in enumerate(contacts):
            contact, contact_errors = self._validate_contact(raw, f"contacts[{i}]")
            errors.extend(contact_errors)
            normalized.append(contact)
            if len(errors) >= 100:
                break
        if errors:
            raise ApiError(400, errors[:100])
        with self._lock:
            missing = [lid for lid in dict.fromkeys(list_ids) if lid not in self._lists]
            if missing:
                raise ApiError(404, [_err(f"list ID(s) not found: {', '.join(missing)}", "list_ids")])
            job_id = self._new_job(
                "upsert", len(normalized), {"contacts": normalized, "list_ids": list(dict.fromkeys(list_ids))}
            )
        return _Reply(202, {"job_id": job_id})

    @staticmethod
    def _validate_contact(raw: Any, path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Request-level checks (the whole request is rejected with 400 if any fails)."""
        if not isinstance(raw, dict):
            return {}, [_err("each contact must be a JSON object", path)]
        errors: list[dict[str, Any]] = []
        out: dict[str, Any] = {}
        for key, value in raw.items():
            fpath = f"{path}.{key}"
            if key in IDENTIFIERS:
                if not isinstance(value, str):
                    errors.append(_err(f"{key} must be a string", fpath))
                    continue
                value = value.strip()
                if not value:
                    continue
                if len(value) > IDENTIFIER_MAX[key]:
                    errors.append(_err(f"{key} must be at most {IDENTIFIER_MAX[key]} characters", fpath))
                elif key == "email" and not valid_email(value):
                    errors.append(_err(f"invalid email address {value!r}", fpath))
                elif key == "phone_number_id" and not _PHONE_RE.match(value):
                    errors.append(_err(f"phone_number_id must be a valid E.164 phone number, got {value!r}", fpath))
                out[key] = value.lower() if key == "email" else value
            elif key in RESERVED_TEXT:
                if key == "postal_code" and isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                if not isinstance(value, str):
                    errors.append(_err(f"{key} must be a string", fpath))
                    continue
                limit = RESERVED_TEXT[key]
                if limit is not None and len(value) > limit:
                    errors.append(_err(f"{key} must be at most {limit} characters", fpath))
                out[key] = value
            elif key == "alternate_emails":
                if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                    errors.append(_err("alternate_emails must be an array of strings", fpath))
                    continue
                if len(value) > 5:
                    errors.append(_err("alternate_emails must contain at most 5 addresses", fpath))
                for j, email in enumerate(value):
                    if not valid_email(email.strip()):
                        errors.append(_err(f"invalid email address {email!r}", f"{fpath}[{j}]"))
                out[key] = [e.strip().lower() for e in value]
            elif key == "custom_fields":
                if not isinstance(value, dict):
                    errors.append(_err("custom_fields must be an object keyed by custom field ID", fpath))
                    continue
                out[key] = value
            elif key == "id":
                errors.append(
                    _err("a contact's id cannot be used to update it; identify it by email or external_id", fpath)
                )
            else:
                errors.append(
                    _err(f"unknown field {key!r}; custom fields go in custom_fields keyed by field ID", fpath)
                )
        if not errors and not any(out.get(k) for k in IDENTIFIERS):
            errors.append(
                _err(
                    "contact must have at least one identifier: email, phone_number_id, external_id or anonymous_id",
                    path,
                )
            )
        return out, errors

    def _coerce_custom_value(self, fid: str, value: Any) -> Any:
        """Returns the stored value or raises ValueError with a per-contact error message."""
        field = self._custom_fields.get(fid)
        if field is None:
            by_name = self._custom_field_by_name(fid)
            hint = f" (custom field {by_name['name']!r} has ID {by_name['id']})" if by_name else ""
            raise ValueError(f"custom field ID {fid!r} does not exist{hint}")
        if value is None:
            return None
        kind, name = field["field_type"], field["name"]
        if kind == "Text":
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"custom field {name!r} ({fid}) expects Text, got {value!r}")
            return str(value)
        if kind == "Number":
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return value
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    number = float(value)
                    if math.isfinite(number):
                        return int(number) if number.is_integer() and "." not in value else number
            raise ValueError(f"custom field {name!r} ({fid}) expects a Number, got {value!r}")
        if isinstance(value, str):
            for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
                with contextlib.suppress(ValueError):
                    return datetime.strptime(value, fmt).strftime("%Y-%m-%dT00:00:00Z")
            with contextlib.suppress(ValueError):
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if parsed.tzinfo is not None:
                    parsed = parsed.astimezone(UTC)
                return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ValueError(f"custom field {name!r} ({fid}) expects a Date (MM/DD/YYYY or ISO 8601), got {value!r}")

    def _apply_upsert(self, job: dict[str, Any]) -> None:
        payload = job["_payload"]
        results, errors = job["results"], job["errors"]
        error_rng = random.Random(f"{self._faults.seed}:{job['_seq']}")
        rate_error = self._faults.rate_import_error
        list_ids = [lid for lid in payload["list_ids"] if lid in self._lists]
        now = _now_iso()
        for i, data in enumerate(payload["contacts"]):
            ident = {k: data[k] for k in IDENTIFIERS if data.get(k)}

            def fail(message: str, i: int = i, ident: dict[str, Any] = ident) -> None:
                errors.append({"index": i, **ident, "message": message})

            if rate_error and error_rng.random() < rate_error:
                fail("contact could not be processed due to an internal error; retry the upsert")
                continue
            try:
                custom = {fid: self._coerce_custom_value(fid, v) for fid, v in data.get("custom_fields", {}).items()}
            except ValueError as exc:
                fail(str(exc))
                continue
            matched = {self._index[k].get(v) for k, v in ident.items()} - {None}
            if len(matched) > 1:
                fail(f"identifiers {sorted(ident)} belong to different existing contacts")
                continue
            contact = self._contacts.get(matched.pop()) if matched else None
            if contact is not None:
                absent = [k for k in IDENTIFIERS if contact.get(k) and ident.get(k) != contact[k]]
                if absent:
                    fail(f"to update a contact all of its existing identifiers must be present; missing {absent}")
                    continue
                self._unindex_contact(contact)
                del self._contacts[contact["id"]]  # re-inserted below: dict order is recency order
                results["updated_count"] += 1
            else:
                contact = {"id": str(uuid.uuid4()), "list_ids": [], "custom_fields": {}, "created_at": now}
                results["created_count"] += 1
            for key, value in data.items():
                if key != "custom_fields":
                    contact[key] = value
            for fid, value in custom.items():
                if value is None:
                    contact["custom_fields"].pop(fid, None)
                else:
                    contact["custom_fields"][fid] = value
            for lid in list_ids:
                if lid not in contact["list_ids"]:
                    contact["list_ids"].append(lid)
                self._lists[lid]["contact_ids"][contact["id"]] = None
            contact["updated_at"] = now
            self._contacts[contact["id"]] = contact
            self._index_contact(contact)
            self._billable_touch(contact["id"])
        results["errored_count"] = len(errors)

    def _billable_touch(self, cid: str) -> None:
        month = datetime.now(UTC).strftime("%Y-%m")
        if self._billable["month"] != month:
            self._billable = {"month": month, "ids": set()}
        self._billable["ids"].add(cid)

    def _delete_contact(self, cid: str) -> bool:
        contact = self._contacts.pop(cid, None)
        if contact is None:
            return False
        self._unindex_contact(contact)
        for lid in contact["list_ids"]:
            if lid in self._lists:
                self._lists[lid]["contact_ids"].pop(cid, None)
        return True

    def _get_import(self, request: _Request, id: str) -> _Reply:
        with self._lock:
            job = self._jobs.get(id)
            if job is None:
                raise ApiError(404, [_err(f"import job {id} not found", "id")])
            view = self._job_view(job)
        if view["results"]["errored_count"]:
            view["results"]["errors_url"] = f"{self.url}/__emulator/imports/{id}/errors.csv"
        return _Reply(200, view)

    def _errors_csv(self, job_id: str) -> _Reply:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ApiError(404, [_err(f"import job {job_id} not found")])
            rows = list(job["errors"])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["index", *IDENTIFIERS, "contact_id", "message"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return _Reply(200, raw=buf.getvalue().encode(), content_type="text/csv")

    def _get_contacts_sample(self, request: _Request) -> _Reply:
        with self._lock:
            recent = list(self._contacts.values())[-SEARCH_RESULT_LIMIT:]
            result = sorted((self._render(c) for c in recent), key=lambda c: c.get("email", ""))
            count = len(self._contacts)
        return _Reply(
            200, {"result": result, "contact_count": count, "_metadata": {"self": f"{self.url}/v3/marketing/contacts"}}
        )

    def _get_contact(self, request: _Request, id: str) -> _Reply:
        with self._lock:
            contact = self._contacts.get(id)
            if contact is None:
                raise ApiError(404, [_err(f"contact {id} not found", "id")])
            return _Reply(200, self._render(contact))

    def _get_contacts_count(self, request: _Request) -> _Reply:
        with self._lock:
            self._billable_touch_month()
            return _Reply(200, {"contact_count": len(self._contacts), "billable_count": len(self._billable["ids"])})

    def _billable_touch_month(self) -> None:
        month = datetime.now(UTC).strftime("%Y-%m")
        if self._billable["month"] != month:
            self._billable = {"month": month, "ids": set()}

    def _batch_contacts(self, request: _Request) -> _Reply:
        body = self._body_object(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ApiError(400, [_err("ids is required and must be an array of contact ID strings", "ids")])
        if len(ids) > 100:
            raise ApiError(400, [_err(f"ids must contain at most 100 items, got {len(ids)}", "ids")])
        with self._lock:
            return _Reply(200, {"result": [self._render(self._contacts[i]) for i in ids if i in self._contacts]})

    def _search_emails(self, request: _Request) -> _Reply:
        body = self._body_object(request)
        emails = body.get("emails")
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            raise ApiError(400, [_err("emails is required and must be an array of strings", "emails")])
        if len(emails) > 100:
            raise ApiError(400, [_err(f"emails must contain at most 100 addresses, got {len(emails)}", "emails")])
        wanted = [e.strip().lower() for e in emails if e.strip()]
        bad = [e for e in wanted if not valid_email(e)]
        if bad:
            raise ApiError(400, [_err(f"invalid email address(es): {', '.join(bad)}", "emails")])
        result: dict[str, Any] = {}
        found = 0
        with self._lock:
            for email in wanted:
                cid = self._index["email"].get(email) or self._alt_index.get(email)
                if cid is not None:
                    result[email] = {"contact": self._render(self._contacts[cid])}
                    found += 1
                else:
                    result[email] = {"error": "contact not found"}
        if not found:
            raise ApiError(404, [_err("no contacts found for the given email addresses", "emails")])
        return _Reply(200, {"result": result})

    def _search_identifiers(self, request: _Request, type: str) -> _Reply:
        if type not in IDENTIFIERS:
            raise ApiError(400, [_err(f"identifier_type must be one of {list(IDENTIFIERS)}", "identifier_type")])
        body = self._body_object(request)
        items = body.get("identifiers")
        if not isinstance(items, list) or not items or not all(isinstance(x, dict) for x in items):
            raise ApiError(400, [_err("identifiers is required and must be an array of objects", "identifiers")])
        if len(items) > 100:
            raise ApiError(400, [_err("identifiers must contain at most 100 items", "identifiers")])
        values = []
        for j, item in enumerate(items):
            value = item.get(type)
            if not isinstance(value, str) or not value.strip():
                raise ApiError(400, [_err(f"each identifier object must have a {type} string", f"identifiers[{j}]")])
            values.append(value.strip().lower() if type == "email" else value.strip())
        result: dict[str, Any] = {}
        with self._lock:
            for value in values:
                cid = self._index[type].get(value)
                result[value] = (
                    {"contact": self._render(self._contacts[cid])} if cid else {"error": "contact not found"}
                )
        if all("error" in r for r in result.values()):
            raise ApiError(404, [_err("no contacts found for the given identifiers", "identifiers")])
        return _Reply(200, {"result": result})

    def _sgql_getter(self) -> Callable[[dict[str, Any], str], Any]:
        custom_ids = {f["name"].lower(): fid for fid, f in self._custom_fields.items()}

        def value(contact: dict[str, Any], name: str) -> Any:
            key = name.lower()
            if key in ("list_ids", "alternate_emails", "segment_ids"):
                return contact.get(key, [])
            if key == "contact_id":
                return contact["id"]
            if key in IDENTIFIERS or key in RESERVED_TEXT or key in ("created_at", "updated_at"):
                return contact.get(key)
            return contact["custom_fields"].get(custom_ids.get(key, ""))

        return value

    def _sgql_known(self, name: str) -> bool:
        key = name.lower()
        return (
            key in IDENTIFIERS
            or key in RESERVED_TEXT
            or key in ("list_ids", "alternate_emails", "contact_id", "created_at", "updated_at", "segment_ids")
            or self._custom_field_by_name(name) is not None
        )

    def _search_contacts(self, request: _Request) -> _Reply:
        body = self._body_object(request)
        query = body.get("query")
        if not isinstance(query, str):
            raise ApiError(400, [_err("query is required and must be an SGQL string", "query")])
        with self._lock:
            predicate = _SgqlParser(query, self._sgql_getter(), self._sgql_known).parse()
            matched = [c for c in self._contacts.values() if predicate(c)]
            result = [self._render(c) for c in matched[:SEARCH_RESULT_LIMIT]]
        return _Reply(
            200,
            {
                "result": result,
                "contact_count": len(matched),
                "_metadata": {"self": f"{self.url}/v3/marketing/contacts/search"},
            },
        )

    def _delete_contacts(self, request: _Request) -> _Reply:
        ids_param = request.param("ids")
        delete_all = request.param("delete_all_contacts")
        if delete_all is not None and delete_all.lower() != "true":
            raise ApiError(
                400, [_err('delete_all_contacts must be set to "true" to delete all contacts', "delete_all_contacts")]
            )
        if bool(ids_param) == bool(delete_all):
            raise ApiError(
                400, [_err("set either ids (a comma-separated list of contact IDs) or delete_all_contacts=true", "ids")]
            )
        with self._lock:
            if delete_all:
                job_id = self._new_job("delete", len(self._contacts), {"all": True})
            else:
                ids = [i.strip() for i in (ids_param or "").split(",") if i.strip()]
                bad = [i for i in ids if not _UUID_RE.match(i)]
                if bad:
                    raise ApiError(400, [_err(f"invalid contact ID(s): {', '.join(bad[:10])}", "ids")])
                job_id = self._new_job("delete", len(ids), {"ids": list(dict.fromkeys(ids))})
        return _Reply(202, {"job_id": job_id})

    def _apply_delete(self, job: dict[str, Any]) -> None:
        payload, results = job["_payload"], job["results"]
        if payload.get("all"):
            ids = list(self._contacts)
            results["requested_count"] = len(ids)
        else:
            ids = payload["ids"]
        for cid in ids:
            if self._delete_contact(cid):
                results["deleted_count"] += 1
            else:
                job["errors"].append({"contact_id": cid, "message": "contact not found"})
        results["errored_count"] = len(job["errors"])

    # ----------------------------------------------------------------------------------------------- lists

    def _check_list_name(self, body: dict[str, Any], exclude: str | None = None) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, [_err("name is required and must be a non-empty string", "name")])
        if len(name) > 100:
            raise ApiError(400, [_err("name must be at most 100 characters", "name")])
        if any(li["name"] == name for lid, li in self._lists.items() if lid != exclude):
            raise ApiError(400, [_err(f"a list named {name!r} already exists", "name")])
        return name

    def _create_list(self, request: _Request) -> _Reply:
        body = self._body_object(request)
        with self._lock:
            name = self._check_list_name(body)
            lid = str(uuid.uuid4())
            self._lists[lid] = {"name": name, "contact_ids": {}}
            return _Reply(201, self._list_view(lid))

    def _get_lists(self, request: _Request) -> _Reply:
        raw_size = request.param("page_size") or "100"
        try:
            size = int(float(raw_size))
        except ValueError:
            size = 0
        if not 1 <= size <= 1000:
            raise ApiError(400, [_err("page_size must be a number between 1 and 1000", "page_size")])
        token = request.param("page_token") or ""
        offset = 0
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode() + b"==").decode().removeprefix("o:"))
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, [_err("invalid page_token", "page_token")]) from None
        with self._lock:
            ids = list(self._lists)
            page = [self._list_view(lid) for lid in ids[offset : offset + size]]
            total = len(ids)
        base = f"{self.url}/v3/marketing/lists"
        meta: dict[str, Any] = {"self": f"{base}?page_size={size}&page_token={token}", "count": total}
        if offset + size < total:
            next_token = base64.urlsafe_b64encode(f"o:{offset + size}".encode()).decode().rstrip("=")
            meta["next"] = f"{base}?page_size={size}&page_token={next_token}"
        if offset > 0:
            prev_token = base64.urlsafe_b64encode(f"o:{max(0, offset - size)}".encode()).decode().rstrip("=")
            meta["prev"] = f"{base}?page_size={size}&page_token={prev_token}"
        return _Reply(200, {"result": page, "_metadata": meta})

    def _get_list(self, request: _Request, id: str) -> _Reply:
        sample = (request.param("contact_sample") or "false").lower() == "true"
        with self._lock:
            li = self._list_or_404(id)
            view = self._list_view(id)
            if sample:
                recent = [
                    self._contacts[c] for c in list(li["contact_ids"])[-SEARCH_RESULT_LIMIT:] if c in self._contacts
                ]
                view["contact_sample"] = sorted((self._render(c) for c in recent), key=lambda c: c.get("email", ""))
        return _Reply(200, view)

    def _patch_list(self, request: _Request, id: str) -> _Reply:
        body = self._body_object(request)
        with self._lock:
            li = self._list_or_404(id)
            li["name"] = self._check_list_name(body, exclude=id)
            return _Reply(200, self._list_view(id))

    def _delete_list(self, request: _Request, id: str) -> _Reply:
        delete_contacts = (request.param("delete_contacts") or "false").lower() == "true"
        with self._lock:
            li = self._list_or_404(id)
            members = list(li["contact_ids"])
            del self._lists[id]
            for cid in members:
                contact = self._contacts.get(cid)
                if contact and id in contact["list_ids"]:
                    contact["list_ids"].remove(id)
            if delete_contacts:
                return _Reply(200, {"job_id": self._new_job("delete", len(members), {"ids": members})})
        return _Reply(204)

    def _remove_from_list(self, request: _Request, id: str) -> _Reply:
        ids = [i.strip() for i in (request.param("contact_ids") or "").split(",") if i.strip()]
        if not ids:
            raise ApiError(400, [_err("contact_ids is required: a comma-separated list of contact IDs", "contact_ids")])
        with self._lock:
            self._list_or_404(id)
            missing = [i for i in ids if i not in self._contacts]
            if missing:
                raise ApiError(404, [_err(f"contact ID(s) not found: {', '.join(missing[:10])}", "contact_ids")])
            job_id = self._new_job("list_removal", len(ids), {"list_id": id, "ids": list(dict.fromkeys(ids))})
        return _Reply(202, {"job_id": job_id})

    def _apply_list_removal(self, job: dict[str, Any]) -> None:
        payload = job["_payload"]
        li = self._lists.get(payload["list_id"])
        for cid in payload["ids"]:
            contact = self._contacts.get(cid)
            if li is not None:
                li["contact_ids"].pop(cid, None)
            if contact and payload["list_id"] in contact["list_ids"]:
                contact["list_ids"].remove(payload["list_id"])
                contact["updated_at"] = _now_iso()
                job["results"]["updated_count"] += 1

    def _get_list_count(self, request: _Request, id: str) -> _Reply:
        with self._lock:
            n = len(self._list_or_404(id)["contact_ids"])
        return _Reply(200, {"contact_count": n, "billable_count": n})

    # ---------------------------------------------------------------------------------------- custom fields

    def _get_fields(self, request: _Request) -> _Reply:
        with self._lock:
            custom = [dict(f) for f in self._custom_fields.values()]
        return _Reply(
            200,
            {
                "custom_fields": custom,
                "reserved_fields": RESERVED_FIELD_DEFINITIONS,
                "_metadata": {"self": f"{self.url}/v3/marketing/field_definitions"},
            },
        )

    def _check_field_name(self, name: Any, exclude: str | None = None) -> str:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ApiError(400, [_err("name is required and must be 1 to 100 characters", "name")])
        if not _FIELD_NAME_RE.match(name):
            raise ApiError(
                400,
                [_err("name may contain only letters, digits and underscores and must not start with a digit", "name")],
            )
        if name.lower() in RESERVED_NAMES:
            raise ApiError(400, [_err(f"{name!r} collides with a reserved field name", "name")])
        existing = self._custom_field_by_name(name)
        if existing is not None and existing["id"] != exclude:
            raise ApiError(
                400,
                [
                    _err(
                        f"a custom field named {existing['name']!r} already exists (names are case-insensitive)", "name"
                    )
                ],
            )
        return name

    def _create_field(self, request: _Request) -> _Reply:
        body = self._body_object(request)
        field_type = body.get("field_type")
        if field_type not in FIELD_TYPES:
            raise ApiError(400, [_err(f"field_type must be one of {list(FIELD_TYPES)}", "field_type")])
        with self._lock:
            name = self._check_field_name(body.get("name"))
            if len(self._custom_fields) >= MAX_CUSTOM_FIELDS:
                raise ApiError(400, [_err(f"you can have at most {MAX_CUSTOM_FIELDS} custom fields", "name")])
            self._field_counter += 1
            fid = f"e{self._field_counter}_{FIELD_TYPES[field_type]}"
            self._custom_fields[fid] = {"id": fid, "name": name, "field_type": field_type}
            view = dict(self._custom_fields[fid])
        view["_metadata"] = {"self": f"{self.url}/v3/marketing/field_definitions/{fid}"}
        return _Reply(200, view)

    def _patch_field(self, request: _Request, id: str) -> _Reply:
        body = self._body_object(request)
        with self._lock:
            field = self._custom_fields.get(id)
            if field is None:
                raise ApiError(404, [_err(f"custom field {id} not found", "custom_field_id")])
            field["name"] = self._check_field_name(body.get("name"), exclude=id)
            view = dict(field)
        view["_metadata"] = {"self": f"{self.url}/v3/marketing/field_definitions/{id}"}
        return _Reply(200, view)

    def _delete_field(self, request: _Request, id: str) -> _Reply:
        with self._lock:
            if self._custom_fields.pop(id, None) is None:
                raise ApiError(404, [_err(f"custom field {id} not found", "custom_field_id")])
            for contact in self._contacts.values():
                contact["custom_fields"].pop(id, None)
        return _Reply(204)

    # ---------------------------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        with self._cond:
            while True:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cond.wait(max(0.0, self._queue[0][0] - time.monotonic()) if self._queue else None)
                if self._stopping:
                    return
                _, job_id = self._queue.popleft()
                job = self._jobs.get(job_id)
                if job is None or job["status"] != "pending":
                    continue
                apply = {"upsert": self._apply_upsert, "delete": self._apply_delete}.get(
                    job["job_type"], self._apply_list_removal
                )
                try:
                    apply(job)
                except Exception as exc:  # a failed job must not kill the worker
                    job["errors"].append({"message": f"job failed: {type(exc).__name__}: {exc}"})
                    job["results"]["errored_count"] = len(job["errors"])
                errored, requested = job["results"]["errored_count"], job["results"]["requested_count"]
                job["status"] = "completed" if errored == 0 else "failed" if errored >= requested else "errored"
                job["finished_at"] = _now_iso()
                job.pop("_payload", None)
                self._cond.notify_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.sendgrid", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--faults", help='JSON fault config, e.g. \'{"rate_429": 0.1, "seed": 7}\'')
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help=f"accepted API key (repeatable); default {DEMO_API_KEY}"
    )
    parser.add_argument("--import-delay", type=float, default=0.1, help="seconds before an import job is applied")
    args = parser.parse_args(argv)
    try:
        faults = Faults.coerce(json.loads(args.faults)) if args.faults else None
    except (json.JSONDecodeError, ValueError) as exc:
        parser.error(f"--faults: {exc}")
    emulator = SendGridEmulator(
        args.host,
        args.port,
        faults=faults,
        state_file=args.state_file,
        api_keys=args.api_keys,
        import_delay_seconds=args.import_delay,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    emulator.start()
    print(f"sendgrid emulator listening on {emulator.url}", flush=True)
    while not stop.wait(0.5):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
