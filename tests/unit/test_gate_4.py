"""Gate 4 (before reverse ETL) on a Salesforce Contact sync: a clean frame passes, and each problem (PII in a
name or free-text field, a row count off by more than 20 %, a broken mapping, a bad value) fails its own
expectation with the offending rows, without crashing the gate."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from orchestration.quality.gate_4 import (
    PHONE_IN_TEXT,
    SALESFORCE_CONTACT_FIELDS,
    DestinationField,
    LastSyncStore,
    SyncSpec,
    gate_4_suite,
    mapping_outcomes,
    read_sync_frame,
    row_count_bounds,
    run_gate_4,
)
from orchestration.quality.gates import GateResult, QualityGateError

SPEC = SyncSpec(
    name="salesforce_contacts",
    destination="salesforce",
    object="Contact",
    match_key="CDP_Profile_Id__c",
    mapping={
        "CDP_Profile_Id__c": "profile_id",
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "MobilePhone": "phone",
        "Description": "notes",
        "CDP_Engagement_Score__c": "engagement_score",
        "CDP_Segments__c": "segments",
        "CDP_Last_Seen_At__c": "last_seen_at",
        "Birthdate": "birthdate",
        "HasOptedOutOfEmail": "email_opt_out",
    },
    fields=SALESFORCE_CONTACT_FIELDS,
)
NOTES = [
    "MBA 2027 intake, call back after 3pm",
    "Visited the open day on 01.03.2026; interested in the 2026/2027 cohort",
    "Asked about room 101 and the fee of 12,500 EUR",
    None,
]


def rows(n: int = 20) -> list[dict[str, Any]]:
    return [
        {
            "profile_id": f"p{i:04d}",
            "first_name": ["Anna", "Jörg", "Mary-Kate", "Li"][i % 4],
            "last_name": f"Example{i}",
            "email": f"student{i}@uni.example.org" if i % 5 else None,
            "phone": f"+49151{1000000 + i}" if i % 3 else None,
            "notes": NOTES[i % len(NOTES)],
            "engagement_score": round(i * 1.5, 1),
            "segments": "high_intent;mba_prospects",
            "last_seen_at": datetime(2026, 3, 1, 10, i),
            "birthdate": date(2000, 1, 1 + i),
            "email_opt_out": i % 2 == 0,
            "unmapped_column": "never read",
        }
        for i in range(n)
    ]


def warehouse(
    data: list[dict[str, Any]], relation: str = "activation.sync_salesforce_contacts"
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create schema if not exists activation")
    frame = pd.DataFrame(data)
    con.register("data", frame)
    con.execute(f"create table {relation} as select * from data")
    con.unregister("data")
    return con


def frame(data: list[dict[str, Any]]) -> pd.DataFrame:
    """The frame the sync runner would validate: read from DuckDB, mapped columns only."""
    return read_sync_frame(warehouse(data), "activation.sync_salesforce_contacts", SPEC)


def failed(result: GateResult) -> set[str]:
    return {outcome.expectation for outcome in result.failed()}


def outcome(result: GateResult, name: str):
    (found,) = [o for o in result.expectations if o.expectation == name]
    return found


def with_row(index: int, **changes: Any) -> list[dict[str, Any]]:
    data = rows()
    data[index] = {**data[index], **changes}
    return data


# ----------------------------------------------------------------------------------------------------------------
# Passing


def test_clean_frame_passes() -> None:
    sync_frame = frame(rows())
    assert list(sync_frame.columns) == SPEC.source_columns()  # unmapped_column is not read
    result = run_gate_4(SPEC, sync_frame, last_synced_rows=20)
    assert result.success, result.summary()
    assert result.gate == "gate_4_salesforce_contacts"
    assert result.rows_checked == 20
    names = [o.expectation for o in result.expectations]
    assert len(names) == len(set(names))
    assert names[0] == "destination_field_in_catalogue(CDP_Profile_Id__c)"  # catalogue checks come first
    assert {
        "required_field_mapped(LastName)",
        "match_key_mapped(CDP_Profile_Id__c)",
        "expect_column_to_exist(profile_id)",
        "expect_column_values_to_be_unique(profile_id)",
        "expect_column_values_to_not_be_null(profile_id)",
        "expect_column_values_to_not_match_regex(first_name, email)",
        "expect_column_values_to_not_match_regex(notes, phone)",
        "expect_column_values_to_match_regex(engagement_score)",
        "expect_column_values_to_match_regex(last_seen_at)",
        "expect_column_values_to_match_regex(birthdate)",
        "expect_column_values_to_match_regex(email_opt_out)",
        "expect_column_value_lengths_to_be_between(first_name)",
        "expect_table_row_count_to_be_between()",
    } <= set(names)
    assert outcome(result, "expect_table_row_count_to_be_between()").observed == (
        "20 rows; last successful sync 20, allowed 16-24"
    )
    assert result.docs_path is None


# ----------------------------------------------------------------------------------------------------------------
# PII in the wrong fields


def test_email_in_first_name_fails_with_that_row() -> None:
    result = run_gate_4(SPEC, frame(with_row(7, first_name="anna.k@gmail.com")), last_synced_rows=20)
    assert failed(result) == {"expect_column_values_to_not_match_regex(first_name, email)"}
    bad = outcome(result, "expect_column_values_to_not_match_regex(first_name, email)")
    assert bad.observed.startswith("1 unexpected of 20")
    assert [row["profile_id"] for row in bad.sample_rows] == ["p0007"]
    assert bad.sample_rows[0]["first_name"] == "anna.k@gmail.com"


def test_phone_in_description_fails_and_ordinary_numbers_do_not() -> None:
    data = with_row(3, notes="Prefers WhatsApp: +49 151 2345 6789, evenings")
    data[4]["notes"] = "call (030) 123 4567"
    result = run_gate_4(SPEC, frame(data), last_synced_rows=None)
    assert failed(result) == {"expect_column_values_to_not_match_regex(notes, phone)"}
    bad = outcome(result, "expect_column_values_to_not_match_regex(notes, phone)")
    assert {row["profile_id"] for row in bad.sample_rows} == {"p0003", "p0004"}
    # the clean notes (years, "MBA 2027", "3pm", a date, a room number, a fee) are in the same frame and pass
    assert bad.observed.startswith("2 unexpected of 20")


@pytest.mark.parametrize(
    ("text", "is_phone"),
    [
        ("MBA 2027 intake, call back after 3pm", False),
        ("2026/2027 cohort, class of 2026 2027", False),
        ("open day 01.03.2026, or 2026-03-01 10:00", False),
        ("room 101, fee 12,500 EUR, student id 1234567", False),
        ("Jörg O'Neil-Smith III", False),
        ("+49 151 23456789", True),
        ("0049 (0)30 1234567", True),
        ("tel 0151/2345678", True),
        ("call (555) 123-4567", True),
        ("whatsapp 4915123456789", True),
    ],
)
def test_phone_pattern(text: str, is_phone: bool) -> None:
    assert bool(re.search(PHONE_IN_TEXT, text)) is is_phone


# ----------------------------------------------------------------------------------------------------------------
# Row count against the last successful sync


@pytest.mark.parametrize(
    ("n", "passes"),
    [(25, False), (23, True), (17, True), (15, False)],
    ids=["plus-25%", "plus-15%", "minus-15%", "minus-25%"],
)
def test_row_count_within_20_percent_of_last_sync(n: int, passes: bool) -> None:
    result = run_gate_4(SPEC, frame(rows(n)), last_synced_rows=20)
    assert result.success is passes, result.summary()
    if not passes:
        assert failed(result) == {"expect_table_row_count_to_be_between()"}
        assert outcome(result, "expect_table_row_count_to_be_between()").observed == (
            f"{n} rows; last successful sync 20, allowed 16-24"
        )


def test_first_sync_has_no_row_count_bound() -> None:
    result = run_gate_4(SPEC, frame(rows(3)), last_synced_rows=None)
    assert result.success, result.summary()
    assert outcome(result, "expect_table_row_count_to_be_between()").observed == "3 rows; first sync, no bound"


def test_row_count_bounds_are_exact_integers() -> None:
    assert row_count_bounds(None) is None
    assert row_count_bounds(0) is None  # a last sync of nothing is no baseline
    assert row_count_bounds(20) == (16, 24)
    assert row_count_bounds(15) == (12, 18)  # 0.8 * 15 is 12.000000000000002 in floats
    assert row_count_bounds(7) == (6, 8)  # ceil(5.6), floor(8.4)


# ----------------------------------------------------------------------------------------------------------------
# Mapping


def test_mapped_column_missing_from_source_fails_the_mapping_without_crashing() -> None:
    data = [{k: v for k, v in row.items() if k != "notes"} for row in rows()]
    sync_frame = frame(data)
    assert "notes" not in sync_frame.columns
    result = run_gate_4(SPEC, sync_frame, last_synced_rows=20)
    assert failed(result) == {"expect_column_to_exist(notes)"}
    assert outcome(result, "expect_column_to_exist(notes)").observed == (
        "source column notes (mapped to Description) is not in the sync's source"
    )
    # the other columns are still checked; nothing else is attempted on the missing one
    assert [o.expectation for o in result.expectations if "(notes" in o.expectation] == [
        "expect_column_to_exist(notes)"
    ]
    assert outcome(result, "expect_column_values_to_not_match_regex(first_name, email)").success


def test_destination_field_not_in_catalogue_fails() -> None:
    spec = replace(SPEC, mapping={**SPEC.mapping, "CDP_Favourite_Colour__c": "segments"})
    result = run_gate_4(spec, frame(rows()), last_synced_rows=20)
    assert failed(result) == {"destination_field_in_catalogue(CDP_Favourite_Colour__c)"}
    assert outcome(result, "destination_field_in_catalogue(CDP_Favourite_Colour__c)").observed == (
        "CDP_Favourite_Colour__c (from column segments) is not a field of salesforce Contact"
    )


def test_required_field_and_match_key_unmapped_fail() -> None:
    mapping = {k: v for k, v in SPEC.mapping.items() if k != "LastName"}
    result = run_gate_4(replace(SPEC, mapping=mapping, match_key="Email_Key__c"), frame(rows()), last_synced_rows=20)
    assert failed(result) == {"required_field_mapped(LastName)", "match_key_mapped(Email_Key__c)"}
    assert outcome(result, "required_field_mapped(LastName)").observed == (
        "salesforce Contact requires LastName, and the mapping does not set it"
    )
    # the same problems without any data: a bad configuration fails whatever the frame
    assert {o.expectation for o in mapping_outcomes(replace(SPEC, mapping=mapping)) if not o.success} == {
        "required_field_mapped(LastName)"
    }


def test_catalogue_problems_fail_the_suite_too() -> None:
    spec = replace(SPEC, mapping={**SPEC.mapping, "Nope__c": "segments"})
    suite = gate_4_suite(spec, SPEC.source_columns(), None)
    names = [e.meta["name"] for e in suite.expectations]
    assert names[0] == "destination_field_in_catalogue(Nope__c)"  # an ExpectColumnToExist no frame satisfies
    assert "Nope__c" in " ".join(suite.notes)


def test_string_longer_than_its_field_fails() -> None:
    result = run_gate_4(SPEC, frame(with_row(2, first_name="A" * 41)), last_synced_rows=20)
    assert failed(result) == {"expect_column_value_lengths_to_be_between(first_name)"}
    assert outcome(result, "expect_column_value_lengths_to_be_between(first_name)").sample_rows[0]["profile_id"] == (
        "p0002"
    )
    assert run_gate_4(SPEC, frame(with_row(2, first_name="A" * 40)), last_synced_rows=20).success


@pytest.mark.parametrize(
    ("profile_id", "expected"),
    [
        (None, "expect_column_values_to_not_be_null(profile_id)"),
        ("p0001", "expect_column_values_to_be_unique(profile_id)"),
    ],
    ids=["null", "duplicate"],
)
def test_bad_match_key_fails(profile_id: str | None, expected: str) -> None:
    result = run_gate_4(SPEC, frame(with_row(5, profile_id=profile_id)), last_synced_rows=20)
    assert failed(result) == {expected}
    assert outcome(result, expected).sample_rows


def test_values_that_do_not_fit_their_field_types_fail() -> None:
    data = with_row(1, email="not-an-email", phone="0151 2345678")
    sync_frame = frame(data).astype({"engagement_score": "object"})
    sync_frame.loc[6, "engagement_score"] = "high"
    sync_frame.loc[0, "last_name"] = None  # LastName is required
    result = run_gate_4(SPEC, sync_frame, last_synced_rows=20)
    assert failed(result) == {
        "expect_column_values_to_match_regex(email)",
        "expect_column_values_to_match_regex(phone)",
        "expect_column_values_to_match_regex(engagement_score)",
        "expect_column_values_to_not_be_null(last_name)",
    }
    assert outcome(result, "expect_column_values_to_match_regex(phone)").sample_rows[0]["phone"] == "0151 2345678"


def test_two_fields_from_one_column_are_both_checked() -> None:
    fields = {**SALESFORCE_CONTACT_FIELDS, "Nickname__c": DestinationField("Nickname__c", "string", 10, kind="name")}
    spec = replace(SPEC, fields=fields, mapping={**SPEC.mapping, "Nickname__c": "first_name"})
    result = run_gate_4(spec, frame(with_row(0, first_name="Annabelle-Marie")), last_synced_rows=20)
    # the stricter length (10, not FirstName's 40) applies; the shared checks appear once
    assert failed(result) == {"expect_column_value_lengths_to_be_between(first_name)"}
    names = [o.expectation for o in result.expectations]
    assert names.count("expect_column_values_to_not_match_regex(first_name, email)") == 1


# ----------------------------------------------------------------------------------------------------------------
# Reading the frame, data docs, the last successful sync


def test_read_sync_frame_reads_only_mapped_columns_and_reports_missing_ones() -> None:
    data = [
        {"Profile_ID": "p1", "first_name": "Anna", "other": 1},
        {"Profile_ID": "p2", "first_name": "Li", "other": 2},
    ]
    con = duckdb.connect()
    con.execute('create schema "sync payloads"')
    con.register("data", pd.DataFrame(data))
    con.execute('create table "sync payloads"."contacts ""v1""" as select * from data')
    sync_frame = read_sync_frame(con, '"sync payloads"."contacts ""v1"""', SPEC)
    # case-insensitive like DuckDB, named as in the mapping; missing mapped columns are simply not there
    assert list(sync_frame.columns) == ["profile_id", "first_name"]
    assert sync_frame["profile_id"].tolist() == ["p1", "p2"]

    con.execute("create table only_other as select other from data")
    empty = read_sync_frame(con, "only_other", SPEC)
    assert list(empty.columns) == [] and len(empty) == 2  # the row count survives

    with pytest.raises(QualityGateError, match=r"activation\.missing cannot be read"):
        read_sync_frame(con, "activation.missing", SPEC)
    with pytest.raises(QualityGateError, match="not a relation name"):
        read_sync_frame(con, "a..b", SPEC)


def test_data_docs_are_written(tmp_path: Path) -> None:
    spec = replace(SPEC, mapping={**SPEC.mapping, "Nope__c": "segments"})
    result = run_gate_4(spec, frame(rows()), last_synced_rows=20, docs_dir=tmp_path / "docs")
    assert not result.success
    assert result.docs_path == tmp_path / "docs" / "index.html"
    assert "gate_4_salesforce_contacts" in result.docs_path.read_text()
    (page,) = (tmp_path / "docs" / "validations").rglob("*.html")
    assert "destination_field_in_catalogue(Nope__c)" in page.read_text()  # the validation page shows it failed


def test_last_sync_store_roundtrip(tmp_path: Path) -> None:
    store = LastSyncStore(tmp_path / "state" / "last_sync.json")
    assert store.get("salesforce_contacts") is None
    store.record_success("salesforce_contacts", 1200)
    store.record_success("twilio_optins", 7)
    store.record_success("salesforce_contacts", 1180)
    assert store.get("salesforce_contacts") == 1180
    assert LastSyncStore(store.path).get("twilio_optins") == 7
    assert json.loads(store.path.read_text())["salesforce_contacts"]["rows"] == 1180
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["last_sync.json", "last_sync.json.lock"]
    with pytest.raises(ValueError, match="non-negative"):
        store.record_success("salesforce_contacts", -1)
    store.path.write_text("{broken")
    with pytest.raises(QualityGateError, match="not valid JSON"):
        store.get("salesforce_contacts")


def test_spec_and_field_validation() -> None:
    with pytest.raises(ValueError, match="sync name"):
        replace(SPEC, name="../escape")
    with pytest.raises(ValueError, match="type 'text'"):
        DestinationField("X", "text")  # type: ignore[arg-type]
    assert SALESFORCE_CONTACT_FIELDS["LastName"] == DestinationField("LastName", "string", 80, True, "name")
