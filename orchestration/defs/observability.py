"""Observability: the JSON file logger (var/logs/cdp.jsonl) and the `ops/run_metrics` asset.

- Loggers: Dagster's console logger, as before, and `cdp_json`, which appends structured, PII-redacted JSON lines
  (orchestration/observability/logs.py). Dagster starts only the loggers a run's config names (the console logger
  alone when it names none), so `cdp run` names both (observability.run_config()); the UI's run view reads the
  instance's event log, which no logger setting changes.
- `ops/run_metrics` runs last in every run that builds gold (it depends on the gold models, and so waits for the
  blocking gate 3 on gold/profiles): it measures the run (orchestration/observability/metrics.py), keeps one row
  per run in `ops.run_metrics` and shows the figures as the asset's metadata.
"""

import dagster as dg

from orchestration.defs.dbt import cdp_dbt_identity_gold
from orchestration.observability.logs import JSON_LOGGER, json_file_logger
from orchestration.observability.metrics import TABLE, RunMetrics, collect_run_metrics, write_run_metrics
from orchestration.runlock import WarehouseLock
from orchestration.settings import Settings

RUN_METRICS = dg.AssetKey(["ops", "run_metrics"])
GOLD = sorted((key for key in cdp_dbt_identity_gold.keys if key.path[0] == "gold"), key=lambda k: k.path)


def _markdown(metrics: RunMetrics) -> dict[str, dg.MetadataValue]:
    gates = "| gate | asset | result |\n|---|---|---|\n" + "\n".join(
        f"| `{gate.check}` | {gate.asset} | {'passed' if gate.passed else '**FAILED**'} |"
        for gate in metrics.gate_results
    )
    steps = "| step | seconds |\n|---|---|\n" + "\n".join(
        f"| `{step}` | {seconds:.1f} |" for step, seconds in sorted(metrics.step_durations.items(), key=lambda s: -s[1])
    )
    return {"gates": dg.MetadataValue.md(gates), "step_durations": dg.MetadataValue.md(steps)}


def run_metrics_metadata(metrics: RunMetrics, table: str) -> dict[str, dg.MetadataValue | str | int | float]:
    figures: dict[str, int | float | None] = {
        "rows_landed": metrics.rows_landed,
        "rows_quarantined": metrics.rows_quarantined,
        "silver_events": metrics.silver_events,
        "silver_events_new": metrics.silver_events_new,
        "profiles": metrics.profiles,
        "known_profiles": metrics.known_profiles,
        "identity_match_rate": metrics.identity_match_rate,
        "gates_passed": metrics.gates_passed,
        "gates_failed": metrics.gates_failed,
        "dbt_tests": metrics.dbt_tests,
        "dbt_test_failures": metrics.dbt_test_failures,
        "run_seconds": metrics.run_seconds,
    }
    metadata: dict[str, dg.MetadataValue | str | int | float] = {k: v for k, v in figures.items() if v is not None}
    metadata["rows_landed_by_source"] = dg.MetadataValue.json(metrics.rows_landed_by_source)
    if metrics.rows_quarantined_by_source is not None:
        metadata["rows_quarantined_by_source"] = dg.MetadataValue.json(metrics.rows_quarantined_by_source)
    metadata.update(_markdown(metrics))
    metadata["warehouse_table"] = table
    return metadata


@dg.asset(
    key=RUN_METRICS,
    group_name="ops",
    kinds={"python", "duckdb"},
    deps=GOLD,
    description="This run's metrics (rows landed and quarantined, silver events, profiles, identity match rate, "
    "gate results, dbt test failures, step durations), one row per run in the warehouse table ops.run_metrics. "
    "Definitions in orchestration/observability/metrics.py.",
)
def run_metrics(
    context: dg.AssetExecutionContext,
    warehouse_lock: dg.ResourceParam[WarehouseLock],  # the table is written inside the run's lock (runlock.py)
) -> dg.MaterializeResult:
    settings = Settings.from_env()
    duckdb_target = settings.target == "duckdb"
    metrics = collect_run_metrics(context.instance, context.run_id, settings.warehouse_path if duckdb_target else None)
    if duckdb_target:
        write_run_metrics(settings.warehouse_path, metrics)
        table = f"{TABLE} in {settings.warehouse_path}"
    else:
        # the BigQuery warehouse is not read or written from here yet: only the instance's figures are reported
        table = f"not written: CDP_TARGET={settings.target} (only the DuckDB warehouse is supported for now)"
    context.log.info(
        f"run metrics: {metrics.rows_landed:,} rows landed, {metrics.rows_quarantined or 0:,} quarantined, "
        f"{metrics.profiles or 0:,} profiles, match rate {metrics.identity_match_rate}, "
        f"{metrics.gates_passed} gates passed, {metrics.gates_failed} failed -> {table}"
    )
    return dg.MaterializeResult(metadata=run_metrics_metadata(metrics, table))


defs = dg.Definitions(
    assets=[run_metrics],
    # Definitions-level loggers replace Dagster's default set ({"console": ...}), so the console logger is kept.
    loggers={"console": dg.colored_console_logger, JSON_LOGGER: json_file_logger},
)
