"""The load path to BigQuery: landed batch files into the `landing.<source>` tables, by load jobs.

On DuckDB, bronze reads the landing folder in place (`read_parquet`). On BigQuery the same files are
loaded into one native table per source, which the bronze models read as their source
(`landing.web`, ...): a load job costs no query bytes, and a native table is cheaper to scan
repeatedly than an external one.

Exactly once: a batch file is loaded by one load job (atomic: all its rows or none), and only when
its batch id is not yet in the table. A crash between two files leaves the loaded ones loaded and
the next run loads the rest; a file is never loaded twice.

Configuration (environment, the same variables as the dbt profile's bigquery target):
- CDP_BIGQUERY_PROJECT: the Google Cloud project (required);
- CDP_BIGQUERY_LOCATION: the datasets' location (default EU);
- CDP_BIGQUERY_LANDING_DATASET: the dataset of the landing tables (default `landing`);
- CDP_BIGQUERY_KEYFILE: a service-account key file, else Application Default Credentials;
- CDP_BIGQUERY_API_ENDPOINT: another BigQuery endpoint, e.g. a local emulator (then anonymous).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.landing import BATCH_PREFIX, SOURCES, LandingZone, check_source

# The landing tables' schema, as connectors/landing.py's LANDING_SCHEMA in BigQuery types.
LANDING_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("source", "STRING", "REQUIRED"),
    ("batch_id", "STRING", "REQUIRED"),
    ("landed_at", "TIMESTAMP", "REQUIRED"),
    ("file_name", "STRING", "REQUIRED"),
    ("position", "INT64", "REQUIRED"),
    ("payload", "STRING", "REQUIRED"),
    ("parse_error", "STRING", "NULLABLE"),
)


class BigQueryLoadError(Exception):
    """The landing zone could not be loaded into BigQuery (configuration, a failed load job...)."""


@dataclass(frozen=True)
class BigQuerySettings:
    project: str
    location: str = "EU"
    landing_dataset: str = "landing"
    keyfile: str | None = None
    api_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BigQuerySettings:
        env = dict(os.environ if env is None else env)
        project = env.get("CDP_BIGQUERY_PROJECT", "").strip()
        if not project:
            raise BigQueryLoadError("CDP_BIGQUERY_PROJECT is not set: the Google Cloud project to load into")
        return cls(
            project=project,
            location=env.get("CDP_BIGQUERY_LOCATION") or "EU",
            landing_dataset=env.get("CDP_BIGQUERY_LANDING_DATASET") or "landing",
            keyfile=env.get("CDP_BIGQUERY_KEYFILE") or None,
            api_endpoint=env.get("CDP_BIGQUERY_API_ENDPOINT") or None,
        )

    def client(self):  # -> google.cloud.bigquery.Client (imported lazily: ~1 s)
        from google.cloud import bigquery

        if self.api_endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            return bigquery.Client(project=self.project, location=self.location, credentials=AnonymousCredentials(),
                                   client_options=ClientOptions(api_endpoint=self.api_endpoint))
        if self.keyfile:
            path = Path(self.keyfile).expanduser()
            if not path.is_file():
                raise BigQueryLoadError(f"CDP_BIGQUERY_KEYFILE {self.keyfile!r} is not a file")
            return bigquery.Client.from_service_account_json(str(path), project=self.project, location=self.location)
        return bigquery.Client(project=self.project, location=self.location)


@dataclass
class LoadReport:
    loaded: dict[str, list[str]] = field(default_factory=dict)  # source -> batch ids loaded by this call
    skipped: dict[str, int] = field(default_factory=dict)  # source -> batches already in BigQuery
    rows: dict[str, int] = field(default_factory=dict)  # source -> rows loaded by this call


def landing_schema():
    from google.cloud import bigquery

    return [bigquery.SchemaField(name, type_, mode=mode) for name, type_, mode in LANDING_COLUMNS]


def utc_parquet(path: Path) -> tuple[io.BytesIO, int]:
    """The batch file with landed_at marked as UTC (a Parquet timestamp without a time zone is a
    DATETIME to BigQuery, and the landing tables' landed_at is a TIMESTAMP), and its rows."""
    table = pq.read_table(path)
    schema = table.schema.set(table.schema.get_field_index("landed_at"),
                              pa.field("landed_at", pa.timestamp("us", tz="UTC"), nullable=False))
    buffer = io.BytesIO()
    pq.write_table(table.cast(schema), buffer)
    buffer.seek(0)
    return buffer, table.num_rows


def load_landing(
    zone: LandingZone,
    settings: BigQuerySettings,
    sources: tuple[str, ...] = SOURCES,
    progress: Callable[[str], None] = print,
) -> LoadReport:
    """Load every landed batch not yet in BigQuery; one load job per batch file."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud import bigquery

    client = settings.client()
    dataset = bigquery.Dataset(f"{settings.project}.{settings.landing_dataset}")
    dataset.location = settings.location
    where = settings.api_endpoint or "BigQuery"
    try:  # the first call says quickly when BigQuery cannot be reached or the credentials are refused
        client.create_dataset(dataset, exists_ok=True, retry=bigquery.DEFAULT_RETRY.with_deadline(30), timeout=10)
    except (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException) as error:
        raise BigQueryLoadError(f"cannot create or reach {settings.project}.{settings.landing_dataset} at "
                                f"{where}: {error}") from error
    report = LoadReport()
    for source in sources:
        check_source(source)
        table_id = f"{settings.project}.{settings.landing_dataset}.{source}"
        try:
            client.get_table(table_id)
        except exceptions.NotFound:
            table = bigquery.Table(table_id, schema=landing_schema())
            # Bronze reads a source's new batches by landed_at: day partitions bound that scan.
            table.time_partitioning = bigquery.TimePartitioning(field="landed_at")
            table.clustering_fields = ["batch_id"]
            client.create_table(table)
        known = {row[0] for row in client.query(f"select distinct batch_id from `{table_id}`").result()}
        # the zone names each batch file after its batch id: batch-<batch_id>.parquet
        files = [(path.stem.removeprefix(BATCH_PREFIX), path) for path in zone.batch_files(source)]
        pending = [(batch_id, path) for batch_id, path in files if batch_id not in known]
        report.skipped[source] = len(files) - len(pending)
        report.loaded[source] = []
        report.rows[source] = 0
        for number, (batch_id, path) in enumerate(pending, 1):
            config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                            write_disposition=bigquery.WriteDisposition.WRITE_APPEND)
            data, rows = utc_parquet(path)
            job = client.load_table_from_file(data, table_id, job_config=config)
            try:
                job.result()
            except exceptions.GoogleAPICallError as error:
                raise BigQueryLoadError(f"{source}: loading {path.name} failed: {error}") from error
            report.loaded[source].append(batch_id)
            report.rows[source] += rows
            progress(f"{source}: loaded {path.name} ({rows} rows, {number}/{len(pending)})")
        progress(f"{source}: {len(pending)} batches loaded, {report.skipped[source]} already in {table_id}")
    return report
