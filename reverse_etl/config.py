"""The declared syncs (reverse_etl/syncs.yml): loaded, validated, and turned into gate 4's SyncSpec.

A sync is configuration, not code: a source model in dbt_project/models/activation/, a destination and object, a
mode, a match key, a field mapping {destination_field: source_column}, a cron schedule and destination options.
Every problem is reported with the file, the sync, the key and what is allowed, all at once.

The destination catalogues (the fields of each object, their types, lengths and kinds) are data here, so that the
syncs can be validated and gate 4 can run before the destinations exist; a destination's `fields(object)` returns
the same catalogue (reverse_etl/base.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestration.quality.gate_4 import (
    SALESFORCE_CONTACT_FIELDS,
    DestinationField,
    SyncSpec,
    catalogue,
    mapping_outcomes,
)
from reverse_etl.base import MODES, Mode

SYNCS_PATH = Path(__file__).with_name("syncs.yml")
ACTIVATION_DIR = Path(__file__).resolve().parents[1] / "dbt_project" / "models" / "activation"
ACTIVATION_SCHEMA = "activation"  # the schema (dataset) the activation models are built in

# ----------------------------------------------------------------------------------------------------------------
# Catalogues: {destination: {object: {field: DestinationField}}}

# The CDP's consent fields on Salesforce Contacts and Leads: custom text fields (length 20) holding the status of
# gold.consent_current (opted_in, implied, opted_out, unknown), so that admissions sees why a person may or may not
# be contacted, not only a checkbox.
SALESFORCE_CONSENT_FIELDS: dict[str, DestinationField] = catalogue(
    DestinationField("CDP_Email_Consent__c", "string", 20, kind="other"),
    DestinationField("CDP_WhatsApp_Consent__c", "string", 20, kind="other"),
    DestinationField("CDP_SMS_Consent__c", "string", 20, kind="other"),
)

# Salesforce Contact: gate 4's catalogue plus the consent fields.
SALESFORCE_CONTACT_SYNC_FIELDS: dict[str, DestinationField] = {**SALESFORCE_CONTACT_FIELDS, **SALESFORCE_CONSENT_FIELDS}

# Salesforce Lead: the Contact fields a Lead shares (same API names and lengths), the Lead's own required Company
# and LeadSource, and the CDP's consent fields. No declared sync writes Leads yet; the destination supports them.
_LEAD_SHARED = ("FirstName", "LastName", "Title", "Email", "Phone", "MobilePhone", "HasOptedOutOfEmail", "DoNotCall",
                "CDP_Profile_Id__c", "CDP_Lifecycle_Stage__c", "CDP_Engagement_Score__c", "CDP_Segments__c",
                "CDP_Last_Seen_At__c")
SALESFORCE_LEAD_FIELDS: dict[str, DestinationField] = {
    **{name: SALESFORCE_CONTACT_FIELDS[name] for name in _LEAD_SHARED},
    **catalogue(
        DestinationField("Company", "string", 255, required=True, kind="other"),
        DestinationField("LeadSource", "string", 255, kind="other"),
    ),
    **SALESFORCE_CONSENT_FIELDS,
}

# Twilio Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json). `IdempotencyKey` is no Twilio parameter:
# it is the sync's key, which the twilio destination uses to never send one message twice (the insert-mode
# contract in base.py). To is E.164 (the destination adds the `whatsapp:` prefix); From comes from
# TWILIO_FROM_WHATSAPP; ContentSid (an approved WhatsApp template) from the sync's options. The last four are not
# sent either: the destination checks them before sending (reverse_etl/destinations/twilio.py): the profile (the
# frequency cap and the send key), the consent status the payload carries (re-checked: defence in depth), and where
# the profile lives (quiet hours in its local time: an IANA zone, else the country).
TWILIO_MESSAGE_FIELDS: dict[str, DestinationField] = catalogue(
    DestinationField("IdempotencyKey", "string", 64, required=True, kind="identifier"),
    DestinationField("To", "phone", 16, required=True, kind="contact"),
    DestinationField("Body", "string", 1600, kind="free_text"),
    DestinationField("ContentSid", "string", 34, kind="other"),
    DestinationField("ContentVariables", "string", 1600, kind="other"),
    DestinationField("ProfileId", "string", 64, kind="identifier"),
    DestinationField("Consent", "string", 20, kind="other"),
    DestinationField("Timezone", "string", 64, kind="other"),
    DestinationField("Country", "string", 64, kind="other"),
)

# SendGrid Marketing Contacts (PUT /v3/marketing/contacts, list membership by list id). One record per contact and
# list: `membership_id` is the sync's key (not a SendGrid field); the email destination adds the contact (matched
# by email, external_id = the CDP profile id) to the list named `list_name` (created if missing, named with the
# sync's options) and returns "list_id/contact_id" as destination_id, so that a delete removes it from that list.
# `email_consent` is not sent: the destination re-checks it (defence in depth). Lengths are SendGrid's reserved-field
# limits. A sync's `options.custom_fields` ({name: Text | Number | Date}) adds SendGrid custom fields (created on
# demand by the destination) to this catalogue for that sync.
EMAIL_CONTACT_FIELDS: dict[str, DestinationField] = catalogue(
    DestinationField("membership_id", "string", 100, required=True, kind="identifier"),
    DestinationField("email", "email", 254, required=True, kind="contact"),
    DestinationField("first_name", "string", 50, kind="name"),
    DestinationField("last_name", "string", 50, kind="name"),
    DestinationField("external_id", "string", 254, kind="identifier"),
    DestinationField("list_name", "string", 100, required=True, kind="other"),
    DestinationField("email_consent", "string", 20, kind="other"),
)
# SendGrid's custom field types -> gate 4's field types.
EMAIL_CUSTOM_FIELD_TYPES: dict[str, str] = {"Text": "string", "Number": "number", "Date": "date"}
_CUSTOM_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")

CATALOGUES: dict[str, dict[str, dict[str, DestinationField]]] = {
    "salesforce": {"Contact": SALESFORCE_CONTACT_SYNC_FIELDS, "Lead": SALESFORCE_LEAD_FIELDS},
    "twilio": {"Message": TWILIO_MESSAGE_FIELDS},
    "email": {"contacts": EMAIL_CONTACT_FIELDS},
}


def custom_field_problems(destination: str, options: Any) -> list[str]:
    """What is wrong with `options.custom_fields` of a sync (only email syncs may declare custom fields)."""
    raw = options.get("custom_fields") if isinstance(options, dict) else None
    if raw is None:
        return []
    if destination != "email":
        return [f"custom_fields: only email syncs declare custom fields, not {destination}"]
    if not isinstance(raw, dict):
        return [f"custom_fields: expected {{field name: {' | '.join(EMAIL_CUSTOM_FIELD_TYPES)}}}"]
    problems = []
    for name, kind in raw.items():
        if not isinstance(name, str) or not _CUSTOM_FIELD_NAME.match(name):
            problems.append(f"custom_fields: {name!r} is not a field name (letters, digits, _; not starting with a "
                            "digit; at most 100)")
        elif name in EMAIL_CONTACT_FIELDS:
            problems.append(f"custom_fields: {name} is a field of email contacts already")
        if kind not in EMAIL_CUSTOM_FIELD_TYPES:
            problems.append(f"custom_fields: {name}: type {kind!r} is not one of {', '.join(EMAIL_CUSTOM_FIELD_TYPES)}")
    return problems


def sync_fields(destination: str, object: str, options: dict[str, Any] | None = None) -> dict[str, DestinationField]:
    """The catalogue of `destination` `object` for one sync: the object's fields, plus the custom fields its options
    declare (email: options.custom_fields; ignored when malformed, which load_syncs reports)."""
    fields = CATALOGUES.get(destination, {}).get(object, {})
    options = options or {}
    if destination != "email" or not options.get("custom_fields") or custom_field_problems(destination, options):
        return fields
    custom = [DestinationField(name, EMAIL_CUSTOM_FIELD_TYPES[kind], kind="other")  # type: ignore[arg-type]
              for name, kind in options["custom_fields"].items()]
    return {**fields, **catalogue(*custom)}

# What each destination can do: messages cannot be updated or recalled; list membership can be mirrored.
DESTINATION_MODES: dict[str, tuple[str, ...]] = {
    "salesforce": ("upsert", "mirror", "insert"),
    "twilio": ("insert",),
    "email": ("upsert", "mirror"),
}

DEFAULT_MAX_RECORD_ATTEMPTS = 5


def last_sync_path(home: Path) -> Path:
    """Gate 4's baseline (row counts of the last successful run per sync), beside the other gates' state."""
    return home / "var" / "quality" / "gate_4_last_sync.json"


def gate_docs_dir(home: Path, sync_name: str) -> Path:
    """Where gate 4 writes its Great Expectations data docs for one sync."""
    return home / "var" / "quality" / "docs" / f"gate_4_{sync_name}"


class SyncConfigError(ValueError):
    """The syncs file is wrong; the message lists every problem (file, sync, key, what is allowed)."""


@dataclass(frozen=True)
class SyncConfig:
    """One declared sync."""

    name: str
    model: str  # the dbt model (dbt_project/models/activation/<model>.sql)
    destination: str  # salesforce | twilio | email
    object: str  # Contact, Message, contacts...
    mode: Mode  # upsert | mirror | insert
    match_key: str  # the destination field that identifies a record
    mapping: dict[str, str]  # {destination_field: source_column}
    schedule: str  # cron (UTC), used by Dagster
    batch_size: int | None = None  # at most the destination's max batch
    options: dict[str, Any] = field(default_factory=dict)  # destination-specific
    description: str = ""
    owner: str = ""
    daily_api_calls: int | None = None  # the destination's budget (the `destinations:` block), None: unlimited
    max_record_attempts: int = DEFAULT_MAX_RECORD_ATTEMPTS  # runs that retry a refused row before it waits
    relation: str = ""  # the table the sync reads; default activation.<model>

    def __post_init__(self) -> None:
        if not self.relation:
            object.__setattr__(self, "relation", f"{ACTIVATION_SCHEMA}.{self.model}")

    @property
    def key_column(self) -> str:
        """The source column holding the match key (the state table's key)."""
        return self.mapping[self.match_key]

    @property
    def fields(self) -> dict[str, DestinationField]:
        """The catalogue of the sync's object, with the custom fields its options declare."""
        return sync_fields(self.destination, self.object, self.options)

    def spec(self, fields: dict[str, DestinationField] | None = None) -> SyncSpec:
        """Gate 4's view of the sync; `fields` overrides the catalogue (a destination's own `fields(object)`)."""
        return SyncSpec(
            name=self.name,
            destination=self.destination,
            object=self.object,
            match_key=self.match_key,
            mapping=dict(self.mapping),
            fields=dict(self.fields if fields is None else fields),
        )


# ----------------------------------------------------------------------------------------------------------------
# Loading and validation

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SYNC_KEYS = {
    "name": "required",
    "model": "required",
    "destination": "required",
    "object": "required",
    "mode": "required",
    "match_key": "required",
    "key": "optional: the source column of the match key (must be the column mapped to match_key)",
    "mapping": "required",
    "schedule": "required",
    "batch_size": "optional",
    "options": "optional",
    "description": "optional",
    "owner": "optional",
    "max_record_attempts": "optional",
}
DESTINATION_KEYS = ("daily_api_calls",)

_CRON_ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
_CRON_FIELDS = (  # name, low, high, names
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def cron_problem(expression: str) -> str | None:
    """None when `expression` is a 5-field cron (or an @alias) Dagster accepts; else what is wrong."""
    text = expression.strip().lower()
    if text in _CRON_ALIASES:
        return None
    parts = text.split()
    if len(parts) != 5:
        return f"{expression!r} has {len(parts)} fields; a cron has 5 (minute hour day-of-month month day-of-week)"
    for part, (label, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            base, _, step = item.partition("/")
            if step and not step.isdigit():
                return f"{expression!r}: step {step!r} of the {label} is not a number"
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2:
                return f"{expression!r}: {item!r} is not a {label} value or range"
            for bound in bounds:
                value = names.index(bound) + (low if label == "month" else 0) if bound in names else None
                if value is None and not bound.isdigit():
                    return f"{expression!r}: {bound!r} is not a {label} ({low}-{high})"
                value = int(bound) if value is None else value
                if not low <= value <= high:
                    return f"{expression!r}: {label} {value} is outside {low}-{high}"
    return None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_syncs(path: Path | str | None = None, *, check_models: bool = True) -> dict[str, SyncConfig]:
    """Every sync of the file (default reverse_etl/syncs.yml) by name; SyncConfigError lists every problem.

    `check_models`: also require dbt_project/models/activation/<model>.sql to exist.
    """
    path = Path(path) if path is not None else SYNCS_PATH
    label = _relative(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SyncConfigError(f"{label}: file not found") from None
    except yaml.YAMLError as error:
        raise SyncConfigError(f"{label}: not valid YAML: {error}") from None
    return parse_syncs(document, label, check_models=check_models)


def parse_syncs(document: Any, label: str = "syncs.yml", *, check_models: bool = True) -> dict[str, SyncConfig]:
    """Validate a parsed syncs document (see load_syncs)."""
    problems: list[str] = []
    if not isinstance(document, dict):
        raise SyncConfigError(f"{label}: expected a mapping with `syncs:` (a list) and `destinations:`")
    unknown = sorted(set(document) - {"syncs", "destinations"})
    if unknown:
        problems.append(
            f"{label}: unknown top-level key(s) {', '.join(map(str, unknown))}; allowed: syncs, destinations"
        )

    budgets: dict[str, int | None] = {}
    destinations = document.get("destinations") or {}
    if not isinstance(destinations, dict):
        problems.append(f"{label}: destinations: expected a mapping {{destination: {{daily_api_calls: N}}}}")
        destinations = {}
    for name, settings in destinations.items():
        where = f"{label}: destinations: {name}"
        if name not in CATALOGUES:
            problems.append(f"{where}: unknown destination; allowed: {', '.join(CATALOGUES)}")
            continue
        settings = settings or {}
        if not isinstance(settings, dict):
            problems.append(f"{where}: expected a mapping with {', '.join(DESTINATION_KEYS)}")
            continue
        for key in sorted(set(settings) - set(DESTINATION_KEYS)):
            problems.append(f"{where}: unknown key {key}; allowed: {', '.join(DESTINATION_KEYS)}")
        limit = settings.get("daily_api_calls")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            problems.append(f"{where}: daily_api_calls: {limit!r} is not a whole number >= 0 (or null: no limit)")
        else:
            budgets[name] = limit

    raw_syncs = document.get("syncs")
    if not isinstance(raw_syncs, list) or not raw_syncs:
        problems.append(f"{label}: syncs: expected a non-empty list of syncs")
        raw_syncs = []
    syncs: dict[str, SyncConfig] = {}
    for position, raw in enumerate(raw_syncs):
        sync, sync_problems = _parse_sync(raw, position, label, budgets, check_models)
        problems += sync_problems
        if sync is None:
            continue
        if sync.name in syncs:
            problems.append(f"{label}: sync {sync.name}: name: declared twice; sync names are unique")
            continue
        syncs[sync.name] = sync
    if problems:
        raise SyncConfigError("\n".join(problems))
    return syncs


def _parse_sync(
    raw: Any, position: int, label: str, budgets: dict[str, int | None], check_models: bool
) -> tuple[SyncConfig | None, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{label}: syncs[{position}]: expected a mapping with {', '.join(SYNC_KEYS)}"]
    name = raw.get("name")
    where = f"{label}: sync {name}" if isinstance(name, str) and name else f"{label}: syncs[{position}]"
    problems: list[str] = []

    def bad(key: str, text: str) -> None:
        problems.append(f"{where}: {key}: {text}")

    for key in sorted(set(raw) - set(SYNC_KEYS)):
        bad(str(key), f"unknown key; allowed: {', '.join(SYNC_KEYS)}")
    missing = [key for key, need in SYNC_KEYS.items() if need == "required" and raw.get(key) in (None, "", {})]
    for key in missing:
        bad(key, "required")
    if missing:
        return None, problems

    if not isinstance(name, str) or not _NAME.match(name):
        bad("name", f"{name!r}: use lower-case letters, digits and _ (it names the Dagster asset and files)")
    model = raw["model"]
    if not isinstance(model, str) or not _NAME.match(model):
        bad("model", f"{model!r} is not a dbt model name")
    elif check_models and not (ACTIVATION_DIR / f"{model}.sql").exists():
        bad("model", f"{model!r}: no dbt model {ACTIVATION_DIR.name}/{model}.sql (syncs read activation models)")
    destination = raw["destination"]
    if destination not in CATALOGUES:
        bad("destination", f"{destination!r} is not one of {', '.join(CATALOGUES)}")
        return None, problems
    objects = CATALOGUES[destination]
    object_name = raw["object"]
    if object_name not in objects:
        bad("object", f"{object_name!r} is not an object of {destination}; allowed: {', '.join(objects)}")
        return None, problems
    mode = raw["mode"]
    if mode not in MODES:
        bad("mode", f"{mode!r} is not one of {', '.join(MODES)}")
    elif mode not in DESTINATION_MODES[destination]:
        bad("mode", f"{destination} supports {', '.join(DESTINATION_MODES[destination])}, not {mode}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        bad("options", "expected a mapping of destination-specific settings")
        options = {}
    for text in custom_field_problems(destination, options):
        bad("options", text)
    fields = sync_fields(destination, object_name, options)
    mapping = raw["mapping"]
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        bad("mapping", "expected {destination_field: source_column} with text on both sides")
        return None, problems
    for destination_field, column in mapping.items():
        if not _COLUMN.match(column):
            bad("mapping", f"{destination_field}: {column!r} is not a column name")
    match_key = raw["match_key"]
    if match_key not in fields:
        bad("match_key", f"{match_key!r} is not a field of {destination} {object_name}; allowed: {', '.join(fields)}")
    key = raw.get("key")
    if key is not None and mapping.get(match_key) not in (None, key):
        bad("key", f"{key!r} differs from the column mapped to {match_key} ({mapping[match_key]!r})")
    spec_problems = [o.observed for o in mapping_outcomes(_probe_spec(name, destination, object_name, match_key,
                                                                       mapping, fields)) if not o.success]
    for text in spec_problems:
        bad("mapping", text)
    schedule = raw["schedule"]
    problem = cron_problem(schedule) if isinstance(schedule, str) else f"{schedule!r} is not a cron string"
    if problem:
        bad("schedule", problem)
    batch_size = raw.get("batch_size")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        bad("batch_size", f"{batch_size!r} is not a whole number >= 1")
    attempts = raw.get("max_record_attempts", DEFAULT_MAX_RECORD_ATTEMPTS)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        bad("max_record_attempts", f"{attempts!r} is not a whole number >= 1")
    for text_key in ("description", "owner"):
        if not isinstance(raw.get(text_key, ""), str):
            bad(text_key, "expected text")
    if problems:
        return None, problems
    return SyncConfig(
        name=name,
        model=model,
        destination=destination,
        object=object_name,
        mode=mode,
        match_key=match_key,
        mapping=dict(mapping),
        schedule=schedule,
        batch_size=batch_size,
        options=dict(options),
        description=raw.get("description", "").strip(),
        owner=raw.get("owner", ""),
        daily_api_calls=budgets.get(destination),
        max_record_attempts=attempts,
    ), []


def _probe_spec(name: Any, destination: str, object_name: str, match_key: str, mapping: dict[str, str],
                fields: dict[str, DestinationField]) -> SyncSpec:
    # SyncSpec checks the name itself; a bad name is reported above, so probe with a valid one
    safe = name if isinstance(name, str) and _NAME.match(name) else "sync"
    return SyncSpec(safe, destination, object_name, match_key, mapping, fields)
