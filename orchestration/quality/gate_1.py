"""Quality gate 1 (landing -> bronze) as a Great Expectations suite kept as code.

It validates the batch files of one source that it has not validated yet, before bronze reads them, in two parts:

- **File and landing columns (blocking)**: every batch file has the landing schema (`LANDING_SCHEMA`: the columns
  and types bronze reads), the batch's `source` is the folder's source, `batch_id` is the one in the file name,
  `landed_at`, `position` and `payload` are present and (batch_id, position) is unique. A file that fails these
  would make bronze fail or mislabel records, so the gate fails and bronze is not built (the file stays in the
  zone, nothing is lost, until it is removed or landed again correctly).
- **Records (not blocking)**: the payload is a JSON object, the source's required fields are present and its
  timestamp has the source's format (ISO 8601, or Unix seconds for the email webhook); web and app records that
  are Segment-spec messages of the ingestion API are held to Segment's envelope instead (SEGMENT_SOURCES).
  A record that fails is quarantined by silver with the reason (`silver.quarantine`); the gate reports how many
  and which, with samples, and passes. Its rules are the contract of each source (docs/sources.md); silver
  applies the same ones in SQL, and the tests check that every record gate 1 flags is in the quarantine.

The frame is read with DuckDB straight from the Parquet files: only the landing columns, the required fields and
the timestamp of each record, never the whole payload, so a 1M-record initial load validates in seconds.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from connectors.landing import BATCH_PREFIX, LANDING_SCHEMA, SOURCES
from orchestration.quality.gates import GateResult, _named, _outcome, _quiet_gx, _validate

if TYPE_CHECKING:
    import great_expectations as gx

GATE_1 = "gate_1_landing"

# ISO 8601 date-time with valid field ranges (an hour of 24 or a 13th month is not a time), optional fraction
# and offset; what silver's parse_timestamp reads.
ISO_8601 = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d(:([0-5]\d|60)(\.\d{1,9})?)?"
    r"(Z|z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?$"
)
UNIX_SECONDS = r"^\d{1,10}(\.\d{1,9})?$"
CONFORMING = "schema_conforms == True"


@dataclass(frozen=True)
class SourceContract:
    """What a record of a source must carry: required JSON fields and the field holding its time."""

    required: tuple[str, ...]
    timestamp: str
    timestamp_format: str  # a regex
    timestamp_format_name: str


CONTRACTS: dict[str, SourceContract] = {
    "web": SourceContract(("event_id", "event", "anonymous_id", "timestamp"), "timestamp", ISO_8601, "ISO 8601"),
    "app": SourceContract(("event_id", "event_name", "device_id", "timestamp"), "timestamp", ISO_8601, "ISO 8601"),
    "salesforce": SourceContract(("Id", "LastName", "LastModifiedDate"), "LastModifiedDate", ISO_8601, "ISO 8601"),
    "email": SourceContract(("sg_event_id", "event", "email", "timestamp"), "timestamp", UNIX_SECONDS,
                            "Unix seconds"),
    "whatsapp": SourceContract(("MessageSid", "From", "ReceivedAt"), "ReceivedAt", ISO_8601, "ISO 8601"),
}
assert set(CONTRACTS) == set(SOURCES)

# Sources that also take Segment-spec messages from the ingestion API (docs/sources.md): a record without the
# native event_id but with Segment's envelope needs messageId, userId or anonymousId (alias: previousId), and a
# timestamp or the API's receivedAt, as silver checks it.
SEGMENT_SOURCES = frozenset({"web", "app"})
SEGMENT_FIELDS = ("messageId", "userId", "anonymousId", "previousId", "receivedAt")


def gate_1_suite(source: str) -> gx.ExpectationSuite:
    """The gate 1 suite of one source, on the frame built by `landing_frame`."""
    import great_expectations as gx

    contract = CONTRACTS[source]
    ex = gx.expectations
    blocking = [
        _named(
            ex.ExpectColumnValuesToBeInSet(column="schema_conforms", value_set=[True]),
            "every batch file has the landing schema (columns and types) that bronze reads",
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(column="source", value_set=[source]),
            f"a batch in the {source} folder holds {source} records only",
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(column="batch_id_matches_file", value_set=[True]),
            "batch_id is the id in the file name (landing is idempotent by it)",
        ),
        # the rows of a non-conforming file (one per file, no records) are reported by schema_conforms alone
        *(
            _named(
                ex.ExpectColumnValuesToNotBeNull(column=column, row_condition=CONFORMING, condition_parser="pandas"),
                f"{column} is part of every landed record",
            )
            for column in ("batch_id", "landed_at", "position")
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(
                column="payload_present", value_set=[True], row_condition=CONFORMING, condition_parser="pandas"
            ),
            "a landed record keeps its payload as received",
        ),
        _named(
            ex.ExpectCompoundColumnsToBeUnique(column_list=["batch_id", "position"]),
            "(batch_id, position) is the record's key in bronze and silver",
        ),
    ]
    records = [
        _named(
            ex.ExpectColumnValuesToBeInSet(column="payload_is_json_object", value_set=[True]),
            "a record is a JSON object (else silver quarantines it: not valid JSON / not an object)",
            blocking=False,
        ),
        _named(
            ex.ExpectColumnValuesToBeNull(column="missing_required_field"),
            f"{source} records carry {', '.join(contract.required)} (else quarantined: missing required field)",
            blocking=False,
        ),
        _named(
            ex.ExpectColumnValuesToMatchRegex(column="timestamp_raw", regex=contract.timestamp_format),
            f"{contract.timestamp} is {contract.timestamp_format_name} (else quarantined: not a valid time)",
            blocking=False,
        ),
    ]
    return gx.ExpectationSuite(
        name=f"{GATE_1}_{source}",
        expectations=blocking + records,
        meta={"why": "bronze reads every landed batch file as is; a malformed file would break or mislabel it"},
    )


def _conforms(path: Path) -> str | None:
    """None when the file has the landing schema, else what differs (one line)."""
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # an unreadable file is reported, not raised: the gate names it
        return f"not a readable Parquet file: {error}"[:200]
    problems = []
    for field in LANDING_SCHEMA:
        if field.name not in schema.names:
            problems.append(f"missing column {field.name}")
        elif not schema.field(field.name).type.equals(field.type):
            problems.append(f"{field.name} is {schema.field(field.name).type}, expected {field.type}")
    problems += [f"unexpected column {name}" for name in schema.names if name not in LANDING_SCHEMA.names]
    return "; ".join(problems) or None


def landing_frame(source: str, files: Sequence[Path]) -> pd.DataFrame:
    """One row per record of the conforming `files`, plus one row per non-conforming file."""
    contract = CONTRACTS[source]
    good = []
    bad_rows = []
    for path in files:
        problem = _conforms(path)
        if problem is None:
            good.append(str(path))
        else:
            bad_rows.append({"batch_file": path.name, "schema_conforms": False, "schema_problem": problem})
    columns = [
        "batch_file", "schema_conforms", "schema_problem", "source", "batch_id", "batch_id_matches_file",
        "landed_at", "position", "payload_present", "parse_error", "payload_is_json_object",
        "missing_required_field", "timestamp_raw",
    ]
    frames = []
    if good:
        # json_valid first: json functions raise on a malformed payload, and such a record is reported, not fatal.
        # The object test is silver's (the first character is `{`). One parse per record for all fields.
        is_object = (
            "(parse_error is null and coalesce(json_valid(payload), false) "
            "and substr(ltrim(substr(payload, 1, 100)), 1, 1) = '{')"
        )
        keys = [*contract.required, contract.timestamp]
        segment = source in SEGMENT_SOURCES
        if segment:
            keys += SEGMENT_FIELDS
        paths = ", ".join("'$.\"" + key.replace("'", "''") + "\"'" for key in keys)
        missing = " ".join(
            f"when nullif(trim(fields[{i}]), '') is null then '{key}'" for i, key in enumerate(contract.required, 1)
        )
        missing = f"case {missing} end"
        timestamp = f"fields[{len(contract.required) + 1}]"
        if segment:
            field = {key: f"nullif(trim(fields[{keys.index(key) + 1}]), '')" for key in (*SEGMENT_FIELDS, "event_id")}
            envelope = ", ".join(field[key] for key in SEGMENT_FIELDS)
            is_segment = f"({field['event_id']} is null and coalesce({envelope}) is not null)"
            segment_missing = (
                f"case when {field['messageId']} is null then 'messageId' "
                f"when coalesce({field['userId']}, {field['anonymousId']}, {field['previousId']}) is null "
                "then 'userId or anonymousId' "
                f"when coalesce(nullif(trim({timestamp}), ''), {field['receivedAt']}) is null then 'timestamp' end"
            )
            missing = f"case when {is_segment} then {segment_missing} else {missing} end"
            segment_timestamp = f"coalesce(nullif(trim({timestamp}), ''), {field['receivedAt']})"
            timestamp = f"case when {is_segment} then {segment_timestamp} else {timestamp} end"
        sql = f"""
            select
                regexp_extract(filename, '[^/]+$') as batch_file,
                true as schema_conforms,
                null::varchar as schema_problem,
                source,
                batch_id,
                regexp_extract(filename, '{BATCH_PREFIX}([^/]+)\\.parquet$', 1) = batch_id as batch_id_matches_file,
                landed_at,
                position,
                payload_present,
                parse_error,
                is_object as payload_is_json_object,
                case when is_object then {missing} end as missing_required_field,
                case when is_object then nullif(trim({timestamp}), '') end as timestamp_raw
            from (
                select *,
                    payload is not null as payload_present,
                    {is_object} as is_object,
                    case when {is_object} then json_extract_string(payload, [{paths}]) end as fields
                from read_parquet($files, filename = true)
            )
        """
        with duckdb.connect() as con:
            frames.append(con.execute(sql, {"files": good}).df())
    if bad_rows:
        frames.append(pd.DataFrame(bad_rows))
    if not frames:
        return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame.reindex(columns=columns)


def run_gate_1(source: str, files: Sequence[Path], *, docs_dir: Path | None = None) -> GateResult:
    """Validate the batch `files` of `source` (the ones not validated yet) with the gate 1 suite."""
    if source not in CONTRACTS:
        raise ValueError(f"unknown source {source!r}; sources: {', '.join(SOURCES)}")
    started = time.perf_counter()
    frame = landing_frame(source, files)
    gate = f"{GATE_1}_{source}"
    _quiet_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = gate_1_suite(source)
        validation_result, docs_path = _validate(gate, suite, frame, Path(docs_dir) if docs_dir else None)
    order = {expectation.meta["name"]: position for position, expectation in enumerate(suite.expectations)}
    outcomes = [_outcome(result, frame, {}) for result in validation_result.results]
    outcomes.sort(key=lambda outcome: order.get(outcome.expectation, len(order)))
    return GateResult(
        gate=gate,
        success=all(outcome.success or not outcome.blocking for outcome in outcomes),
        rows_checked=len(frame),
        expectations=outcomes,
        seconds=time.perf_counter() - started,
        docs_path=docs_path,
    )
