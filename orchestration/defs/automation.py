"""When the pipeline runs, and whether what it builds is fresh.

- `landing_sensor` starts a micro-batch run (`cdp_microbatch`: every asset, incremental) as soon as a batch lands
  in the zone after the last run saw it, or a file waits in an inbox. Every few seconds (CDP_SENSOR_INTERVAL, 2).
- `crm_pull_schedule` runs the CRM pull (`cdp_crm_pull`: the Salesforce landing asset and everything downstream of
  it) every hour, well inside the CRM's 4-hour freshness policy.
- `nightly_reconciliation_schedule` (02:30 UTC) runs every asset with identity and gold rebuilt from silver
  (`--full-refresh`), so drift of any incremental shortcut is corrected daily; dbt's reconciliation tests
  (landed = silver + quarantined per source) and every gate run with it.
- Runs never overlap: the instance's run queue runs one at a time (dagster.yaml, Settings.export) and every run
  holds the warehouse lock (orchestration/runlock.py), which also serializes `cdp run` started by hand.
- Freshness: each dbt source's `freshness` (dbt_project/models/bronze/<source>/_<source>__sources.yml) becomes a
  Dagster freshness check on its landing asset; `freshness_behind_landing` on gold/profiles checks the policy of
  orchestration/freshness.py after every run and, through `freshness_sensor`, every minute between runs.
"""

import hashlib
import json
import os
import warnings
from datetime import timedelta

import dagster as dg

from connectors.landing import SOURCES, LandingZone
from orchestration.defs.dbt import dbt_project, ensure_manifest
from orchestration.defs.ingest import ZONE_WATERMARK, landing_asset_key
from orchestration.freshness import describe, gold_lag
from orchestration.observability import run_config
from orchestration.settings import Settings

PROFILES = dg.AssetKey(["gold", "profiles"])
# The jobs' runs write the JSON log (var/logs/cdp.jsonl) as `cdp run` does; the console (the run worker's output)
# keeps everything, as Dagster's default.
LOGGERS = run_config(console_level="DEBUG")
SENSOR_INTERVAL = int(os.environ.get("CDP_SENSOR_INTERVAL", "2"))

microbatch_job = dg.define_asset_job(
    "cdp_microbatch",
    selection=dg.AssetSelection.all(),
    description="Land what is new, then bronze -> silver -> identity -> gold incrementally, gates included.",
    config=LOGGERS,
    tags={"cdp/kind": "microbatch"},
)
crm_pull_job = dg.define_asset_job(
    "cdp_crm_pull",
    selection=dg.AssetSelection.assets(landing_asset_key("salesforce")).downstream(),
    description="Pull the CRM export waiting in the Salesforce inbox and build everything downstream of it.",
    config=LOGGERS,
    tags={"cdp/kind": "crm_pull"},
)
nightly_job = dg.define_asset_job(
    "cdp_nightly_reconciliation",
    selection=dg.AssetSelection.all(),
    description="Every asset, with identity and gold rebuilt from silver (dbt --full-refresh), every test and gate.",
    config={**LOGGERS, "ops": {"cdp_dbt_identity_gold": {"config": {"full_refresh": True}}}},
    tags={"cdp/kind": "nightly_reconciliation"},
)


# --- the landing sensor -------------------------------------------------------------------------------------------

def pending_landing(instance: dg.DagsterInstance, settings: Settings) -> dict[str, int]:
    """Per source, the batch files landed after the zone state the last run recorded, plus files waiting in the
    source's inbox. Empty when there is nothing to do."""
    zone = LandingZone(settings.landing_root)
    pending: dict[str, int] = {}
    for source in SOURCES:
        event = instance.get_latest_materialization_event(landing_asset_key(source))
        seen = 0
        if event is not None and event.asset_materialization is not None:
            value = event.asset_materialization.metadata.get(ZONE_WATERMARK)
            seen = int(value.value) if value is not None else 0
        new = sum(1 for path in zone.batch_files(source) if path.stat().st_mtime_ns > seen)
        inbox = settings.inbox_root / source
        if inbox.is_dir():
            new += sum(1 for path in inbox.iterdir() if path.is_file() and not path.name.startswith("."))
        if new:
            pending[source] = new
    return pending


@dg.sensor(
    job=microbatch_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a micro-batch run when batches land in the zone after the last run, or files wait in an "
    "inbox (var/inbox/<source>/).",
)
def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    settings = Settings.from_env()
    pending = pending_landing(context.instance, settings)
    if not pending:
        return dg.SkipReason("no new landing files since the last run")
    zone = LandingZone(settings.landing_root)
    # The run key names the state of the zone and inboxes: the same pending files never start two runs (one may
    # be queued while another builds), and any new file makes a new key.
    state = {
        source: sorted(p.name for p in zone.batch_files(source)) + sorted(
            p.name for p in (settings.inbox_root / source).glob("*") if p.is_file()
        )
        for source in pending
    }
    run_key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:24]
    summary = ", ".join(f"{source} {count}" for source, count in pending.items())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"cdp/trigger": "landing_sensor", "cdp/pending": summary})]
    )


# --- schedules ----------------------------------------------------------------------------------------------------

crm_pull_schedule = dg.ScheduleDefinition(
    name="crm_pull_schedule",
    job=crm_pull_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly CRM pull (the CRM's freshness policy allows 4 hours).",
)
nightly_reconciliation_schedule = dg.ScheduleDefinition(
    name="nightly_reconciliation_schedule",
    job=nightly_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly full reconciliation: identity and gold rebuilt from silver, all tests and gates.",
)


# --- freshness ----------------------------------------------------------------------------------------------------

_PERIODS = {"minute": 60, "hour": 3600, "day": 86400}


def source_freshness() -> dict[str, timedelta]:
    """The `error_after` of each dbt source's freshness, read from the dbt manifest (the source of truth)."""
    manifest = json.loads(ensure_manifest(dbt_project).read_text())
    limits: dict[str, timedelta] = {}
    for source in manifest["sources"].values():
        error_after = (source.get("freshness") or {}).get("error_after") or {}
        if error_after.get("count") and error_after.get("period"):
            seconds = error_after["count"] * _PERIODS[error_after["period"]]
            name = source["source_name"]
            limits[name] = min(limits.get(name, timedelta.max), timedelta(seconds=seconds))
    return limits


# Dagster marks these factories "superseded" by FreshnessPolicy, but a policy measures the time since the asset
# was materialized, and a landing asset is materialized by every run whether its source sent data or not. These
# checks read `dagster/last_updated_timestamp` (the newest batch, see defs/ingest.py): the dbt source semantics.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    source_freshness_checks = [
        check
        for source, limit in sorted(source_freshness().items())
        for check in dg.build_last_update_freshness_checks(
            assets=[landing_asset_key(source)],
            lower_bound_delta=limit,
            severity=dg.AssetCheckSeverity.ERROR,
        )
    ]
    source_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=source_freshness_checks,
        minimum_interval_seconds=60,
        name="source_freshness_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


def _evaluate_gold_lag(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    settings = Settings.from_env()
    built_from = None
    event = instance.get_latest_materialization_event(PROFILES)
    if event is not None:
        record = instance.get_run_record_by_id(event.run_id)
        built_from = record.start_time if record is not None and record.start_time else event.timestamp
    lags = gold_lag(LandingZone(settings.landing_root), built_from)
    passed = all(lag.ok for lag in lags)
    return dg.AssetCheckEvaluation(
        asset_key=PROFILES,
        check_name="freshness_behind_landing",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=describe(lags),
        metadata={
            **{f"{lag.source}_lag_seconds": round(lag.lag_seconds, 1) for lag in lags},
            **{f"{lag.source}_pending_batches": lag.pending_batches for lag in lags},
            "policy": dg.MetadataValue.md(
                "| source | allowed | lag | pending batches |\n|---|---|---|---|\n" + "\n".join(
                    f"| {lag.source} | {lag.allowed_seconds:.0f} s | {lag.lag_seconds:.0f} s | {lag.pending_batches} |"
                    for lag in lags
                )
            ),
        },
    )


@dg.asset_check(
    asset=PROFILES,
    name="freshness_behind_landing",
    description="Freshness policy: gold no more than 5 minutes behind landing for web, app, email and WhatsApp, "
    "4 hours for the CRM (orchestration/freshness.py). Also evaluated every minute by freshness_sensor.",
)
def freshness_behind_landing(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    evaluation = _evaluate_gold_lag(context.instance)
    return dg.AssetCheckResult(
        passed=evaluation.passed,
        severity=evaluation.severity,
        description=evaluation.description,
        metadata=evaluation.metadata,
    )


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the gold freshness policy every minute, between runs too (a stopped sensor or failing "
    "runs show up as gold falling behind).",
)
def freshness_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    return dg.SensorResult(asset_events=[_evaluate_gold_lag(context.instance)])


defs = dg.Definitions(
    jobs=[microbatch_job, crm_pull_job, nightly_job],
    sensors=[landing_sensor, source_freshness_sensor, freshness_sensor],
    schedules=[crm_pull_schedule, nightly_reconciliation_schedule],
    asset_checks=[*source_freshness_checks, freshness_behind_landing],
)
