"""Salesforce Contacts pulled through the REST API (simple-salesforce), incrementally by LastModifiedDate.

`pull_contacts(zone, since=...)` runs `SELECT <the fields silver reads> FROM Contact WHERE LastModifiedDate >= ...
ORDER BY LastModifiedDate, Id` with `query_all_iter` (paged by `nextRecordsUrl`) and lands every `page_size`
records as one batch whose bytes are a saved REST query response, `{"totalSize":n,"done":true,"records":[...]}`
(records as the API returned them, `attributes` included): exactly what `cdp land salesforce page.json` lands for
such a file, so bronze and silver read API pulls and file exports alike.

Incremental and idempotent:
- The watermark (the highest LastModifiedDate landed, and the Ids landed at that very time) is kept in the landing
  zone, `<zone>/salesforce/_watermark.json`, and rewritten atomically after each batch is landed, so a crashed pull
  resumes after its last landed batch.
- The query asks `>=` the watermark's second and drops, client-side, what is older than the watermark or was landed
  at it already: a strict `>` would miss a Contact modified in the same instant as the last one landed (Salesforce
  stamps many records with one time in a data load), and SOQL datetime literals are second-precision.
- A batch's id is the hash of its bytes (connectors/base.py), so landing the same records again writes nothing.
  A batch re-pulled with different neighbours (the org changed between two tries) lands again; silver's
  deduplication on Id@LastModifiedDate then quarantines the copies as duplicates (landed = silver + quarantined).

Fields: those of `CONTACT_FIELDS` (the payload fields of dbt_project/models/silver/salesforce/int_salesforce__parsed
.sql) that the org's Contact has, by one describe call; a custom field the org lacks (e.g. Program_Interest__c before
the admissions package is installed) is left out, and silver reads it as null. Deleted Contacts are not pulled
(silver has no deletion model yet).

Configuration is the reverse-ETL destination's (`connect_from_env`): SALESFORCE_INSTANCE_URL +
SALESFORCE_ACCESS_TOKEN, or the username/password/security-token login; `http://` instance URLs reach a local
emulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from connectors.base import RawBatch, Source, SourceError, content_batch_id, split_json
from connectors.landing import LandedBatch, LandingZone

SOURCE = "salesforce"
OBJECT = "Contact"
WATERMARK_FILE = "_watermark.json"
# The Contact fields silver reads (int_salesforce__parsed.sql, payload_fields), in the generator's export order.
CONTACT_FIELDS: tuple[str, ...] = (
    "Id", "Email", "Phone", "MobilePhone", "FirstName", "LastName", "Birthdate", "MailingStreet",
    "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "Program_Interest__c",
    "Application_Stage__c", "Enrollment_Status__c", "HasOptedOutOfEmail", "CreatedDate", "LastModifiedDate",
)
# Without these silver quarantines every record (int_salesforce__parsed.sql: missing_required_field).
REQUIRED_FIELDS: tuple[str, ...] = ("Id", "LastName", "LastModifiedDate")
MIN_PAGE, MAX_PAGE = 200, 2000  # Sforce-Query-Options batchSize bounds


@dataclass(frozen=True)
class Watermark:
    """The highest LastModifiedDate landed and the Contact Ids landed with exactly that time."""

    last_modified: datetime
    last_modified_raw: str
    ids: frozenset[str] = frozenset()

    def to_json(self, instance_url: str) -> bytes:
        return orjson.dumps(
            {
                "object": OBJECT,
                "last_modified_date": self.last_modified_raw,
                "ids_at_last_modified_date": sorted(self.ids),
                "instance_url": instance_url,
                "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            option=orjson.OPT_INDENT_2,
        )


@dataclass
class PullResult:
    """What one pull did: `count` records newly landed in `batches`, `pulled` read from the API (after the
    watermark filter), and the watermark now stored (None when nothing was ever pulled)."""

    count: int
    pulled: int
    batches: list[LandedBatch]
    watermark: datetime | None
    since: datetime | None
    fields: tuple[str, ...]
    missing_fields: tuple[str, ...] = ()

    @property
    def new_batches(self) -> list[LandedBatch]:
        return [batch for batch in self.batches if not batch.already_landed]


def parse_salesforce_datetime(text: str) -> datetime:
    """`2026-03-01T10:15:30.000+0000` (REST) or `...Z` as an aware UTC datetime; SourceError when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise SourceError(f"salesforce: LastModifiedDate {text!r} is not an ISO 8601 time") from None
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken as UTC (as Salesforce's API times are)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal, second precision (the documented forms carry no fraction)."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def watermark_path(zone: LandingZone) -> Path:
    return zone.root / SOURCE / WATERMARK_FILE


def read_watermark(zone: LandingZone) -> Watermark | None:
    path = watermark_path(zone)
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        raw = str(document["last_modified_date"])
        return Watermark(parse_salesforce_datetime(raw), raw, frozenset(document.get("ids_at_last_modified_date", [])))
    except (ValueError, KeyError, TypeError, SourceError) as error:
        raise SourceError(f"salesforce: the watermark {path} is unreadable ({error}); fix or delete it "
                          "(deleting it re-pulls every Contact; landing skips batches already landed)") from None


def write_watermark(zone: LandingZone, mark: Watermark, instance_url: str) -> None:
    """Written to a temporary name, fsynced and renamed, like a batch: a reader sees the old or the new mark."""
    path = watermark_path(zone)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(mark.to_json(instance_url))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _error_text(error: SalesforceError) -> tuple[str, str]:
    """(errorCode, message) of a Salesforce REST error answer (`[{"errorCode", "message"}]`)."""
    content = error.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode") or error.status), str(content[0].get("message") or "").strip()
    if isinstance(content, dict):
        return str(content.get("errorCode") or content.get("error") or error.status), str(
            content.get("message") or content.get("error_description") or "").strip()
    text = content.decode(errors="replace") if isinstance(content, bytes) else str(content or "")
    return str(error.status), text[:300]


def source_error(error: Exception, doing: str, instance_url: str) -> SourceError:
    """A Salesforce or network failure as one line for the user, with Salesforce's error code."""
    if isinstance(error, SalesforceError):
        code, message = _error_text(error)
        text = f"salesforce: {doing} failed: HTTP {error.status} {code}: {message}"
        if error.status == 401 or code == "INVALID_SESSION_ID":
            text += " (renew SALESFORCE_ACCESS_TOKEN, or check the SALESFORCE_USERNAME/PASSWORD/SECURITY_TOKEN login)"
        elif code == "REQUEST_LIMIT_EXCEEDED":
            text += " (the org's API limit: pull again later; the watermark keeps what was landed)"
        return SourceError(text)
    if isinstance(error, requests.RequestException):
        return SourceError(f"salesforce: {doing} failed: cannot reach {instance_url} ({type(error).__name__}: {error})")
    return SourceError(f"salesforce: {doing} failed: {error}")


@dataclass
class SalesforceContactsApi(Source):
    """Contacts modified after the watermark, as batches of saved-query-response bytes (see the module docstring).

    `check()` connects and describes Contact (the first request: a bad token fails here); `batches()` queries and
    keeps `mark`, the watermark after the batch it last yielded, for `pull_contacts` to store once that is landed.
    """

    name: ClassVar[str] = SOURCE

    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    since: datetime | None = None  # explicit: land what is newer than this (a backfill); else the stored mark
    stored: Watermark | None = None
    page_size: int = MAX_PAGE
    sf: Salesforce | None = field(default=None, init=False)
    fields: tuple[str, ...] = field(default=(), init=False)
    missing_fields: tuple[str, ...] = field(default=(), init=False)
    mark: Watermark | None = field(default=None, init=False)
    pulled: int = field(default=0, init=False)

    @property
    def instance_url(self) -> str:
        return (self.env.get("SALESFORCE_INSTANCE_URL") or "").strip() or (
            f"https://{self.sf.sf_instance}" if self.sf is not None else "(login)")

    def check(self) -> None:
        from reverse_etl.base import DestinationError
        from reverse_etl.destinations.salesforce import connect_from_env

        if not MIN_PAGE <= self.page_size <= MAX_PAGE:
            raise SourceError(f"salesforce: page_size {self.page_size} is outside {MIN_PAGE}..{MAX_PAGE} "
                              "(Salesforce's query batchSize bounds)")
        try:
            self.sf = connect_from_env(self.env)
        except DestinationError as error:  # DestinationNotConfigured included: its message names the variables
            raise SourceError(f"salesforce --from-api: {error}") from None
        try:
            described = self.sf.Contact.describe()
        except Exception as error:
            raise source_error(error, f"describe {OBJECT}", self.instance_url) from None
        available = {str(item.get("name")) for item in described.get("fields", [])}
        self.fields = tuple(name for name in CONTACT_FIELDS if name in available)
        self.missing_fields = tuple(name for name in CONTACT_FIELDS if name not in available)
        required_missing = [name for name in REQUIRED_FIELDS if name not in available]
        if required_missing:
            raise SourceError(f"salesforce: {OBJECT} has no field {', '.join(required_missing)} "
                              "(silver needs Id, LastName and LastModifiedDate)")

    def soql(self) -> str:
        where = ""
        lower = self.since if self.since is not None else self.stored.last_modified if self.stored else None
        if lower is not None:
            where = f" WHERE LastModifiedDate >= {soql_datetime(lower)}"
        return f"SELECT {', '.join(self.fields)} FROM {OBJECT}{where} ORDER BY LastModifiedDate, Id"

    def _is_new(self, record_id: str, modified: datetime) -> bool:
        if self.since is not None:
            return modified > _utc(self.since)
        if self.stored is None:
            return True
        return modified > self.stored.last_modified or (
            modified == self.stored.last_modified and record_id not in self.stored.ids)

    def _advance(self, record_id: str, modified: datetime, raw: str) -> None:
        mark = self.mark
        if mark is None or modified > mark.last_modified:
            self.mark = Watermark(modified, raw, frozenset({record_id}))
        elif modified == mark.last_modified:
            self.mark = Watermark(mark.last_modified, mark.last_modified_raw, mark.ids | {record_id})

    def batches(self) -> Iterator[RawBatch]:
        if self.sf is None:
            raise SourceError("salesforce: check() first (it connects)")
        self.mark = self.stored
        soql = self.soql()
        headers = {"Sforce-Query-Options": f"batchSize={self.page_size}"}
        page: list[dict[str, Any]] = []
        records = self.sf.query_all_iter(soql, headers=headers)
        while True:
            try:
                record = next(records, None)
            except Exception as error:
                raise source_error(error, f"query {OBJECT}", self.instance_url) from None
            if record is not None:
                record_id = str(record.get("Id") or "")
                raw = record.get("LastModifiedDate")
                if not record_id or not isinstance(raw, str):
                    raise SourceError(f"salesforce: a {OBJECT} came back without Id or LastModifiedDate: {record}")
                modified = parse_salesforce_datetime(raw)
                if not self._is_new(record_id, modified):
                    continue
                page.append(record)
                self.pulled += 1
            if page and (record is None or len(page) >= self.page_size):
                yield self._batch(page)
                page = []
            if record is None:
                return

    def _batch(self, page: list[dict[str, Any]]) -> RawBatch:
        # the bytes of a saved query response, as the generator and `cdp land` files have them
        data = orjson.dumps({"totalSize": len(page), "done": True, "records": page})
        for record in page:
            self._advance(record["Id"], parse_salesforce_datetime(record["LastModifiedDate"]),
                          record["LastModifiedDate"])
        first = parse_salesforce_datetime(page[0]["LastModifiedDate"])
        last = parse_salesforce_datetime(page[-1]["LastModifiedDate"])
        file_name = f"contacts-api-{first:%Y%m%dT%H%M%S}Z-{last:%Y%m%dT%H%M%S}Z.json"
        return RawBatch(content_batch_id(SOURCE, data), file_name, split_json(data))


def pull_contacts(
    zone: LandingZone,
    *,
    since: datetime | None,
    env: Mapping[str, str] = os.environ,
    page_size: int = MAX_PAGE,
    progress: Callable[[LandedBatch], None] | None = None,
) -> PullResult:
    """Land the Contacts modified since the stored watermark (or since `since`, when given) and advance the mark.

    `since` given: every Contact modified after it is pulled again (a backfill; batches already landed are
    skipped by content), and the stored watermark only moves forward. Raises SourceError (not configured, refused,
    unreachable, a Salesforce error code).
    """
    stored = read_watermark(zone)
    source = SalesforceContactsApi(env=env, since=since, stored=stored, page_size=page_size)

    def on_batch(batch: LandedBatch) -> None:
        # the generator is paused right after this batch: source.mark covers it and nothing later
        if source.mark is not None:
            write_watermark(zone, source.mark, source.instance_url)
        if progress is not None:
            progress(batch)

    batches = source.land(zone, on_batch)
    mark = source.mark
    return PullResult(
        count=sum(b.records for b in batches if not b.already_landed),
        pulled=source.pulled,
        batches=batches,
        watermark=mark.last_modified if mark is not None else None,
        since=_utc(since) if since is not None else stored.last_modified if stored else None,
        fields=source.fields,
        missing_fields=source.missing_fields,
    )


__all__ = ["CONTACT_FIELDS", "PullResult", "SalesforceContactsApi", "Watermark", "pull_contacts", "read_watermark"]
