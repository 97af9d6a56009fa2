"""The whole dbt project built on BigQuery (a local emulator) and on DuckDB from the same landed data:
gold must hold the same number of rows in both.

The landing zone goes to BigQuery through the product's load path (`cdp bigquery load`: one load job
per batch file); then `dbt build --target bigquery` runs every model, seed, data test and unit test.
Emulator gaps the project works around are shims in tests/bigquery/emulator.py (each explained there);
the BigQuery features the emulator lacks and this test therefore cannot prove are listed in
docs/bigquery.md ("What the emulator build proves").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.bigquery.conftest import ROOT, Emulator
from tests.dialect.check import check_files, check_sql

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
PEOPLE, SEED = 150, 5

# Emulator gap: in these dbt unit tests the rows with a fractional-second timestamp come back NULL through dbt's
# actual-vs-expected comparison on the emulator, although the model's SQL returns them right there (see
# test_iso_timestamps_parse_on_the_emulator, which runs the same compiled unit-test SQL and checks every row).
EMULATOR_EXCLUDED_UNIT_TESTS = ("web_parses_timestamps_to_utc_and_quarantines_bad_records",
                                "app_parses_device_times_to_utc")


def _run(args: list[str], env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args[:3])} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: Emulator) -> dict[str, object]:
    """Generates and lands one small population, then builds it on DuckDB and on the emulator."""
    home = tmp_path_factory.mktemp("bq_home")
    profiles = home / "profiles"
    profiles.mkdir()
    warehouse = home / "warehouse.duckdb"
    (profiles / "profiles.yml").write_text(yaml.safe_dump({"cdp": {"target": "duckdb", "outputs": {
        "duckdb": {"type": "duckdb", "path": str(warehouse), "threads": 2},
        "bigquery": bigquery_emulator.profile(),
    }}}))
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_WAREHOUSE_PATH": str(warehouse), "DAGSTER_HOME": str(home / "dagster"),
           "CDP_BIGQUERY_PROJECT": bigquery_emulator.project, "CDP_BIGQUERY_LOCATION": "US",
           "CDP_BIGQUERY_API_ENDPOINT": bigquery_emulator.endpoint}
    _run([str(BIN / "cdp"), "generate", "--people", str(PEOPLE), "--seed", str(SEED), "--out", str(home / "gen")], env)
    _run([str(BIN / "cdp"), "land", str(home / "gen")], env)
    load = _run([str(BIN / "cdp"), "bigquery", "load"], env)
    builds: dict[str, object] = {"home": home, "load": load.stdout + load.stderr}
    for target in ("duckdb", "bigquery"):
        exclude = ["--exclude", *EMULATOR_EXCLUDED_UNIT_TESTS] if target == "bigquery" else []
        result = _run([str(BIN / "dbt"), "build", *_dbt_paths(home, profiles, target), *exclude], env)
        builds[target] = result.stdout
    # the excluded unit tests' SQL, for test_iso_timestamps_parse_on_the_emulator to run itself: `dbt compile`
    # skips unit tests, `dbt test` writes their SQL (and fails them on the emulator, the gap described above)
    subprocess.run([str(BIN / "dbt"), "test", *_dbt_paths(home, profiles, "bigquery"), "--select",
                    *EMULATOR_EXCLUDED_UNIT_TESTS], cwd=ROOT, env=env, capture_output=True, timeout=600)
    builds["env"], builds["profiles"] = env, profiles
    return builds


def _dbt_paths(home: Path, profiles: Path, target: str) -> list[str]:
    """dbt's target and log folders per warehouse; the log as JSON lines, every statement dbt ran in it."""
    return ["--target", target, "--profiles-dir", str(profiles), "--target-path", str(home / f"target_{target}"),
            "--log-path", str(home / f"logs_{target}"), "--log-format-file", "json", "--log-level-file", "debug"]


def _duckdb_counts(warehouse: Path, schema: str) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ?",
            [schema]).fetchall()]
        return {t: con.execute(f'select count(*) from "{schema}"."{t}"').fetchone()[0] for t in tables}


def _bigquery_counts(emulator: Emulator, dataset: str) -> dict[str, int]:
    client = emulator.client()
    return {t.table_id: next(iter(client.query(
        f"select count(*) from `{emulator.project}.{dataset}.{t.table_id}`").result()))[0]
        for t in client.list_tables(f"{emulator.project}.{dataset}") if t.table_type in ("TABLE", "VIEW")}


def test_the_load_path_loads_every_landed_batch_once(builds: dict[str, object], bigquery_emulator: Emulator) -> None:
    home = builds["home"]
    landed = _duckdb_landing_counts(home / "landing")
    client = bigquery_emulator.client()
    for source, rows in landed.items():
        loaded = next(iter(client.query(f"select count(*) from `cdp-test.landing.{source}`").result()))[0]
        assert loaded == rows, f"landing.{source}: {loaded} rows in BigQuery, {rows} landed"
    # a second load finds every batch there and loads nothing
    again = _run([str(BIN / "cdp"), "bigquery", "load"], builds["env"])
    assert "loaded 0 batches (0 rows)" in again.stdout, again.stdout


def _duckdb_landing_counts(landing: Path) -> dict[str, int]:
    with duckdb.connect() as con:
        return {p.name: con.execute(f"select count(*) from read_parquet('{p}/batch-*.parquet')").fetchone()[0]
                for p in sorted(landing.iterdir()) if p.is_dir() and any(p.glob("batch-*.parquet"))}


def test_gold_has_the_same_row_counts_on_bigquery_and_duckdb(builds: dict[str, object],
                                                            bigquery_emulator: Emulator) -> None:
    duck = _duckdb_counts(builds["home"] / "warehouse.duckdb", "gold")
    bq = _bigquery_counts(bigquery_emulator, "gold")
    assert len(duck) >= 10, duck
    assert duck["profiles"] > 0 and duck["segment_memberships"] > 0 and duck["profile_events"] > 0, duck
    assert bq == duck, {t: (duck.get(t), bq.get(t)) for t in sorted(set(duck) | set(bq)) if duck.get(t) != bq.get(t)}


def test_iso_timestamps_parse_on_the_emulator(builds: dict[str, object], bigquery_emulator: Emulator) -> None:
    """The unit test the emulator build excludes, run as plain SQL: every row's occurred_at as the test expects."""
    compiled = next((builds["home"] / "target_bigquery" / "compiled").rglob(
        "web_parses_timestamps_to_utc_and_quarantines_bad_records.sql"))
    spec = yaml.safe_load((ROOT / "dbt_project/models/silver/web/_web__models.yml").read_text())
    unit = next(u for u in spec["unit_tests"] if u["name"] == EMULATOR_EXCLUDED_UNIT_TESTS[0])
    expected = {row["record_key"]: row["occurred_at"] for row in unit["expect"]["rows"]}
    actual = {row["record_key"]: row["occurred_at"] for row in bigquery_emulator.client().query(
        f"select record_key, occurred_at from ({compiled.read_text()})").result()}
    def text(value):  # as the unit test writes it: no fraction when there is none
        if value is None:
            return None
        whole = value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{whole}.{value.microsecond:06d}".rstrip("0") if value.microsecond else whole

    rendered = {key: text(value) for key, value in actual.items()}
    assert rendered == expected


# --- the strict dialect check (tests/dialect/check.py) -------------------------------------------------------------

def _statements_run(home: Path, target: str) -> list[str]:
    """Every statement dbt sent to the warehouse during the build (its JSON log's SQLQuery events), including
    those macros run themselves (identity's connected-components rounds, incremental watermarks...)."""
    statements = []
    for log in sorted((home / f"logs_{target}").glob("dbt.log*")):  # dbt rotates its log file at 10 MB
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["info"]["name"] == "SQLQuery":
                statements.append(event["data"]["sql"])
    return statements


@pytest.mark.parametrize("target", ["bigquery", "duckdb"])
def test_every_compiled_model_and_test_is_strictly_its_warehouse_dialect(builds: dict[str, object],
                                                                         target: str) -> None:
    files = sorted((builds["home"] / f"target_{target}" / "compiled").rglob("*.sql"))
    models = [f for f in files if "/models/" in str(f) and not str(f).endswith(".yml")]
    assert len(files) >= 300 and len(models) >= 60, (len(files), len(models))
    problems = check_files(files, target)
    assert not problems, "\n".join(map(str, problems[:30]))


@pytest.mark.parametrize("target", ["bigquery", "duckdb"])
def test_every_statement_the_build_ran_is_strictly_its_warehouse_dialect(builds: dict[str, object],
                                                                         target: str) -> None:
    statements = _statements_run(builds["home"], target)
    assert len(statements) >= 300, len(statements)  # ~440 on BigQuery, ~1,070 on DuckDB
    problems = [p for i, sql in enumerate(statements) for p in check_sql(sql, target, f"statement {i}")]
    assert not problems, "\n".join(map(str, problems[:30]))


def test_a_duckdb_only_function_in_a_model_fails_the_bigquery_check(builds: dict[str, object],
                                                                   tmp_path: Path) -> None:
    """A model calling DuckDB's epoch_us() compiles for BigQuery (dbt does not know SQL) and fails the check;
    the check is not a formality."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(ROOT / "dbt_project", project / "dbt_project")
    shutil.copy(ROOT / "dbt_project.yml", project / "dbt_project.yml")
    (project / "dbt_project" / "models" / "gold" / "last_seen_epoch.sql").write_text(
        "select profile_id, epoch_us(last_seen_at) as last_seen_us from {{ ref('profiles') }}\n")
    target = tmp_path / "target"
    _run([str(BIN / "dbt"), "compile", "--project-dir", str(project), "--target", "bigquery", "--profiles-dir",
          str(builds["profiles"]), "--target-path", str(target), "--log-path", str(tmp_path / "logs"),
          "--select", "last_seen_epoch"], builds["env"])
    compiled = next(target.rglob("last_seen_epoch.sql"))
    problems = check_files([compiled], "bigquery")
    assert [p.message for p in problems] == ["epoch_us() is not a bigquery function"], problems


def test_the_serving_snapshot_pulls_gold_from_bigquery(builds: dict[str, object], bigquery_emulator: Emulator,
                                                       tmp_path: Path) -> None:
    """`cdp bigquery publish`: the API's snapshot from BigQuery holds what the one published from DuckDB holds."""
    from serving.snapshot import current_snapshot, publish_snapshot, read_meta

    from_duckdb = publish_snapshot(builds["home"] / "warehouse.duckdb", tmp_path / "serving_duckdb", target="duckdb")
    assert from_duckdb.skipped == []
    assert from_duckdb.rows["profiles"] > 0 and from_duckdb.rows["recent_events"] > 0, from_duckdb.rows
    published = _run([str(BIN / "cdp"), "bigquery", "publish"],
                     {**builds["env"], "CDP_SERVING_PATH": str(tmp_path / "serving_bigquery")})
    assert "published" in published.stdout and "from BigQuery" in published.stdout, published.stdout
    meta = read_meta(current_snapshot(tmp_path / "serving_bigquery"))
    assert meta["warehouse"] == f"bigquery:{bigquery_emulator.project}" and meta["skipped"] == []
    assert meta["rows"] == from_duckdb.rows


def test_large_models_are_partitioned_and_clustered_on_bigquery_only(builds: dict[str, object]) -> None:
    """The DDL dbt sent: day partitions on bronze_loaded_at (what incremental reads filter on), clustering by
    profile for the gold tables; nothing of it on DuckDB (the emulator accepts these clauses but does not keep
    them as table metadata, so the DDL is what can be checked here)."""
    def ddl(target: str, model: str) -> str:
        return " ".join(next((builds["home"] / f"target_{target}" / "run").rglob(f"{model}.sql")).read_text().split())

    events = ddl("bigquery", "events")
    assert "partition by timestamp_trunc(bronze_loaded_at, day)" in events and "cluster by source, event_type" in events
    for model in ("brz_web__records", "int_app__parsed", "int_email__deduplicated", "quarantine"):
        assert "partition by timestamp_trunc(bronze_loaded_at, day)" in ddl("bigquery", model), model
    for model in ("profiles", "engagement_scores", "segment_memberships", "profile_identifiers"):
        assert "cluster by profile_id" in ddl("bigquery", model), model
    assert "partition by" not in ddl("duckdb", "events") and "cluster by" not in ddl("duckdb", "profiles")


def test_the_landing_asset_loads_its_source_into_bigquery(bigquery_emulator: Emulator, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """With CDP_TARGET=bigquery, materializing landing/<source> in Dagster loads the batches not yet in BigQuery."""
    import dagster as dg

    from connectors.landing import LandingZone, Records
    from orchestration.defs.ingest import build_landing_asset

    for name, value in {"CDP_HOME": str(tmp_path), "CDP_LANDING_PATH": str(tmp_path / "landing"),
                        "CDP_TARGET": "bigquery", "CDP_BIGQUERY_PROJECT": bigquery_emulator.project,
                        "CDP_BIGQUERY_LOCATION": "US", "CDP_BIGQUERY_LANDING_DATASET": "landing_asset_test",
                        "CDP_BIGQUERY_API_ENDPOINT": bigquery_emulator.endpoint}.items():
        monkeypatch.setenv(name, value)
    zone = LandingZone(tmp_path / "landing")
    zone.init()
    zone.land("whatsapp", "a" * 32, "messages-1.json", Records.from_lists(['{"MessageSid": "SM1"}'] * 3))
    asset = build_landing_asset("whatsapp")
    for expected_rows in (3, 3):  # the second materialization finds the batch there and loads nothing
        result = dg.materialize([asset], instance=dg.DagsterInstance.ephemeral())
        assert result.success
        rows = next(iter(bigquery_emulator.client().query(
            f"select count(*) from `{bigquery_emulator.project}.landing_asset_test.whatsapp`").result()))[0]
        assert rows == expected_rows
