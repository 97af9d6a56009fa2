"""The reverse-ETL bookkeeping tables, in the warehouse schema `reverse_etl` (created if missing).

- `sync_state`: what each destination holds, per sync and key: the row hash delivered, the destination's id for the
  record, when and by which run. The next run sends only keys that are new or whose hash changed (and, in mirror
  mode, deletes keys no longer in the model). A row is written only after the destination confirmed it.
- `sync_rejected`: rows the destination refused (its error code and message), retried by later runs; cleared when
  the row is delivered or leaves the model. `attempts` counts runs that tried the same row hash.
- `sync_runs`: the audit, one row per run (dry runs included) with what was planned, sent, delivered, refused.
- `api_budget`: API calls per destination and UTC day (reverse_etl/base.py, ApiBudget).

Written with portable SQL (types, MERGE, no DuckDB-only syntax) so that the same tables can live in BigQuery when
the runner gets a BigQuery connection; today the runner uses DuckDB, the embedded warehouse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

SCHEMA = "reverse_etl"
STATE = f"{SCHEMA}.sync_state"
REJECTED = f"{SCHEMA}.sync_rejected"
RUNS = f"{SCHEMA}.sync_runs"
API_BUDGET = f"{SCHEMA}.api_budget"

RUN_STATUSES = ("running", "succeeded", "partial", "failed", "blocked", "budget_exhausted")

DDL = (
    f"create schema if not exists {SCHEMA}",
    f"""create table if not exists {STATE} (
        sync varchar not null,
        key varchar not null,
        row_hash varchar not null,
        destination_id varchar,
        delivered_at timestamp not null,
        run_id varchar not null
    )""",
    f"""create table if not exists {REJECTED} (
        sync varchar not null,
        key varchar not null,
        operation varchar not null,
        row_hash varchar,
        error_code varchar,
        message varchar,
        attempts bigint not null,
        first_failed_at timestamp not null,
        last_failed_at timestamp not null,
        run_id varchar not null
    )""",
    f"""create table if not exists {RUNS} (
        run_id varchar not null,
        sync varchar not null,
        destination varchar not null,
        object varchar not null,
        mode varchar not null,
        started_at timestamp not null,
        ended_at timestamp,
        status varchar not null,
        gate_status varchar,
        rows_in_model bigint,
        planned_adds bigint,
        planned_updates bigint,
        planned_deletes bigint,
        planned_retries bigint,
        unchanged bigint,
        parked bigint,
        sent bigint,
        succeeded bigint,
        failed bigint,
        retried bigint,
        rejected bigint,
        deferred bigint,
        api_calls bigint,
        dry_run boolean not null,
        seconds double,
        error varchar
    )""",
    f"""create table if not exists {API_BUDGET} (
        destination varchar not null,
        day date not null,
        calls bigint not null,
        daily_limit bigint,
        updated_at timestamp not null
    )""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the schema and the tables if they are missing (idempotent, cheap)."""
    for statement in DDL:
        con.execute(statement)
