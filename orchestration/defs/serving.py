"""The serving snapshot as a Dagster asset: `serving/snapshot`, published after gold (serving/snapshot.py).

It depends on the gold assets it reads, so it runs after them and after gate 3 (a blocking check on gold/profiles:
when the gate fails, Dagster does not start it and the API keeps serving the last good snapshot).

Warehouse access: DuckDB allows one writing process, and while dbt writes the file nobody can open it, not even
read-only; while anyone holds it open read-only, dbt cannot write it. So the asset takes the `warehouse_lock`
resource like the dbt assets (in `cdp run` the run already holds it: one process, one resource for the run; run on
its own from the UI it waits for a running pipeline to finish) and only then attaches the warehouse read-only for
the few seconds of the copy. The API never opens the warehouse: it reads the published file.

Importing this module also plugs the snapshot into the right to be forgotten (the `serving_snapshot` store).
"""

import dagster as dg

from orchestration.runlock import WarehouseLock
from orchestration.settings import Settings
from serving.settings import ServingSettings
from serving.snapshot import SOURCE_TABLES, publish_snapshot, register

register()

SNAPSHOT = dg.AssetKey(["serving", "snapshot"])
# the dbt assets are keyed [schema, model] (defs/dbt.py): gold.profiles is gold/profiles
GOLD_INPUTS = [dg.AssetKey(table.source.split(".")) for table in SOURCE_TABLES] + [
    dg.AssetKey(["gold", "profile_events"])
]


@dg.asset(
    key=SNAPSHOT,
    group_name="serving",
    deps=GOLD_INPUTS,
    description="The API's read-only serving snapshot: gold profiles, identifiers, merges, consent, engagement, "
    "segments and recent events copied into a new DuckDB file (with one JSON document per profile), then swapped "
    "in atomically (var/serving/CURRENT). The running API loads it within a second.",
)
def serving_snapshot(
    context: dg.AssetExecutionContext,
    warehouse_lock: dg.ResourceParam[WarehouseLock],  # no dbt writes the warehouse while it is copied
) -> dg.MaterializeResult:
    settings = Settings.from_env()
    published = publish_snapshot(settings.warehouse_path, ServingSettings.from_env().serving_dir,
                                 target=settings.target)
    context.log.info(f"serving snapshot {published.path.name}: {published.rows.get('profiles', 0):,} profiles "
                     f"in {published.seconds:.1f} s")
    metadata: dict = {
        "file": dg.MetadataValue.path(str(published.path)),
        "seconds": round(published.seconds, 2),
        "rows": dg.MetadataValue.json(published.rows),
        "profiles": published.rows.get("profiles", 0),
    }
    if published.skipped:
        metadata["skipped (not in the warehouse)"] = dg.MetadataValue.json(published.skipped)
    return dg.MaterializeResult(metadata=metadata)


defs = dg.Definitions(assets=[serving_snapshot])
