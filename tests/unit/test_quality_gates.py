"""Quality gates 2 and 3 (Great Expectations suites over frames read from DuckDB), on tiny warehouses: a clean
one passes, and each corruption fails exactly its expectation, with the offending rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestration.quality import GATES, QualityGateError, run_gate
from orchestration.quality.gates import SOURCES

LOAD_1 = datetime(2026, 1, 1, 9)
LOAD_2 = datetime(2026, 1, 2, 9)
OCCURRED = datetime(2026, 1, 1, 8)

EVENT_COLUMNS = (
    "event_id",
    "source",
    "event_type",
    "occurred_at",
    "received_at",
    "landed_at",
    "batch_id",
    "record_key",
    "bronze_loaded_at",
)


def event(event_id: str | None, source: str = "web", batch_id: str = "b_web_1", loaded: datetime = LOAD_1, **over: Any):
    row = {
        "event_id": event_id,
        "source": source,
        "event_type": "page_view",
        "occurred_at": OCCURRED,
        "received_at": OCCURRED + timedelta(seconds=1),
        "landed_at": loaded - timedelta(minutes=5),
        "batch_id": batch_id,
        "record_key": f"rk_{event_id}",
        "bronze_loaded_at": loaded,
    }
    row.update(over)
    return tuple(row[column] for column in EVENT_COLUMNS)


def clean_events() -> list[tuple]:
    return [
        event("e1"),
        event("e2"),
        event("e3", source="app", batch_id="b_app_1"),
        event("e4", loaded=LOAD_2, batch_id="b_web_2"),
        event("e5", source="salesforce", batch_id="b_sf_2", loaded=LOAD_2, event_type="contact_version"),
    ]


BRONZE = {"web": ["b_web_1", "b_web_2"], "app": ["b_app_1"], "salesforce": ["b_sf_2"], "email": [], "whatsapp": []}

# (profile_id, lifecycle_stage, email, phone, identity_confidence)
CLEAN_PROFILES = [
    ("p1", "inquiry", "a@uni.de", None, 0.9),
    ("p2", "applicant", None, "+4915112345678", 0.9),
    ("p3", "enrolled", "c@uni.de", "+4915112345679", 1.0),
    ("p4", "known", None, None, 1.0),
    ("p5", "anonymous", None, None, 1.0),
]
# (profile_id, identifier_type, identifier_value)
CLEAN_IDENTIFIERS = [
    ("p1", "email", "a@uni.de"),
    ("p1", "anonymous_id", "anon1"),
    ("p1", "anonymous_id", "anon1"),  # the same identifier from a second source: one distinct identifier
    ("p2", "phone", "+4915112345678"),
    ("p3", "email", "c@uni.de"),
    ("p3", "crm_id", "003A"),
    ("p4", "user_id", "u4"),
    ("p5", "anonymous_id", "anon5"),
]


def make_warehouse(
    path: Path,
    events: list[tuple] | None = None,
    bronze: dict[str, list[str]] | None = None,
    profiles: list[tuple] | None = None,
    identifiers: list[tuple] | None = None,
    occurred_type: str = "timestamp",
    skip_tables: tuple[str, ...] = (),
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    for schema in ("bronze", "silver", "gold"):
        con.execute(f"create schema {schema}")
    if "silver.events" not in skip_tables:
        con.execute(
            f"""create table silver.events (event_id varchar, source varchar, event_type varchar,
            occurred_at {occurred_type}, received_at timestamp, landed_at timestamp, batch_id varchar,
            record_key varchar, bronze_loaded_at timestamp)"""
        )
        if events:
            con.executemany(f"insert into silver.events values ({', '.join('?' * len(EVENT_COLUMNS))})", events)
    for source in SOURCES:
        table = f"bronze.brz_{source}__records"
        if table in skip_tables:
            continue
        con.execute(f"create table {table} (batch_id varchar)")
        for batch_id in (bronze if bronze is not None else BRONZE)[source]:
            con.execute(f"insert into {table} select ? from range(3)", [batch_id])
    con.execute(
        "create table gold.profiles (profile_id varchar, lifecycle_stage varchar, email varchar, phone varchar, "
        "identity_confidence double, first_name varchar)"
    )
    con.executemany("insert into gold.profiles values (?, ?, ?, ?, ?, 'x')", profiles or CLEAN_PROFILES)
    con.execute(
        "create table gold.profile_identifiers (profile_id varchar, identifier_type varchar, identifier_value varchar)"
    )
    con.executemany("insert into gold.profile_identifiers values (?, ?, ?)", identifiers or CLEAN_IDENTIFIERS)
    return con


def failed(result) -> set[str]:
    return {outcome.expectation for outcome in result.failed()}


def outcome(result, name: str):
    (found,) = [o for o in result.expectations if o.expectation == name]
    return found


def test_clean_warehouse_passes_both_gates(tmp_path: Path) -> None:
    con = make_warehouse(tmp_path / "w.duckdb", clean_events())
    gate_2 = run_gate("gate_2_silver", con)
    assert gate_2.success, gate_2.failed()
    assert gate_2.rows_checked == 5
    assert len(gate_2.expectations) == 13
    assert gate_2.summary() == "gate_2_silver: passed 13/13 expectations on 5 rows"
    assert gate_2.docs_path is None

    gate_3 = run_gate("gate_3_gold", con)
    assert gate_3.success, gate_3.failed()
    assert gate_3.rows_checked == 5
    assert outcome(gate_3, "expect_column_mean_to_be_between(has_contact_point)").observed == "0.75"
    assert outcome(gate_3, "expect_column_max_to_be_between(cluster_size)").observed == "2"
    assert all(o.sample_rows == [] for o in gate_3.expectations)


@pytest.mark.parametrize(
    ("events", "since", "expected", "bad_key"),
    [
        pytest.param(
            [*clean_events(), event(None, loaded=LOAD_2)],
            None,
            "expect_column_values_to_not_be_null(event_id)",
            ("record_key", "rk_None"),
            id="null-event-id",
        ),
        pytest.param(
            [*clean_events(), event("e1", loaded=LOAD_2, batch_id="b_web_2")],
            LOAD_1,
            "expect_column_values_to_be_in_set(event_id_seen_before)",
            ("event_id", "e1"),
            id="event-id-of-an-older-load",
        ),
        pytest.param(
            [*clean_events(), event("e4", loaded=LOAD_2, batch_id="b_web_2", record_key="again")],
            LOAD_1,
            "expect_column_values_to_be_unique(event_id)",
            ("event_id", "e4"),
            id="duplicate-within-new-rows",
        ),
        pytest.param(
            [*clean_events(), event("e9", source="fax")],
            None,
            "expect_column_values_to_be_in_set(source)",
            ("source", "fax"),
            id="unknown-source",
        ),
        pytest.param(
            [*clean_events(), event("e9", batch_id="b_lost")],
            None,
            "expect_column_values_to_be_in_set(batch_id_in_bronze)",
            ("batch_id", "b_lost"),
            id="orphan-batch-id",
        ),
    ],
)
def test_gate_2_corruption_fails_its_expectation(
    tmp_path: Path, events: list[tuple], since: datetime | None, expected: str, bad_key: tuple[str, str]
) -> None:
    con = make_warehouse(tmp_path / "w.duckdb", events)
    result = run_gate("gate_2_silver", con, since=since)
    assert not result.success
    assert failed(result) == {expected}
    bad = outcome(result, expected)
    assert 1 <= len(bad.sample_rows) <= 5
    column, value = bad_key
    assert any(row[column] == value for row in bad.sample_rows), bad.sample_rows
    assert "unexpected of" in bad.observed
    assert result.summary().startswith("gate_2_silver: FAILED 12/13 expectations on ")


def test_gate_2_types_and_sample_rows_are_capped(tmp_path: Path) -> None:
    events = [
        event(f"x{i}", occurred_at=str(OCCURRED), source="fax")
        for i in range(8)  # VARCHAR occurred_at
    ]
    con = make_warehouse(tmp_path / "w.duckdb", events, occurred_type="varchar")
    result = run_gate("gate_2_silver", con)
    assert failed(result) == {
        "expect_column_values_to_be_in_type_list(occurred_at)",
        "expect_column_values_to_be_in_set(source)",
    }
    source = outcome(result, "expect_column_values_to_be_in_set(source)")
    assert len(source.sample_rows) == 5
    assert source.observed.startswith("8 unexpected of 8")


def test_since_restricts_gate_2_to_new_rows(tmp_path: Path) -> None:
    events = [*clean_events(), event("old_bad", source="fax", batch_id="b_gone")]  # loaded at LOAD_1
    con = make_warehouse(tmp_path / "w.duckdb", events)
    everything = run_gate("gate_2_silver", con)
    assert failed(everything) == {
        "expect_column_values_to_be_in_set(source)",
        "expect_column_values_to_be_in_set(batch_id_in_bronze)",
    }
    new_only = run_gate("gate_2_silver", con, since=LOAD_1)
    assert new_only.success, new_only.failed()
    assert new_only.rows_checked == 2
    # an aware `since` is read as UTC (warehouse timestamps are naive UTC)
    assert run_gate("gate_2_silver", con, since=LOAD_1.replace(tzinfo=UTC)).rows_checked == 2
    assert run_gate("gate_2_silver", con, since=LOAD_2).rows_checked == 0


GATE_3_CASES = [
    pytest.param(
        {"identifiers": [*CLEAN_IDENTIFIERS, ("p_gone", "email", "z@uni.de")]},
        50,
        "expect_column_values_to_be_in_set(profile_exists)",
        "p_gone",
        id="orphan-identifier",
    ),
    pytest.param(
        {"identifiers": [*CLEAN_IDENTIFIERS, *[("p4", "device_id", f"d{i}") for i in range(3)]]},
        3,
        "expect_column_max_to_be_between(cluster_size)",
        "p4",
        id="cluster-above-limit",
    ),
    pytest.param(
        {
            "profiles": [
                (p, stage, None, None, conf) if p != "p1" else (p, stage, e, ph, conf)
                for p, stage, e, ph, conf in CLEAN_PROFILES
            ]
        },
        50,
        "expect_column_mean_to_be_between(has_contact_point)",
        "p2",
        id="low-completeness",
    ),
    pytest.param(
        {"profiles": [(*row[:4], 0.5) for row in CLEAN_PROFILES]},
        50,
        "expect_column_mean_to_be_between(identity_confidence)",
        "p1",
        id="low-mean-confidence",
    ),
    pytest.param(
        {"profiles": [*CLEAN_PROFILES[:4], (*CLEAN_PROFILES[4][:4], 1.25)]},
        50,
        "expect_column_values_to_be_between(identity_confidence)",
        "p5",
        id="confidence-above-one",
    ),
]


@pytest.mark.parametrize(("tables", "max_cluster_size", "expected", "bad_profile"), GATE_3_CASES)
def test_gate_3_corruption_fails_its_expectation(
    tmp_path: Path, tables: dict, max_cluster_size: int, expected: str, bad_profile: str
) -> None:
    con = make_warehouse(tmp_path / "w.duckdb", clean_events(), **tables)
    result = run_gate("gate_3_gold", con, max_cluster_size=max_cluster_size)
    assert not result.success
    assert failed(result) == {expected}
    bad = outcome(result, expected)
    assert 1 <= len(bad.sample_rows) <= 5
    assert any(row["profile_id"] == bad_profile for row in bad.sample_rows), bad.sample_rows


def test_data_docs_are_written_when_asked(tmp_path: Path) -> None:
    con = make_warehouse(tmp_path / "w.duckdb", [*clean_events(), event(None)])
    docs = tmp_path / "docs"
    result = run_gate("gate_2_silver", con, docs_dir=docs)
    assert result.docs_path == docs / "index.html"
    assert result.docs_path.is_file()
    assert list((docs / "validations").rglob("*.html"))
    assert "gate_2_silver" in result.docs_path.read_text()


def test_unknown_gate_and_missing_tables(tmp_path: Path) -> None:
    con = make_warehouse(tmp_path / "w.duckdb", clean_events(), skip_tables=("bronze.brz_whatsapp__records",))
    with pytest.raises(ValueError, match="gate_2_silver, gate_3_gold"):
        run_gate("gate_9", con)
    assert GATES == ("gate_2_silver", "gate_3_gold")
    with pytest.raises(QualityGateError, match=r"bronze\.brz_whatsapp__records"):
        run_gate("gate_2_silver", con)
    con.execute("drop table gold.profile_identifiers")
    with pytest.raises(QualityGateError, match=r"gold\.profile_identifiers"):
        run_gate("gate_3_gold", con)
