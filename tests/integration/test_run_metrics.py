"""Observability of `cdp run`: every run appends JSON lines carrying its run id to var/logs/cdp.jsonl, with no
email address or phone number of the population in clear; and `ops/run_metrics` keeps one row per run in the
warehouse table ops.run_metrics (a second run with nothing new lands 0 rows)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from connectors.landing import SOURCES
from orchestration.observability import read_run_metrics
from reverse_etl.config import load_syncs

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
RUN_METRICS = dg.AssetKey(["ops", "run_metrics"])
# gate 1 per source, gates 2 and 3, gate 4 per declared sync (reverse_etl/syncs.yml)
GATES = len(SOURCES) + 2 + len(load_syncs(check_models=False))

pytestmark = pytest.mark.integration


def cdp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("observability")
    env = {
        **os.environ,
        "CDP_HOME": str(root),
        "CDP_LANDING_PATH": str(root / "landing"),
        "CDP_WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
        "DAGSTER_HOME": str(root / "dagster"),
        "CDP_TARGET": "duckdb",
    }
    result = cdp("generate", "--people", "300", "--seed", "5", "--out", str(root / "generated"), env=env)
    assert result.returncode == 0, result.stderr
    result = cdp("land", str(root / "generated"), env=env)
    assert result.returncode == 0, result.stderr
    landed = re.search(r"landed \d+ new batches \(([\d,]+) records\)", result.stdout)
    assert landed, result.stdout
    env["TEST_LANDED_RECORDS"] = landed.group(1).replace(",", "")
    return env


def log_lines(env: dict[str, str]) -> list[dict]:
    text = (Path(env["CDP_HOME"]) / "var" / "logs" / "cdp.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]  # every line is one JSON object


def run_ids(env: dict[str, str]) -> list[str]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return [run.run_id for run in reversed(instance.get_runs())]  # oldest first


def metrics_rows(env: dict[str, str]) -> dict[str, dict]:
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        cursor = con.execute("select * from ops.run_metrics")
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def test_a_run_logs_json_lines_with_its_run_id_and_no_pii(home: dict[str, str]) -> None:
    result = cdp("run", env=home)
    assert result.returncode == 0, result.stderr[-3000:]
    # the console is unchanged: the JSON lines go to the file only
    assert not any(line.startswith('{"ts"') for line in (result.stdout + result.stderr).splitlines())
    (run_id,) = run_ids(home)
    lines = log_lines(home)
    assert len(lines) > 50
    assert {line["run_id"] for line in lines} == {run_id}
    for line in lines:
        assert {"ts", "level", "logger", "message", "run_id", "step_key", "asset"} <= line.keys()
    # the connector's progress lines (report(): context.log and cdp.progress) are there, with step and asset
    web = [line for line in lines if line["message"].startswith("landing/web: ")]
    assert web and web[0]["step_key"] == "landing__web" and web[0]["asset"] == "landing/web"
    assert any(line.get("event_type") == "STEP_SUCCESS" and line["step_key"] == "ops__run_metrics" for line in lines)

    text = (Path(home["CDP_HOME"]) / "var" / "logs" / "cdp.jsonl").read_text()
    with duckdb.connect(home["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        emails = [r[0] for r in con.execute(
            "select distinct email from silver.events where email is not null order by email limit 50").fetchall()]
        phones = [r[0] for r in con.execute(
            "select distinct phone from silver.events where phone is not null order by phone limit 20").fetchall()]
    assert len(emails) == 50 and phones
    for value in emails + phones:
        assert value not in text and value.lower() not in text.lower()


def test_the_run_has_one_metrics_row(home: dict[str, str]) -> None:
    (run_id,) = run_ids(home)
    rows = metrics_rows(home)
    assert list(rows) == [run_id]
    row = rows[run_id]
    with duckdb.connect(home["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        profiles, known = con.execute(
            "select count(*), count(*) filter (where lifecycle_stage <> 'anonymous') from gold.profiles").fetchone()
        quarantined = con.execute("select count(*) from silver.quarantine").fetchone()[0]
        events = con.execute("select count(*) from silver.events").fetchone()[0]
        # the exact match rate: every event joined to its profile
        exact_rate = con.execute("""
            select count(*) filter (where p.lifecycle_stage <> 'anonymous') / count(*)
            from gold.profile_events as e left join gold.profiles as p using (profile_id)
        """).fetchone()[0]
    assert row["rows_landed"] == int(home["TEST_LANDED_RECORDS"])
    assert sum(json.loads(row["rows_landed_by_source"]).values()) == row["rows_landed"]
    assert (row["profiles"], row["known_profiles"]) == (profiles, known)
    assert row["rows_quarantined"] == quarantined > 0
    assert row["silver_events"] == row["silver_events_new"] == events
    assert row["identity_match_rate"] == pytest.approx(exact_rate, abs=1e-4)
    gates = {(g["check"], g["asset"]): g["passed"] for g in json.loads(row["gate_results"])}
    assert gates[("gate_2_bronze_to_silver", "silver/events")] is True
    assert gates[("gate_3_silver_to_gold", "gold/profiles")] is True
    assert row["gates_failed"] == 0 and row["gates_passed"] == len(gates) == GATES
    assert row["dbt_tests"] > 20 and row["dbt_test_failures"] == 0
    steps = json.loads(row["step_durations"])
    assert {"cdp_dbt_bronze_silver", "cdp_dbt_identity_gold"} <= steps.keys()
    assert 0 < steps["cdp_dbt_bronze_silver"] < row["run_seconds"]

    # the same figures are the asset's metadata
    with dg.DagsterInstance.from_config(home["DAGSTER_HOME"]) as instance:
        event = instance.get_latest_materialization_event(RUN_METRICS)
    assert event is not None and event.run_id == run_id
    metadata = event.asset_materialization.metadata
    assert metadata["rows_landed"].value == row["rows_landed"]
    assert metadata["profiles"].value == profiles
    assert "gate_3_silver_to_gold" in metadata["gates"].value


def test_a_second_run_with_nothing_new_lands_zero_rows(home: dict[str, str]) -> None:
    before = len(log_lines(home))
    result = cdp("run", env=home)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = run_ids(home)
    lines = log_lines(home)
    assert len(lines) > before  # appended
    assert {line["run_id"] for line in lines[before:]} == {second}
    rows = metrics_rows(home)
    assert set(rows) == {first, second}
    assert rows[second]["rows_landed"] == 0
    assert rows[second]["rows_quarantined"] == 0 and rows[second]["silver_events_new"] == 0
    assert rows[second]["profiles"] == rows[first]["profiles"]
    assert rows[second]["run_started_at"] > rows[first]["run_started_at"]
    latest = read_run_metrics(Path(home["CDP_WAREHOUSE_PATH"]), limit=5)
    assert [m.run_id for m in latest] == [second, first]
    assert latest[0].rows_landed == 0 and latest[1].rows_landed == int(home["TEST_LANDED_RECORDS"])
    assert latest[1].gates_passed == GATES and latest[1].step_durations

    # `cdp metrics` prints the same rows, newest first
    shown = cdp("metrics", "--limit", "5", env=home)
    assert shown.returncode == 0, shown.stderr
    body = shown.stdout.splitlines()[1:]
    assert [line[:8] for line in body] == [second[:8], first[:8]]
    assert f"{int(home['TEST_LANDED_RECORDS']):,}" in body[1] and f"{GATES}/{GATES}" in body[1]
