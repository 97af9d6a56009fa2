"""End to end as a user runs it: cdp generate -> cdp land -> cdp run, then bad input and a second run.

Counts must reconcile per source against what the generator says it wrote, every clean ground-truth
record must be in silver exactly once, and a malformed file in any source must end in quarantine
with its reason while the run goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from connectors.landing import SOURCES

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
PEOPLE = 1500

pytestmark = pytest.mark.integration


def cdp(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("cdp_home")
    env = {
        **os.environ,
        "CDP_HOME": str(home),
        "CDP_LANDING_PATH": str(home / "landing"),
        "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    return home, env


@pytest.fixture(scope="module")
def first_run(home: tuple[Path, dict[str, str]]) -> dict:
    path, env = home
    generated = path / "generated"
    cdp("generate", "--people", str(PEOPLE), "--seed", "11", "--out", str(generated), env=env)
    cdp("land", str(generated), env=env)
    again = cdp("land", str(generated), env=env)
    assert "landed 0 new batches" in again.stdout  # landing is idempotent
    run = cdp("run", env=env)
    return {"manifest": json.loads((generated / "manifest.json").read_text()), "stdout": run.stdout,
            "generated": generated}


def query(env: dict[str, str], sql: str) -> list[tuple]:
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        return con.execute(sql).fetchall()


def test_counts_reconcile_with_what_was_generated(first_run: dict, home: tuple[Path, dict[str, str]]) -> None:
    _, env = home
    manifest = first_run["manifest"]
    rows = {r[0]: r[1:] for r in query(env, "select source, landed, silver, quarantined, duplicates, "
                                             "is_reconciled from silver.source_reconciliation")}
    assert set(rows) == set(SOURCES)
    for source in SOURCES:
        landed, silver, quarantined, duplicates, reconciled = rows[source]
        expected = manifest["sources"][source]
        assert landed == expected["records"], source
        assert landed == silver + quarantined and reconciled, source
        assert duplicates == expected["duplicates"], source
        # Every record the generator broke on purpose is quarantined, and nothing else is.
        assert quarantined - duplicates == expected["malformed"], source
    for source in SOURCES:
        assert source in first_run["stdout"]


def test_every_clean_ground_truth_record_is_in_silver_once(first_run: dict, home: tuple[Path, dict]) -> None:
    _, env = home
    truth = first_run["generated"] / "ground_truth.parquet"
    missing = query(env, f"""
        select t.source, count(*) from read_parquet('{truth}') t
        left join silver.events e on e.source = t.source and e.event_id = t.record_id
        where not t.is_malformed and e.event_id is null group by 1""")
    assert missing == []
    assert query(env, "select count(*) - count(distinct event_id) from silver.events") == [(0,)]


def test_the_pipeline_resolves_identities_against_the_ground_truth(first_run: dict, home: tuple[Path, dict]) -> None:
    """`cdp run` builds identity and gold; `cdp eval identity` scores them. The bounds are the issue's
    goals at 100k people (measured there by make bench); a small population must meet them too."""
    _, env = home
    result = cdp("eval", "identity", "--truth", str(first_run["generated"] / "ground_truth.parquet"), "--json", env=env)
    scores = json.loads(result.stdout)
    assert scores["precision"] >= 0.995, scores
    assert scores["recall"] >= 0.97, scores
    assert scores["persons"] == PEOPLE
    # anonymous-only visitors and CRM duplicates awaiting review are profiles of their own
    assert PEOPLE < scores["profiles"] < PEOPLE * 1.3, scores
    assert scores["largest_cluster"] <= 25, scores
    summary = cdp("summary", env=env).stdout
    assert "profiles:" in summary and "match candidates:" in summary


def test_a_malformed_file_in_any_source_is_quarantined_and_the_run_goes_on(
    first_run: dict, home: tuple[Path, dict[str, str]]
) -> None:
    path, env = home
    before = {r[0]: r[1:] for r in query(env, "select source, landed, silver, quarantined "
                                               "from silver.source_reconciliation")}
    bad = path / "bad"
    bad.mkdir()
    files = {
        "web": ("clicks.ndjson", '{"event_id": "bad-web-1", "event": "page_view"\n'),
        "app": ("events.ndjson", '{"event_id": "bad-app-1", "event_name": "app_open", "device_id": "d1", '
                                 '"timestamp": "yesterday"}\n'),
        "salesforce": ("contacts.csv", "Id,LastName,LastModifiedDate\n0035g00000BADROW1,Doe\n"),
        "email": ("webhook.json", '[{"email": "a@b.de", "event": "open", "timestamp": 1700000000}]'),
        "whatsapp": ("inbound.ndjson", "not json at all\n"),
    }
    for source, (name, content) in files.items():
        (bad / name).write_text(content)
        cdp("land", source, str(bad / name), env=env)
    cdp("run", env=env)
    rows = {r[0]: r[1:] for r in query(env, "select source, landed, silver, quarantined, is_reconciled "
                                             "from silver.source_reconciliation")}
    for source, (name, _) in files.items():
        # The bad record is landed, quarantined, and silver is unchanged.
        assert rows[source] == (before[source][0] + 1, before[source][1], before[source][2] + 1, True), source
        reasons = query(env, f"select reason from silver.quarantine where source = '{source}' and file_name = '{name}'")
        assert len(reasons) == 1 and reasons[0][0], source


def test_bad_commands_fail_with_one_line(home: tuple[Path, dict[str, str]]) -> None:
    _, env = home
    for args in (["land", "crm", "x.csv"], ["land", "web", "/nonexistent/file.ndjson"], ["generate", "--people", "0",
                 "--out", "/tmp/x"]):
        result = cdp(*args, env=env, check=False)
        assert result.returncode == 1, args
        assert result.stderr.startswith("cdp: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
