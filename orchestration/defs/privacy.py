"""The right to be forgotten as a Dagster job: `cdp_forget`, one run per erasure request.

`cdp forget --email X` (orchestration/cli.py) records the request in the privacy ledger and runs this job in process;
the Dagster UI shows it like any run (launchpad: run config `ops.forget_subject.config.request_id`). The run config
holds only the request id: Dagster keeps run config in its event log, so the raw identifier waits in the ledger
and is erased from it when the run ends (orchestration/privacy/ledger.py). Log lines carry hashes, profile ids and
counts, never an identifier.

One op, not a graph: the resolved subject (every identifier of the person) would otherwise pass between steps
through the IO manager, i.e. be written to DAGSTER_HOME. The op holds the warehouse lock resource like the dbt assets
(orchestration/runlock.py), so an erasure never overlaps a pipeline run and a pipeline run waits for it.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from orchestration.observability.logs import JSON_LOGGER, json_file_logger
from orchestration.privacy.erasure import run_erasure
from orchestration.progress import report
from orchestration.runlock import WarehouseLock, recover_dead_run
from orchestration.settings import Settings
from reverse_etl.privacy import register as register_destinations_store
from serving.snapshot import register as register_serving_snapshot_store

register_serving_snapshot_store()  # `cdp forget` loads only this module: the snapshot is one of its stores
register_destinations_store()  # and the reverse-ETL destinations (Salesforce, SendGrid) configured here

FORGET_JOB = "cdp_forget"


class ForgetConfig(dg.Config):
    request_id: str = Field(description="The erasure request in the privacy ledger (`cdp forget` prints it).")


@dg.op(
    out=dg.Out(dg.Nothing),
    description="Resolves the request's subject to the whole person, adds the suppression hashes, erases the person "
    "from every store (landing files, every warehouse table, pipeline files; serving snapshot and destinations "
    "once configured), sweeps every store and records the proof in the ledger and var/privacy/audit.jsonl.",
)
def forget_subject(
    context: dg.OpExecutionContext,
    config: ForgetConfig,
    warehouse_lock: dg.ResourceParam[WarehouseLock],  # held for the whole run (see runlock.py)
) -> dg.Output:
    request = run_erasure(config.request_id, context.run_id, lambda message: report(context, message))
    sweep = request.sweep_result or {}
    metadata = {
        "request_id": request.id,
        "status": request.status,
        "subject_hash": request.subject_hash,
        "profile_ids": dg.MetadataValue.json(request.profile_ids or []),
        "rows_per_store": dg.MetadataValue.json(request.rows_per_store or {}),
        "sweep": dg.MetadataValue.json(sweep),
    }
    if request.status != "erased":
        raise dg.Failure(
            description=f"erasure request {request.id}: the sweep still finds the subject "
            f"({', '.join(name for name, result in sweep.get('stores', {}).items() if not result['clean'])})",
            metadata=metadata,
        )
    return dg.Output(None, metadata=metadata)


@dg.resource(description="The warehouse run lock (orchestration/runlock.py) for `cdp forget`, which runs this job "
             "without loading the dbt definitions (they cost seconds); the code location binds defs/dbt.py's.")
def forget_warehouse_lock(init_context: dg.InitResourceContext) -> Iterator[WarehouseLock]:
    lock = WarehouseLock(Settings.from_env().warehouse_path)
    log = init_context.log.warning if init_context.log else print
    dead = lock.acquire(init_context.run_id or "unknown", on_wait=log)
    try:
        if dead is not None and init_context.instance is not None:
            recover_dead_run(init_context.instance, dead, init_context.run_id or "unknown", log)
        yield lock
    finally:
        lock.release()


@dg.job(
    name=FORGET_JOB,
    description="Right to be forgotten: erase one subject (request id from `cdp forget`) from every store and prove "
    "it with a sweep (docs/privacy.md).",
    tags={"cdp/kind": "privacy"},
    # the same loggers as every run (console + the redacted JSON file), so the job also runs outside the code location
    logger_defs={"console": dg.colored_console_logger, JSON_LOGGER: json_file_logger},
)
def cdp_forget() -> None:
    forget_subject()


defs = dg.Definitions(jobs=[cdp_forget])
