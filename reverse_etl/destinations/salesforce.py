"""The Salesforce destination: Contacts (and Leads) upserted by the CDP's external id, with simple-salesforce.

Configuration (environment, ARCHITECTURE.md):
- `SALESFORCE_INSTANCE_URL` + `SALESFORCE_ACCESS_TOKEN` (an OAuth access token / session id), or
- `SALESFORCE_USERNAME`, `SALESFORCE_PASSWORD`, `SALESFORCE_SECURITY_TOKEN` and `SALESFORCE_DOMAIN` (default
  `login`; `test` for a sandbox): a SOAP login. `SALESFORCE_INSTANCE_URL` is then optional.
- `SALESFORCE_INSTANCE_URL` may be `http://...` (the local emulator, a proxy): simple-salesforce always builds
  `https://<host>` URLs, so the session's adapter sends them to the http URL (the login host too).
- `SALESFORCE_DAILY_API_BUDGET` (optional): the most API calls per UTC day this destination may make, for an org
  whose allowance is smaller than the `daily_api_calls` of syncs.yml (the lower of the two applies). With neither
  set, 10,000 calls a day (DEFAULT_DAILY_API_BUDGET).

Writes (every mode is an upsert by the sync's match key, an External ID field such as CDP_Profile_Id__c; insert
mode too, since an upsert of a key already there changes nothing):
- up to 2,000 records: sObject Collections, `PATCH composite/sobjects/<Object>/<ExternalId>` with 200 records per
  call and allOrNone=false, one result per record;
- more (sync option `api: bulk2`): one Bulk API 2.0 upsert job (create, upload CSV, close, poll, read the
  successful, failed and unprocessed results). `None` is written as `#N/A` (an empty cell leaves a field
  unchanged in Bulk API 2.0).
Values are formatted by the object's describe (one call per run, which is also `check()`), so a value the field
cannot take (text in a checkbox) refuses that record only, with Salesforce's INVALID_TYPE_ON_FIELD_IN_RECORD,
instead of failing a whole call with JSON_PARSER_ERROR.

Deletes (mirror mode; erasure): by the stored Id with `DELETE composite/sobjects?ids=...` (200 per call).

Errors: per record, Salesforce's own codes (UNABLE_TO_LOCK_ROW is retryable, reverse_etl/base.py); whole calls:
403 REQUEST_LIMIT_EXCEEDED, HTTP 5xx and lost connections -> RetryableError, the org's daily limit
(TotalRequests) -> BudgetExhausted, INVALID_SESSION_ID and other refusals -> DestinationError.

API budget: every HTTP request to the REST and Bulk APIs is counted (ApiBudget.spend) by the session's adapter
before it is sent, so a bulk job costs what it really calls (create, upload, close, each poll, three results).
Logins are not counted (Salesforce does not count them against the API request limit).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError

from orchestration.quality.gate_4 import DestinationField
from reverse_etl.base import (
    ApiBudget,
    BudgetExhausted,
    DestinationError,
    DestinationNotConfigured,
    Mode,
    Record,
    RecordResult,
    RetryableError,
)
from reverse_etl.config import CATALOGUES

if TYPE_CHECKING:
    from reverse_etl.config import SyncConfig

COLLECTION_SIZE = 200  # sObject Collections: records per call
BULK_THRESHOLD = 2_000  # a batch above this goes through a Bulk API 2.0 job (fewer calls)
BULK_MAX_BATCH = 10_000  # records per bulk job (sync option bulk_batch_size overrides)
BULK_CALLS = 7  # create, upload, close, one poll, three results: what a job needs before it is started
DEFAULT_DAILY_API_BUDGET = 10_000
TIMEOUT = (10.0, 120.0)  # connect, read: requests waits forever by default
STEP_ATTEMPTS = 6  # reads of a bulk job (poll, results) retried in place on transient errors: they change nothing
APIS = ("composite", "bulk2")

OBJECT_FIELDS: dict[str, dict[str, DestinationField]] = {
    "Contact": CATALOGUES["salesforce"]["Contact"],
    "Lead": CATALOGUES["salesforce"]["Lead"],
}

TOKEN_VARIABLES = ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN")
LOGIN_VARIABLES = ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN")
_LOGIN_PATHS = ("/services/Soap/", "/services/oauth2/")

# ----------------------------------------------------------------------------------------------------------------
# Connection


class _SalesforceAdapter(HTTPAdapter):
    """Counts each API request before it is sent and, for an http:// instance, sends the https://<host> URLs that
    simple-salesforce builds to that URL. No retries of its own (max_retries=0): a dropped connection must surface,
    since the request may have been applied; the runner decides what to resend."""

    def __init__(self, rewrites: Mapping[str, str], before_request: Callable[[], None] | None) -> None:
        super().__init__(max_retries=0)
        self.rewrites = {prefix.rstrip("/"): base.rstrip("/") for prefix, base in rewrites.items()}
        self.before_request = before_request

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = request.url or ""
        parts = urlsplit(url)
        if self.before_request is not None and not parts.path.startswith(_LOGIN_PATHS):
            self.before_request()
        base = self.rewrites.get(f"{parts.scheme}://{parts.netloc}")
        if base is not None:
            request.url = base + url[len(parts.scheme) + 3 + len(parts.netloc):]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = TIMEOUT
        return super().send(request, **kwargs)


def _settings(env: Mapping[str, str]) -> dict[str, str]:
    """The SALESFORCE_* settings, checked; DestinationNotConfigured names what to set."""
    values = {name: (env.get(name) or "").strip() for name in (*TOKEN_VARIABLES, *LOGIN_VARIABLES,
                                                                 "SALESFORCE_DOMAIN")}
    url = values["SALESFORCE_INSTANCE_URL"]
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DestinationError(f"SALESFORCE_INSTANCE_URL={url!r} is not a URL: use https://<your domain>."
                                   "my.salesforce.com (or http://host:port for a local emulator)")
    if values["SALESFORCE_ACCESS_TOKEN"]:
        if not url:
            raise DestinationNotConfigured("salesforce is not configured: SALESFORCE_ACCESS_TOKEN is set but "
                                           "SALESFORCE_INSTANCE_URL is not (the org's https://...my.salesforce.com)")
        return values
    given = [name for name in LOGIN_VARIABLES if values[name]]
    if given and len(given) < len(LOGIN_VARIABLES):
        missing = [name for name in LOGIN_VARIABLES if not values[name]]
        raise DestinationNotConfigured(f"salesforce is not configured: {', '.join(given)} set but "
                                       f"{', '.join(missing)} missing (a username login needs all three)")
    if not given:
        raise DestinationNotConfigured(
            "salesforce is not configured: set SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN, or "
            "SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN (and SALESFORCE_DOMAIN, "
            "default login)")
    return values


def connect_from_env(env: Mapping[str, str] = os.environ, *,
                     before_request: Callable[[], None] | None = None) -> Salesforce:
    """A simple-salesforce client from the SALESFORCE_* variables (see the module docstring).

    Token mode makes no request; the username flow logs in (SOAP) now. `before_request` is called before every
    REST/Bulk request (not logins), e.g. to spend an API budget; what it raises stops the request.
    Raises DestinationNotConfigured (variables missing) or DestinationError (bad URL, login refused, unreachable).
    """
    values = _settings(env)
    url = values["SALESFORCE_INSTANCE_URL"].rstrip("/")
    domain = values["SALESFORCE_DOMAIN"] or "login"
    rewrites: dict[str, str] = {}
    if url.startswith("http://"):
        host = urlsplit(url).netloc
        rewrites[f"https://{host}"] = url
        # the SOAP login goes to https://{domain}.salesforce.com; its answer names the instance (the emulator)
        rewrites[f"https://{domain}.salesforce.com"] = url
    session = requests.Session()
    session.mount("https://", _SalesforceAdapter(rewrites, before_request))
    session.mount("http://", _SalesforceAdapter({}, before_request))
    if values["SALESFORCE_ACCESS_TOKEN"]:
        return Salesforce(instance_url=url, session_id=values["SALESFORCE_ACCESS_TOKEN"], session=session)
    try:
        return Salesforce(username=values["SALESFORCE_USERNAME"], password=values["SALESFORCE_PASSWORD"],
                          security_token=values["SALESFORCE_SECURITY_TOKEN"], domain=domain, session=session)
    except SalesforceAuthenticationFailed as error:
        raise DestinationError(f"Salesforce login refused ({error.code}: {error.auth_message}): check "
                               "SALESFORCE_USERNAME, SALESFORCE_PASSWORD, SALESFORCE_SECURITY_TOKEN and "
                               f"SALESFORCE_DOMAIN (now {domain!r})") from None
    except requests.RequestException as error:
        raise DestinationError(f"Salesforce login at https://{domain}.salesforce.com failed: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# Errors


def _error_body(error: SalesforceError) -> tuple[str, str]:
    """(errorCode, message) of a REST error answer."""
    content = error.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode") or error.status), str(content[0].get("message") or "")
    if isinstance(content, dict):
        return str(content.get("errorCode") or content.get("error") or error.status), str(
            content.get("message") or content.get("error_description") or "")
    text = content.decode(errors="replace") if isinstance(content, bytes) else str(content or "")
    return str(error.status), text[:500]


def _translate(error: Exception, doing: str) -> Exception:
    """A whole-call failure as the runner's exception (see the module docstring)."""
    if isinstance(error, BudgetExhausted | DestinationError | RetryableError):
        return error
    if isinstance(error, requests.RequestException):  # reset, refused, dropped after commit, timeout
        return RetryableError(f"Salesforce {doing}: connection lost ({type(error).__name__}: {error})")
    if isinstance(error, SalesforceError):
        code, message = _error_body(error)
        status = int(error.status or 0)
        text = f"Salesforce {doing}: HTTP {status} {code}: {message}"
        if status == 401 or code == "INVALID_SESSION_ID":
            return DestinationError(f"{text} (renew SALESFORCE_ACCESS_TOKEN, or check the login variables)")
        if code == "REQUEST_LIMIT_EXCEEDED" and "TotalRequests" in message:
            return BudgetExhausted(f"{text}: the org's daily API limit is spent; the rest is sent tomorrow")
        if code in ("REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW") or status == 429 \
                or status >= 500:
            return RetryableError(text)
        return DestinationError(text)
    return error


def _record_error(errors: Any) -> tuple[str, str]:
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN_EXCEPTION")
    message = str(first.get("message") or "")
    fields = first.get("fields") or []
    return code, f"{message} ({', '.join(fields)})" if fields else message


# Per record: a lock or a transient server error deserves another try within the run.
_TRANSIENT_RECORD_CODES = {"UNABLE_TO_LOCK_ROW", "UNKNOWN_EXCEPTION", "REQUEST_RUNNING_TOO_LONG", "SERVER_UNAVAILABLE"}


def _failed(key: str, code: str, message: str, *, retryable: bool | None = None) -> RecordResult:
    transient = code in _TRANSIENT_RECORD_CODES if retryable is None else retryable
    return RecordResult(key, False, error_code=code, message=message, retryable=transient)


# ----------------------------------------------------------------------------------------------------------------
# Values


class _ValueError(Exception):
    pass


def _number_text(value: float | Decimal) -> str:
    return format(Decimal(repr(value)) if isinstance(value, float) else value, "f")


def _format(value: Any, sf_type: str) -> Any:
    """A DuckDB value as the JSON value Salesforce takes for a field of describe type `sf_type` (None: null)."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if sf_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _ValueError(value)
    if sf_type in ("double", "currency", "percent", "int", "long"):
        if isinstance(value, bool):
            raise _ValueError(value)
        try:
            number = Decimal(value) if isinstance(value, str | int | Decimal) else Decimal(repr(float(value)))
        except (InvalidOperation, ValueError, TypeError):
            raise _ValueError(value) from None
        if not number.is_finite():
            raise _ValueError(value)
        return int(number) if sf_type in ("int", "long") and number == number.to_integral_value() else float(number)
    if sf_type == "datetime":
        if isinstance(value, datetime):
            moment = value.astimezone(UTC) if value.tzinfo else value  # naive values are UTC (base.py)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        if isinstance(value, date):
            return value.isoformat() + "T00:00:00.000Z"
        if isinstance(value, str):
            return value
        raise _ValueError(value)
    if sf_type == "date":
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date | str):
            return value if isinstance(value, str) else value.isoformat()
        raise _ValueError(value)
    # text types: string, textarea, email, phone, url, picklist, multipicklist, reference, id
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _format(value, "datetime")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float | Decimal):
        text = _number_text(value)
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def _csv_cell(value: Any) -> str:
    """A formatted value as a Bulk API 2.0 CSV cell: `#N/A` sets null (an empty cell would leave the field as is)."""
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_text(value)
    return str(value)


# ----------------------------------------------------------------------------------------------------------------
# The destination


class SalesforceDestination:
    """reverse_etl/base.py's Destination for Salesforce (see the module docstring)."""

    name = "salesforce"

    def __init__(self, sync: SyncConfig, budget: ApiBudget | None = None, *,
                 env: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sync = sync
        self.budget = budget
        self.env = os.environ if env is None else env
        self.sleep = sleep
        _settings(self.env)  # missing configuration: fail now, naming the variables
        options = sync.options or {}
        self.api = str(options.get("api", "composite"))
        if self.api not in APIS:
            raise DestinationError(f"sync {sync.name}: options.api {self.api!r} is not one of {', '.join(APIS)}")
        self.bulk_batch = int(options.get("bulk_batch_size", BULK_MAX_BATCH))
        self.bulk_poll = float(options.get("bulk_poll_seconds", 0.5))
        self.bulk_timeout = float(options.get("bulk_timeout_seconds", 3_600))
        self.own_limit = self._env_limit()
        self._sf: Salesforce | None = None
        self._describes: dict[str, dict[str, dict[str, Any]]] = {}

    # -- budget and connection ------------------------------------------------------------------------------

    def _env_limit(self) -> int | None:
        raw = (self.env.get("SALESFORCE_DAILY_API_BUDGET") or "").strip()
        if not raw:
            has_limit = self.budget is not None and self.budget.daily_limit is not None
            return None if has_limit else DEFAULT_DAILY_API_BUDGET
        if not raw.isdigit():
            raise DestinationError(f"SALESFORCE_DAILY_API_BUDGET={raw!r} is not a whole number of API calls a day")
        return int(raw)

    def remaining_calls(self) -> int | None:
        """API calls left today under the lower of the two limits (None: unlimited)."""
        limits = []
        if self.budget is not None and self.budget.daily_limit is not None:
            limits.append(self.budget.daily_limit)
        if self.own_limit is not None:
            limits.append(self.own_limit)
        if not limits:
            return None
        used = self.budget.used_today() if self.budget is not None else 0
        return max(0, min(limits) - used)

    def _spend(self) -> None:
        if self.own_limit is not None and self.budget is not None and self.budget.used_today() >= self.own_limit:
            raise BudgetExhausted(f"salesforce: daily API budget spent ({self.budget.used_today():,} of "
                                  f"{self.own_limit:,} calls today, SALESFORCE_DAILY_API_BUDGET); the remaining "
                                  "rows are sent by the next run after midnight UTC")
        if self.budget is not None:
            self.budget.spend()

    def connection(self) -> Salesforce:
        if self._sf is None:
            self._sf = connect_from_env(self.env, before_request=self._spend)
        return self._sf

    def _describe(self, object: str) -> dict[str, dict[str, Any]]:
        """The object's fields by name (describe), once per run."""
        if object not in self._describes:
            try:
                described = getattr(self.connection(), object).describe()
            except Exception as error:
                raise _translate(error, f"describe {object}") from error
            self._describes[object] = {f["name"]: f for f in described["fields"]}
        return self._describes[object]

    # -- the interface --------------------------------------------------------------------------------------

    def fields(self, object: str) -> dict[str, DestinationField]:
        if object not in OBJECT_FIELDS:
            raise DestinationError(f"salesforce: object {object!r} is not supported; supported: "
                                   f"{', '.join(OBJECT_FIELDS)}")
        return OBJECT_FIELDS[object]

    def max_batch(self, object: str, mode: Mode) -> int:
        return self.bulk_batch if self.api == "bulk2" else COLLECTION_SIZE

    def check(self) -> None:
        """One authenticated call (the describe of the sync's object), and the mapping checked against it."""
        try:
            described = self._describe(self.sync.object)
        except BudgetExhausted:
            return  # not a configuration problem: the first write raises it again and the run stops cleanly
        except RetryableError as error:
            raise DestinationError(f"{error} (Salesforce unreachable or unavailable; the run is tried again by its "
                                   "schedule)") from error
        problems = []
        for field_name in self.sync.mapping:
            info = described.get(field_name)
            if info is None:
                problems.append(f"{self.sync.object} has no field {field_name} (create it in Setup, or fix the "
                                "mapping in reverse_etl/syncs.yml)")
            elif not (info.get("createable") and info.get("updateable")):
                problems.append(f"{self.sync.object}.{field_name} is read-only for this user")
        key = described.get(self.sync.match_key)
        if key is not None and not (key.get("externalId") or key.get("name") == "Id"):
            problems.append(f"{self.sync.object}.{self.sync.match_key} is not an External ID field (an upsert needs "
                            "one: tick 'External ID' on the field)")
        if problems:
            raise DestinationError("; ".join(problems))

    def write(self, object: str, records: list[Record], mode: Mode) -> list[RecordResult]:
        """Upsert by the match key (every mode; see the module docstring)."""
        described = self._describe(object)
        external_id = self.sync.match_key
        results: list[RecordResult] = []
        rows: list[tuple[Record, dict[str, Any]]] = []
        for record in records:
            row, problem = self._row(object, record, described)
            if problem is not None:
                results.append(problem)
            elif row.get(external_id) in (None, ""):
                results.append(_failed(record.key, "MISSING_ARGUMENT", f"{external_id} not specified"))
            else:
                rows.append((record, row))
        if len(rows) > BULK_THRESHOLD:
            return results + self._bulk_upsert(object, external_id, rows)
        return results + self._collections(
            rows, lambda chunk: self.connection().restful(
                f"composite/sobjects/{object}/{external_id}", method="PATCH",
                json={"allOrNone": False, "records": [{"attributes": {"type": object}, **row} for _, row in chunk]}),
            f"upsert {object} by {external_id}")

    def delete(self, object: str, records: list[Record]) -> list[RecordResult]:
        """Delete by the stored Id (looked up by the match key when none is stored); gone already is a success."""
        ids = {record.key: record.destination_id for record in records if record.destination_id}
        missing = [record for record in records if not record.destination_id]
        if missing:
            found = self._ids_by_key(object, [str(r.fields.get(self.sync.match_key, r.key)) for r in missing])
            ids.update({r.key: found[r.key] for r in missing if r.key in found})
        results = [RecordResult(r.key, True) for r in missing if r.key not in ids]  # never created: nothing to do
        pairs = [(record, {"Id": ids[record.key]}) for record in records if record.key in ids]
        deleted = self._collections(
            pairs, lambda chunk: self.connection().restful(
                "composite/sobjects", method="DELETE",
                params={"ids": ",".join(row["Id"] for _, row in chunk), "allOrNone": "false"}),
            f"delete {object}", gone_is_success=True)
        return results + deleted

    def close(self) -> None:
        if self._sf is not None:
            self._sf.session.close()
            self._sf = None

    # -- helpers --------------------------------------------------------------------------------------------

    def _row(self, object: str, record: Record, described: dict[str, dict[str, Any]]
             ) -> tuple[dict[str, Any], RecordResult | None]:
        row: dict[str, Any] = {}
        for field_name, value in record.fields.items():
            info = described.get(field_name)
            if info is None:
                raise DestinationError(f"{object} has no field {field_name} (create it in Setup, or fix the mapping)")
            try:
                row[field_name] = _format(value, str(info.get("type") or "string"))
            except _ValueError:
                return row, _failed(record.key, "INVALID_TYPE_ON_FIELD_IN_RECORD",
                                    f"{info.get('label') or field_name}: value not of required type: {value} "
                                    f"({field_name} is a {info.get('type')} field)", retryable=False)
        return row, None

    def _collections(self, rows: list[tuple[Record, dict[str, Any]]], call: Callable[[list[Any]], Any],
                     doing: str, *, gone_is_success: bool = False) -> list[RecordResult]:
        """Send `rows` 200 per call. A call failing transiently stops the batch: if nothing was applied yet the
        error is raised (the runner backs off and resends the batch), else the rest is reported retryable per
        record (the runner resends only those)."""
        results: list[RecordResult] = []
        for start in range(0, len(rows), COLLECTION_SIZE):
            chunk = rows[start:start + COLLECTION_SIZE]
            try:
                answer = call(chunk) or []
            except Exception as error:
                translated = _translate(error, doing)
                if start == 0 or not isinstance(translated, RetryableError | BudgetExhausted):
                    raise translated from error
                code = "API_BUDGET_EXHAUSTED" if isinstance(translated, BudgetExhausted) else "CALL_FAILED"
                return results + [_failed(record.key, code, str(translated), retryable=True)
                                  for record, _ in rows[start:]]
            if len(answer) != len(chunk):
                raise DestinationError(f"Salesforce {doing}: {len(answer)} results for {len(chunk)} records")
            for (record, _), item in zip(chunk, answer, strict=True):
                if item.get("success"):
                    results.append(RecordResult(record.key, True, destination_id=item.get("id")))
                    continue
                code, message = _record_error(item.get("errors"))
                if gone_is_success and code in ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"):
                    results.append(RecordResult(record.key, True))
                else:
                    results.append(_failed(record.key, code, message))
        return results

    def _ids_by_key(self, object: str, keys: list[str]) -> dict[str, str]:
        """{match key value: Id} of the records that have one of `keys`."""
        found: dict[str, str] = {}
        field_name = self.sync.match_key
        for start in range(0, len(keys), 200):
            values = ", ".join(_soql_literal(k) for k in keys[start:start + 200])
            for row in _query_all(self.connection(), f"SELECT Id, {field_name} FROM {object} "
                                                     f"WHERE {field_name} IN ({values})"):
                found[str(row[field_name])] = row["Id"]
        return found

    # -- Bulk API 2.0 -----------------------------------------------------------------------------------------

    def _bulk_upsert(self, object: str, external_id: str, rows: list[tuple[Record, dict[str, Any]]]
                     ) -> list[RecordResult]:
        """One upsert job for the batch, step by step with the SDK's Bulk 2.0 client, so that a lost answer to a
        step that changes nothing (a poll, a result download) is asked again instead of abandoning the job, and a
        lost answer to the close is reconciled by reading the job's state."""
        remaining = self.remaining_calls()
        if remaining is not None and remaining < BULK_CALLS:
            raise BudgetExhausted(f"salesforce: {remaining} API calls left today, a Bulk API job needs at least "
                                  f"{BULK_CALLS}; the remaining rows are sent by the next run after midnight UTC")
        columns = list(dict.fromkeys(name for _, row in rows for name in row))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_cell(row.get(c)) for c in columns] for _, row in rows)
        client = getattr(self.connection().bulk2, object)._client
        try:
            job = client.create_job("upsert", external_id_field=external_id)
        except Exception as error:
            raise _translate(error, f"bulk upsert {object}: create job") from error
        job_id = job["id"]
        try:
            client.upload_job_data(job_id, buffer.getvalue())
        except Exception as error:
            with contextlib.suppress(Exception):  # an Open job processes nothing; aborting only tidies up
                client.abort_job(job_id, False)
            raise _translate(error, f"bulk upsert {object}: upload to job {job_id}") from error
        self._close_job(client, job_id, object)
        state = self._wait(client, job_id, object)
        if state["state"] != "JobComplete":
            message = state.get("errorMessage") or state["state"]
            if "InvalidBatch" in str(message) or "ClientInputError" in str(message):
                raise DestinationError(f"Salesforce bulk upsert {object}: job {job_id} failed: {message}")
            raise RetryableError(f"Salesforce bulk upsert {object}: job {job_id} {state['state']}: {message}")
        by_key = {str(row[external_id]): record for record, row in rows}
        results: dict[str, RecordResult] = {}
        for kind in ("successfulResults", "failedResults", "unprocessedrecords"):
            text = self._read(lambda kind=kind: client.get_ingest_results(job_id, kind), f"{kind} of job {job_id}")
            for line in csv.DictReader(io.StringIO(text)):
                record = by_key.get(line.get(external_id) or "")
                if record is None:
                    continue
                if kind == "successfulResults":
                    results[record.key] = RecordResult(record.key, True, destination_id=line.get("sf__Id") or None)
                elif kind == "failedResults":
                    code, _, message = (line.get("sf__Error") or "UNKNOWN_EXCEPTION:").partition(":")
                    results[record.key] = _failed(record.key, code, message.removesuffix(":--").strip())
                else:
                    results[record.key] = _failed(record.key, "NOT_PROCESSED", f"job {job_id} left it unprocessed",
                                                  retryable=True)
        return [results.get(record.key) or _failed(record.key, "NOT_PROCESSED", f"no result in job {job_id}",
                                                   retryable=True) for record, _ in rows]

    def _read(self, step: Callable[[], Any], what: str) -> Any:
        """A read-only step, asked again on transient failures (it changes nothing)."""
        for attempt in range(STEP_ATTEMPTS):
            try:
                return step()
            except Exception as error:
                translated = _translate(error, f"bulk read {what}")
                if not isinstance(translated, RetryableError) or attempt + 1 == STEP_ATTEMPTS:
                    raise translated from error
                self.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _close_job(self, client: Any, job_id: str, object: str) -> None:
        for attempt in range(STEP_ATTEMPTS):
            try:
                client.close_job(job_id)
                return
            except Exception as error:
                translated = _translate(error, f"bulk upsert {object}: close job {job_id}")
                if not isinstance(translated, RetryableError) or attempt + 1 == STEP_ATTEMPTS:
                    with contextlib.suppress(Exception):
                        client.abort_job(job_id, False)
                    raise translated from error
                # the close may have been applied before the answer was lost: the job's state says
                state = self._read(lambda: client.get_job(job_id, False), f"job {job_id}")["state"]
                if state != "Open":
                    return
                self.sleep(min(2.0, 0.1 * 2**attempt))

    def _wait(self, client: Any, job_id: str, object: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.bulk_timeout
        delay = self.bulk_poll
        while True:
            self.sleep(delay)
            job = self._read(lambda: client.get_job(job_id, False), f"job {job_id}")
            if job["state"] in ("JobComplete", "Failed", "Aborted"):
                return job
            if time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    client.abort_job(job_id, False)
                raise RetryableError(f"Salesforce bulk upsert {object}: job {job_id} still {job['state']} after "
                                     f"{self.bulk_timeout:.0f} s; aborted")
            delay = min(5.0, delay * 1.5)


# ----------------------------------------------------------------------------------------------------------------
# Erasure (right to be forgotten)


def _soql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _query_all(sf: Salesforce, soql: str) -> list[dict[str, Any]]:
    try:
        return list(sf.query_all(soql)["records"])
    except Exception as error:
        raise _translate(error, "query") from error


def _chunks(values: Iterable[str], size: int) -> Iterable[list[str]]:
    items = sorted({v for v in values if v})
    for start in range(0, len(items), size):
        yield items[start:start + size]


def subject_record_ids(sf: Salesforce, emails: Iterable[str], profile_ids: Iterable[str], *,
                       objects: Iterable[str] = ("Contact",)) -> dict[str, list[str]]:
    """{object: Ids} of the records whose CDP_Profile_Id__c or Email is one of the subject's (the sweep)."""
    found: dict[str, list[str]] = {}
    for object in objects:
        ids: set[str] = set()
        for field_name, values in (("CDP_Profile_Id__c", profile_ids), ("Email", emails)):
            for chunk in _chunks(values, 100):
                literals = ", ".join(_soql_literal(v) for v in chunk)
                ids |= {row["Id"] for row in _query_all(sf, f"SELECT Id FROM {object} WHERE {field_name} "
                                                            f"IN ({literals})")}
        found[object] = sorted(ids)
    return found


def erase_subject(sf: Salesforce, emails: Iterable[str], profile_ids: Iterable[str], *,
                  objects: Iterable[str] = ("Contact",)) -> int:
    """Delete the Contacts (by default) of a subject: those with one of `profile_ids` as CDP_Profile_Id__c or one
    of `emails` as Email. Returns how many were deleted; deleting what is already gone counts 0. Raises
    RetryableError / DestinationError as the destination does (the erasure job reports and retries)."""
    emails, profile_ids = list(emails), list(profile_ids)
    deleted = 0
    for object, ids in subject_record_ids(sf, emails, profile_ids, objects=objects).items():
        for chunk in _chunks(ids, COLLECTION_SIZE):
            try:
                answer = sf.restful("composite/sobjects", method="DELETE",
                                    params={"ids": ",".join(chunk), "allOrNone": "false"}) or []
            except Exception as error:
                raise _translate(error, f"erase {object}") from error
            for item in answer:
                if item.get("success"):
                    deleted += 1
                    continue
                code, message = _record_error(item.get("errors"))
                if code not in ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"):
                    raise (RetryableError if code in _TRANSIENT_RECORD_CODES else DestinationError)(
                        f"Salesforce erase {object} {item.get('id')}: {code}: {message}")
    return deleted


__all__ = ["SalesforceDestination", "connect_from_env", "erase_subject", "subject_record_ids"]
