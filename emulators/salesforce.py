"""A local Salesforce that simple-salesforce 1.12 drives unchanged, for the demo and the tests.

Emulated (wire formats as Salesforce documents them; any ``vNN.N`` API version in paths):
- Auth: SOAP ``login`` (``POST /services/Soap/u/<version>``, loginResponse or the INVALID_LOGIN fault) and OAuth 2.0
  ``POST /services/oauth2/token`` (``password`` and ``client_credentials`` grants). A fixed access token (constructor
  ``access_token``) is always accepted as ``Authorization: Bearer``.
- Objects ``Contact`` and ``Lead`` with a realistic field catalogue (standard, system and the CDP custom fields),
  18-character case-safe ids, field validation with Salesforce's error codes and messages.
- REST: versions list, resources, ``limits``, ``sobjects`` (describeGlobal, metadata, describe, create, get, update,
  delete, get/upsert/delete by external id), ``query`` / ``queryAll`` with ``nextRecordsUrl`` paging for a SOQL
  subset (``SELECT f, ... | COUNT() FROM Obj [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n]``; WHERE supports
  ``= != <> < <= > >= LIKE IN NOT IN``, ``AND OR NOT`` and parentheses, string/number/boolean/null/date/datetime
  literals).
- sObject Collections: create, update, upsert by external id, delete (200 records per call, ``allOrNone``).
- Bulk API 2.0: ingest jobs (insert, update, upsert, delete, hardDelete; CSV with any delimiter and LF/CRLF; results
  CSVs) processed in a background thread, and query jobs (``jobs/query``, CSV results paged with ``Sforce-Locator``).
- Faults (``Faults``): ``rate_429`` answers 403 REQUEST_LIMIT_EXCEEDED, since Salesforce signals rate and
  concurrency limits with that error rather than with HTTP 429; ``rate_5xx`` (503 SERVER_UNAVAILABLE or 500
  UNKNOWN_EXCEPTION), ``latency_ms``, ``drop_after_commit`` (mutating calls only: the write is applied and the
  connection closed without an answer), ``rate_lock`` (UNABLE_TO_LOCK_ROW per record in collections and bulk, per
  request on single-record writes), ``rate_record_error`` (UNKNOWN_EXCEPTION the same way) and ``daily_api_limit``
  (403 REQUEST_LIMIT_EXCEEDED beyond it; every REST answer carries ``Sforce-Limit-Info: api-usage=N/MAX``).

Not emulated (explicitly): other objects than Contact and Lead, relationship queries and fields (``Account.Name``),
aggregate functions other than ``COUNT()``, date literals such as ``TODAY`` or ``LAST_N_DAYS:n``, SOSL search,
the composite/batch/tree/graph resources, Bulk API 1.0, the Metadata and Tooling APIs, triggers, workflow, duplicate
rules, field history, sharing and permissions (every session is a system administrator), JWT bearer login, refresh
tokens and session expiry (sessions live until reset; ``expire_sessions()`` forces the SDK's re-login path),
picklist restriction (picklists are unrestricted, as Salesforce's default). A Bulk ingest job may receive several
uploads while Open (each with its own header row); the results of jobs survive a restart only when ``state_file``
is set, and jobs still running at a restart come back Failed.

Start it: ``python -m emulators.salesforce [--port 8701] [--state-file F] [--faults JSON] [--seed-contacts F]``,
or in Python ``with SalesforceEmulator() as sf: ...`` (``sf.url``). simple-salesforce always builds ``https://``
URLs: give it ``session=`` a ``requests.Session`` whose adapter rewrites ``https://<emulator host>`` to the
emulator's ``http://`` URL (and ``https://login.salesforce.com`` too, for the SOAP login flow).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import random
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape

# --------------------------------------------------------------------------------------------------------------------
# Ids

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15_RE = re.compile(r"^[0-9A-Za-z]{15}$")
_ID18_RE = re.compile(r"^[0-9A-Za-z]{18}$")


def case_safe_id(id15: str) -> str:
    """Append Salesforce's 3-character suffix: one bit per uppercase letter in each 5-character chunk."""
    suffix = ""
    for chunk_start in (0, 5, 10):
        chunk = id15[chunk_start : chunk_start + 5]
        flags = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _SUFFIX_CHARS[flags]
    return id15 + suffix


def normalize_id(value: str) -> str | None:
    """The 18-character id for a 15- or 18-character id (the suffix restores case, as Salesforce does), else None."""
    if _ID15_RE.match(value):
        return case_safe_id(value)
    if not _ID18_RE.match(value):
        return None
    restored = []
    for chunk_index, suffix_char in enumerate(value[15:].upper()):
        flags = _SUFFIX_CHARS.find(suffix_char)
        if flags < 0:
            return None
        chunk = value[chunk_index * 5 : chunk_index * 5 + 5]
        restored.append("".join(c.upper() if flags >> i & 1 else c.lower() for i, c in enumerate(chunk)))
    id15 = "".join(restored)
    return case_safe_id(id15)


def make_id(prefix: str, number: int) -> str:
    """An 18-character id: key prefix, pod '8d', a reserved '0', a 9-digit base-62 counter, the case-safe suffix."""
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return case_safe_id(f"{prefix}8d0{digits.rjust(9, '0')}")


ORG_ID = make_id("00D", 1)
USER_ID_PREFIX = "005"

# --------------------------------------------------------------------------------------------------------------------
# Field catalogue


@dataclass(frozen=True)
class SField:
    """One field of an sObject, with the describe attributes the emulator validates against."""

    name: str
    label: str
    type: str  # describe type: id, string, textarea, email, phone, picklist, reference, boolean, double, date, datetime
    length: int = 0
    precision: int = 0
    scale: int = 0
    required: bool = False
    external_id: bool = False
    unique: bool = False
    createable: bool = True
    updateable: bool = True
    custom: bool = False
    reference_to: tuple[str, ...] = ()
    picklist: tuple[str, ...] = ()
    default: Any = None

    @property
    def soap_type(self) -> str:
        return {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "double": "xsd:double",
            "date": "xsd:date",
            "datetime": "xsd:dateTime",
        }.get(self.type, "xsd:string")

    @property
    def is_text(self) -> bool:
        return self.type in ("string", "textarea", "email", "phone", "picklist", "url")

    def describe(self) -> dict[str, Any]:
        text = self.is_text or self.type in ("id", "reference")
        nillable = not self.required and self.type != "boolean" and self.name != "Id"
        return {
            "aggregatable": self.type not in ("textarea",),
            "autoNumber": False,
            "byteLength": self.length * 3 if text else 0,
            "calculated": self.name == "Name",
            "caseSensitive": self.external_id,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default if self.type == "boolean" else None,
            "defaultValueFormula": None,
            "defaultedOnCreate": self.type == "boolean" or self.default is not None or not self.createable,
            "digits": 0,
            "externalId": self.external_id,
            "extraTypeInfo": "plaintextarea" if self.type == "textarea" else None,
            "filterable": self.type != "textarea" or self.length <= 255,
            "groupable": self.type not in ("textarea", "double", "datetime"),
            "htmlFormatted": False,
            "idLookup": self.name in ("Id", "Email") or self.external_id,
            "inlineHelpText": None,
            "label": self.label,
            "length": self.length if text else 0,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": nillable,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist
            ],
            "precision": self.precision,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" and self.name.endswith("Id") else None,
            "restrictedPicklist": False,
            "scale": self.scale,
            "soapType": self.soap_type,
            "sortable": self.type != "textarea" or self.length <= 255,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }


def _system_fields() -> list[SField]:
    return [
        SField("OwnerId", "Owner ID", "reference", 18, reference_to=("User",)),
        SField("CreatedDate", "Created Date", "datetime", createable=False, updateable=False),
        SField(
            "CreatedById", "Created By ID", "reference", 18, createable=False, updateable=False, reference_to=("User",)
        ),
        SField("LastModifiedDate", "Last Modified Date", "datetime", createable=False, updateable=False),
        SField(
            "LastModifiedById",
            "Last Modified By ID",
            "reference",
            18,
            createable=False,
            updateable=False,
            reference_to=("User",),
        ),
        SField("SystemModstamp", "System Modstamp", "datetime", createable=False, updateable=False),
    ]


def _cdp_fields() -> list[SField]:
    return [
        SField("CDP_Profile_Id__c", "CDP Profile Id", "string", 32, external_id=True, unique=True, custom=True),
        SField("CDP_Lifecycle_Stage__c", "CDP Lifecycle Stage", "string", 255, custom=True),
        SField("CDP_Engagement_Score__c", "CDP Engagement Score", "double", precision=18, scale=2, custom=True),
        SField("CDP_Segments__c", "CDP Segments", "textarea", 4099, custom=True),
        SField("CDP_Last_Seen_At__c", "CDP Last Seen At", "datetime", custom=True),
        SField("CDP_Email_Consent__c", "CDP Email Consent", "string", 20, custom=True),
        SField("CDP_WhatsApp_Consent__c", "CDP WhatsApp Consent", "string", 20, custom=True),
        SField("CDP_SMS_Consent__c", "CDP SMS Consent", "string", 20, custom=True),
    ]


_SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.", "Mx.")
_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
_LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted")


def _head_fields() -> list[SField]:
    return [
        SField("Id", "Contact ID", "id", 18, createable=False, updateable=False),
        SField("IsDeleted", "Deleted", "boolean", createable=False, updateable=False, default=False),
    ]


CONTACT_FIELDS: list[SField] = [
    *_head_fields(),
    SField("AccountId", "Account ID", "reference", 18, reference_to=("Account",)),
    SField("LastName", "Last Name", "string", 80, required=True),
    SField("FirstName", "First Name", "string", 40),
    SField("Salutation", "Salutation", "picklist", 40, picklist=_SALUTATIONS),
    SField("Name", "Full Name", "string", 121, createable=False, updateable=False),
    SField("MailingStreet", "Mailing Street", "textarea", 255),
    SField("MailingCity", "Mailing City", "string", 40),
    SField("MailingState", "Mailing State/Province", "string", 80),
    SField("MailingPostalCode", "Mailing Zip/Postal Code", "string", 20),
    SField("MailingCountry", "Mailing Country", "string", 80),
    SField("Phone", "Business Phone", "phone", 40),
    SField("MobilePhone", "Mobile Phone", "phone", 40),
    SField("HomePhone", "Home Phone", "phone", 40),
    SField("Email", "Email", "email", 80),
    SField("Title", "Title", "string", 128),
    SField("Department", "Department", "string", 80),
    SField("LeadSource", "Lead Source", "picklist", 255, picklist=_LEAD_SOURCES),
    SField("Birthdate", "Birthdate", "date"),
    SField("Description", "Contact Description", "textarea", 32000),
    SField("HasOptedOutOfEmail", "Email Opt Out", "boolean", default=False),
    SField("DoNotCall", "Do Not Call", "boolean", default=False),
    *_system_fields(),
    *_cdp_fields(),
]

LEAD_FIELDS: list[SField] = [
    SField("Id", "Lead ID", "id", 18, createable=False, updateable=False),
    SField("IsDeleted", "Deleted", "boolean", createable=False, updateable=False, default=False),
    SField("LastName", "Last Name", "string", 80, required=True),
    SField("FirstName", "First Name", "string", 40),
    SField("Salutation", "Salutation", "picklist", 40, picklist=_SALUTATIONS),
    SField("Name", "Full Name", "string", 121, createable=False, updateable=False),
    SField("Title", "Title", "string", 128),
    SField("Company", "Company", "string", 255, required=True),
    SField("Street", "Street", "textarea", 255),
    SField("City", "City", "string", 40),
    SField("State", "State/Province", "string", 80),
    SField("PostalCode", "Zip/Postal Code", "string", 20),
    SField("Country", "Country", "string", 80),
    SField("Phone", "Phone", "phone", 40),
    SField("MobilePhone", "Mobile Phone", "phone", 40),
    SField("Email", "Email", "email", 80),
    SField("Description", "Description", "textarea", 32000),
    SField("LeadSource", "Lead Source", "picklist", 255, picklist=_LEAD_SOURCES),
    SField("Status", "Status", "picklist", 255, required=True, picklist=_LEAD_STATUSES, default="Open - Not Contacted"),
    SField("HasOptedOutOfEmail", "Email Opt Out", "boolean", default=False),
    SField("DoNotCall", "Do Not Call", "boolean", default=False),
    SField("IsConverted", "Converted", "boolean", updateable=False, default=False),
    *_system_fields(),
    *_cdp_fields(),
]


@dataclass
class SObjectType:
    name: str
    label_plural: str
    key_prefix: str
    fields: tuple[SField, ...]
    by_name: dict[str, SField] = field(init=False, repr=False)
    by_lower: dict[str, SField] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}
        self.by_lower = {f.name.lower(): f for f in self.fields}

    def field(self, name: str) -> SField | None:
        return self.by_lower.get(name.lower())

    @property
    def external_ids(self) -> list[str]:
        return [f.name for f in self.fields if f.external_id]

    def blank(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields}


OBJECTS: dict[str, SObjectType] = {
    "Contact": SObjectType("Contact", "Contacts", "003", tuple(CONTACT_FIELDS)),
    "Lead": SObjectType("Lead", "Leads", "00Q", tuple(LEAD_FIELDS)),
}
_OBJECTS_LOWER = {name.lower(): t for name, t in OBJECTS.items()}


def _object_type(name: str) -> SObjectType | None:
    return _OBJECTS_LOWER.get(name.lower())


# --------------------------------------------------------------------------------------------------------------------
# Errors


class RecordError(Exception):
    """A per-record DML error (statusCode, message, fields), as collections, bulk results and REST report it."""

    def __init__(self, code: str, message: str, fields: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = list(fields)

    def collection_error(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def rest_error(self) -> dict[str, Any]:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def bulk_error(self) -> str:
        # Salesforce's shape: "CODE:message:Field1,Field2 --", or "CODE:message:--" without fields.
        return (
            f"{self.code}:{self.message}:{','.join(self.fields)} --"
            if self.fields
            else f"{self.code}:{self.message}:--"
        )


class ApiError(Exception):
    """A whole-request REST error: HTTP status plus Salesforce's ``[{"message", "errorCode"}]`` body."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return [error]


_NOT_FOUND = ("NOT_FOUND", "The requested resource does not exist")
_LOCK_MESSAGE = "unable to obtain exclusive access to this record or 1 records"
_UNKNOWN_MESSAGE = "An unexpected error occurred. Please include this ErrorId if you contact support: {}"
_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


def _lock_error() -> RecordError:
    return RecordError("UNABLE_TO_LOCK_ROW", _LOCK_MESSAGE)


def _transient_error(rng: random.Random) -> RecordError:
    error_id = f"{rng.randrange(10**9, 10**10)}-{rng.randrange(10**5, 10**6)} ({-rng.randrange(10**9, 2**31)})"
    return RecordError("UNKNOWN_EXCEPTION", _UNKNOWN_MESSAGE.format(error_id))


# --------------------------------------------------------------------------------------------------------------------
# Values: JSON (REST) and CSV (Bulk) conversion, then the checks Salesforce applies on save

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CSV_TRUE = {"true", "1", "yes"}
_CSV_FALSE = {"false", "0", "no"}


def format_datetime(moment: datetime) -> str:
    """Salesforce's REST datetime format: ``2026-01-01T00:00:00.000+0000`` (UTC, milliseconds)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> str | None:
    """Normalize an ISO 8601 datetime (or date) to the stored format; None when it is not one."""
    candidate = text.strip()
    if len(candidate) < 10 or not candidate[:4].isdigit():
        return None
    if candidate.endswith("z"):
        candidate = candidate[:-1] + "Z"
    # Python 3.11 does not take '+0000' offsets: insert the colon.
    match = re.search(r"([+-]\d{2})(\d{2})$", candidate)
    if match and "T" in candidate:
        candidate = candidate[: match.start()] + f"{match.group(1)}:{match.group(2)}"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment)


def parse_date(text: str) -> str | None:
    candidate = text.strip()
    if not _DATE_RE.match(candidate):
        return None
    try:
        return date.fromisoformat(candidate).isoformat()
    except ValueError:
        return None


def _json_token(value: Any) -> str:
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, list):
        return "START_ARRAY"
    return "START_OBJECT"


def _json_type_error(kind: str, value: Any) -> ApiError:
    shown = (
        json.dumps(value)
        if isinstance(value, list | dict)
        else (str(value).lower() if isinstance(value, bool) else str(value))
    )
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {_json_token(value)} value {shown} "
        "or request may be missing a required field",
    )


def convert_json_value(sfield: SField, value: Any) -> Any:
    """A JSON body value as Salesforce deserializes it; wrong types fail the whole request (JSON_PARSER_ERROR)."""
    if value is None:
        return False if sfield.type == "boolean" else None
    kind = sfield.type
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _json_type_error("boolean", value)
    if kind == "double":
        if isinstance(value, bool | list | dict):
            raise _json_type_error("double", value)
        try:
            return float(value)
        except ValueError:
            raise _json_type_error("double", value) from None
    if kind == "date":
        parsed = parse_date(value) if isinstance(value, str) else None
        if parsed is None:
            raise _json_type_error("date", value)
        return parsed
    if kind == "datetime":
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise _json_type_error("datetime", value)
        return parsed
    if isinstance(value, list | dict):
        raise _json_type_error("string", value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def convert_csv_value(sfield: SField, raw: str) -> Any:
    """A Bulk API CSV cell (not empty, not ``#N/A``) as Salesforce converts it; bad values fail the record."""
    kind = sfield.type
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in _CSV_TRUE:
            return True
        if lowered in _CSV_FALSE:
            return False
    elif kind == "double":
        try:
            return float(raw)
        except ValueError:
            pass
    elif kind == "date":
        parsed = parse_date(raw) or (parse_datetime(raw) or "")[:10] or None
        if parsed:
            return parsed
    elif kind == "datetime":
        parsed = parse_datetime(raw)
        if parsed:
            return parsed
    else:
        return raw
    raise RecordError(
        "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{sfield.label}: value not of required type: {raw}", [sfield.name]
    )


def check_value(sfield: SField, value: Any) -> Any:
    """Checks applied on save (length, email, numeric range); returns the value as stored."""
    if value is None:
        return False if sfield.type == "boolean" else None
    if sfield.is_text or sfield.type in ("id", "reference"):
        if sfield.length and len(value) > sfield.length:
            raise RecordError(
                "STRING_TOO_LONG",
                f"{sfield.label}: data value too large: {value} (max length={sfield.length})",
                [sfield.name],
            )
        if sfield.type == "email" and value and not _EMAIL_RE.match(value):
            raise RecordError("INVALID_EMAIL_ADDRESS", f"{sfield.label}: invalid email address: {value}", [sfield.name])
        if sfield.type == "reference" and value and normalize_id(value) is None:
            raise RecordError("MALFORMED_ID", f"{sfield.label}: id value of incorrect type: {value}", [sfield.name])
        if sfield.type == "reference" and value:
            return normalize_id(value)
    elif sfield.type == "double":
        if value != value or abs(value) >= 10 ** (sfield.precision - sfield.scale):
            raise RecordError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{sfield.label}: value outside of valid range on numeric field: {value}",
                [sfield.name],
            )
        return round(value, sfield.scale)
    return value


# --------------------------------------------------------------------------------------------------------------------
# SOQL subset

_SOQL_TOKEN_RE = re.compile(
    r"""(?P<str>'(?:[^'\\]|\\.)*')
    |(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<num>[+-]?\d+(?:\.\d+)?)
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.X,
)
_SOQL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


@dataclass
class _Token:
    kind: str
    text: str
    pos: int
    value: Any = None


@dataclass
class SoqlQuery:
    obj: SObjectType
    select: list[str]
    count_only: bool
    predicate: Callable[[dict[str, Any]], bool] | None
    order: list[tuple[str, bool, bool]]  # field, descending, nulls_first
    limit: int | None
    offset: int

    def run(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [r for r in records if self.predicate is None or self.predicate(r)]
        for name, descending, nulls_first in reversed(self.order):
            present = [r for r in rows if r.get(name) is not None]
            missing = [r for r in rows if r.get(name) is None]
            present.sort(key=lambda r, n=name: _sort_key(r[n]), reverse=descending)
            rows = missing + present if nulls_first else present + missing
        rows = rows[self.offset :]
        if self.limit is not None:
            rows = rows[: self.limit]
        return rows


def _sort_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class _SoqlParser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = self._tokenize(soql)
        self.i = 0

    def error(self, token: _Token | None, message: str | None = None) -> ApiError:
        pos = token.pos if token else len(self.soql)
        text = token.text if token else "<EOF>"
        caret = " " * pos + "^"
        return ApiError(
            400,
            "MALFORMED_QUERY",
            f"\n{self.soql}\n{caret}\nERROR at Row:1:Column:{pos + 1}\n{message or f'unexpected token: {text!r}'}",
        )

    def _tokenize(self, soql: str) -> list[_Token]:
        tokens: list[_Token] = []
        pos = 0
        while pos < len(soql):
            if soql[pos].isspace():
                pos += 1
                continue
            match = _SOQL_TOKEN_RE.match(soql, pos)
            if not match:
                word = re.match(r"\S+", soql[pos:])
                bad = _Token("bad", word.group(0) if word else soql[pos], pos)
                raise self.error(bad)
            kind = match.lastgroup or "bad"
            text = match.group(0)
            token = _Token(kind, text, pos)
            if kind == "str":
                token.value = re.sub(r"\\(.)", lambda m: _SOQL_ESCAPES.get(m.group(1), m.group(1)), text[1:-1])
            tokens.append(token)
            pos = match.end()
        return tokens

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error(None)
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token.kind == "ident" and token.text.upper() == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise self.error(self.peek())

    def expect_punct(self, char: str) -> None:
        token = self.next()
        if token.text != char:
            raise self.error(token)

    def parse(self) -> SoqlQuery:
        self.expect_keyword("SELECT")
        items: list[_Token] = []
        count_only = False
        first = self.peek()
        if first and first.kind == "ident" and first.text.upper() == "COUNT":
            self.i += 1
            self.expect_punct("(")
            closing = self.next()
            if closing.text != ")":
                raise self.error(closing, "aggregate functions other than COUNT() are not supported by the emulator")
            count_only = True
        else:
            while True:
                token = self.next()
                if token.kind != "ident" or token.text.upper() == "FROM":
                    raise self.error(token)
                items.append(token)
                if self.peek() and self.peek().text == "(":  # type: ignore[union-attr]
                    raise self.error(token, "aggregate functions other than COUNT() are not supported by the emulator")
                if not (self.peek() and self.peek().text == ","):  # type: ignore[union-attr]
                    break
                self.i += 1
        self.expect_keyword("FROM")
        obj_token = self.next()
        if obj_token.kind != "ident":
            raise self.error(obj_token)
        obj = _object_type(obj_token.text)
        if obj is None:
            raise ApiError(
                400,
                "INVALID_TYPE",
                f"\n{self.soql}\n{' ' * obj_token.pos}^\nERROR at Row:1:Column:{obj_token.pos + 1}\n"
                f"sObject type '{obj_token.text}' is not supported. If you are attempting to use a custom object, be "
                "sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for "
                "the appropriate names.",
            )
        self.obj = obj
        select = [self._field(t).name for t in items]
        predicate = None
        if self.keyword("WHERE"):
            predicate = self._or()
        order: list[tuple[str, bool, bool]] = []
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            while True:
                name = self._field(self.next()).name
                descending = self.keyword("DESC")
                if not descending:
                    self.keyword("ASC")
                nulls_first = not descending
                if self.keyword("NULLS"):
                    if self.keyword("FIRST"):
                        nulls_first = True
                    else:
                        self.expect_keyword("LAST")
                        nulls_first = False
                order.append((name, descending, nulls_first))
                if not (self.peek() and self.peek().text == ","):  # type: ignore[union-attr]
                    break
                self.i += 1
        limit = None
        offset = 0
        if self.keyword("LIMIT"):
            limit = self._integer()
        if self.keyword("OFFSET"):
            offset = self._integer()
        if self.peek() is not None:
            raise self.error(self.peek())
        return SoqlQuery(obj, select, count_only, predicate, order, limit, offset)

    def _integer(self) -> int:
        token = self.next()
        if token.kind != "num" or not token.text.isdigit():
            raise self.error(token)
        return int(token.text)

    def _field(self, token: _Token) -> SField:
        if token.kind != "ident":
            raise self.error(token)
        if "." in token.text:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"\n{self.soql}\n{' ' * token.pos}^\nERROR at Row:1:Column:{token.pos + 1}\n"
                f"Didn't understand relationship '{token.text.split('.')[0]}' in field path (relationship queries "
                "are not supported by the emulator).",
            )
        sfield = self.obj.field(token.text)
        if sfield is None:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"\n{self.soql}\n{' ' * token.pos}^\nERROR at Row:1:Column:{token.pos + 1}\n"
                f"No such column '{token.text}' on entity '{self.obj.name}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        return sfield

    def _or(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._and()]
        while self.keyword("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda r: any(p(r) for p in parts)

    def _and(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._not()]
        while self.keyword("AND"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else lambda r: all(p(r) for p in parts)

    def _not(self) -> Callable[[dict[str, Any]], bool]:
        if self.keyword("NOT"):
            inner = self._not()
            return lambda r: not inner(r)
        token = self.peek()
        if token and token.text == "(":
            self.i += 1
            inner = self._or()
            self.expect_punct(")")
            return inner
        return self._comparison()

    def _comparison(self) -> Callable[[dict[str, Any]], bool]:
        sfield = self._field(self.next())
        name = sfield.name
        negate = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect_punct("(")
            values = [self._literal(sfield)]
            while self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
                self.i += 1
                values.append(self._literal(sfield))
            self.expect_punct(")")
            members = {_sort_key(v) for v in values}
            if negate:
                return lambda r: r.get(name) is not None and _sort_key(r[name]) not in members
            return lambda r: r.get(name) is not None and _sort_key(r[name]) in members
        if negate:
            raise self.error(self.peek())
        if self.keyword("LIKE"):
            pattern_token = self.next()
            if pattern_token.kind != "str":
                raise self.error(pattern_token)
            regex = re.compile(
                "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern_token.value) + r"\Z",
                re.I | re.S,
            )
            return lambda r: isinstance(r.get(name), str) and regex.match(r[name]) is not None
        op_token = self.next()
        if op_token.kind != "op":
            raise self.error(op_token)
        op = "!=" if op_token.text == "<>" else op_token.text
        value = self._literal(sfield)
        if value is None:
            if op not in ("=", "!="):
                raise self.error(op_token)
            return (lambda r: r.get(name) is None) if op == "=" else (lambda r: r.get(name) is not None)
        key = _sort_key(value)
        compare: dict[str, Callable[[Any], bool]] = {
            "=": lambda v: v == key,
            "!=": lambda v: v != key,
            "<": lambda v: v < key,
            "<=": lambda v: v <= key,
            ">": lambda v: v > key,
            ">=": lambda v: v >= key,
        }
        test = compare[op]
        if op == "!=":
            return lambda r: r.get(name) is None or test(_sort_key(r[name]))
        return lambda r: r.get(name) is not None and test(_sort_key(r[name]))

    def _literal(self, sfield: SField) -> Any:
        token = self.next()
        kind = sfield.type
        if token.kind == "ident" and token.text.lower() == "null":
            return None

        def type_error(expected: str, quoted: bool) -> ApiError:
            how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
            return ApiError(
                400,
                "INVALID_FIELD",
                f"\n{self.soql}\n{' ' * token.pos}^\nERROR at Row:1:Column:{token.pos + 1}\n"
                f"value of filter criterion for field '{sfield.name}' must be of type {expected} and {how}",
            )

        if kind in ("id", "reference"):
            if token.kind != "str":
                raise type_error("id", True)
            normalized = normalize_id(token.value)
            if normalized is None:
                raise ApiError(400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {token.value}")
            return normalized
        if kind == "boolean":
            if token.kind != "ident" or token.text.lower() not in ("true", "false"):
                raise type_error("boolean", False)
            return token.text.lower() == "true"
        if kind == "double":
            if token.kind != "num":
                raise type_error("double", False)
            return float(token.text)
        if kind == "date":
            if token.kind != "date":
                raise type_error("date", False)
            parsed = parse_date(token.text)
            if parsed is None:
                raise self.error(token)
            return parsed
        if kind == "datetime":
            if token.kind != "dt":
                raise type_error("dateTime", False)
            parsed = parse_datetime(token.text)
            if parsed is None:
                raise self.error(token)
            return parsed
        if token.kind != "str":
            raise type_error("string", True)
        return token.value


def parse_soql(soql: str) -> SoqlQuery:
    """Parse the supported SOQL subset; raises ApiError with Salesforce's error code and message."""
    if not soql.strip():
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    return _SoqlParser(soql).parse()


# --------------------------------------------------------------------------------------------------------------------
# Faults


@dataclass
class Faults:
    """Fault injection, decided per request (and per record for record faults), reproducible with ``seed``."""

    seed: int = 0
    rate_429: float = 0.0  # answered as 403 REQUEST_LIMIT_EXCEEDED: Salesforce's real limit error
    rate_5xx: float = 0.0
    latency_ms: float = 0.0
    drop_after_commit: float = 0.0
    rate_lock: float = 0.0
    rate_record_error: float = 0.0
    daily_api_limit: int = 0  # 0: unlimited (Sforce-Limit-Info then shows a nominal maximum)

    @classmethod
    def coerce(cls, value: Faults | dict[str, Any] | None) -> Faults:
        if value is None:
            env = os.environ.get("CDP_EMULATOR_FAULTS")
            value = json.loads(env) if env else {}
        if isinstance(value, Faults):
            return cls(**asdict(value))
        if not isinstance(value, dict):
            raise ValueError(f"faults must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        faults = cls(**value)
        for name in ("rate_429", "rate_5xx", "drop_after_commit", "rate_lock", "rate_record_error"):
            rate = getattr(faults, name)
            if not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, got {rate!r}")
        if not isinstance(faults.daily_api_limit, int) or faults.daily_api_limit < 0:
            raise ValueError(f"daily_api_limit must be a non-negative integer, got {faults.daily_api_limit!r}")
        if not isinstance(faults.latency_ms, int | float) or faults.latency_ms < 0:
            raise ValueError(f"latency_ms must be a non-negative number, got {faults.latency_ms!r}")
        return faults


class _RecordFaults:
    """Per-record fault draws for one request or bulk job."""

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.lock = faults.rate_lock
        self.error = faults.rate_record_error
        self.rng = rng

    def check(self) -> None:
        if not (self.lock or self.error):
            return
        draw = self.rng.random()
        if draw < self.lock:
            raise _lock_error()
        if draw < self.lock + self.error:
            raise _transient_error(self.rng)


# --------------------------------------------------------------------------------------------------------------------
# Bulk API 2.0 jobs

_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
_INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
_TERMINAL = ("JobComplete", "Failed", "Aborted")
MAX_UPLOAD_BYTES = 150 * 1024 * 1024


@dataclass
class _Job:
    id: str
    operation: str
    object: str
    job_type: str  # V2Ingest | V2Query
    api_version: float
    created: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    external_id_field: str | None = None
    query: str | None = None
    state: str = "Open"
    modstamp: str = ""
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    error_message: str | None = None
    uploads: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed_rows: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    query_rows: list[list[str]] = field(default_factory=list)
    upload_complete_at: float = 0.0

    def info(self, user_id: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": user_id,
            "createdDate": self.created,
            "systemModstamp": self.modstamp or self.created,
            "state": self.state,
        }
        if self.job_type == "V2Ingest":
            info["externalIdFieldName"] = self.external_id_field
        info.update(
            {
                "concurrencyMode": "Parallel",
                "contentType": "CSV",
                "apiVersion": self.api_version,
                "jobType": self.job_type,
                "lineEnding": self.line_ending,
                "columnDelimiter": self.column_delimiter,
                "numberRecordsProcessed": self.processed,
                "retries": 0,
                "totalProcessingTime": self.processing_ms,
            }
        )
        if self.job_type == "V2Ingest":
            info["numberRecordsFailed"] = self.failed
            info["apiActiveProcessingTime"] = self.processing_ms
            info["apexProcessingTime"] = 0
            if self.state == "Open":
                info["contentUrl"] = f"services/data/v{self.api_version:.1f}/jobs/ingest/{self.id}/batches"
        else:
            info["query"] = self.query
        if self.error_message:
            info["errorMessage"] = self.error_message
        return info

    def summary(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "operation": self.operation,
            "jobType": self.job_type,
            "state": self.state,
            "numberRecordsProcessed": self.processed,
            "numberRecordsFailed": self.failed,
            "errorMessage": self.error_message,
        }


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json;charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {})


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    version: str = ""
    rng: random.Random = field(default_factory=random.Random)
    record_faults: _RecordFaults | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character in JSON body: {exc}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: SalesforceEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY on each accepted socket: headers and body go out in separate writes, and with Nagle's algorithm
    # the second waits for the client's delayed ACK (~40-45 ms per request on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        started = time.time()
        parts = urlsplit(self.path)
        body = self._read_body()
        request = _Request(self.command, unquote(parts.path), parse_qs(parts.query), self.headers, body)
        drop = False
        try:
            response, drop = emulator._handle(request)
        except ApiError as exc:
            response = _json_response(exc.status, exc.body())
        except Exception:  # answer like Salesforce instead of hanging the client
            traceback.print_exc(file=sys.stderr)
            response = _json_response(500, [{"errorCode": "UNKNOWN_EXCEPTION", "message": "emulator internal error"}])
        if not request.path.startswith("/__emulator/"):
            emulator._log_request(request.method, self.path, 0 if drop else response.status, started)
        if drop:
            # The write is committed; vanish like a crashed server so that the client has to reconcile.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.status != 204 and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


_DATA_PATH_RE = re.compile(r"^/services/data/v(\d{2,3}\.\d)(/.*)?$")
_SOAP_PATH_RE = re.compile(r"^/services/Soap/u/(\d{2,3}\.\d)/?$")
_NOMINAL_API_MAX = 100_000
_SESSION_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._"


def _release_label(version: float) -> str:
    step = round(version) - 56  # v56.0 is Winter '23
    season = ("Winter", "Spring", "Summer")[step % 3]
    return f"{season} '{23 + step // 3:02d}"


# --------------------------------------------------------------------------------------------------------------------
# The emulator


class SalesforceEmulator:
    """A local Salesforce (Contact and Lead, REST, Collections, Bulk API 2.0, SOAP and OAuth login)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: Faults | dict[str, Any] | None = None,
        state_file: Path | None = None,
        users: dict[str, tuple[str, str]] | None = None,
        access_token: str = "00D000000000001!emulator",
        connected_apps: dict[str, str] | None = None,
        bulk_processing_seconds: float = 0.2,
        query_batch_size: int = 2000,
    ) -> None:
        self.host = host
        self.port = port
        self.state_file = Path(state_file) if state_file else None
        self.users = dict(users) if users is not None else {"cdp@example.com": ("password", "token")}
        self.user_ids = {name: make_id(USER_ID_PREFIX, i + 1) for i, name in enumerate(sorted(self.users))}
        self.access_token = access_token
        self.connected_apps = (
            dict(connected_apps) if connected_apps is not None else {"cdp-emulator-client": "cdp-emulator-secret"}
        )
        self.bulk_processing_seconds = bulk_processing_seconds
        self.query_batch_size = query_batch_size
        self._faults = Faults.coerce(faults)
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._request_log: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._request_counter = 0
        self._clear()

    # ---- lifecycle

    def _clear(self) -> None:
        self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self._deleted: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self._ext_index: dict[str, dict[str, dict[str, str]]] = {
            name: {f: {} for f in t.external_ids} for name, t in OBJECTS.items()
        }
        self._counters: dict[str, int] = {}
        self._jobs: dict[str, _Job] = {}
        self._cursors: OrderedDict[str, tuple[list[dict[str, Any]], str]] = OrderedDict()
        self._sessions: dict[str, str] = {}
        self._api_usage = 0

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self.state_file and self.state_file.exists():
            self._load(self.state_file)
        self._server = _Server((self.host, self.port), _Handler)
        self._server.emulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="salesforce-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self.state_file:
            self.save()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- inspection and control (mirrored by /__emulator/*)

    def state(self) -> dict[str, Any]:
        with self._lock:
            snapshot: dict[str, Any] = {
                name: {i: dict(r) for i, r in recs.items()} for name, recs in self._records.items()
            }
            snapshot["deleted"] = {name: {i: dict(r) for i, r in recs.items()} for name, recs in self._deleted.items()}
            snapshot["jobs"] = {job_id: job.summary() for job_id, job in self._jobs.items()}
            snapshot["api_usage"] = self._api_usage
            return snapshot

    def records(self, obj: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records[self._object(obj).name].values()]

    def by_external_id(self, obj: str, field_name: str, value: str) -> dict[str, Any] | None:
        with self._lock:
            t = self._object(obj)
            index = self._ext_index[t.name].get(field_name)
            if index is not None:
                rid = index.get(value)
                return dict(self._records[t.name][rid]) if rid else None
            return next((dict(r) for r in self._records[t.name].values() if r.get(field_name) == value), None)

    def reset(self) -> None:
        with self._lock:
            self._clear()
            self._request_log.clear()
            self._request_counter = 0  # fault draws restart, so a reset run replays the same faults

    def faults(self) -> Faults:
        with self._lock:
            return Faults.coerce(self._faults)

    def set_faults(self, faults: Faults | dict[str, Any] | None = None, **overrides: Any) -> None:
        base = asdict(Faults.coerce(faults if faults is not None else {}))
        base.update(overrides)
        new = Faults.coerce(base)
        with self._lock:
            self._faults = new

    def requests_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._request_log)

    def expire_sessions(self) -> None:
        """Invalidate every session issued by login (not the fixed access token), as a timeout would."""
        with self._lock:
            self._sessions.clear()

    def seed_records(self, obj: str, records: list[dict[str, Any]]) -> list[str]:
        """Preload records (JSON-typed values, or strings as in a CSV); validated like an insert. Returns the ids."""
        t = self._object(obj)
        ids = []
        with self._lock:
            now = format_datetime(datetime.now(UTC))
            for index, raw in enumerate(records):
                values: dict[str, Any] = {}
                for key, value in raw.items():
                    if key == "attributes":
                        continue
                    sfield = t.field(key)
                    if sfield is None:
                        raise ValueError(f"record {index}: No such column '{key}' on sobject of type {t.name}")
                    if isinstance(value, str) and sfield.type in ("boolean", "double", "date", "datetime"):
                        values[sfield.name] = None if value in ("", "#N/A") else convert_csv_value(sfield, value)
                    else:
                        values[sfield.name] = convert_json_value(sfield, value)
                try:
                    ids.append(self._insert(t, values, now, [], seeding=True))
                except RecordError as exc:
                    raise ValueError(f"record {index}: {exc.code}: {exc.message}") from None
        return ids

    def save(self, path: Path | None = None) -> None:
        target = Path(path or self.state_file or "")
        if not str(target):
            raise ValueError("no state_file configured")
        with self._lock:
            payload = {
                "records": self._records,
                "deleted": self._deleted,
                "counters": self._counters,
                "sessions": self._sessions,
                "api_usage": self._api_usage,
                "jobs": {job_id: asdict(job) for job_id, job in self._jobs.items()},
            }
            data = json.dumps(payload)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _load(self, path: Path) -> None:
        payload = json.loads(path.read_text(encoding="utf-8"))
        with self._lock:
            self._clear()
            for name in OBJECTS:
                for rid, record in payload.get("records", {}).get(name, {}).items():
                    self._put(name, rid, record)
                self._deleted[name].update(payload.get("deleted", {}).get(name, {}))
            self._counters.update(payload.get("counters", {}))
            self._sessions.update(payload.get("sessions", {}))
            self._api_usage = int(payload.get("api_usage", 0))
            for job_id, raw in payload.get("jobs", {}).items():
                job = _Job(**raw)
                if job.state in ("UploadComplete", "InProgress"):
                    job.state = "Failed"
                    job.error_message = "InternalServerError : the emulator restarted before the job finished"
                self._jobs[job_id] = job

    def _log_request(self, method: str, path: str, status: int, started: float) -> None:
        with self._lock:
            self._request_log.append(
                {
                    "method": method,
                    "path": path,
                    "status": status,
                    "time": started,
                    "duration_ms": round((time.time() - started) * 1000, 2),
                }
            )

    # ---- helpers

    def _object(self, name: str) -> SObjectType:
        t = _object_type(name)
        if t is None:
            raise ValueError(f"unsupported object {name!r}; the emulator has {sorted(OBJECTS)}")
        return t

    def _new_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return make_id(prefix, self._counters[prefix])

    def _default_user(self) -> str:
        return self.user_ids[sorted(self.users)[0]] if self.users else make_id(USER_ID_PREFIX, 1)

    # ---- dispatch

    def _handle(self, request: _Request) -> tuple[_Response, bool]:
        path = request.path
        if path.startswith("/__emulator/"):
            return self._control(request), False
        if request.method == "POST" and _SOAP_PATH_RE.match(path):
            return self._soap_login(request), False
        if path.rstrip("/") == "/services/oauth2/token":
            return self._oauth_token(request), False
        if path.rstrip("/") == "/services/data":
            return _json_response(200, self._versions()), False
        match = _DATA_PATH_RE.match(path)
        if not match:
            return _json_response(404, [{"errorCode": _NOT_FOUND[0], "message": _NOT_FOUND[1]}]), False
        request.version = match.group(1)
        rest = (match.group(2) or "/").rstrip("/") or "/"
        drop_holder = [False]

        def route() -> _Response:
            return self._route(request, rest)

        response = self._api(request, route, drop_holder)
        return response, drop_holder[0]

    def _api(
        self, request: _Request, route: Callable[[], _Response], drop_holder: list[bool] | None = None
    ) -> _Response:
        """Auth, usage accounting and request faults around one REST call."""
        faults = self.faults()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        with self._lock:
            valid = scheme.lower() in ("bearer", "oauth") and (
                token.strip() == self.access_token or token.strip() in self._sessions
            )
            if not valid:
                return _json_response(
                    401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
                )
            self._api_usage += 1
            usage = self._api_usage
            self._request_counter += 1
            request_no = self._request_counter
        limit_header = {"Sforce-Limit-Info": f"api-usage={usage}/{faults.daily_api_limit or _NOMINAL_API_MAX}"}
        rng = random.Random(f"{faults.seed}:{request_no}")
        draw_429, draw_5xx, draw_drop = rng.random(), rng.random(), rng.random()
        request.rng = rng
        request.record_faults = _RecordFaults(faults, rng)
        if faults.daily_api_limit and usage > faults.daily_api_limit:
            response = _json_response(
                403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            )
        elif draw_429 < faults.rate_429:
            response = _json_response(
                403, [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            )
        elif draw_5xx < faults.rate_5xx:
            if rng.random() < 0.5:
                response = _json_response(
                    503,
                    [
                        {
                            "message": "Server temporarily unavailable. Please try again later.",
                            "errorCode": "SERVER_UNAVAILABLE",
                        }
                    ],
                )
            else:
                response = _json_response(
                    500,
                    [
                        {
                            "message": _UNKNOWN_MESSAGE.format(rng.randrange(10**9, 10**10)),
                            "errorCode": "UNKNOWN_EXCEPTION",
                        }
                    ],
                )
        else:
            try:
                response = route()
            except ApiError as exc:
                response = _json_response(exc.status, exc.body())
            if drop_holder is not None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
                drop_holder[0] = draw_drop < faults.drop_after_commit
        response.headers.update(limit_header)
        return response

    def _control(self, request: _Request) -> _Response:
        path, method = request.path.rstrip("/"), request.method
        if path == "/__emulator/state" and method == "GET":
            return _json_response(200, self.state())
        if path == "/__emulator/reset" and method == "POST":
            self.reset()
            return _json_response(200, {"reset": True})
        if path == "/__emulator/faults" and method == "GET":
            return _json_response(200, asdict(self.faults()))
        if path == "/__emulator/faults" and method == "PUT":
            try:
                self.set_faults(request.json() or {})
            except (ValueError, TypeError) as exc:
                return _json_response(400, {"error": str(exc)})
            return _json_response(200, asdict(self.faults()))
        if path == "/__emulator/requests" and method == "GET":
            return _json_response(200, self.requests_log())
        if path == "/__emulator/save" and method == "POST":
            if not self.state_file:
                return _json_response(400, {"error": "the emulator was started without a state file"})
            self.save()
            return _json_response(200, {"saved": str(self.state_file)})
        if path == "/__emulator/expire-sessions" and method == "POST":
            self.expire_sessions()
            return _json_response(200, {"expired": True})
        return _json_response(404, {"error": f"no emulator endpoint {method} {path}"})

    # ---- auth

    def _new_session(self, username: str) -> str:
        token = f"{ORG_ID[:15]}!AQ" + "".join(secrets.choice(_SESSION_CHARS) for _ in range(96))
        with self._lock:
            self._sessions[token] = username
        return token

    def _soap_fault(self, code: str, message: str, client: bool = False) -> _Response:
        faultcode = "soapenv:Client" if client else f"sf:{code}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
            f"<faultcode>{faultcode}</faultcode><faultstring>{code}: {xml_escape(message)}</faultstring><detail>"
            f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
            f"<sf:exceptionMessage>{xml_escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )
        return _Response(500, body.encode(), "text/xml;charset=UTF-8")

    def _soap_login(self, request: _Request) -> _Response:
        version = _SOAP_PATH_RE.match(request.path).group(1)  # type: ignore[union-attr]
        try:
            root = ET.fromstring(request.body)
        except ET.ParseError as exc:
            return self._soap_fault("INVALID_XML", f"could not parse the SOAP envelope: {exc}", client=True)
        values = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        username, password = values.get("username"), values.get("password")
        if username is None or password is None:
            return self._soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
        known = self.users.get(username)
        if known is None or password not in (known[0] + known[1], known[0] if not known[1] else None):
            return self._soap_fault("INVALID_LOGIN", "Invalid username, password, security token; or user locked out.")
        session = self._new_session(username)
        user_id = self.user_ids[username]
        base = self.url
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{base}/services/Soap/m/{version}/{ORG_ID[:15]}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{base}/services/Soap/u/{version}/{ORG_ID[:15]}</serverUrl>"
            f"<sessionId>{session}</sessionId><userId>{user_id}</userId><userInfo>"
            "<accessibilityMode>false</accessibilityMode><chatterExternal>false</chatterExternal>"
            "<currencySymbol>$</currencySymbol><orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit>"
            "<orgDefaultCurrencyIsoCode>USD</orgDefaultCurrencyIsoCode>"
            "<orgDefaultCurrencyLocale>en_US</orgDefaultCurrencyLocale>"
            "<orgDisallowHtmlAttachments>false</orgDisallowHtmlAttachments>"
            "<orgHasPersonAccounts>false</orgHasPersonAccounts>"
            f"<organizationId>{ORG_ID}</organizationId><organizationMultiCurrency>false</organizationMultiCurrency>"
            "<organizationName>CDP Emulator Org</organizationName>"
            f'<profileId>{make_id("00e", 1)}</profileId><roleId xsi:nil="true"/>'
            '<sessionSecondsValid>7200</sessionSecondsValid><userDefaultCurrencyIsoCode xsi:nil="true"/>'
            f"<userEmail>{xml_escape(username)}</userEmail><userFullName>CDP Integration</userFullName>"
            f"<userId>{user_id}</userId><userLanguage>en_US</userLanguage><userLocale>en_US</userLocale>"
            f"<userName>{xml_escape(username)}</userName><userTimeZone>America/Los_Angeles</userTimeZone>"
            "<userType>Standard</userType><userUiSkin>Theme3</userUiSkin></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return _Response(200, body.encode(), "text/xml;charset=UTF-8")

    def _oauth_token(self, request: _Request) -> _Response:
        def oauth_error(error: str, description: str) -> _Response:
            return _json_response(400, {"error": error, "error_description": description})

        if request.method != "POST":
            return oauth_error("invalid_request", "must use HTTP POST")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        form.update({k: v[0] for k, v in request.query.items() if k not in form})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return oauth_error("invalid_client", "invalid client credentials")
        grant = form.get("grant_type")
        if grant not in ("password", "client_credentials"):
            return oauth_error("unsupported_grant_type", "grant type not supported")
        if not client_id or client_id not in self.connected_apps:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if client_secret != self.connected_apps[client_id]:
            return oauth_error("invalid_client", "invalid client credentials")
        if grant == "password":
            username, password = form.get("username", ""), form.get("password", "")
            known = self.users.get(username)
            if known is None or password not in (known[0] + known[1], known[0]):
                return oauth_error("invalid_grant", "authentication failure")
        else:
            if not self.users:
                return oauth_error("invalid_grant", "no client credentials user enabled")
            username = sorted(self.users)[0]
        token = self._new_session(username)
        issued_at = str(int(time.time() * 1000))
        identity = f"{self.url}/id/{ORG_ID}/{self.user_ids[username]}"
        signature = base64.b64encode(
            hmac.new(self.connected_apps[client_id].encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        return _json_response(
            200,
            {
                "access_token": token,
                "instance_url": self.url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": signature,
                "scope": "api",
            },
        )

    # ---- REST routing

    def _versions(self) -> list[dict[str, str]]:
        return [
            {"label": _release_label(v), "url": f"/services/data/v{v:.1f}", "version": f"{v:.1f}"}
            for v in (float(n) for n in range(31, 66))
        ]

    def _route(self, request: _Request, rest: str) -> _Response:
        segments = [s for s in rest.split("/") if s]
        method = request.method
        base = f"/services/data/v{request.version}"

        def allow(*methods: str) -> None:
            if method not in methods:
                raise ApiError(
                    405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {','.join(methods)}"
                )

        if not segments:
            allow("GET")
            names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
            return _json_response(200, {name: f"{base}/{name}" for name in names})
        head = segments[0]
        if head == "limits" and len(segments) == 1:
            allow("GET")
            return _json_response(200, self._limits())
        if head == "sobjects":
            return self._sobjects(request, segments[1:], allow)
        if head in ("query", "queryAll"):
            allow("GET")
            return self._query(request, head, segments[1:])
        if head == "composite" and len(segments) >= 2 and segments[1] == "sobjects":
            return self._collections(request, segments[2:])
        if head == "jobs" and len(segments) >= 2 and segments[1] in ("ingest", "query"):
            return self._jobs_route(request, segments[1], segments[2:], allow)
        raise ApiError(404, *_NOT_FOUND)

    def _limits(self) -> dict[str, Any]:
        faults = self.faults()
        maximum = faults.daily_api_limit or _NOMINAL_API_MAX
        with self._lock:
            used = self._api_usage
            stored = sum(len(r) for r in self._records.values())
        return {
            "DailyApiRequests": {"Max": maximum, "Remaining": max(0, maximum - used)},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 1024, "Remaining": max(0, 1024 - stored * 2 // 1024)},
            "FileStorageMB": {"Max": 1024, "Remaining": 1024},
            "HourlyTimeBasedWorkflow": {"Max": 1000, "Remaining": 1000},
            "SingleEmail": {"Max": 5000, "Remaining": 5000},
        }

    def _record_json(
        self, t: SObjectType, record: dict[str, Any], version: str, select: Iterable[str] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": t.name, "url": f"/services/data/v{version}/sobjects/{t.name}/{record['Id']}"}
        }
        for name in select if select is not None else (f.name for f in t.fields):
            out[name] = record.get(name)
        return out

    def _describe(self, t: SObjectType, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{t.name}"
        return {
            "activateable": False,
            "createable": True,
            "custom": False,
            "customSetting": False,
            "deletable": True,
            "fields": [f.describe() for f in t.fields],
            "keyPrefix": t.key_prefix,
            "label": t.name,
            "labelPlural": t.label_plural,
            "layoutable": True,
            "mergeable": True,
            "name": t.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": True,
            "updateable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
        }

    def _sobjects(self, request: _Request, segments: list[str], allow: Callable[..., None]) -> _Response:
        version = request.version
        if not segments:
            allow("GET")
            return _json_response(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": [
                        {k: v for k, v in self._describe(t, version).items() if k != "fields"} for t in OBJECTS.values()
                    ],
                },
            )
        t = _object_type(segments[0])
        if t is None:
            raise ApiError(404, *_NOT_FOUND)
        method = request.method
        if len(segments) == 1:
            allow("GET", "POST")
            if method == "GET":
                described = self._describe(t, version)
                return _json_response(
                    200, {"objectDescribe": {k: v for k, v in described.items() if k != "fields"}, "recentItems": []}
                )
            return self._rest_create(request, t)
        if len(segments) == 2 and segments[1] == "describe":
            allow("GET")
            return _json_response(200, self._describe(t, version))
        if len(segments) == 2:
            allow("GET", "PATCH", "DELETE")
            rid = normalize_id(segments[1])
            with self._lock:
                exists = rid is not None and rid[:3] == t.key_prefix and rid in self._records[t.name]
                if rid is not None and rid in self._deleted[t.name]:
                    raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
            if not exists:
                raise ApiError(404, *_NOT_FOUND)
            return self._rest_by_id(request, t, rid)  # type: ignore[arg-type]
        if len(segments) == 3:
            allow("GET", "PATCH", "DELETE")
            return self._rest_by_external_id(request, t, segments[1], segments[2])
        raise ApiError(404, *_NOT_FOUND)

    def _body_values(self, t: SObjectType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {t.name} from {_json_token(body)} value"
            )
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "attributes":
                continue
            sfield = t.field(key)
            if sfield is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {t.name}")
            values[sfield.name] = convert_json_value(sfield, value)
        return values

    def _single_write(self, request: _Request, action: Callable[[list[Any]], Any]) -> Any:
        """Run one record write under the lock; record faults become a whole-request error, as Salesforce does."""
        try:
            with self._lock:
                if request.record_faults:
                    request.record_faults.check()
                return action([])
        except RecordError as exc:
            raise ApiError(400, exc.code, exc.message, exc.fields) from None

    def _rest_create(self, request: _Request, t: SObjectType) -> _Response:
        values = self._body_values(t, request.json())
        now = format_datetime(datetime.now(UTC))
        rid = self._single_write(request, lambda log: self._insert(t, values, now, log))
        return _json_response(201, {"id": rid, "success": True, "errors": []})

    def _rest_by_id(self, request: _Request, t: SObjectType, rid: str) -> _Response:
        if request.method == "GET":
            with self._lock:
                record = self._records[t.name].get(rid)
                if record is None:
                    raise ApiError(404, *_NOT_FOUND)
                return _json_response(
                    200, self._record_json(t, record, request.version, self._fields_param(request, t))
                )
        if request.method == "PATCH":
            values = self._body_values(t, request.json())
            now = format_datetime(datetime.now(UTC))
            self._single_write(request, lambda log: self._update(t, rid, values, now, log))
            return _Response(204)
        self._single_write(request, lambda log: self._delete(t, rid, log))
        return _Response(204)

    def _fields_param(self, request: _Request, t: SObjectType) -> list[str] | None:
        requested = request.param("fields")
        if not requested:
            return None
        names = []
        for name in requested.split(","):
            sfield = t.field(name.strip())
            if sfield is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name.strip()}' on sobject of type {t.name}")
            names.append(sfield.name)
        return names

    def _rest_by_external_id(self, request: _Request, t: SObjectType, field_name: str, value: str) -> _Response:
        sfield = t.field(field_name)
        if sfield is None or not (sfield.external_id or sfield.name == "Id"):
            raise ApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field_name}"
            )
        if request.method == "PATCH":
            values = self._body_values(t, request.json())
            now = format_datetime(datetime.now(UTC))
            rid, created = self._single_write(
                request, lambda log: self._upsert(t, sfield.name, value, values, now, log)
            )
            return _json_response(
                201 if created else 200, {"id": rid, "success": True, "errors": [], "created": created}
            )
        with self._lock:
            rid = self._lookup(t, sfield.name, value)
            if rid is None:
                raise ApiError(404, *_NOT_FOUND)
            if request.method == "GET":
                return _json_response(
                    200,
                    self._record_json(t, self._records[t.name][rid], request.version, self._fields_param(request, t)),
                )
        self._single_write(request, lambda log: self._delete(t, rid, log))
        return _Response(204)

    # ---- record writes (caller holds the lock); every write appends an undo entry to `log`

    def _put(self, obj: str, rid: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        records = self._records[obj]
        old = records.get(rid)
        for field_name, index in self._ext_index[obj].items():
            if old is not None and old.get(field_name) is not None and index.get(old[field_name]) == rid:
                del index[old[field_name]]
            if record is not None and record.get(field_name) is not None:
                index[record[field_name]] = rid
        if record is None:
            records.pop(rid, None)
        else:
            records[rid] = record
        return old

    def _undo(self, log: list[Any]) -> None:
        for obj, rid, old_live, old_deleted in reversed(log):
            self._put(obj, rid, old_live)
            if old_deleted is None:
                self._deleted[obj].pop(rid, None)
            else:
                self._deleted[obj][rid] = old_deleted

    def _lookup(self, t: SObjectType, field_name: str, value: str) -> str | None:
        if field_name == "Id":
            rid = normalize_id(value)
            return rid if rid is not None and rid in self._records[t.name] else None
        index = self._ext_index[t.name].get(field_name)
        if index is not None:
            return index.get(value)
        return next((rid for rid, r in self._records[t.name].items() if r.get(field_name) == value), None)

    def _check_fields(self, t: SObjectType, values: dict[str, Any], creating: bool) -> dict[str, Any]:
        blocked = [n for n in values if not (t.by_name[n].createable if creating else t.by_name[n].updateable)]
        if blocked:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(blocked)}. Please check the security settings of this "
                "field and verify that it is read/write for your profile or permission set.",
                blocked,
            )
        return {n: check_value(t.by_name[n], v) for n, v in values.items()}

    def _check_record(self, t: SObjectType, record: dict[str, Any], rid: str | None) -> None:
        missing = [f.name for f in t.fields if f.required and record.get(f.name) in (None, "")]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        for field_name, index in self._ext_index[t.name].items():
            value = record.get(field_name)
            other = index.get(value) if value is not None else None
            if other is not None and other != rid:
                raise RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {field_name} duplicates value on record with id: {other}",
                    [field_name],
                )

    @staticmethod
    def _name(record: dict[str, Any]) -> str:
        return " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)

    def _insert(self, t: SObjectType, values: dict[str, Any], now: str, log: list[Any], seeding: bool = False) -> str:
        if seeding:
            values = {n: check_value(t.by_name[n], v) for n, v in values.items()}
        else:
            values = self._check_fields(t, values, creating=True)
        record = t.blank()
        record.update({k: v for k, v in values.items() if v is not None or t.by_name[k].type != "boolean"})
        rid = values.get("Id") if seeding and values.get("Id") else None
        if rid is not None:
            rid = normalize_id(rid)
            if rid is None or rid[:3] != t.key_prefix or rid in self._records[t.name]:
                raise RecordError(
                    "MALFORMED_ID", f"{t.name} ID: id value of incorrect type or in use: {values['Id']}", ["Id"]
                )
        self._check_record(t, record, None)
        rid = rid or self._new_id(t.key_prefix)
        user = self._default_user()
        record["Id"] = rid
        record["IsDeleted"] = False
        record["Name"] = self._name(record)
        record["OwnerId"] = record.get("OwnerId") or user
        for key in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
            record[key] = record.get(key) or now
        for key in ("CreatedById", "LastModifiedById"):
            record[key] = record.get(key) or user
        self._put(t.name, rid, record)
        log.append((t.name, rid, None, None))
        return rid

    def _update(self, t: SObjectType, rid: str, values: dict[str, Any], now: str, log: list[Any]) -> None:
        values = self._check_fields(t, values, creating=False)
        old = self._records[t.name].get(rid)
        if old is None:
            if rid in self._deleted[t.name]:
                raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        record = dict(old)
        record.update(values)
        self._check_record(t, record, rid)
        record["Name"] = self._name(record)
        record["LastModifiedDate"] = record["SystemModstamp"] = now
        record["LastModifiedById"] = self._default_user()
        self._put(t.name, rid, record)
        log.append((t.name, rid, old, None))

    def _upsert(
        self, t: SObjectType, field_name: str, value: str | None, values: dict[str, Any], now: str, log: list[Any]
    ) -> tuple[str, bool]:
        values = {k: v for k, v in values.items() if k != field_name}
        if field_name == "Id":
            if not value:
                return self._insert(t, values, now, log), True
            rid = normalize_id(value)
            if rid is None or rid[:3] != t.key_prefix:
                raise RecordError("MALFORMED_ID", f"{t.name} ID: id value of incorrect type: {value}", ["Id"])
            self._update(t, rid, values, now, log)
            return rid, False
        if value is None or value == "":
            raise RecordError("MISSING_ARGUMENT", f"{field_name} not specified")
        rid = self._lookup(t, field_name, value)
        if rid is not None:
            self._update(t, rid, values, now, log)
            return rid, False
        values[field_name] = value
        return self._insert(t, values, now, log), True

    def _delete(self, t: SObjectType, rid: str, log: list[Any], hard: bool = False) -> None:
        old = self._records[t.name].get(rid)
        if old is None:
            if rid in self._deleted[t.name] and hard:
                log.append((t.name, rid, None, self._deleted[t.name].pop(rid)))
                return
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        self._put(t.name, rid, None)
        log.append((t.name, rid, old, self._deleted[t.name].get(rid)))
        if not hard:
            self._deleted[t.name][rid] = {**old, "IsDeleted": True}

    # ---- query

    def _query(self, request: _Request, endpoint: str, segments: list[str]) -> _Response:
        version = request.version
        if segments:
            locator = segments[0]
            cursor_id, _, offset_text = locator.rpartition("-")
            with self._lock:
                cursor = self._cursors.get(cursor_id)
            if cursor is None or not offset_text.isdigit():
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            rows, batch = cursor[0], int(cursor[1])
            return _json_response(200, self._query_page(rows, int(offset_text), batch, cursor_id, endpoint, version))
        query = parse_soql(request.param("q") or "")
        with self._lock:
            source: list[dict[str, Any]] = list(self._records[query.obj.name].values())
            if endpoint == "queryAll":
                source += list(self._deleted[query.obj.name].values())
            rows = query.run(source)
            if query.count_only:
                return _json_response(200, {"totalSize": len(rows), "done": True, "records": []})
            projected = [self._record_json(query.obj, r, version, query.select) for r in rows]
        batch = self.query_batch_size
        options = request.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize=(\d+)", options)
        if match:
            batch = max(200, min(2000, int(match.group(1))))
        cursor_id = ""
        if len(projected) > batch:
            with self._lock:
                cursor_id = self._new_id("01g")
                self._cursors[cursor_id] = (projected, str(batch))
                while len(self._cursors) > 100:
                    self._cursors.popitem(last=False)
        return _json_response(200, self._query_page(projected, 0, batch, cursor_id, endpoint, version))

    @staticmethod
    def _query_page(
        rows: list[dict[str, Any]], offset: int, batch: int, cursor_id: str, endpoint: str, version: str
    ) -> dict[str, Any]:
        page = rows[offset : offset + batch]
        done = offset + batch >= len(rows)
        result: dict[str, Any] = {"totalSize": len(rows), "done": done}
        if not done:
            result["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{cursor_id}-{offset + batch}"
        result["records"] = page
        return result

    # ---- sObject Collections

    def _collections(self, request: _Request, segments: list[str]) -> _Response:
        method = request.method
        if method == "DELETE" and not segments:
            ids = [i for i in (request.param("ids") or "").split(",") if i]
            all_or_none = (request.param("allOrNone") or "false").lower() == "true"
            self._check_collection_size(len(ids))
            if not ids:
                raise ApiError(400, "MISSING_ARGUMENT", "The ids parameter is required")
            return _json_response(
                200, self._collection_write(request, [(None, i) for i in ids], "delete", all_or_none, None, None)
            )
        if method not in ("POST", "PATCH"):
            raise ApiError(
                405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are POST,PATCH,DELETE"
            )
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be an object with a 'records' array")
        records = body["records"]
        all_or_none = bool(body.get("allOrNone", False))
        self._check_collection_size(len(records))
        url_type: SObjectType | None = None
        ext_field: str | None = None
        if segments:
            if method != "PATCH" or len(segments) != 2:
                raise ApiError(404, *_NOT_FOUND)
            url_type = _object_type(segments[0])
            if url_type is None:
                raise ApiError(404, *_NOT_FOUND)
            sfield = url_type.field(segments[1])
            if sfield is None or not (sfield.external_id or sfield.name == "Id"):
                raise ApiError(
                    404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {segments[1]}"
                )
            ext_field = sfield.name
        parsed: list[tuple[SObjectType | None, Any]] = []
        for record in records:
            if not isinstance(record, dict):
                raise ApiError(
                    400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of SObject from {_json_token(record)} value"
                )
            type_name = (
                (record.get("attributes") or {}).get("type") if isinstance(record.get("attributes"), dict) else None
            )
            t = _object_type(type_name) if type_name else url_type
            if t is None:
                if type_name:
                    raise ApiError(400, "INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
                raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
            if url_type is not None and t is not url_type:
                raise ApiError(400, "INVALID_TYPE", f"Record type {t.name} does not match the URL type {url_type.name}")
            parsed.append((t, self._body_values(t, record)))
        operation = "upsert" if ext_field else ("create" if method == "POST" else "update")
        return _json_response(200, self._collection_write(request, parsed, operation, all_or_none, url_type, ext_field))

    @staticmethod
    def _check_collection_size(count: int) -> None:
        if count > 200:
            raise ApiError(
                400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
            )

    def _collection_write(
        self,
        request: _Request,
        items: list[tuple[SObjectType | None, Any]],
        operation: str,
        all_or_none: bool,
        url_type: SObjectType | None,
        ext_field: str | None,
    ) -> list[dict[str, Any]]:
        now = format_datetime(datetime.now(UTC))
        results: list[dict[str, Any]] = []
        log: list[Any] = []
        # Duplicate external ids inside one request fail every record that carries them, as Salesforce does.
        duplicates: set[str] = set()
        if operation == "upsert" and ext_field:
            seen: dict[str, int] = {}
            for _, values in items:
                key = values.get(ext_field)
                if key is not None:
                    seen[key] = seen.get(key, 0) + 1
            duplicates = {k for k, n in seen.items() if n > 1}
        with self._lock:
            for t, values in items:
                result: dict[str, Any] = {"id": None, "success": False, "errors": []}
                try:
                    if request.record_faults:
                        request.record_faults.check()
                    if operation == "create":
                        if "Id" in values:
                            raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
                        result["id"] = self._insert(t, values, now, log)  # type: ignore[arg-type]
                    elif operation == "update":
                        rid = values.pop("Id", None)
                        if not rid:
                            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call")
                        normalized = normalize_id(rid)
                        if normalized is None or normalized[:3] != t.key_prefix:  # type: ignore[union-attr]
                            raise RecordError(
                                "MALFORMED_ID",
                                f"{t.name} ID: id value of incorrect type: {rid}",  # type: ignore[union-attr]
                                ["Id"],
                            )
                        result["id"] = normalized
                        self._update(t, normalized, values, now, log)  # type: ignore[arg-type]
                    elif operation == "upsert":
                        key = values.get(ext_field)
                        if key in duplicates:
                            raise RecordError(
                                "DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {key}", [ext_field]
                            )  # type: ignore[list-item]
                        if ext_field == "Id":
                            values = dict(values)
                            key = values.pop("Id", None)
                        rid, created = self._upsert(t, ext_field, key, values, now, log)  # type: ignore[arg-type]
                        result["id"] = rid
                        result["created"] = created
                    else:
                        rid = values
                        normalized = normalize_id(rid)
                        result["id"] = rid
                        dtype = next(
                            (o for o in OBJECTS.values() if normalized and normalized[:3] == o.key_prefix), None
                        )
                        if normalized is None or dtype is None:
                            raise RecordError("MALFORMED_ID", f"malformed id {rid}")
                        result["id"] = normalized
                        self._delete(dtype, normalized, log)
                    result["success"] = True
                except RecordError as exc:
                    result["errors"] = [exc.collection_error()]
                    if operation == "upsert":
                        result.setdefault("created", False)
                results.append(result)
            if all_or_none and any(not r["success"] for r in results):
                self._undo(log)
                for r in results:
                    if r["success"]:
                        r["success"] = False
                        r["id"] = None
                        r["errors"] = [_ROLLED_BACK.collection_error()]
                        if "created" in r:
                            r["created"] = False
        return results

    # ---- Bulk API 2.0

    def _jobs_route(self, request: _Request, kind: str, segments: list[str], allow: Callable[..., None]) -> _Response:
        method = request.method
        if not segments:
            allow("GET", "POST")
            if method == "POST":
                return self._create_job(request, kind)
            with self._lock:
                records = [
                    j.info(self._default_user())
                    for j in self._jobs.values()
                    if j.job_type == ("V2Ingest" if kind == "ingest" else "V2Query")
                ]
            return _json_response(200, {"done": True, "records": records, "nextRecordsUrl": None})
        with self._lock:
            job = self._jobs.get(segments[0])
        if job is None or job.job_type != ("V2Ingest" if kind == "ingest" else "V2Query"):
            raise ApiError(404, "NOT_FOUND", f"Job with id {segments[0]} not found")
        if len(segments) == 1:
            allow("GET", "PATCH", "DELETE")
            if method == "GET":
                with self._lock:
                    return _json_response(200, job.info(self._default_user()))
            if method == "PATCH":
                return self._patch_job(request, job)
            with self._lock:
                deletable = (*_TERMINAL, "UploadComplete") if kind == "ingest" else _TERMINAL
                if job.state not in deletable:
                    raise ApiError(400, "INVALIDJOBSTATE", f"Job can not be deleted when job state is {job.state}")
                del self._jobs[job.id]
            return _Response(204)
        action = segments[1]
        if kind == "ingest" and action == "batches" and len(segments) == 2:
            allow("PUT")
            return self._upload(request, job)
        if kind == "ingest" and action.lower() in ("successfulresults", "failedresults", "unprocessedrecords"):
            allow("GET")
            return self._ingest_results(job, action.lower())
        if kind == "query" and action == "results":
            allow("GET")
            return self._query_results(request, job)
        raise ApiError(404, *_NOT_FOUND)

    def _create_job(self, request: _Request, kind: str) -> _Response:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        delimiter = body.get("columnDelimiter") or "COMMA"
        line_ending = body.get("lineEnding") or "LF"
        if delimiter not in _DELIMITERS:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid column delimiter: {delimiter}")
        if line_ending not in ("LF", "CRLF"):
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid line ending: {line_ending}")
        if (body.get("contentType") or "CSV") != "CSV":
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Unsupported content type: {body.get('contentType')}")
        operation = body.get("operation")
        now = format_datetime(datetime.now(UTC))
        if kind == "query":
            if operation not in ("query", "queryAll"):
                raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
            query = parse_soql(body.get("query") or "")
            if query.count_only:
                raise ApiError(400, "INVALIDJOB", "InvalidJob : Aggregate queries are not supported by Bulk API 2.0")
            with self._lock:
                job = _Job(
                    self._new_id("750"),
                    operation,
                    query.obj.name,
                    "V2Query",
                    float(request.version),
                    now,
                    delimiter,
                    line_ending,
                    query=body.get("query"),
                    state="UploadComplete",
                    modstamp=now,
                )
                self._jobs[job.id] = job
                info = job.info(self._default_user())
            self._start_processing(job, query)
            return _json_response(200, info)
        if operation not in _INGEST_OPERATIONS:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        t = _object_type(str(body.get("object") or ""))
        if t is None:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {body.get('object')}")
        ext = body.get("externalIdFieldName")
        if operation == "upsert":
            if not ext:
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : External ID was blank for {t.name}. An External ID must be specified for upsert.",
                )
            sfield = t.field(ext)
            if sfield is None or not (sfield.external_id or sfield.name == "Id"):
                raise ApiError(400, "INVALIDJOB", f"InvalidJob : Field {ext} is not an External ID field on {t.name}")
            ext = sfield.name
        with self._lock:
            job = _Job(
                self._new_id("750"),
                operation,
                t.name,
                "V2Ingest",
                float(request.version),
                now,
                delimiter,
                line_ending,
                external_id_field=ext if operation == "upsert" else None,
                modstamp=now,
            )
            self._jobs[job.id] = job
            return _json_response(200, job.info(self._default_user()))

    def _upload(self, request: _Request, job: _Job) -> _Response:
        if len(request.body) > MAX_UPLOAD_BYTES:
            raise ApiError(400, "CLIENTINPUTERROR", "ClientInputError : Request body exceeds the 150 MB limit")
        content_type = request.headers.get("Content-Type", "")
        if not content_type.lower().startswith("text/csv"):
            raise ApiError(
                400,
                "INVALIDBATCH",
                f"InvalidBatch : Content type {content_type or '(none)'} is not supported, use text/csv",
            )
        try:
            text = request.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(400, "CLIENTINPUTERROR", "ClientInputError : CSV data must be UTF-8") from None
        with self._lock:
            if job.state != "Open":
                raise ApiError(409, "INVALIDJOBSTATE", f"Can not upload data when job state is {job.state}")
            job.uploads.append(text)
        return _Response(201)

    def _patch_job(self, request: _Request, job: _Job) -> _Response:
        body = request.json()
        target = body.get("state") if isinstance(body, dict) else None
        with self._lock:
            current = job.state
            if target == "UploadComplete" and job.job_type == "V2Ingest":
                if current != "Open":
                    raise ApiError(
                        409, "INVALIDJOBSTATE", f"Invalid job state transition from {current} to UploadComplete"
                    )
                job.state = "UploadComplete"
                job.upload_complete_at = time.monotonic()
            elif target == "Aborted":
                if current in _TERMINAL:
                    raise ApiError(409, "INVALIDJOBSTATE", f"Invalid job state transition from {current} to Aborted")
                job.state = "Aborted"
            else:
                raise ApiError(400, "INVALIDJOBSTATE", f"Invalid job state: {target}")
            job.modstamp = format_datetime(datetime.now(UTC))
            info = job.info(self._default_user())
        if target == "UploadComplete":
            self._start_processing(job, None)
        return _json_response(200, info)

    def _start_processing(self, job: _Job, query: SoqlQuery | None) -> None:
        job.upload_complete_at = job.upload_complete_at or time.monotonic()
        faults = self.faults()
        target = self._run_query_job if query is not None else self._run_ingest_job
        args = (job, query) if query is not None else (job, faults)
        threading.Thread(target=target, args=args, name=f"bulk-{job.id}", daemon=True).start()

    def _finish(self, job: _Job, state: str, error: str | None = None) -> None:
        remaining = self.bulk_processing_seconds - (time.monotonic() - job.upload_complete_at)
        if remaining > 0:
            time.sleep(remaining)
        with self._lock:
            if job.state == "Aborted":
                return
            job.state = state
            job.error_message = error
            job.processing_ms = int((time.monotonic() - job.upload_complete_at) * 1000)
            job.modstamp = format_datetime(datetime.now(UTC))

    def _run_query_job(self, job: _Job, query: SoqlQuery) -> None:
        with self._lock:
            job.state = "InProgress"
            source = list(self._records[query.obj.name].values())
            if job.operation == "queryAll":
                source += list(self._deleted[query.obj.name].values())
            rows = query.run(source)
            types = [query.obj.by_name[n].type for n in query.select]
            job.header = list(query.select)
            job.query_rows = [
                [_bulk_cell(r.get(n), kind) for n, kind in zip(query.select, types, strict=True)] for r in rows
            ]
            job.processed = len(rows)
        self._finish(job, "JobComplete")

    def _run_ingest_job(self, job: _Job, faults: Faults) -> None:
        try:
            self._process_ingest(job, faults)
        except Exception as exc:  # a job must end in a state the client can see
            traceback.print_exc(file=sys.stderr)
            self._finish(job, "Failed", f"InternalServerError : {exc}")

    def _process_ingest(self, job: _Job, faults: Faults) -> None:
        with self._lock:
            if job.state != "UploadComplete":
                return
            job.state = "InProgress"
            uploads = list(job.uploads)
        if not uploads:
            self._finish(job, "Failed", "InvalidBatch : No data was uploaded for this job")
            return
        t = OBJECTS[job.object]
        delimiter = _DELIMITERS[job.column_delimiter]
        parsed: list[tuple[list[str], list[list[str]]]] = []
        for text in uploads:
            first_line_end = text.find("\n")
            if first_line_end > 0:
                has_cr = text[first_line_end - 1] == "\r"
                if has_cr != (job.line_ending == "CRLF"):
                    self._finish(
                        job,
                        "Failed",
                        f"ClientInputError : LineEnding is invalid on user data. Current "
                        f"LineEnding setting is {job.line_ending}",
                    )
                    return
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
            header = next(reader, None)
            if not header:
                self._finish(job, "Failed", "InvalidBatch : Empty CSV data")
                return
            for name in header:
                if t.field(name.strip()) is None:
                    self._finish(job, "Failed", f"InvalidBatch : Field name not found : {name}")
                    return
            parsed.append((header, [row for row in reader if row]))
        with self._lock:
            job.header = parsed[0][0]
        rng = random.Random(f"{faults.seed}:job:{job.id}")
        record_faults = _RecordFaults(faults, rng)
        for header, rows in parsed:
            fields_ = [t.field(name.strip()) for name in header]
            for start in range(0, len(rows), 200):
                with self._lock:
                    if job.state == "Aborted":
                        job.unprocessed.extend(rows[start:])
                        break
                    self._ingest_chunk(
                        job,
                        t,
                        fields_,
                        header,
                        rows[start : start + 200],  # type: ignore[arg-type]
                        record_faults,
                    )
        self._finish(job, "JobComplete")

    def _ingest_chunk(
        self,
        job: _Job,
        t: SObjectType,
        fields_: list[SField],
        header: list[str],
        chunk: list[list[str]],
        record_faults: _RecordFaults,
    ) -> None:
        now = format_datetime(datetime.now(UTC))
        operation = job.operation
        ext = job.external_id_field
        width = len(header)
        seen_ext: dict[str, int] = {}
        if operation == "upsert" and ext and ext != "Id":
            position = next((i for i, f in enumerate(fields_) if f.name == ext), None)
            if position is not None:
                for row in chunk:
                    if position < len(row) and row[position]:
                        seen_ext[row[position]] = seen_ext.get(row[position], 0) + 1
        for row in chunk:
            raw = row + [""] * (width - len(row)) if len(row) < width else row
            rid = ""
            try:
                if len(row) > width:
                    raise RecordError("INVALID_FIELD", f"Row has {len(row)} columns, the header has {width}")
                values: dict[str, Any] = {}
                for sfield, cell in zip(fields_, raw, strict=False):
                    if cell == "":
                        continue  # Bulk API: empty leaves the field unchanged
                    values[sfield.name] = None if cell == "#N/A" else convert_csv_value(sfield, cell)
                if operation in ("delete", "hardDelete"):
                    given = values.get("Id")
                    if not given:
                        raise RecordError("MISSING_ARGUMENT", "Id not specified in a delete call", ["Id"])
                    normalized = normalize_id(given)
                    rid = given
                    if normalized is None or normalized[:3] != t.key_prefix:
                        raise RecordError("MALFORMED_ID", f"malformed id {given}", ["Id"])
                    rid = normalized
                    record_faults.check()
                    self._delete(t, normalized, [], hard=operation == "hardDelete")
                    created = False
                elif operation == "insert":
                    if values.get("Id"):
                        raise RecordError(
                            "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
                        )
                    values.pop("Id", None)
                    record_faults.check()
                    rid = self._insert(t, values, now, [])
                    created = True
                elif operation == "update":
                    given = values.pop("Id", None)
                    if not given:
                        raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                    normalized = normalize_id(given)
                    rid = given
                    if normalized is None or normalized[:3] != t.key_prefix:
                        raise RecordError("MALFORMED_ID", f"{t.name} ID: id value of incorrect type: {given}", ["Id"])
                    rid = normalized
                    record_faults.check()
                    self._update(t, normalized, values, now, [])
                    created = False
                else:
                    key = values.get(ext) if ext != "Id" else values.pop("Id", None)  # type: ignore[arg-type]
                    if ext != "Id" and key is None:
                        raise RecordError("MISSING_ARGUMENT", f"{ext} not specified", [ext])  # type: ignore[list-item]
                    if key in seen_ext and seen_ext[key] > 1:
                        raise RecordError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {key}", [ext])  # type: ignore[list-item]
                    record_faults.check()
                    rid, created = self._upsert(t, ext, key, values, now, [])  # type: ignore[arg-type]
                job.successful.append([rid, "true" if created else "false", *raw])
            except RecordError as exc:
                job.failed += 1
                job.failed_rows.append([rid, exc.bulk_error(), *raw])
            job.processed += 1

    def _ingest_results(self, job: _Job, kind: str) -> _Response:
        delimiter = _DELIMITERS[job.column_delimiter]
        terminator = "\r\n" if job.line_ending == "CRLF" else "\n"
        buffer = io.StringIO()
        with self._lock:
            header = list(job.header)
            if kind == "successfulresults":
                prefix, rows = ['"sf__Id"', '"sf__Created"'], list(job.successful)
            elif kind == "failedresults":
                prefix, rows = ['"sf__Id"', '"sf__Error"'], list(job.failed_rows)
            else:
                prefix, rows = [], list(job.unprocessed)
                if job.state == "Aborted" or job.state == "Failed":
                    # Rows never handed to processing count as unprocessed too.
                    for text in job.uploads if job.processed == 0 else []:
                        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                        header = next(reader, header)
                        rows.extend(r for r in reader if r)
        plain_header = io.StringIO()
        csv.writer(plain_header, delimiter=delimiter, lineterminator="").writerow(header)
        buffer.write(delimiter.join([*prefix, plain_header.getvalue()] if header else prefix) + terminator)
        csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=csv.QUOTE_ALL).writerows(rows)
        return _Response(200, buffer.getvalue().encode(), "text/csv")

    def _query_results(self, request: _Request, job: _Job) -> _Response:
        with self._lock:
            if job.state != "JobComplete":
                raise ApiError(400, "INVALIDJOBSTATE", f"Cannot get results when job state is {job.state}")
            rows = job.query_rows
            header = job.header
        try:
            max_records = int(request.param("maxRecords") or 50_000)
            offset = int(request.param("locator") or 0)
        except ValueError:
            raise ApiError(400, "INVALIDLOCATOR", "Invalid locator or maxRecords") from None
        page = rows[offset : offset + max_records]
        next_offset = offset + max_records
        delimiter = _DELIMITERS[job.column_delimiter]
        terminator = "\r\n" if job.line_ending == "CRLF" else "\n"
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator, quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(page)
        headers = {
            "Sforce-Locator": str(next_offset) if next_offset < len(rows) else "null",
            "Sforce-NumberOfRecords": str(len(page)),
        }
        return _Response(200, buffer.getvalue().encode(), "text/csv", headers)


def _bulk_cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "datetime":
        return value[:23] + "Z"
    return str(value)


# --------------------------------------------------------------------------------------------------------------------
# CLI


def load_seed_file(path: Path) -> list[dict[str, Any]]:
    """Contacts to seed: a JSON list of objects, or a CSV whose header names Contact fields."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return data
    return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(io.StringIO(text))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.salesforce", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--faults", help='JSON, e.g. \'{"rate_lock": 0.05, "seed": 7}\'')
    parser.add_argument("--seed-contacts", type=Path, help="JSON list or CSV of Contact records to preload")
    parser.add_argument("--bulk-processing-seconds", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        faults = json.loads(args.faults) if args.faults else None
        emulator = SalesforceEmulator(
            args.host,
            args.port,
            faults=faults,
            state_file=args.state_file,
            bulk_processing_seconds=args.bulk_processing_seconds,
        )
    except (ValueError, TypeError) as exc:
        print(f"salesforce emulator: invalid option: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    if args.seed_contacts:
        try:
            emulator.seed_records("Contact", load_seed_file(args.seed_contacts))
        except (OSError, ValueError) as exc:
            print(f"salesforce emulator: cannot seed contacts: {exc}", file=sys.stderr)
            emulator.stop()
            return 2
    print(f"salesforce emulator listening on {emulator.url}", flush=True)
    while not stop.wait(0.5):
        pass
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
