"""The Dagster definitions load, and show the graph the data team expects: every connector, every dbt
layer, dbt tests as asset checks, lineage from each source's landing asset into bronze."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from connectors.landing import SOURCES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    os.environ.setdefault("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster")))
    from orchestration.definitions import defs

    return defs


def test_every_connector_and_layer_is_an_asset(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {f"landing/{s}" for s in SOURCES} <= keys
    assert {f"bronze/brz_{s}__records" for s in SOURCES} <= keys
    assert {"silver/events", "silver/quarantine", "silver/source_reconciliation"} <= keys
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"landing", "bronze", "silver"} <= groups


def test_lineage_runs_from_each_connector_into_bronze(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for source in SOURCES:
        bronze = graph.get(dg.AssetKey(["bronze", f"brz_{source}__records"]))
        assert dg.AssetKey(["landing", source]) in bronze.parent_keys


def test_dbt_tests_are_asset_checks(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert any(asset == "silver/events" and "unique" in name for asset, name in checks)
    # Singular tests over several models are attached to the model they guard.
    assert ("silver/events", "assert_events_match_staging") in checks
    assert ("silver/source_reconciliation", "assert_landed_equals_silver_plus_quarantined") in checks
    assert len(checks) >= 20


def test_dagster_cli_loads_the_code_location(tmp_path: Path) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "orchestration.definitions"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
