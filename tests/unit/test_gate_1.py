"""Gate 1 (landing -> bronze) on batch files written by the real landing zone, and on files that are not."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.landing import LandingZone, Records
from orchestration.quality.gate_1 import run_gate_1

GOOD = {"event_id": "e1", "event": "page_view", "anonymous_id": "a1", "timestamp": "2026-03-01T10:15:30.123Z"}


def land(zone: LandingZone, batch_id: str, payloads: list[str]) -> Path:
    return zone.land("web", batch_id, "events.ndjson", Records.from_lists(payloads)).path


@pytest.fixture()
def zone(tmp_path: Path) -> LandingZone:
    zone = LandingZone(tmp_path / "landing")
    zone.init()
    return zone


def test_clean_batch_passes_with_nothing_to_quarantine(zone: LandingZone) -> None:
    path = land(zone, "a" * 32, [json.dumps(GOOD), json.dumps({**GOOD, "event_id": "e2"})])
    result = run_gate_1("web", [path])
    assert result.success and result.rows_checked == 2
    assert not result.failed() and not result.quarantined()


def test_malformed_records_are_reported_for_quarantine_and_the_gate_passes(zone: LandingZone) -> None:
    payloads = [
        json.dumps(GOOD),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({k: v for k, v in GOOD.items() if k != "anonymous_id"}),
        json.dumps({**GOOD, "timestamp": "2026-03-01T34:15:30Z"}),  # hour 34
        json.dumps({**GOOD, "timestamp": "01/03/2026 10:15"}),
    ]
    result = run_gate_1("web", [land(zone, "b" * 32, payloads)])
    assert result.success, result.summary()
    flagged = {outcome.expectation: outcome for outcome in result.quarantined()}
    assert flagged["expect_column_values_to_be_in_set(payload_is_json_object)"].observed.startswith("2 unexpected")
    missing = flagged["expect_column_values_to_be_null(missing_required_field)"]
    assert missing.observed.startswith("1 unexpected") and missing.sample_rows[0]["missing_required_field"] == (
        "anonymous_id"
    )
    timestamps = flagged["expect_column_values_to_match_regex(timestamp_raw)"]
    assert {row["position"] for row in timestamps.sample_rows} == {4, 5}
    assert "to quarantine" in result.summary()


def test_email_timestamps_are_unix_seconds(zone: LandingZone) -> None:
    record = {"sg_event_id": "s1", "event": "open", "email": "a@b.org", "timestamp": 1761033808}
    batch = zone.land("email", "c" * 32, "hook.json", Records.from_lists(
        [json.dumps(record), json.dumps({**record, "timestamp": 1761033808123})]  # milliseconds by mistake
    )).path
    result = run_gate_1("email", [batch])
    (timestamps,) = result.quarantined()
    assert timestamps.sample_rows[0]["timestamp_raw"] == "1761033808123"


def test_a_file_without_the_landing_schema_fails_the_gate(zone: LandingZone, tmp_path: Path) -> None:
    good = land(zone, "d" * 32, [json.dumps(GOOD)])
    bad = zone.root / "web" / f"batch-{'e' * 32}.parquet"
    pq.write_table(pa.table({"source": ["web"], "batch_id": ["e" * 32], "payload": [json.dumps(GOOD)]}), bad)
    result = run_gate_1("web", [good, bad], docs_dir=tmp_path / "docs")
    assert not result.success
    (failure,) = result.failed()
    assert failure.expectation == "expect_column_values_to_be_in_set(schema_conforms)"
    assert failure.sample_rows[0]["batch_file"] == bad.name
    assert "missing column landed_at" in failure.sample_rows[0]["schema_problem"]
    assert (tmp_path / "docs" / "index.html").exists()


def test_a_batch_id_that_is_not_its_file_name_fails_the_gate(zone: LandingZone) -> None:
    path = land(zone, "f" * 32, [json.dumps(GOOD)])
    moved = path.with_name(f"batch-{'0' * 32}.parquet")
    path.replace(moved)
    result = run_gate_1("web", [moved])
    assert [outcome.expectation for outcome in result.failed()] == [
        "expect_column_values_to_be_in_set(batch_id_matches_file)"
    ]


def test_no_new_files_passes(zone: LandingZone) -> None:
    result = run_gate_1("web", [])
    assert result.success and result.rows_checked == 0


def test_a_salesforce_file_from_another_source_fails(zone: LandingZone) -> None:
    path = land(zone, "1" * 32, [json.dumps(GOOD)])
    target = zone.root / "salesforce" / path.name
    path.replace(target)
    result = run_gate_1("salesforce", [target])
    assert "expect_column_values_to_be_in_set(source)" in [outcome.expectation for outcome in result.failed()]
