"""Reverse ETL as Dagster assets: one asset `reverse_etl/<sync>` per sync declared in reverse_etl/syncs.yml.

Each asset depends on its payload model (`activation/<model>`, built by dbt) and runs the sync with
reverse_etl/runner.py: gate 4 on the model's rows, then only the new, changed (and, in mirror mode, removed) rows go
to the destination. Gate 4 is the blocking asset check `gate_4_<sync>` of the asset: when it fails, nothing is sent,
the asset reports `blocked` in its metadata and the step fails like gates 1-3 (the destination keeps its last good
data; the check says why). The run's counts (planned, sent, succeeded, failed, retried, rejected, deferred, API
calls) are the materialization's metadata and a
row of reverse_etl.sync_runs. A sync that fails (destination down, bad credentials) fails its step with the reason.
A destination that is not configured in the environment (or not installed) is not enabled here: the asset then
plans only (gate 4 + dry run, audited as a dry run) and says which variables to set, so `cdp run` works anywhere.

Schedules: one job and one schedule per sync, on the sync's cron (UTC); they start STOPPED: turn them on in the UI
once the destinations' credentials are in the environment. The asset takes the warehouse lock resource like the
dbt assets (orchestration/runlock.py), so a sync never overlaps a pipeline run.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb

from orchestration.progress import report
from orchestration.quality.gate_4 import LastSyncStore
from orchestration.runlock import WarehouseLock
from orchestration.settings import Settings
from reverse_etl.base import ApiBudget, DestinationNotConfigured
from reverse_etl.config import SyncConfig, gate_docs_dir, last_sync_path, load_syncs
from reverse_etl.runner import SyncResult, run_sync

GROUP = "reverse_etl"  # the asset keys are reverse_etl/<sync>; a key starts with its group


def sync_asset_key(sync: SyncConfig) -> dg.AssetKey:
    return dg.AssetKey(["reverse_etl", sync.name])


def model_asset_key(sync: SyncConfig) -> dg.AssetKey:
    # the dbt assets are keyed [schema, model] (defs/dbt.py); activation models are built in the activation schema
    return dg.AssetKey([sync.relation.split(".")[0], sync.model])


def _gate_check(sync: SyncConfig, result: SyncResult) -> dg.AssetCheckResult:
    gate = result.gate
    assert gate is not None
    failed = gate.failed()
    return dg.AssetCheckResult(
        check_name=f"gate_4_{sync.name}",
        passed=gate.success,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.summary(),
        metadata={
            "rows_checked": gate.rows_checked,
            "seconds": round(gate.seconds, 2),
            # observed texts only: the sample rows of a PII check may hold the email it found
            "failed": dg.MetadataValue.md("\n".join(f"- `{o.expectation}`: {o.observed}" for o in failed) or "none"),
            **({"data_docs": dg.MetadataValue.path(str(gate.docs_path))} if gate.docs_path else {}),
        },
    )


def build_sync_asset(sync: SyncConfig) -> dg.AssetsDefinition:
    key = sync_asset_key(sync)

    @dg.asset(
        key=key,
        group_name=GROUP,
        deps=[model_asset_key(sync)],
        kinds={sync.destination},
        description=f"Reverse-ETL sync {sync.name}: {sync.mode} {sync.destination} {sync.object} by {sync.match_key} "
        f"from {sync.relation} (reverse_etl/syncs.yml). {sync.description}",
        metadata={"destination": sync.destination, "object": sync.object, "mode": sync.mode,
                  "match_key": sync.match_key, "schedule": sync.schedule, "owner": sync.owner,
                  "mapping": dg.MetadataValue.json(sync.mapping)},
        check_specs=[dg.AssetCheckSpec(
            name=f"gate_4_{sync.name}", asset=key, blocking=True,
            description="Great Expectations gate 4 on the rows about to be pushed: mapping valid, no PII in name or "
            "free-text fields, values fit their fields, row count within ±20 % of the last successful sync. "
            "A failure blocks the sync (nothing is sent).",
        )],
    )
    def _sync_asset(
        context: dg.AssetExecutionContext,
        warehouse_lock: dg.ResourceParam[WarehouseLock],  # held for the whole run (see runlock.py)
    ) -> Iterator[Any]:
        from reverse_etl.destinations import DestinationUnavailable, open_destination

        settings = Settings.from_env()
        not_enabled = None
        with duckdb.connect(str(settings.warehouse_path)) as con:
            budget = ApiBudget(con, sync.destination, sync.daily_api_calls)
            try:
                destination = open_destination(sync, budget)
            except (DestinationNotConfigured, DestinationUnavailable) as error:
                # not enabled on this deployment: plan only (gate 4 + dry run), so the UI shows what would be sent
                destination, not_enabled = None, str(error)
                context.log.warning(f"sync {sync.name}: {not_enabled}; planning only (dry run)")
            result = run_sync(
                con, sync, destination, budget=budget, dry_run=destination is None,
                last_sync=LastSyncStore(last_sync_path(settings.home)),
                docs_dir=gate_docs_dir(settings.home, sync.name),
                progress=lambda message: report(context, message),
            )
        report(context, result.summary() + (f" (not sent: {not_enabled})" if not_enabled else ""))
        metadata = {**result.metadata(), "dagster_run_id": context.run.run_id,
                    **({"not_enabled": not_enabled} if not_enabled else {})}
        if result.gate is not None:
            yield _gate_check(sync, result)
        if result.status == "failed":
            raise dg.Failure(description=result.summary(), metadata=metadata)
        yield dg.MaterializeResult(metadata=metadata)

    return _sync_asset


def build_sync_schedule(sync: SyncConfig) -> dg.ScheduleDefinition:
    job = dg.define_asset_job(
        f"reverse_etl_{sync.name}",
        selection=dg.AssetSelection.assets(sync_asset_key(sync)),
        description=f"Run the reverse-ETL sync {sync.name} ({sync.destination} {sync.object}).",
        tags={"cdp/kind": "reverse_etl"},
    )
    return dg.ScheduleDefinition(
        name=f"reverse_etl_{sync.name}_schedule",
        job=job,
        cron_schedule=sync.schedule,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"The sync {sync.name} on its cron ({sync.schedule} UTC, reverse_etl/syncs.yml).",
    )


SYNCS = load_syncs()

defs = dg.Definitions(
    assets=[build_sync_asset(sync) for sync in SYNCS.values()],
    schedules=[build_sync_schedule(sync) for sync in SYNCS.values()],
)
