"""Quality gate 4 (before reverse ETL) as a Great Expectations suite kept as code.

A reverse-ETL sync pushes the rows of one source model (an `activation/` model) to one destination object
through a field mapping {destination_field: source_column}. The sync runner reads the frame it is about to
push (`read_sync_frame`), runs this gate on exactly that frame (`run_gate_4`) and pushes only when the gate
passed; a failed gate blocks the sync and the destination keeps the last good data ("stale but safe").
After a successful push the runner records the row count (`LastSyncStore.record_success`): the next gate
compares against it.

The gate checks three things:

- **Mapping valid**: every mapped destination field exists in the destination's catalogue, every required
  destination field and the match key are mapped (configuration errors, true whatever the data: computed in
  Python from the spec and reported as explicit outcomes, see `mapping_outcomes`), every mapped source column
  exists in the frame (ExpectColumnToExist), the match key's column is not null and unique, required fields
  are not null, and each value fits its destination field: numbers, booleans, dates and date-times by the
  text form the sync sends, emails and E.164 phones by pattern, text within the field's maximum length.
- **No PII in wrong fields**: no email address or phone number inside a field of kind `name` or
  `free_text` (a CRM user would see it where no consent or deletion process looks for it).
- **Row count** within ±20 % of the last *successful* sync: a model that suddenly lost or gained a fifth of
  its rows is more likely broken than right, and a `mirror` sync would delete the difference.

Great Expectations is imported only when a suite is built or run (the import costs ~3 s).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import duckdb
import pandas as pd

from orchestration.quality.gates import (
    ExpectationOutcome,
    GateResult,
    QualityGateError,
    _name,
    _named,
    _outcome,
    _quiet_gx,
    _validate,
)

if TYPE_CHECKING:
    import great_expectations as gx

GATE_4 = "gate_4"
FieldType = Literal["string", "number", "boolean", "date", "datetime", "email", "phone"]
FieldKind = Literal["identifier", "name", "free_text", "contact", "other"]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
FIELD_KINDS: tuple[str, ...] = get_args(FieldKind)
TEXT_TYPES = ("string", "email", "phone")  # the types a maximum length applies to
PII_KINDS = ("name", "free_text")  # where an email address or a phone number must not appear

ROW_COUNT_TOLERANCE = (4, 5, 6, 5)  # 80 % .. 120 % as integer fractions: 0.8 * n in floats is not exact

# Whole-value patterns. GE matches the text form of each non-null value (`astype(str)` + re.search), so
# they are anchored. EMAIL is silver's normalize_email rule, E164 its normalize_phone result (+, 8-15 digits).
EMAIL = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
E164 = r"^\+[1-9]\d{7,14}$"
NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"  # int, float and Decimal text forms; no nan/inf
BOOLEAN = r"^(True|False)$"  # the text form of bool and pandas boolean values
DATE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])( 00:00:00)?$"  # a DATE arrives as midnight datetime64
DATETIME = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([ T]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?$"
)
TYPE_PATTERNS = {
    "number": NUMBER, "boolean": BOOLEAN, "date": DATE, "datetime": DATETIME, "email": EMAIL, "phone": E164
}

# Patterns searched inside a name or free-text value.
EMAIL_IN_TEXT = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# A phone number inside text: 7-15 digits, single separators (space - . / parentheses) allowed between
# digits, written the ways people write phones: international ("+49 151 1234567", "0049 ..."), national
# with a trunk 0 ("0151 1234567", "(030) 123 4567"), North American 3-3-4 ("(555) 123-4567"), or a bare run
# of 11-15 digits (an E.164 number without its +). Years, small numbers and program codes ("MBA 2027",
# "2026/2027", "after 3pm") have too few digits or do not start like a phone; dates ("01.03.2026") are
# excluded explicitly because they start with 0 and have 8 digits.
_SEP = r"[ ./()-]?"
PHONE_IN_TEXT = (
    r"(?<![\w+])"  # starts a token: not inside a word or another number
    r"(?!\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(?!\d))"  # not a date
    r"(?:"
    rf"(\+|00)\s?\(?[1-9](?:{_SEP}\(?\d\)?){{6,14}}"  # international
    rf"|\(?0\)?[1-9](?:{_SEP}\(?\d\)?){{5,13}}"  # national, trunk prefix 0
    r"|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}(?!\d)"  # North American
    r"|\d{11,15}(?!\d)"  # E.164 digits without the +
    r")"
)


# ----------------------------------------------------------------------------------------------------------------
# Sync configuration


@dataclass(frozen=True)
class DestinationField:
    """One field of a destination object, as the destination's schema describes it."""

    name: str
    type: FieldType
    max_length: int | None = None  # characters; None: no limit (numbers, booleans, dates)
    required: bool = False  # the destination rejects a record without it
    kind: FieldKind = "other"  # what the field holds: where PII may or may not appear

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise ValueError(f"destination field {self.name}: type {self.type!r} is not one of {FIELD_TYPES}")
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"destination field {self.name}: kind {self.kind!r} is not one of {FIELD_KINDS}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"destination field {self.name}: max_length must be positive")


def catalogue(*fields: DestinationField) -> dict[str, DestinationField]:
    """A destination object's fields by name."""
    return {field.name: field for field in fields}


# The Salesforce Contact fields a CDP sync writes: standard fields with their API lengths, plus the CDP's
# custom fields (CDP_Profile_Id__c is the external id the sync upserts by).
SALESFORCE_CONTACT_FIELDS: dict[str, DestinationField] = catalogue(
    DestinationField("Salutation", "string", 40, kind="other"),
    DestinationField("FirstName", "string", 40, kind="name"),
    DestinationField("MiddleName", "string", 40, kind="name"),
    DestinationField("LastName", "string", 80, required=True, kind="name"),
    DestinationField("Title", "string", 128, kind="free_text"),
    DestinationField("Department", "string", 80, kind="free_text"),
    DestinationField("Email", "email", 80, kind="contact"),
    DestinationField("Phone", "phone", 40, kind="contact"),
    DestinationField("MobilePhone", "phone", 40, kind="contact"),
    DestinationField("HomePhone", "phone", 40, kind="contact"),
    DestinationField("MailingStreet", "string", 255, kind="contact"),
    DestinationField("MailingCity", "string", 40, kind="other"),
    DestinationField("MailingPostalCode", "string", 20, kind="other"),
    DestinationField("MailingCountry", "string", 80, kind="other"),
    DestinationField("Birthdate", "date", kind="other"),
    DestinationField("Description", "string", 32000, kind="free_text"),
    DestinationField("HasOptedOutOfEmail", "boolean", kind="other"),
    DestinationField("DoNotCall", "boolean", kind="other"),
    DestinationField("CDP_Profile_Id__c", "string", 32, required=True, kind="identifier"),
    DestinationField("CDP_Lifecycle_Stage__c", "string", 255, kind="other"),
    DestinationField("CDP_Engagement_Score__c", "number", kind="other"),
    DestinationField("CDP_Segments__c", "string", 4099, kind="other"),
    DestinationField("CDP_Last_Seen_At__c", "datetime", kind="other"),
)

_SYNC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SyncSpec:
    """What a sync pushes: the source model's columns into the destination object's fields.

    `mapping` is {destination_field: source_column}; `match_key` is the destination field that identifies a
    record (the upsert key). A spec is not checked here beyond its name: a wrong mapping is what gate 4
    reports (with every problem at once), not an exception.
    """

    name: str  # used in the gate's name and in file names
    destination: str  # e.g. "salesforce"
    object: str  # e.g. "Contact"
    match_key: str
    mapping: dict[str, str]
    fields: dict[str, DestinationField]

    def __post_init__(self) -> None:
        if not _SYNC_NAME.match(self.name):
            raise ValueError(f"sync name {self.name!r}: use letters, digits, _ . - (it names files)")

    @property
    def gate(self) -> str:
        return f"{GATE_4}_{self.name}"

    def source_columns(self) -> list[str]:
        """The distinct mapped source columns, in mapping order."""
        return list(dict.fromkeys(self.mapping.values()))


# ----------------------------------------------------------------------------------------------------------------
# Mapping checks that do not depend on the frame


def mapping_outcomes(spec: SyncSpec) -> list[ExpectationOutcome]:
    """The catalogue checks of `spec`, one outcome per mapped field, required field and the match key.

    They are configuration errors, true or false whatever rows the sync reads (an empty frame included), so
    they are computed here instead of being expectations on the frame. The sync runner may also call this when
    it loads its configuration, to reject a bad sync before any data is read.
    """
    target = f"{spec.destination} {spec.object}"
    outcomes = []
    for field, column in spec.mapping.items():
        known = field in spec.fields
        observed = (
            f"{field} ({spec.fields[field].type}) is a field of {target}"
            if known
            else f"{field} (from column {column}) is not a field of {target}"
        )
        outcomes.append(ExpectationOutcome(f"destination_field_in_catalogue({field})", known, observed, []))
    for field in (f for f in spec.fields.values() if f.required):
        mapped = field.name in spec.mapping
        observed = (
            f"mapped from column {spec.mapping[field.name]}"
            if mapped
            else f"{target} requires {field.name}, and the mapping does not set it"
        )
        outcomes.append(ExpectationOutcome(f"required_field_mapped({field.name})", mapped, observed, []))
    if spec.match_key in spec.mapping:
        observed = f"{spec.match_key} from column {spec.mapping[spec.match_key]}"
        outcomes.append(ExpectationOutcome(f"match_key_mapped({spec.match_key})", True, observed, []))
    else:
        observed = f"match key {spec.match_key} is not a mapped destination field: records cannot be matched"
        outcomes.append(ExpectationOutcome(f"match_key_mapped({spec.match_key})", False, observed, []))
    return outcomes


# ----------------------------------------------------------------------------------------------------------------
# The suite


def row_count_bounds(last_synced_rows: int | None) -> tuple[int, int] | None:
    """(min, max) rows allowed given the last successful sync's rows, or None when there is no baseline."""
    if not last_synced_rows or last_synced_rows <= 0:
        return None
    low_num, low_den, high_num, high_den = ROW_COUNT_TOLERANCE
    return -(-last_synced_rows * low_num // low_den), last_synced_rows * high_num // high_den


class _Suite:
    """Expectations by stable name (type and column); the same check asked twice (two fields read one column)
    is kept once."""

    def __init__(self) -> None:
        self.expectations: dict[str, Any] = {}

    def add(self, expectation: Any, why: str, *, qualifier: str = "", on_clash: str = "") -> None:
        """`qualifier` tells two checks of one type on one column apart (email / phone); `on_clash` is the
        qualifier used only if a different check of the same name is already there (a column read by two
        fields of different types)."""
        expectation = _named(expectation, why)
        expectation.notes = why  # rendered in the data docs' suite page
        name = expectation.meta["name"]
        if qualifier:
            name = f"{name[:-1]}, {qualifier})"
        kept = self.expectations.get(name)
        if kept is not None and kept.configuration.kwargs == expectation.configuration.kwargs:
            return
        if kept is not None:
            name = f"{name[:-1]}, {on_clash})"
        expectation.meta["name"] = name
        self.expectations[name] = expectation


def gate_4_suite(
    spec: SyncSpec, frame_columns: Iterable[str], last_synced_rows: int | None
) -> gx.ExpectationSuite:
    """The gate 4 suite of `spec` for a frame with `frame_columns`.

    Checks on a mapped column that is not in the frame are left out: its ExpectColumnToExist fails and says
    why, instead of every other check on it failing with "column not found". A catalogue problem of the spec
    (`mapping_outcomes`) is not about the frame; it enters the suite as an ExpectColumnToExist on a column
    named after the problem, which no frame has, so that the GE validation and its data docs fail as the gate
    does (run_gate_4 reports the problem itself with its own text).
    """
    import great_expectations as gx

    ex = gx.expectations
    present = set(frame_columns)
    suite = _Suite()
    target = f"{spec.destination} {spec.object}"
    catalogue_checks = mapping_outcomes(spec)
    for outcome in catalogue_checks:
        if not outcome.success:
            marker = _named(ex.ExpectColumnToExist(column=f"{outcome.expectation}: {outcome.observed}"), "")
            marker.meta["name"] = outcome.expectation
            marker.notes = outcome.observed
            suite.expectations[outcome.expectation] = marker
    for field, column in spec.mapping.items():
        suite.add(
            ex.ExpectColumnToExist(column=column),
            f"the sync maps source column {column} to {target}.{field}",
        )

    key_column = spec.mapping.get(spec.match_key)
    if key_column in present:
        suite.add(
            ex.ExpectColumnValuesToNotBeNull(column=key_column),
            f"{spec.match_key} is the match key: a record without it cannot be matched in {target}",
        )
        suite.add(
            ex.ExpectColumnValuesToBeUnique(column=key_column),
            f"{spec.match_key} is the match key: two rows with one key would overwrite each other",
        )

    # Strictest length per column when two text fields read the same column.
    lengths: dict[str, tuple[int, list[str]]] = {}
    for field_name, column in spec.mapping.items():
        field = spec.fields.get(field_name)
        if field is None or column not in present:
            continue  # an unknown field is a catalogue problem, a missing column fails ExpectColumnToExist
        if field.required:
            suite.add(
                ex.ExpectColumnValuesToNotBeNull(column=column),
                f"{target} rejects a record without {field.name}",
            )
        if field.type in TYPE_PATTERNS:
            suite.add(
                ex.ExpectColumnValuesToMatchRegex(column=column, regex=TYPE_PATTERNS[field.type]),
                f"{target}.{field.name} is a {field.type} field; the destination rejects other values",
                on_clash=field.name,
            )
        if field.max_length is not None and field.type in TEXT_TYPES:
            limit, names = lengths.get(column, (field.max_length, []))
            lengths[column] = (min(limit, field.max_length), [*names, field.name])
        if field.kind in PII_KINDS:
            kind = field.kind.replace("_", "-")
            for pii, pattern in (("email", EMAIL_IN_TEXT), ("phone", PHONE_IN_TEXT)):
                suite.add(
                    ex.ExpectColumnValuesToNotMatchRegex(column=column, regex=pattern),
                    f"no {pii} in the {kind} field {target}.{field.name} (PII in the wrong field)",
                    qualifier=pii,
                )
    for column, (limit, names) in lengths.items():
        suite.add(
            ex.ExpectColumnValueLengthsToBeBetween(column=column, max_value=limit),
            f"{', '.join(names)} hold at most {limit} characters; longer values are rejected or truncated",
        )

    bounds = row_count_bounds(last_synced_rows)
    if bounds is None:
        # First sync (or a last sync of 0 rows): there is nothing to compare with, and any fixed bound would be
        # arbitrary and block a legitimate initial load; gate 3 has already checked the gold data it comes from.
        suite.add(
            ex.ExpectTableRowCountToBeBetween(min_value=0, max_value=None),
            "first sync: no earlier successful sync to compare the row count with",
        )
    else:
        suite.add(
            ex.ExpectTableRowCountToBeBetween(min_value=bounds[0], max_value=bounds[1]),
            f"within ±20 % of the last successful sync ({last_synced_rows:,} rows): a bigger change is more "
            "likely a broken model than a real one",
        )
    failed = [f"- **{o.expectation}**: {o.observed}" for o in catalogue_checks if not o.success]
    notes = [f"Sync **{spec.name}** into {target}, match key {spec.match_key}."]
    notes.append("Catalogue problems:\n\n" + "\n".join(failed) if failed else "Catalogue checks: all passed.")
    return gx.ExpectationSuite(
        name=spec.gate,
        expectations=list(suite.expectations.values()),
        meta={"why": f"reverse ETL pushes these rows into {target}; a failed gate 4 blocks the sync"},
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------------------
# The frame


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_PART = re.compile(r'"((?:[^"]|"")*)"|([^."]+)')


def _relation_sql(relation: str) -> str:
    """`catalog.schema.table` (any part optional, parts may be double-quoted) as quoted SQL."""
    parts: list[str] = []
    position = 0
    while True:
        match = _PART.match(relation, position)
        if match is None:
            raise QualityGateError(f"{relation!r} is not a relation name (catalog.schema.table)")
        parts.append(match.group(1).replace('""', '"') if match.group(1) is not None else match.group(2).strip())
        position = match.end()
        if position == len(relation):
            break
        if relation[position] != ".":
            raise QualityGateError(f"{relation!r} is not a relation name (catalog.schema.table)")
        position += 1
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise QualityGateError(f"{relation!r} is not a relation name (catalog.schema.table)")
    return ".".join(_quote(part) for part in parts)


def read_sync_frame(con: duckdb.DuckDBPyConnection, relation: str, spec: SyncSpec) -> pd.DataFrame:
    """All rows of `relation` (the sync's source model), with only the mapped source columns.

    Columns are matched case-insensitively (as DuckDB resolves them) and named as in the mapping. A mapped
    column that the relation lacks is left out, so gate 4 reports it as a failed mapping expectation; a
    relation that cannot be read raises QualityGateError. Give the sync runner this frame to push, so what
    is pushed is what was validated.
    """
    sql_relation = _relation_sql(relation)
    try:
        description = con.execute(f"select * from {sql_relation} limit 0").description
    except duckdb.Error as error:
        raise QualityGateError(
            f"gate 4 of sync {spec.name}: source relation {relation} cannot be read: {str(error).splitlines()[0]}"
        ) from error
    actual = {column[0].lower(): column[0] for column in description}
    selected = [
        f"{_quote(actual[column.lower()])} as {_quote(column)}"
        for column in spec.source_columns()
        if column.lower() in actual
    ]
    if not selected:  # nothing mapped exists: keep the row count, which gate 4 also checks
        (rows,) = con.execute(f"select count(*) from {sql_relation}").fetchone()
        return pd.DataFrame(index=pd.RangeIndex(rows))
    return con.execute(f"select {', '.join(selected)} from {sql_relation}").df()


# ----------------------------------------------------------------------------------------------------------------
# Running the gate


def _explained(outcome: ExpectationOutcome, spec: SyncSpec, rows: int, last_synced_rows: int | None) -> str:
    """A clearer observed text for the expectations whose GE result is only a number or empty."""
    if outcome.expectation.startswith("expect_column_to_exist("):
        column = outcome.expectation[len("expect_column_to_exist(") : -1]
        fields = ", ".join(field for field, source in spec.mapping.items() if source == column)
        if outcome.success:
            return f"present (for {fields})"
        return f"source column {column} (mapped to {fields}) is not in the sync's source"
    if outcome.expectation == _name("expect_table_row_count_to_be_between", ""):
        bounds = row_count_bounds(last_synced_rows)
        if bounds is None:
            return f"{rows:,} rows; first sync, no bound"
        return f"{rows:,} rows; last successful sync {last_synced_rows:,}, allowed {bounds[0]:,}-{bounds[1]:,}"
    return outcome.observed


def run_gate_4(
    spec: SyncSpec,
    frame: pd.DataFrame,
    *,
    last_synced_rows: int | None,
    docs_dir: Path | None = None,
) -> GateResult:
    """Validate the frame a sync is about to push; the sync must not push when the result is not a success.

    `last_synced_rows`: rows of the last *successful* sync (`LastSyncStore.get`), None for the first sync.
    `docs_dir`: write GE data docs there (index.html in GateResult.docs_path); give each sync its own
    directory. The catalogue checks (`mapping_outcomes`) come first in the result; they are not in the data
    docs, which show the expectations on the frame.
    """
    started = time.perf_counter()
    _quiet_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = gate_4_suite(spec, frame.columns, last_synced_rows)
        validation_result, docs_path = _validate(spec.gate, suite, frame, Path(docs_dir) if docs_dir else None)
    order = {expectation.meta["name"]: position for position, expectation in enumerate(suite.expectations)}
    catalogue_checks = mapping_outcomes(spec)
    markers = {outcome.expectation for outcome in catalogue_checks}  # reported by catalogue_checks themselves
    outcomes = [_outcome(result, frame, {}) for result in validation_result.results]
    outcomes = [
        replace(outcome, observed=_explained(outcome, spec, len(frame), last_synced_rows))
        for outcome in sorted(outcomes, key=lambda outcome: order.get(outcome.expectation, len(order)))
        if outcome.expectation not in markers
    ]
    outcomes = catalogue_checks + outcomes
    return GateResult(
        gate=spec.gate,
        success=all(outcome.success for outcome in outcomes),
        rows_checked=len(frame),
        expectations=outcomes,
        seconds=time.perf_counter() - started,
        docs_path=docs_path,
    )


# ----------------------------------------------------------------------------------------------------------------
# The last successful sync


class LastSyncStore:
    """Row counts of the last successful sync per sync name, in one JSON file.

    Gate 4 compares with the last *successful* sync: a blocked or failed attempt must not become the baseline,
    or a broken model would pass on its second attempt. Writes are atomic (temp file + os.replace) and
    serialized by a lock file, so syncs that finish together do not lose each other's entries.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as error:
            raise QualityGateError(f"last-sync state {self.path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise QualityGateError(f"last-sync state {self.path} is not a JSON object")
        return data

    def get(self, sync_name: str) -> int | None:
        """Rows of the last successful sync of `sync_name`, None when it never succeeded."""
        entry = self._read().get(sync_name)
        return int(entry["rows"]) if entry else None

    def record_success(self, sync_name: str, rows: int) -> None:
        """Make `rows` the baseline of `sync_name`; call it only after the destination accepted the push."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"rows must be a non-negative int, not {rows!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            data[sync_name] = {"rows": rows, "synced_at": datetime.now(UTC).isoformat(timespec="seconds")}
            handle, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w") as file:
                    json.dump(data, file, indent=2, sort_keys=True)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
