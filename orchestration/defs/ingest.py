"""One asset per source connector: the source's slice of the landing zone.

Materializing it lands every new file dropped in the source's inbox (`var/inbox/<source>/`, for
example by a scheduled export) and moves the file to `landed/` beside it; files landed directly
with `cdp land` are already in the zone. Either way the asset reports what the zone holds, and the
dbt sources of the same name read it (see CdpDbtTranslator), so lineage runs from each connector.
The Salesforce asset also pulls the Contacts changed since its last pull through the REST API when
SALESFORCE_INSTANCE_URL is set (connectors/salesforce/api.py; the CRM pull job runs it hourly).
"""

import os

import dagster as dg

from connectors.base import SourceError
from connectors.landing import SOURCES, LandedBatch, LandingZone
from connectors.registry import FILE_SOURCES
from orchestration.progress import report
from orchestration.settings import Settings

ZONE_WATERMARK = "zone_watermark_ns"


def landing_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", source])


def build_landing_asset(source: str) -> dg.AssetsDefinition:
    connector = FILE_SOURCES[source]

    @dg.asset(
        key=landing_asset_key(source),
        group_name="landing",
        kinds={"python", "parquet"},
        description=f"Immutable batches landed from the `{source}` source ({connector.__doc__ or connector.__name__}).",
        metadata={"source": source},
    )
    def landing(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        settings = Settings.from_env()
        zone = LandingZone(settings.landing_root)
        zone.init()
        inbox = settings.inbox_root / source
        new_batches = new_records = 0
        if inbox.is_dir():
            done = inbox / "landed"
            for path in connector.files_in(inbox):
                try:
                    (batch,) = connector(paths=[path]).land(zone)
                except SourceError as error:
                    context.log.warning(f"{source}: {path.name} not landed: {error}")
                    continue
                done.mkdir(exist_ok=True)
                path.replace(done / path.name)
                if not batch.already_landed:
                    new_batches += 1
                    new_records += batch.records
        pulled = ""
        if source == "salesforce" and os.environ.get("SALESFORCE_INSTANCE_URL"):
            from connectors.salesforce.api import pull_contacts

            def landed(batch: LandedBatch) -> None:
                context.log.info(f"salesforce: {batch.file_name}: {batch.records:,} records"
                                 f"{' (already landed)' if batch.already_landed else ''}")

            try:
                result = pull_contacts(zone, since=None, progress=landed)
            except SourceError as error:  # the inbox files are landed already; the run fails, visibly
                raise dg.Failure(description=str(error)) from None
            new_batches += len(result.new_batches)
            new_records += result.count
            pulled = (f"; API pull: {result.pulled:,} Contacts changed since {result.since or 'the beginning'}, "
                      f"watermark {result.watermark.isoformat() if result.watermark else 'none yet'}")
        if settings.target == "bigquery":  # the load path: new batches into landing.<source> by load jobs
            from connectors.bigquery_load import BigQueryLoadError, BigQuerySettings, load_landing

            try:
                loaded = load_landing(zone, BigQuerySettings.from_env(), (source,), progress=context.log.info)
            except BigQueryLoadError as error:
                raise dg.Failure(description=str(error)) from None
            pulled += f"; loaded into BigQuery: {len(loaded.loaded[source])} batches ({loaded.rows[source]:,} rows)"
        totals = zone.landed_counts()[source]
        mtimes = [path.stat().st_mtime_ns for path in zone.batch_files(source)]
        report(context, f"landing/{source}: {new_batches} new batches ({new_records:,} records); "
               f"{totals['batches']} batches, {totals['records']:,} records in the zone{pulled}")
        return dg.MaterializeResult(
            metadata={
                "new_batches": new_batches,
                "new_records": new_records,
                "batches_total": totals["batches"],
                "records_total": totals["records"],
                "landing_path": dg.MetadataValue.path(str(settings.landing_root / source)),
                # what this run saw of the zone: the landing sensor starts a new run only for batches after it
                ZONE_WATERMARK: max(mtimes, default=0),
                # when the source last delivered data (absent before its first batch): read by the source
                # freshness checks instead of the time of this materialization
                **({"dagster/last_updated_timestamp": dg.MetadataValue.timestamp(max(mtimes) / 1e9)} if mtimes else {}),
            }
        )

    return landing


landing_assets = [build_landing_asset(source) for source in SOURCES]

defs = dg.Definitions(assets=landing_assets)
