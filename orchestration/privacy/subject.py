"""Who is to be forgotten: the identifier given, normalized as dbt normalizes it, resolved to the whole person.

identifier -> normalized (the rules of dbt_project/macros/normalize/, in Python) -> the profile(s) holding it
(gold.profile_identifiers, the identity components, and the retired ids of gold.profile_merges) -> every
identifier of those profiles, of every type -> the record_key of every warehouse row of the person (their events,
CRM contact versions, WhatsApp messages, email events) and the raw forms the identifiers were written in.

Matching data about the subject in raw text uses "forms": an email lower-cased; a phone as the digit strings it is
written with (E.164 digits, national with trunk prefix, national significant number); any other id lower-cased.
A JSON string value in a payload matches when one of its forms is one of the subject's (token_forms_sql): so
"Max@Example.com ", "0151 2345678" (German national) and "whatsapp:+49151 2345678" all match the subject
max@example.com / +491512345678. The suppression list stores the same forms, hashed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from typing import Any

from orchestration.settings import PROJECT_DIR

SUBJECT_KINDS = ("email", "phone", "profile_id")

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_PHONE_TOKEN = re.compile(r"\+?[0-9]{7,16}")
DEFAULT_CALLING_CODE = "49"  # var cdp__default_country_calling_code (dbt_project.yml)
MIN_PHONE_FORM = 7  # shorter digit strings (postal codes, years) are never phone forms


class SubjectError(ValueError):
    """The identifier given cannot be a subject (an email that is not an address, a phone that is not a number)."""


def normalize_email(value: str) -> str | None:
    """dbt's normalize_email: trimmed and lower-cased; None when it is not a plausible address."""
    candidate = value.strip().lower()
    return candidate if _EMAIL.fullmatch(candidate) else None


def phone_digits(value: str) -> str:
    """dbt's _phone_digits: prefixes, the national "(0)" and separators removed."""
    text = value.strip().lower().replace("whatsapp:", "").replace("tel:", "").replace("(0)", "")
    return re.sub(r"[ \-./()]", "", text)


def normalize_phone(value: str, calling_code: str = DEFAULT_CALLING_CODE, trunk_prefix: str = "0") -> str | None:
    """dbt's normalize_phone for a number without a known country (the default calling code, trunk prefix 0)."""
    digits = phone_digits(value)
    if digits.startswith("+"):
        candidate: str | None = digits
    elif digits.startswith("00"):
        candidate = "+" + digits[2:]
    elif trunk_prefix and digits.startswith(trunk_prefix):
        candidate = "+" + calling_code + digits[len(trunk_prefix):]
    elif not trunk_prefix:
        candidate = "+" + calling_code + digits
    else:
        candidate = None
    return candidate if candidate and _E164.fullmatch(candidate) else None


def normalize_identifier(kind: str, value: str) -> str:
    """The identifier as the warehouse holds it; raises SubjectError when it cannot be one."""
    if kind == "email":
        normalized = normalize_email(value)
    elif kind == "phone":
        normalized = normalize_phone(value)
    elif kind == "profile_id":
        normalized = value.strip() or None
    else:
        raise SubjectError(f"unknown subject kind {kind!r}: expected one of {', '.join(SUBJECT_KINDS)}")
    if normalized is None:
        raise SubjectError(f"{value!r} is not a valid {kind.replace('_', ' ')}")
    return normalized


def _calling_codes() -> dict[str, str]:
    """calling code -> trunk prefix, from the dbt seed (the one table of country rules)."""
    codes: dict[str, str] = {}
    with open(PROJECT_DIR / "dbt_project" / "seeds" / "country_calling_codes.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            codes.setdefault(row["calling_code"], row["trunk_prefix"] or "")
    return codes


def phone_forms(e164: str) -> set[str]:
    """The digit strings an E.164 number is written with: international, national (trunk prefix + national
    significant number) and the national significant number alone (countries without a trunk prefix)."""
    digits = e164.lstrip("+")
    forms = {digits}
    codes = _calling_codes()
    for length in (3, 2, 1):  # calling codes are prefix-free: the longest known prefix is the country
        code = digits[:length]
        if code in codes:
            national = digits[length:]
            forms.update({national, codes[code] + national})
            break
    return {form for form in forms if len(form) >= MIN_PHONE_FORM}


def identifier_forms(identifier_type: str, value: str) -> set[str]:
    """The forms of one identifier (see the module docstring)."""
    if identifier_type == "phone" or (identifier_type != "email" and _E164.fullmatch(value)):
        return phone_forms(value)
    return {value.strip().lower()} if value.strip() else set()


def token_forms(token: str) -> set[str]:
    """The forms of a string found in a payload (the Python twin of token_forms_sql, for tests and small inputs)."""
    forms = {token.strip().lower()}
    digits = phone_digits(token)
    if _PHONE_TOKEN.fullmatch(digits):
        digits = digits.lstrip("+")
        forms.add(digits[2:] if digits.startswith("00") else digits)
    return {form for form in forms if form}


def token_forms_sql(token: str) -> tuple[str, str]:
    """DuckDB expressions for the two forms of a payload string `token`: lower-cased, and its phone digits (null
    when it is not phone-like). Same rules as token_forms."""
    digits = (
        f"regexp_replace(replace(replace(replace(lower(trim({token})), 'whatsapp:', ''), 'tel:', ''), '(0)', ''), "
        f"'[ ./()-]', '', 'g')"
    )
    phone = (
        f"case when regexp_full_match({digits}, '\\+?[0-9]{{7,16}}') then "
        f"regexp_replace(ltrim({digits}, '+'), '^00', '') end"
    )
    return f"lower(trim({token}))", phone


# Where landed payloads carry identifiers (docs/sources.md): web, app, salesforce (MobilePhone is the identity phone;
# `Phone` is often a shared office line, as in silver), email, whatsapp. Absent paths are null.
PAYLOAD_IDENTIFIER_PATHS = (
    "$.anonymous_id", "$.traits.email", "$.traits.phone",
    "$.device_id", "$.user_id", "$.properties.email",
    "$.Id", "$.Email", "$.MobilePhone",
    "$.email",
    "$.From", "$.WaId",
)
# A payload that is not a JSON object (truncated JSON, a CSV row of the wrong width) is searched string by string.
PAYLOAD_STRINGS_REGEX = r'"([^"\\]{4,200})"'


def payload_match_sql(relation: str, wanted: str, *, salt: str | None = None) -> str:
    """SQL selecting `row_key, form` for the rows of `relation` (columns row_key, payload) whose identifier fields
    hold a value with a form in `wanted` (a relation with a column `form`: the forms, or their salted SHA-256
    when `salt` is given). One JSON parse per payload and a few values per record: 1M payloads in about 1.5 s."""
    lowered, digits = token_forms_sql("token")
    paths = "[" + ", ".join(f"'{path}'" for path in PAYLOAD_IDENTIFIER_PATHS) + "]"

    def keyed(expr: str) -> str:
        return expr if salt is None else "sha256('" + salt.replace("'", "''") + "' || " + expr + ")"

    return f"""
        with payloads as (
            select
                row_key,
                payload,
                case when json_valid(payload) then json_type(payload) = 'OBJECT' else false end as is_object
            from {relation}
        ),
        strings as (
            select
                row_key,
                unnest(case
                    when is_object then json_extract_string(payload, {paths})
                    else regexp_extract_all(payload, '{PAYLOAD_STRINGS_REGEX}', 1)
                end) as token
            from payloads
        ),
        forms as (
            select row_key, {keyed(lowered)} as form from strings where token is not null
            union all
            select row_key, {keyed(digits)} as form from strings where {digits} is not null
        )
        select distinct forms.row_key, forms.form
        from forms
        semi join {wanted} as wanted on wanted.form = forms.form
    """


_WORD = "A-Za-z0-9_.\\-"  # characters that continue an identifier: a match must not be part of a longer one


def text_match_sql(expr: str, values: set[str]) -> str:
    """SQL true when the text `expr` contains one of `values` as a whole word (so ax@x.org does not match inside
    max@x.org): a cheap contains() first, the bounded regular expression only on the rows it lets through."""
    if not values:
        return "false"
    ordered = sorted(values)
    contains = " or ".join(f"contains({expr}, {_literal(v)})" for v in ordered)
    alternation = "|".join(_regex_escape(v) for v in ordered)
    pattern = f"(?:^|[^{_WORD}])(?:{alternation})(?:$|[^{_WORD}])"
    return f"(({contains}) and regexp_matches({expr}, {_literal(pattern)}))"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _regex_escape(value: str) -> str:
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", value)


@dataclass
class Subject:
    """A resolved subject. Holds raw identifiers: it lives only while the erasure job runs (never persisted)."""

    kind: str
    given: str
    normalized: str
    profile_ids: set[str] = field(default_factory=set)
    identifiers: set[tuple[str, str]] = field(default_factory=set)  # (identifier_type, identifier_value)
    record_keys: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    raw_forms: set[str] = field(default_factory=set)  # identifiers as written in the records (case, spaces...)

    @property
    def has_profile(self) -> bool:
        return bool(self.profile_ids)

    @property
    def identifier_keys(self) -> set[str]:
        return {f"{kind}:{value}" for kind, value in self.identifiers}

    def values(self) -> set[str]:
        """Every identifier string to look for in text: normalized values, raw forms, a phone's digits."""
        values = {value for _, value in self.identifiers} | {v for v in self.raw_forms if v.strip()}
        if self.kind != "profile_id":
            values.add(self.given.strip())
        values |= {value.lstrip("+") for kind, value in self.identifiers if kind == "phone"}
        return {value for value in values if len(value) >= 4}

    def forms(self) -> set[str]:
        """Every form of every identifier (see the module docstring)."""
        forms: set[str] = set()
        for kind, value in self.identifiers:
            forms |= identifier_forms(kind, value)
        for raw in self.raw_forms:
            forms |= token_forms(raw)
        if self.kind != "profile_id":
            forms |= token_forms(self.given)
        return {form for form in forms if len(form) >= 4}

    def exact_strings(self) -> set[str]:
        """Values that identify the subject's rows when a column equals them: keys, profile and event ids."""
        return self.identifier_keys | self.profile_ids | self.record_keys | self.event_ids

    def summary(self) -> dict[str, Any]:
        """What the audit may say: counts and pseudonymous ids, no raw identifier."""
        kinds: dict[str, int] = {}
        for kind, _ in self.identifiers:
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "profile_ids": sorted(self.profile_ids),
            "identifiers_by_type": dict(sorted(kinds.items())),
            "records": len(self.record_keys),
            "resolution": "profile" if self.has_profile else "no profile",
        }


def _tables(con: Any) -> set[str]:
    rows = con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = current_database()"
    ).fetchall()
    return {row[0] for row in rows}


def _in_list(values: set[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values)) + ")" if values else "(NULL)"


def resolve_subject(con: Any, kind: str, given: str) -> Subject:
    """The whole person behind `given`, looked up in the warehouse `con` (a DuckDB connection). An identifier that
    no profile holds still makes a subject: its raw forms are erased wherever they are (quarantine, landing)."""
    subject = Subject(kind, given, normalize_identifier(kind, given))
    tables = _tables(con)
    if kind == "profile_id":
        subject.profile_ids.add(subject.normalized)
    else:
        subject.identifiers.add((kind, subject.normalized))
        key = f"{kind}:{subject.normalized}"
        if "gold.profile_identifiers" in tables:
            subject.profile_ids |= {r[0] for r in con.execute(
                "select distinct profile_id from gold.profile_identifiers where identifier_key = ?", [key]).fetchall()}
        if "identity.int_identity__components" in tables:
            subject.profile_ids |= {r[0] for r in con.execute(
                "select distinct component_id from identity.int_identity__components "
                "where identifier_key = ? and component_id is not null", [key]).fetchall()}
    if subject.profile_ids and "gold.profile_merges" in tables:
        # a retired id leads to its survivor, and the survivor's retired ids are the same person's
        ids = _in_list(subject.profile_ids)
        subject.profile_ids |= {r[0] for r in con.execute(
            f"select surviving_profile_id from gold.profile_merges where retired_profile_id in {ids} "
            f"union select retired_profile_id from gold.profile_merges where surviving_profile_id in {ids}"
        ).fetchall()}
    if "gold.profiles" in tables and kind == "profile_id":
        known = {r[0] for r in con.execute(
            f"select profile_id from gold.profiles where profile_id in {_in_list(subject.profile_ids)}").fetchall()}
        if not known and not (subject.profile_ids - {subject.normalized}):
            subject.profile_ids.clear()  # an id that is no profile: nothing to resolve
    if subject.profile_ids:
        ids = _in_list(subject.profile_ids)
        if "gold.profile_identifiers" in tables:
            subject.identifiers |= set(con.execute(
                f"select distinct identifier_type, identifier_value from gold.profile_identifiers "
                f"where profile_id in {ids}").fetchall())
        if "identity.int_identity__components" in tables:
            subject.identifiers |= set(con.execute(
                f"select distinct identifier_type, identifier_value from identity.int_identity__components "
                f"where component_id in {ids}").fetchall())
            # the birth ids of the person's identifiers: component and history rows carry them
            subject.profile_ids |= {r[0] for r in con.execute(
                f"select distinct birth_profile_id from identity.int_identity__components "
                f"where identifier_key in {_in_list(subject.identifier_keys)}").fetchall()}
        if "gold.profile_events" in tables:
            for record_key, event_id in con.execute(
                f"select record_key, event_id from gold.profile_events where profile_id in {ids}"
            ).fetchall():
                subject.record_keys.add(record_key)
                if event_id:
                    subject.event_ids.add(event_id)
    _add_raw_forms(con, subject, tables)
    return subject


def _add_raw_forms(con: Any, subject: Subject, tables: set[str]) -> None:
    """The identifiers as written in the subject's records: for every table with a record_key and a pair of
    columns X / X_raw (email / email_raw, mobile_phone / mobile_phone_raw...), X_raw where X is the subject's."""
    if not subject.identifiers:
        return
    values = _in_list({value for _, value in subject.identifiers})
    columns = con.execute(
        "select table_schema || '.' || table_name, list(column_name) from information_schema.columns "
        "where table_catalog = current_database() and data_type = 'VARCHAR' group by all"
    ).fetchall()
    base = {r[0] for r in con.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        "where table_catalog = current_database() and table_type = 'BASE TABLE'").fetchall()}
    for table, names in columns:
        if table not in base or "record_key" not in names:
            continue
        pairs = [name for name in names if f"{name}_raw" in names]
        if not pairs:
            continue
        schema, name = table.split(".", 1)
        union = " union ".join(
            f'select "{col}_raw" from "{schema}"."{name}" where "{col}" in {values} and "{col}_raw" is not null'
            for col in pairs
        )
        subject.raw_forms |= {r[0] for r in con.execute(union).fetchall()}
