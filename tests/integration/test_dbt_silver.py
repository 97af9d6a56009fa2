"""dbt bronze and silver on hand-written fixtures, landed the way users land files.

Two runs against a temporary landing zone and DuckDB warehouse:
1. land tests/fixtures/<source>/*, `dbt build`;
2. land tests/fixtures/<source>/later/* (new records and re-deliveries), `dbt build` again.
After each run: every landed record is in silver or in quarantine (never both, never neither), the
quarantine holds exactly the records of tests/fixtures/expected_quarantine.json with their reasons,
and specific fixture records come out normalized (emails, E.164 phones, UTC timestamps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from connectors.landing import SOURCES, LandingZone
from connectors.registry import file_source

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected_quarantine.json").read_text())

pytestmark = pytest.mark.integration


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt is not installed")
    return found


@dataclass
class Run:
    """The warehouse as one `dbt build` left it (a copy, so later runs do not change it)."""

    warehouse: Path
    landed: dict[str, int]

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def value(self, sql: str, params: list | None = None):
        rows = self.query(sql, params)
        assert len(rows) == 1, f"expected one row from {sql!r}, got {rows}"
        return rows[0][0] if len(rows[0]) == 1 else rows[0]


def land(zone: LandingZone, subfolder: str = "") -> None:
    for source in SOURCES:
        folder = FIXTURES / source / subfolder if subfolder else FIXTURES / source
        file_source(source, [folder]).land(zone)


def dbt_build(tmp: Path, landing: Path, warehouse: Path) -> None:
    env = {
        **os.environ,
        "CDP_TARGET": "duckdb",
        "CDP_LANDING_PATH": str(landing),
        "CDP_WAREHOUSE_PATH": str(warehouse),
        # keep this run's artifacts apart from other dbt invocations in the repository
        "DBT_TARGET_PATH": str(tmp / "target"),
        "DBT_LOG_PATH": str(tmp / "logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    result = subprocess.run(
        [dbt_executable(), "build", "--no-use-colors", "--profiles-dir", str(ROOT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"dbt build failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    tmp = tmp_path_factory.mktemp("dbt_silver")
    landing, warehouse = tmp / "landing", tmp / "warehouse.duckdb"
    zone = LandingZone(landing)

    land(zone)
    dbt_build(tmp, landing, warehouse)
    first = Run(tmp / "first.duckdb", {s: c["records"] for s, c in zone.landed_counts().items()})
    shutil.copyfile(warehouse, first.warehouse)

    land(zone, "later")
    dbt_build(tmp, landing, warehouse)
    second = Run(warehouse, {s: c["records"] for s, c in zone.landed_counts().items()})
    yield first, second


@pytest.fixture(scope="module")
def first(runs: tuple[Run, Run]) -> Run:
    return runs[0]


@pytest.fixture(scope="module")
def second(runs: tuple[Run, Run]) -> Run:
    return runs[1]


def expected_up_to(run: int) -> list[dict]:
    return [e for e in EXPECTED if e["run"] <= run]


# --- reconciliation ---------------------------------------------------------------------------


@pytest.mark.parametrize("run_number", [1, 2])
def test_every_landed_record_is_in_silver_or_quarantine(runs: tuple[Run, Run], run_number: int) -> None:
    run = runs[run_number - 1]
    expected = expected_up_to(run_number)
    quarantined = Counter(e["source"] for e in expected)
    duplicates = Counter(e["source"] for e in expected if "duplicate_of" in e)
    rows = run.query(
        "select source, landed, silver, quarantined, duplicates, is_reconciled "
        "from silver.source_reconciliation order by source"
    )
    assert sorted(r[0] for r in rows) == sorted(SOURCES)
    for source, landed, silver, in_quarantine, dups, is_reconciled in rows:
        assert landed == run.landed[source], f"{source}: bronze holds {landed}, the zone {run.landed[source]}"
        assert in_quarantine == quarantined[source], f"{source}: quarantined"
        assert dups == duplicates[source], f"{source}: duplicates"
        assert silver == landed - quarantined[source], f"{source}: silver"
        assert is_reconciled is True


def test_reconciliation_lists_all_sources_with_zeros_before_anything_lands(tmp_path: Path) -> None:
    """The model is plain SQL over the bronze and silver relations: check it on an empty build."""
    landing, warehouse = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    LandingZone(landing).init()
    dbt_build(tmp_path, landing, warehouse)
    rows = Run(warehouse, {}).query("select * from silver.source_reconciliation order by source")
    assert [r[0] for r in rows] == sorted(SOURCES)
    assert all(r[1:] == (0, 0, 0, 0, True) for r in rows)


# --- quarantine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("run_number", [1, 2])
def test_quarantine_holds_exactly_the_expected_records(runs: tuple[Run, Run], run_number: int) -> None:
    run = runs[run_number - 1]
    actual = {
        (source, file_name, position): (reason, payload, is_duplicate)
        for source, file_name, position, reason, payload, is_duplicate in run.query(
            "select source, file_name, position, reason, payload, is_duplicate from silver.quarantine"
        )
    }
    batches = dict(run.query("select distinct source || '/' || file_name, batch_id from silver.quarantine"))
    batches.update(
        run.query(
            " union all ".join(
                f"select distinct '{s}/' || file_name, batch_id from bronze.brz_{s}__records" for s in SOURCES
            )
        )
    )
    expected = expected_up_to(run_number)
    assert sorted(actual) == sorted((e["source"], e["file"], e["position"]) for e in expected)
    for e in expected:
        reason, payload, is_duplicate = actual[(e["source"], e["file"], e["position"])]
        assert e["reason"] in reason, f"{e}: got reason {reason!r}"
        assert payload, f"{e}: the quarantined payload is missing"
        assert is_duplicate == ("duplicate_of" in e)
        if "duplicate_of" in e:
            first_batch = batches[f"{e['source']}/{e['duplicate_of']['file']}"]
            assert f"(first seen in batch {first_batch} position {e['duplicate_of']['position']})" in reason


def test_quarantine_keeps_the_payload_as_landed(first: Run) -> None:
    payload = first.value(
        "select payload from silver.quarantine where source = 'web' and file_name = ? and position = 4",
        ["clicks-2026-03-01.ndjson"],
    )
    landed_line = (FIXTURES / "web" / "clicks-2026-03-01.ndjson").read_text().splitlines()[4]
    assert payload == landed_line
    csv_row = first.value(
        "select payload from silver.quarantine where source = 'salesforce' and file_name = ? and position = 5",
        ["contacts-bulk-00000.csv"],
    )
    assert json.loads(csv_row)[0] == "0035g00000AbCdEAAV"  # the short row's fields, as a JSON array


# --- normalization ------------------------------------------------------------------------------


def test_web_form_traits_are_normalized(first: Run) -> None:
    rows = dict(
        (event_id, rest)
        for event_id, *rest in first.query(
            "select event_id, email, email_raw, phone, occurred_at from silver.stg_web__events"
        )
    )
    email, email_raw, phone, occurred_at = rows["0b7f0c4e-0001-4000-8000-000000000003"]
    assert (email, email_raw) == ("max.mustermann@example.com", "  Max.Mustermann@Example.COM ")
    assert phone == "+4915123456789"  # 0151 2345-6789 in DE
    assert occurred_at == datetime(2026, 3, 1, 10, 20)
    assert rows["0b7f0c4e-0001-4000-8000-000000000004"][2] == "+390612345678"  # (06) 1234 5678 in Italy
    assert rows["0b7f0c4e-0001-4000-8000-000000000002"][3] == datetime(2026, 3, 1, 10, 16)  # 11:16+01:00


def test_app_timestamps_are_utc_and_logins_carry_the_email(first: Run) -> None:
    rows = dict(
        (event_id, rest)
        for event_id, *rest in first.query("select event_id, occurred_at, email from silver.stg_app__events")
    )
    assert rows["a1c0ffee-0001-4000-8000-000000000002"] == [datetime(2026, 3, 1, 10, 1), "anna.schmidt@example.de"]
    assert rows["a1c0ffee-0001-4000-8000-000000000003"][0] == datetime(2026, 3, 1, 10, 15, 30, 123000)
    assert rows["a1c0ffee-0001-4000-8000-000000000004"][0] == datetime(2026, 3, 1, 11, 20)  # 06:20-05:00


def test_salesforce_versions_are_typed_and_phones_use_the_mailing_country(first: Run) -> None:
    rows = {
        version: rest
        for version, *rest in first.query(
            "select contact_version_id, email, phone, mobile_phone, has_opted_out_of_email, last_modified_at, "
            "export_format from silver.stg_salesforce__contacts"
        )
    }
    assert set(rows) == {
        "0035g00000AbCdEAAV@2026-03-01T10:15:30.000Z",
        "0035g00000AbCdEAAV@2026-03-05T16:45:00.000+0000",
        "0035g00000XyZaBAAV@2026-02-20T08:00:00.000Z",
        "0035g00000QrStUAAV@2026-02-21T08:00:00.000Z",
    }
    assert rows["0035g00000AbCdEAAV@2026-03-01T10:15:30.000Z"] == [
        "max.mustermann@example.com",
        "+49301234567",
        "+4915123456789",
        False,
        datetime(2026, 3, 1, 10, 15, 30),
        "bulk_csv",
    ]
    # "+49 (0)151 2345 6789" from the REST export
    assert rows["0035g00000AbCdEAAV@2026-03-05T16:45:00.000+0000"][2] == "+4915123456789"
    # national French numbers, MailingCountry "FR"
    assert rows["0035g00000XyZaBAAV@2026-02-20T08:00:00.000Z"][:4] == [
        "sophie.martin@example.fr",
        "+33142685300",
        "+33612345678",
        True,
    ]
    latest = first.query(
        "select contact_id, application_stage from silver.stg_salesforce__contacts_latest "
        "where contact_id = '0035g00000AbCdEAAV'"
    )
    assert latest == [("0035g00000AbCdEAAV", "Offer Made")]


def test_email_and_whatsapp_identifiers_are_normalized(first: Run) -> None:
    assert first.value("select email, occurred_at from silver.stg_email__events where event_id = 'sg-evt-0003'") == (
        "max.mustermann@example.com",
        datetime(2026, 3, 1, 10, 10),
    )
    assert first.value(
        "select phone, is_opt_out_keyword from silver.stg_whatsapp__messages "
        "where message_id = 'SM00000000000000000000000000000003'"
    ) == ("+33612345678", True)


# --- the unified events -------------------------------------------------------------------------


@pytest.mark.parametrize("run_number", [1, 2])
def test_events_hold_every_accepted_record_once(runs: tuple[Run, Run], run_number: int) -> None:
    run = runs[run_number - 1]
    total, distinct_ids, distinct_records = run.value(
        "select count(*), count(distinct event_id), count(distinct record_key) from silver.events"
    )
    silver = run.value("select sum(silver) from silver.source_reconciliation")
    assert total == distinct_ids == distinct_records == silver
    per_source = dict(run.query("select source, count(*) from silver.events group by source"))
    assert per_source == dict(run.query("select source, silver from silver.source_reconciliation"))


def test_events_carry_identifiers_in_common_columns(first: Run) -> None:
    crm = first.value(
        "select event_type, crm_id, email, phone, occurred_at from silver.events "
        "where event_id = '0035g00000AbCdEAAV@2026-03-01T10:15:30.000Z'"
    )
    assert crm == (
        "crm_contact_updated",
        "0035g00000AbCdEAAV",
        "max.mustermann@example.com",
        "+4915123456789",
        datetime(2026, 3, 1, 10, 15, 30),
    )
    assert first.value(
        "select event_type, phone, received_at from silver.events where event_id = 'SM00000000000000000000000000000001'"
    ) == ("whatsapp_message_received", "+4915112345678", datetime(2026, 3, 1, 10, 15, 30))
    assert first.value("select event_type from silver.events where event_id = 'sg-evt-0004'") == "email_click"
    props = json.loads(first.value("select properties from silver.events where event_id = 'sg-evt-0004'"))
    assert props["url"] == "https://www.northbridge.edu/mba?utm_source=email"
    web = first.value(
        "select anonymous_id, session_id, email, properties ->> 'form_id' from silver.events "
        "where event_id = '0b7f0c4e-0001-4000-8000-000000000003'"
    )
    assert web == ("anon_3f9a01", "sess_81c201", "max.mustermann@example.com", "request_info")


# --- incremental runs ---------------------------------------------------------------------------


def test_second_run_adds_only_the_new_batches(first: Run, second: Run) -> None:
    for source in SOURCES:
        new_records = second.landed[source] - first.landed[source]
        assert new_records == 2, f"{source}: each later/ file holds two records"
        for run in (first, second):
            bronze = run.value(f"select count(*), count(distinct record_key) from bronze.brz_{source}__records")
            assert bronze == (run.landed[source], run.landed[source]), f"{source}: bronze"
    # one new record accepted per source, the re-delivery quarantined (not counted twice)
    before = dict(first.query("select source, silver from silver.source_reconciliation"))
    after = dict(second.query("select source, silver from silver.source_reconciliation"))
    assert {s: after[s] - before[s] for s in SOURCES} == dict.fromkeys(SOURCES, 1)
    assert second.value("select count(*) from silver.events") == first.value("select count(*) from silver.events") + 5


def test_second_run_keeps_the_first_runs_rows(first: Run, second: Run) -> None:
    for relation, key in (("silver.events", "event_id"), ("silver.quarantine", "record_key")):
        old = set(first.query(f"select {key} from {relation}"))
        new = set(second.query(f"select {key} from {relation}"))
        assert old < new, relation
    # the later export holds a new version of Sophie Martin's contact
    sophie = "select count(*) from silver.stg_salesforce__contacts where contact_id = '0035g00000XyZaBAAV'"
    assert second.value(sophie) == 2
