"""The email destination: SendGrid Marketing Campaigns contacts and lists (v3 API), driven with httpx.

One record of the sync email_segment_lists is one list membership (a contact on the list of one segment):

- write: the contacts are upserted with PUT /v3/marketing/contacts, one request per list (its `list_ids`), at most
  30,000 contacts and under 6 MB per request. A contact is matched by its identifiers: the email, and the external_id
  (the CDP profile id) whenever the sync maps one (SendGrid refuses an update that omits an identifier the contact
  already has). Imports are asynchronous: the destination polls each job (GET /v3/marketing/contacts/imports/{id})
  until it is completed, errored or failed, and turns the contacts the job reports as errored into per-record errors
  with a code (IMPORT_ERROR is transient and retried; IDENTIFIER_CONFLICT, INVALID_CUSTOM_FIELD... are not).
  Lists are found by name (`options.list_prefix` + the segment, e.g. "CDP: alumni") and created when missing; ids
  are cached for the destination's life. Custom fields declared in `options.custom_fields` ({name: Text | Number |
  Date}) are created on demand (field_definitions) and sent keyed by their id.
- destination_id: "<list_id>/external_id:<profile id>" (or "<list_id>/email:<address>" for a sync without an
  external id). The contact id is looked up only when a membership is removed: an import does not return contact
  ids, and looking them up after every import would cost a search per 100 contacts on every run.
- delete (mirror): the contacts are looked up by identifier (POST .../contacts/search/identifiers/{type}) and removed
  from the list (DELETE /v3/marketing/lists/{id}/contacts?contact_ids=...); the contact itself stays (it may be on
  other lists). A contact or list already gone is a success.
- consent: the payload model keeps only members whose email consent allows contact; when the sync also maps
  `email_consent` (the consent status, or the can_contact boolean), every record is re-checked here and refused with
  NO_CONSENT unless it is opted_in / implied / true, and a membership delivered earlier is taken off its list.
- erasure: `erase_subject(client, emails, external_ids)` deletes the subject's contacts (DELETE
  /v3/marketing/contacts?ids=...), `find_subject_contacts` is the sweep (empty: erased).

Failures follow reverse_etl/base.py: HTTP 429 -> RetryableError with retry_after from X-RateLimit-Reset; 5xx and
connection errors -> RetryableError (resending is harmless: upserts and list removals are idempotent by
identifier); 401/403 -> DestinationError naming SENDGRID_API_KEY. Reads (job polls, lookups) are retried here a few
times first, because resending a whole batch to recover a lost poll would import it again.

Configuration: SENDGRID_API_KEY, and SENDGRID_API_BASE_URL (default https://api.sendgrid.com; the emulator's URL in
the demo and the tests). Every request spends the sync's ApiBudget first. Sync options: list_prefix (default "CDP: "),
custom_fields, poll_seconds (first job poll, then x1.5 up to 5 s; default 0.05), import_timeout_seconds (900).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx

from orchestration.quality.gate_4 import DestinationField
from reverse_etl.base import (
    ApiBudget,
    DestinationError,
    DestinationNotConfigured,
    Mode,
    Record,
    RecordResult,
    RetryableError,
)
from reverse_etl.config import EMAIL_CUSTOM_FIELD_TYPES as CUSTOM_FIELD_TYPES

if TYPE_CHECKING:
    from reverse_etl.config import SyncConfig

log = logging.getLogger("cdp.reverse_etl.email")

API_KEY_ENV = "SENDGRID_API_KEY"
BASE_URL_ENV = "SENDGRID_API_BASE_URL"
DEFAULT_BASE_URL = "https://api.sendgrid.com"
OBJECT = "contacts"

# PUT /v3/marketing/contacts: at most 30,000 contacts and less than 6 MB per request (the docs' limits).
MAX_CONTACTS_PER_UPSERT = 30_000
MAX_UPSERT_BYTES = 6 * 1024 * 1024 - 16 * 1024  # a margin below 6 MiB for the envelope and rounding
MAX_IDS_PER_CALL = 100  # identifier searches take 100; the same for ids in query strings (URL length)
MAX_LIST_NAME = 100
RESERVED_TEXT_LIMITS = {"first_name": 50, "last_name": 50}
MAX_IDENTIFIER = 254
DEFAULT_LIST_PREFIX = "CDP: "
CONSENT_FIELD = "email_consent"
ALLOWED_CONSENT = frozenset({"opted_in", "implied", "true"})  # statuses of gold.consent_current that allow email

# Fields of a record that are not sent as contact fields.
IDENTIFIER_FIELDS = ("email", "external_id")
LIST_FIELD = "list_name"

JOB_DONE = ("completed", "errored", "failed")
# The address check SendGrid applies (one @, a dotted domain, a local part of at most 64 characters): refusing such
# an address here costs one record, where SendGrid answers 400 to the whole request.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_CUSTOM_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTACT_INDEX = re.compile(r"^contacts\[(\d+)\]")
_RESERVED_NAMES = frozenset({
    "first_name", "last_name", "email", "alternate_emails", "address_line_1", "address_line_2", "city",
    "state_province_region", "postal_code", "country", "phone_number", "whatsapp", "line", "facebook",
    "unique_name", "email_domains", "last_clicked", "last_opened", "last_emailed", "singlesend_id", "automation_id",
    "created_at", "updated_at", "contact_id", "phone_number_id", "external_id", "anonymous_id",
})


def valid_email(value: str) -> bool:
    return len(value) <= MAX_IDENTIFIER and bool(_EMAIL.match(value)) and len(value.split("@", 1)[0]) <= 64


# ----------------------------------------------------------------------------------------------------------------
# The HTTP client


class SendGridApiError(DestinationError):
    """A request SendGrid refused for good (4xx other than 401/403/429), with its `errors` list."""

    def __init__(self, message: str, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors


def _error_text(response: httpx.Response) -> tuple[str, list[dict[str, Any]]]:
    """SendGrid's {"errors": [{"field", "message"}]} as one line, and the list itself."""
    try:
        body = response.json()
    except ValueError:
        return (response.text[:300] or response.reason_phrase), []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return json.dumps(body)[:300], []
    parts = []
    for error in errors[:5]:
        if isinstance(error, dict):
            where = f"{error['field']}: " if error.get("field") else ""
            parts.append(f"{where}{error.get('message', '')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, [e for e in errors if isinstance(e, dict)]


class SendGridClient:
    """httpx against the SendGrid v3 API: auth, the budget, and SendGrid's failures mapped to the runner's errors.

    `request` raises RetryableError (429 with the wait from X-RateLimit-Reset, 5xx, connection errors),
    DestinationError (401/403) or SendGridApiError (other 4xx). `read` retries transient failures of a request that
    changes nothing (polls, lookups) `read_attempts` times before it raises RetryableError; `retrying` does the same
    for any call, for callers without a runner (the erasure job).
    """

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, *, budget: ApiBudget | None = None,
                 timeout: float = 60.0, sleep: Callable[[float], None] = time.sleep, read_attempts: int = 5,
                 max_wait: float = 10.0) -> None:
        if not api_key:
            raise DestinationNotConfigured(f"email destination not configured: set {API_KEY_ENV}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DestinationError(
                f"{BASE_URL_ENV}={base_url!r} is not an http(s) URL (e.g. {DEFAULT_BASE_URL} or http://127.0.0.1:PORT)"
            )
        self.base_url = base_url.rstrip("/")
        self.budget = budget
        self.sleep = sleep
        self.read_attempts = read_attempts
        self.max_wait = max_wait
        self._origin = (parts.scheme, parts.netloc)
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                                          "User-Agent": "cdp-reverse-etl/1"})

    @classmethod
    def from_env(cls, budget: ApiBudget | None = None, **options: Any) -> SendGridClient:
        """SENDGRID_API_KEY and SENDGRID_API_BASE_URL; DestinationNotConfigured when the key is missing."""
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise DestinationNotConfigured(
                f"email destination not configured: set {API_KEY_ENV} (and {BASE_URL_ENV} for a server other than "
                f"{DEFAULT_BASE_URL}, e.g. the local emulator)"
            )
        return cls(key, os.environ.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL, budget=budget, **options)

    def close(self) -> None:
        self.http.close()

    # -- one request ------------------------------------------------------------------------------------------

    def request(self, method: str, url: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
                content: bytes | None = None, expect: tuple[int, ...] = (200, 201, 202, 204),
                auth: bool = True) -> httpx.Response:
        if self.budget is not None:
            self.budget.spend()
        headers = {"Content-Type": "application/json"} if content is not None else None
        what = f"SendGrid {method} {urlsplit(url).path}"
        try:
            if auth:
                response = self.http.request(method, url, params=params, json=json_body, content=content,
                                             headers=headers)
            else:  # a URL SendGrid handed out (errors_url) on another host: it must not get the API key
                response = httpx.request(method, url, params=params, timeout=self.http.timeout)
        except httpx.TransportError as error:
            raise RetryableError(f"{what}: {type(error).__name__}: {error or 'connection failed'}") from error
        if response.status_code in expect:
            return response
        text, errors = _error_text(response)
        status = response.status_code
        if status == 429:
            raise RetryableError(f"{what}: HTTP 429 (rate limited): {text}", retry_after=self._reset_wait(response))
        if status >= 500:
            raise RetryableError(f"{what}: HTTP {status}: {text}")
        if status in (401, 403):
            raise DestinationError(
                f"{what}: HTTP {status}: {text}; set {API_KEY_ENV} to an API key with the Marketing scopes "
                "(contacts, lists, custom fields)")
        raise SendGridApiError(f"{what}: HTTP {status}: {text}", status, errors)

    @staticmethod
    def _reset_wait(response: httpx.Response) -> float | None:
        """Seconds until the rate-limit window resets (X-RateLimit-Reset is Unix seconds), or Retry-After."""
        for header, absolute in (("X-RateLimit-Reset", True), ("Retry-After", False)):
            raw = response.headers.get(header)
            if raw is None:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            return max(0.0, value - time.time()) if absolute else max(0.0, value)
        return None

    # -- retried calls ----------------------------------------------------------------------------------------

    def retrying(self, call: Callable[[], Any], attempts: int | None = None) -> Any:
        """`call()`, retried on RetryableError with backoff (or the service's wait, capped at max_wait)."""
        attempts = attempts or self.read_attempts
        for attempt in range(attempts):
            try:
                return call()
            except RetryableError as error:
                if attempt + 1 >= attempts:
                    raise
                backoff = min(self.max_wait, 0.2 * 2**attempt)
                self.sleep(min(self.max_wait, max(backoff, error.retry_after or 0.0)))
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.retrying(lambda: self.request(method, url, **kwargs))

    # -- API helpers ------------------------------------------------------------------------------------------

    def wait_for_jobs(self, job_ids: Iterable[str], *, timeout: float = 900.0, first_poll: float = 0.05,
                      max_poll: float = 5.0) -> dict[str, dict[str, Any]]:
        """Poll import / delete jobs until each is completed, errored or failed (RetryableError after `timeout`)."""
        pending = list(dict.fromkeys(job_ids))
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        interval = first_poll
        while pending:
            self.sleep(interval)
            still = []
            for job_id in pending:
                job = self.read("GET", f"/v3/marketing/contacts/imports/{job_id}").json()
                if job.get("status") in JOB_DONE:
                    done[job_id] = job
                else:
                    still.append(job_id)
            pending = still
            if pending and time.monotonic() > deadline:
                raise RetryableError(f"SendGrid jobs {', '.join(pending[:3])} still pending after {timeout:.0f} s")
            interval = min(max_poll, interval * 1.5)
        return done

    def job_errors(self, job: dict[str, Any]) -> list[dict[str, str]] | None:
        """The errored contacts of a job (rows of its errors CSV: index, identifiers, message); None when unknown."""
        url = (job.get("results") or {}).get("errors_url")
        if not url:
            return None
        parts = urlsplit(url)
        same_origin = (parts.scheme, parts.netloc) == self._origin
        try:
            response = self.read("GET", url, auth=same_origin)
        except (RetryableError, SendGridApiError) as error:
            log.warning(f"SendGrid job {job.get('id')}: its errors could not be read: {error}")
            return None
        return list(csv.DictReader(io.StringIO(response.text)))

    def find_contacts(self, identifier_type: str, values: Iterable[str]) -> dict[str, str]:
        """{identifier value: contact id} of the contacts found (emails lower-cased)."""
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(v.strip().lower() if identifier_type == "email" else v for v in values if v))
        for chunk in _chunks(wanted, MAX_IDS_PER_CALL):
            body = {"identifiers": [{identifier_type: value} for value in chunk]}
            try:
                response = self.read("POST", f"/v3/marketing/contacts/search/identifiers/{identifier_type}",
                                     json_body=body)
            except SendGridApiError as error:
                if error.status == 404:  # none of them exists
                    continue
                raise
            for value, entry in (response.json().get("result") or {}).items():
                contact = entry.get("contact") if isinstance(entry, dict) else None
                if contact and contact.get("id"):
                    found[value] = contact["id"]
        return found

    def search_emails(self, emails: Iterable[str]) -> dict[str, str]:
        """{email: contact id}, matching primary and alternate emails (POST .../contacts/search/emails)."""
        found: dict[str, str] = {}
        wanted = list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))
        for chunk in _chunks(wanted, MAX_IDS_PER_CALL):
            try:
                response = self.read("POST", "/v3/marketing/contacts/search/emails", json_body={"emails": chunk})
            except SendGridApiError as error:
                if error.status == 404:
                    continue
                raise
            for email, entry in (response.json().get("result") or {}).items():
                contact = entry.get("contact") if isinstance(entry, dict) else None
                if contact and contact.get("id"):
                    found[email] = contact["id"]
        return found


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ----------------------------------------------------------------------------------------------------------------
# Erasure (right to be forgotten)


def find_subject_contacts(client: SendGridClient, emails: Iterable[str], external_ids: Iterable[str] = ()) -> set[str]:
    """Ids of the contacts holding one of `emails` (primary or alternate) or `external_ids`: the erasure's sweep."""
    ids = set(client.search_emails(emails).values())
    return ids | set(client.find_contacts("external_id", external_ids).values())


def erase_subject(client: SendGridClient, emails: Iterable[str], external_ids: Iterable[str] = ()) -> int:
    """Delete every SendGrid contact of a subject (found by email, alternate email or external id = profile id) and
    wait until the deletion jobs finished. Returns the number of contacts deleted; 0 when none was there.
    Transient failures are retried here (the erasure job has no runner); deleting twice is harmless."""
    emails, external_ids = list(emails), list(external_ids)
    ids = sorted(find_subject_contacts(client, emails, external_ids))
    jobs = []
    for chunk in _chunks(ids, MAX_IDS_PER_CALL):
        response = client.retrying(lambda chunk=chunk: client.request(
            "DELETE", "/v3/marketing/contacts", params={"ids": ",".join(chunk)}))
        jobs.append(response.json()["job_id"])
    for job in client.retrying(lambda: client.wait_for_jobs(jobs)).values():
        # a retried DELETE whose first attempt was applied finds nothing left: look before failing
        if (job["status"] == "failed" and not job["results"].get("deleted_count")
                and find_subject_contacts(client, emails, external_ids) & set(ids)):
            raise DestinationError(f"SendGrid contact deletion job {job.get('id')} failed")
    return len(ids)


# ----------------------------------------------------------------------------------------------------------------
# The destination


@dataclass
class _Contact:
    """One record turned into a contact of one list."""

    record: Record
    list_name: str
    body: dict[str, Any]
    identifier: str  # "external_id:<id>" or "email:<address>": how a later delete finds the contact
    custom: dict[str, Any] = field(default_factory=dict)  # {custom field name: value}


@dataclass
class _Upsert:
    """One PUT: its list, its contacts (in request order) and its job."""

    list_id: str
    contacts: list[_Contact]
    job_id: str | None = None


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _custom_value(kind: str, value: Any) -> Any:
    """A value in the wire form of its custom field type (None clears the field)."""
    if value is None:
        return None
    if kind == "Number":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, Decimal | float | int):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{value!r} is not a finite number")
            return int(number) if number.is_integer() and not isinstance(value, float) else number
        raise ValueError(f"{value!r} is not a number")
    if kind == "Date":
        if isinstance(value, datetime):
            return _text(value)
        if isinstance(value, date):
            return value.strftime("%m/%d/%Y")
        return str(value)
    return _text(value)


def _error_code(message: str) -> tuple[str, bool]:
    """The code and retryability of a contact the import job reports as errored (by the job's message)."""
    text = message.lower()
    if "internal error" in text or "retry" in text or "job failed" in text:
        return "IMPORT_ERROR", True
    if "identifier" in text:
        return "IDENTIFIER_CONFLICT", False
    if "custom field" in text:
        return "INVALID_CUSTOM_FIELD", False
    return "CONTACT_REJECTED", False


class EmailDestination:
    """SendGrid contact lists for the email syncs (see the module docstring). `factory(sync, budget)`."""

    name = "email"

    def __init__(self, sync: SyncConfig, budget: ApiBudget, *, sleep: Callable[[float], None] = time.sleep) -> None:
        if sync.object != OBJECT:
            raise DestinationError(f"sync {sync.name}: email has no object {sync.object!r}; the object is {OBJECT}")
        self.sync = sync
        self.budget = budget
        options = dict(sync.options or {})
        self.list_prefix = str(options.get("list_prefix", DEFAULT_LIST_PREFIX))
        self.custom_types = self._custom_field_options(options.get("custom_fields") or {})
        self.first_poll = float(options.get("poll_seconds", 0.05))
        self.import_timeout = float(options.get("import_timeout_seconds", 900))
        self.client = SendGridClient.from_env(budget, sleep=sleep)
        self.sleep = sleep
        self.checks_consent = CONSENT_FIELD in sync.mapping
        if not self.checks_consent:
            log.warning(f"sync {sync.name} maps no {CONSENT_FIELD}: the model's consent filter is not re-checked "
                        f"by the email destination (map {CONSENT_FIELD} to the email consent status)")
        self._lists: dict[str, str] | None = None  # list name -> id
        self._fields: dict[str, dict[str, Any]] | None = None  # custom field name (lower case) -> definition

    def _custom_field_options(self, raw: Any) -> dict[str, str]:
        where = f"sync {self.sync.name}: options.custom_fields"
        if not isinstance(raw, dict):
            raise DestinationError(f"{where}: expected {{field name: {' | '.join(CUSTOM_FIELD_TYPES)}}}")
        problems = []
        for name, kind in raw.items():
            if not isinstance(name, str) or not _CUSTOM_FIELD_NAME.match(name) or len(name) > 100:
                problems.append(f"{name!r} is not a field name (letters, digits, _; not starting with a digit)")
            elif name.lower() in _RESERVED_NAMES or name in (CONSENT_FIELD, LIST_FIELD, self.sync.match_key):
                problems.append(f"{name!r} is a reserved field or one this destination uses")
            if kind not in CUSTOM_FIELD_TYPES:
                problems.append(f"{name}: type {kind!r} is not one of {', '.join(CUSTOM_FIELD_TYPES)}")
        if problems:
            raise DestinationError(f"{where}: " + "; ".join(problems))
        return dict(raw)

    # -- the Destination protocol -----------------------------------------------------------------------------

    def fields(self, object: str) -> dict[str, DestinationField]:
        """The contacts catalogue of reverse_etl/config.py with the sync's custom fields (options.custom_fields)."""
        self._check_object(object)
        return dict(self.sync.fields)

    def max_batch(self, object: str, mode: Mode) -> int:
        self._check_object(object)
        return MAX_CONTACTS_PER_UPSERT

    def check(self) -> None:
        """One authenticated call (the custom field definitions, kept for the writes); transient failures are
        retried a few times, then reported as a DestinationError saying where it tried."""
        try:
            self._load_fields()
        except RetryableError as error:
            raise DestinationError(f"SendGrid at {self.client.base_url} is not answering ({error}); check "
                                   f"{BASE_URL_ENV} and the network") from error

    def close(self) -> None:
        self.client.close()

    def write(self, object: str, records: list[Record], mode: Mode) -> list[RecordResult]:
        self._check_object(object)
        if mode not in ("upsert", "mirror"):
            raise DestinationError(f"email {OBJECT} support upsert and mirror, not {mode}")
        results: dict[str, RecordResult] = {}
        contacts: list[_Contact] = []
        withdrawn: list[Record] = []
        for record in records:
            contact = self._contact(record, results)
            if contact is not None:
                contacts.append(contact)
            elif results[record.key].error_code == "NO_CONSENT" and record.destination_id:
                withdrawn.append(record)
        if withdrawn:  # delivered earlier, no consent now: off the list, the refusal stays visible
            for result in self.delete(OBJECT, withdrawn):
                if result.ok:
                    old = results[result.key]
                    results[result.key] = RecordResult(
                        old.key, False, error_code=old.error_code,
                        message=f"{old.message}; removed from its list")
        if contacts:
            self._ensure_custom_fields(contacts)
            list_ids = self._list_ids({c.list_name for c in contacts})
            upserts = self._submit(contacts, list_ids, results)
            self._collect(upserts, results)
        return [results[record.key] for record in records]

    def delete(self, object: str, records: list[Record]) -> list[RecordResult]:
        self._check_object(object)
        results: dict[str, RecordResult] = {}
        wanted: dict[str, list[tuple[Record, str, str]]] = {}  # identifier type -> (record, list id, value)
        for record in records:
            list_id, _, identifier = (record.destination_id or "").partition("/")
            kind, _, value = identifier.partition(":")
            if not list_id or kind not in IDENTIFIER_FIELDS or not value:
                results[record.key] = RecordResult(
                    record.key, False, error_code="UNKNOWN_MEMBERSHIP",
                    message=f"destination_id {record.destination_id!r} does not name a list and a contact "
                            "(<list_id>/external_id:<id> or <list_id>/email:<address>)")
                continue
            wanted.setdefault(kind, []).append((record, list_id, value))
        removals: dict[str, dict[str, list[Record]]] = {}  # list id -> contact id -> records
        for kind, items in wanted.items():
            found = self.client.find_contacts(kind, [value for _, _, value in items])
            for record, list_id, value in items:
                contact_id = found.get(value.strip().lower() if kind == "email" else value)
                if contact_id is None:  # the contact is gone (erased, deleted by hand): so is the membership
                    results[record.key] = RecordResult(record.key, True, destination_id=record.destination_id)
                else:
                    removals.setdefault(list_id, {}).setdefault(contact_id, []).append(record)
        jobs: dict[str, list[Record]] = {}
        for list_id, by_contact in removals.items():
            for chunk in _chunks(list(by_contact), MAX_IDS_PER_CALL):
                chunk_records = [r for contact_id in chunk for r in by_contact[contact_id]]
                try:
                    response = self.client.request("DELETE", f"/v3/marketing/lists/{list_id}/contacts",
                                                   params={"contact_ids": ",".join(chunk)})
                except SendGridApiError as error:
                    if error.status == 404 and not any(e.get("field") == "contact_ids" for e in error.errors):
                        for record in chunk_records:  # the list itself is gone: no membership left
                            results[record.key] = RecordResult(record.key, True, destination_id=record.destination_id)
                        continue
                    if error.status == 404:  # a contact vanished since the lookup: look them up again
                        raise RetryableError(f"{error}; looking the contacts up again") from error
                    raise
                jobs[response.json()["job_id"]] = chunk_records
        if jobs:
            for job_id, job in self.client.wait_for_jobs(jobs, timeout=self.import_timeout,
                                                         first_poll=self.first_poll).items():
                failed = job["status"] == "failed"
                for record in jobs[job_id]:
                    results[record.key] = (
                        RecordResult(record.key, False, error_code="IMPORT_ERROR", retryable=True,
                                     message=f"SendGrid list removal job {job_id} failed")
                        if failed else RecordResult(record.key, True, destination_id=record.destination_id))
        return [results[record.key] for record in records]

    # -- records to contacts ----------------------------------------------------------------------------------

    def _check_object(self, object: str) -> None:
        if object != OBJECT:
            raise DestinationError(f"email has no object {object!r}; the object is {OBJECT}")

    def _contact(self, record: Record, results: dict[str, RecordResult]) -> _Contact | None:
        """The record as a contact of its list, or None with its refusal in `results`."""
        fields = record.fields

        def refuse(code: str, message: str) -> None:
            results[record.key] = RecordResult(record.key, False, error_code=code, message=message)

        if self.checks_consent:
            consent = fields.get(CONSENT_FIELD)
            if _text(consent).strip().lower() not in ALLOWED_CONSENT or consent is None:
                refuse("NO_CONSENT", f"email consent is {consent!r}: only opted_in or implied consent may be "
                                     "added to a list")
                return None
        list_name = self.list_prefix + _text(fields.get(LIST_FIELD) or "").strip()
        if list_name == self.list_prefix:
            refuse("MISSING_LIST", f"{LIST_FIELD} is empty: the record names no list")
            return None
        if len(list_name) > MAX_LIST_NAME:
            refuse("LIST_NAME_TOO_LONG", f"list name {list_name[:40]!r}... is longer than {MAX_LIST_NAME} characters")
            return None
        email = _text(fields.get("email") or "").strip().lower()
        if not email:
            refuse("MISSING_EMAIL", "the contact has no email address")
            return None
        if not valid_email(email):
            refuse("INVALID_EMAIL", f"{email!r} is not an address SendGrid accepts")
            return None
        body: dict[str, Any] = {"email": email}
        external_id = fields.get("external_id")
        if external_id is not None and _text(external_id).strip():
            body["external_id"] = _text(external_id).strip()
            if len(body["external_id"]) > MAX_IDENTIFIER:
                refuse("FIELD_TOO_LONG", f"external_id is longer than {MAX_IDENTIFIER} characters")
                return None
        for name, limit in RESERVED_TEXT_LIMITS.items():
            if name in fields:
                value = "" if fields[name] is None else _text(fields[name])  # "" clears the field
                if len(value) > limit:
                    refuse("FIELD_TOO_LONG", f"{name} is longer than {limit} characters")
                    return None
                body[name] = value
        custom = {}
        for name, kind in self.custom_types.items():
            if name in fields:
                try:
                    custom[name] = _custom_value(kind, fields[name])
                except ValueError as error:
                    refuse("INVALID_CUSTOM_FIELD", f"{name} ({kind}): {error}")
                    return None
        identifier = f"external_id:{body['external_id']}" if "external_id" in body else f"email:{email}"
        return _Contact(record, list_name, body, identifier, custom)

    # -- lists and custom fields ------------------------------------------------------------------------------

    def _load_lists(self) -> dict[str, str]:
        lists: dict[str, str] = {}
        params: dict[str, Any] = {"page_size": 1000}
        while True:
            page = self.client.read("GET", "/v3/marketing/lists", params=params).json()
            for item in page.get("result") or []:
                lists.setdefault(item["name"], item["id"])
            next_url = (page.get("_metadata") or {}).get("next")
            token = parse_qs(urlsplit(next_url).query).get("page_token") if next_url else None
            if not token:
                break
            params = {"page_size": 1000, "page_token": token[0]}
        self._lists = lists
        return lists

    def _list_ids(self, names: set[str]) -> dict[str, str]:
        lists = self._lists if self._lists is not None else self._load_lists()
        for name in sorted(names - set(lists)):
            try:
                created = self.client.request("POST", "/v3/marketing/lists", json_body={"name": name}).json()
                lists[name] = created["id"]
                log.info(f"SendGrid list {name!r} created ({created['id']})")
            except SendGridApiError as error:
                if error.status != 400:
                    raise
                lists = self._load_lists()  # created meanwhile (or by the attempt whose answer was lost)
                if name not in lists:
                    raise DestinationError(f"SendGrid list {name!r} cannot be created: {error}") from error
        return {name: lists[name] for name in names}

    def _load_fields(self) -> dict[str, dict[str, Any]]:
        body = self.client.read("GET", "/v3/marketing/field_definitions").json()
        self._fields = {f["name"].lower(): f for f in body.get("custom_fields") or []}
        return self._fields

    def _ensure_custom_fields(self, contacts: list[_Contact]) -> None:
        used = {name for contact in contacts for name in contact.custom}
        if not used:
            return
        defined = self._fields if self._fields is not None else self._load_fields()
        for name in sorted(used):
            kind = self.custom_types[name]
            existing = defined.get(name.lower())
            if existing is None:
                try:
                    created = self.client.request("POST", "/v3/marketing/field_definitions",
                                                  json_body={"name": name, "field_type": kind}).json()
                    defined[name.lower()] = {"id": created["id"], "name": created["name"],
                                             "field_type": created["field_type"]}
                    log.info(f"SendGrid custom field {name} ({kind}) created ({created['id']})")
                except SendGridApiError as error:
                    if error.status != 400:
                        raise
                    defined = self._load_fields()
                    if name.lower() not in defined:
                        raise DestinationError(f"SendGrid custom field {name} cannot be created: {error}") from error
                existing = defined[name.lower()]
            if existing["field_type"] != kind:
                raise DestinationError(
                    f"SendGrid custom field {existing['name']} ({existing['id']}) is a {existing['field_type']} "
                    f"field; sync {self.sync.name} declares it {kind} (options.custom_fields)")
        for contact in contacts:
            if contact.custom:
                contact.body["custom_fields"] = {defined[n.lower()]["id"]: v for n, v in contact.custom.items()}

    # -- upserts ------------------------------------------------------------------------------------------------

    def _submit(self, contacts: list[_Contact], list_ids: dict[str, str],
                results: dict[str, RecordResult]) -> list[_Upsert]:
        """PUT the contacts, one request per list and chunk (<= 30,000 contacts, < 6 MB); returns the jobs."""
        by_list: dict[str, list[_Contact]] = {}
        for contact in contacts:
            by_list.setdefault(list_ids[contact.list_name], []).append(contact)
        upserts = []
        for list_id, members in by_list.items():
            for chunk in self._chunks_by_size(members):
                upserts += self._put(_Upsert(list_id, chunk), results)
        return upserts

    @staticmethod
    def _chunks_by_size(members: list[_Contact]) -> Iterator[list[_Contact]]:
        chunk: list[_Contact] = []
        size = 64  # the envelope: {"list_ids": ["<uuid>"], "contacts": []}
        for contact in members:
            contact_size = len(json.dumps(contact.body, separators=(",", ":")).encode()) + 1
            if chunk and (len(chunk) >= MAX_CONTACTS_PER_UPSERT or size + contact_size > MAX_UPSERT_BYTES):
                yield chunk
                chunk, size = [], 64
            chunk.append(contact)
            size += contact_size
        if chunk:
            yield chunk

    def _put(self, upsert: _Upsert, results: dict[str, RecordResult], attempt: int = 0) -> list[_Upsert]:
        """One PUT; a 400 naming contacts refuses those and sends the rest again, a 413 halves the request, a
        404 for the list (deleted since it was cached) finds or creates it again."""
        body = json.dumps({"list_ids": [upsert.list_id], "contacts": [c.body for c in upsert.contacts]},
                          separators=(",", ":")).encode()
        try:
            response = self.client.request("PUT", "/v3/marketing/contacts", content=body, expect=(202,))
        except SendGridApiError as error:
            if error.status == 413 and len(upsert.contacts) > 1:
                half = len(upsert.contacts) // 2
                return (self._put(_Upsert(upsert.list_id, upsert.contacts[:half]), results, attempt)
                        + self._put(_Upsert(upsert.list_id, upsert.contacts[half:]), results, attempt))
            if error.status == 404 and attempt == 0 and any(e.get("field") == "list_ids" for e in error.errors):
                name = upsert.contacts[0].list_name
                self._lists = None
                list_id = self._list_ids({name})[name]
                return self._put(_Upsert(list_id, upsert.contacts), results, attempt + 1)
            if error.status == 400 and attempt < 3:
                bad: dict[int, str] = {}
                for item in error.errors:
                    match = _CONTACT_INDEX.match(str(item.get("field") or ""))
                    if match and int(match.group(1)) < len(upsert.contacts):
                        index = int(match.group(1))
                        bad[index] = "; ".join(filter(None, [bad.get(index), f"{item['field']}: {item['message']}"]))
                if bad:
                    for index, message in bad.items():
                        key = upsert.contacts[index].record.key
                        results[key] = RecordResult(key, False, error_code="INVALID_CONTACT", message=message)
                    rest = [c for i, c in enumerate(upsert.contacts) if i not in bad]
                    return self._put(_Upsert(upsert.list_id, rest), results, attempt + 1) if rest else []
            for contact in upsert.contacts:  # refused as a whole, for a reason no contact explains
                key = contact.record.key
                results[key] = RecordResult(key, False, error_code=f"HTTP_{error.status}", message=str(error)[:500])
            return []
        upsert.job_id = response.json()["job_id"]
        return [upsert]

    def _collect(self, upserts: list[_Upsert], results: dict[str, RecordResult]) -> None:
        """Wait for the import jobs and record each contact's outcome."""
        jobs = self.client.wait_for_jobs([u.job_id for u in upserts if u.job_id], timeout=self.import_timeout,
                                         first_poll=self.first_poll)
        for upsert in upserts:
            job = jobs[upsert.job_id or ""]
            errored = int((job.get("results") or {}).get("errored_count") or 0)
            failures: dict[int, str] = {}
            if errored:
                failures = self._failures(upsert, job)
            for index, contact in enumerate(upsert.contacts):
                key = contact.record.key
                if index in failures:
                    code, retryable = _error_code(failures[index])
                    results[key] = RecordResult(key, False, error_code=code, retryable=retryable,
                                                message=f"SendGrid import {upsert.job_id}: {failures[index]}")
                else:
                    results[key] = RecordResult(key, True, destination_id=f"{upsert.list_id}/{contact.identifier}")

    def _failures(self, upsert: _Upsert, job: dict[str, Any]) -> dict[int, str]:
        """Index in the request -> message, for the contacts the job reports as errored. When the job's errors
        cannot be read, every contact of the request counts as a transient failure (sending it again is safe)."""
        rows = self.client.job_errors(job)
        everyone = {i: f"job {job.get('status')} with {job['results'].get('errored_count')} errored contacts; "
                       "its errors could not be read: retry the upsert" for i in range(len(upsert.contacts))}
        if rows is None:
            return everyone
        by_identifier: dict[tuple[str, str], int] = {}
        for index, contact in enumerate(upsert.contacts):
            for name in IDENTIFIER_FIELDS:
                if name in contact.body:
                    by_identifier.setdefault((name, contact.body[name]), index)
        failures: dict[int, str] = {}
        for row in rows:
            message = row.get("message") or "contact not imported"
            index = int(row["index"]) if (row.get("index") or "").isdigit() else None
            if index is None or index >= len(upsert.contacts):
                index = next((by_identifier[(name, row[name])] for name in IDENTIFIER_FIELDS
                              if row.get(name) and (name, row[name]) in by_identifier), None)
            if index is None:  # an error of the whole job ("job failed: ...")
                return {i: message for i in range(len(upsert.contacts))}
            failures[index] = message
        return failures
