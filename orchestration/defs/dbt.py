"""The dbt project as Dagster assets: one asset per model and seed, dbt tests as asset checks.

Asset keys and groups are derived from the dbt project itself (folders and sources), never from a
list of model names here: a model in `models/silver/` is the asset `silver/<name>` in the `silver`
group, and a dbt source `web` is the connector asset `landing/web`.
"""


import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from orchestration.progress import report
from orchestration.runlock import WarehouseLock, recover_dead_run
from orchestration.settings import PROJECT_DIR, Settings, dbt_executable

settings = Settings.from_env().export()

dbt_project = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR, target=settings.target)


def _newest_source_mtime() -> float:
    files = [PROJECT_DIR / "dbt_project.yml", PROJECT_DIR / "profiles.yml"]
    files += [p for p in (PROJECT_DIR / "dbt_project").rglob("*") if p.is_file()]
    return max(p.stat().st_mtime for p in files if p.exists())


def ensure_manifest(project: DbtProject) -> Path:
    """Parse the project when its manifest is missing or older than any dbt file (a few seconds)."""
    manifest = project.manifest_path
    if not manifest.exists() or manifest.stat().st_mtime < _newest_source_mtime():
        completed = subprocess.run(
            [dbt_executable(), "parse", "--quiet", "--target", settings.target],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0 or not manifest.exists():
            detail = (completed.stdout + completed.stderr).strip().splitlines()
            raise RuntimeError("dbt parse failed: " + (" | ".join(detail[-5:]) or "no output"))
    return manifest


class CdpDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(["landing", dbt_resource_props["source_name"]])
        schema = dbt_resource_props.get("config", {}).get("schema") or "main"
        return dg.AssetKey([schema, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return "landing"
        if dbt_resource_props["resource_type"] == "seed":
            return "reference"
        # fqn is [project, <layer folder>, ..., name]: the layer folder is the group.
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "default"


# Two dbt steps, not one: a blocking quality gate on silver (defs/quality.py) can then stop identity
# and gold from building on bad data, because Dagster starts the second step only after the gate passed.
# The split follows the folders; anything not in bronze or silver (identity, gold, later layers) is
# in the second step.
SILVER_SELECTION = "path:dbt_project/models/bronze path:dbt_project/models/silver resource_type:seed"


@dg.resource(description="Holds the warehouse's run lock from the first dbt step to the end of the run "
             "(orchestration/runlock.py); marks a run that died holding it as failed.")
def warehouse_lock(init_context: dg.InitResourceContext) -> Iterator[WarehouseLock]:
    settings = Settings.from_env()
    lock = WarehouseLock(settings.warehouse_path)
    run_id = init_context.run.run_id if init_context.run else "unknown"
    dead = lock.acquire(run_id, on_wait=init_context.log.warning if init_context.log else print)
    try:
        if dead is not None and init_context.instance is not None:
            recover_dead_run(init_context.instance, dead, run_id,
                             init_context.log.warning if init_context.log else print)
        yield lock
    finally:
        lock.release()


class DbtBuildConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Rebuild the incremental models from their inputs (the nightly reconciliation does, for "
        "identity and gold); profile id history is never rebuilt (full_refresh: false in dbt).",
    )


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, config: DbtBuildConfig) -> Iterator[Any]:
    args = ["build", "--full-refresh"] if config.full_refresh else ["build"]
    for event in dbt.cli(args, context=context).stream():
        # dbt prints its own per-model progress; failed checks are repeated where people look for them.
        if isinstance(event, dg.AssetCheckResult) and not event.passed:
            report(context, f"dbt: check {event.check_name} failed on {'/'.join(event.asset_key.path)}")
        yield event


@dbt_assets(
    manifest=ensure_manifest(dbt_project),
    project=dbt_project,
    dagster_dbt_translator=CdpDbtTranslator(),
    select=SILVER_SELECTION,
    name="cdp_dbt_bronze_silver",
)
def cdp_dbt_bronze_silver(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    config: DbtBuildConfig,
    warehouse_lock: dg.ResourceParam[WarehouseLock],  # held for the whole run (see runlock.py)
) -> Iterator[Any]:
    yield from _build(context, dbt, config)


@dbt_assets(
    manifest=ensure_manifest(dbt_project),
    project=dbt_project,
    dagster_dbt_translator=CdpDbtTranslator(),
    select="fqn:*",
    exclude=SILVER_SELECTION,
    name="cdp_dbt_identity_gold",
)
def cdp_dbt_identity_gold(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    config: DbtBuildConfig,
    warehouse_lock: dg.ResourceParam[WarehouseLock],  # held for the whole run (see runlock.py)
) -> Iterator[Any]:
    yield from _build(context, dbt, config)


defs = dg.Definitions(
    assets=[cdp_dbt_bronze_silver, cdp_dbt_identity_gold],
    resources={
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "warehouse_lock": warehouse_lock,
    },
)
