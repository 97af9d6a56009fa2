"""What one run costs on BigQuery at 5M profiles and 1B events, estimated from a DuckDB warehouse built here.

No BigQuery is reachable from this machine, so the bytes a run would scan are computed, not metered:
1. per table of the built warehouse (by default the 1M-people one benchmarks/identity.py leaves), its rows and
   its BigQuery logical bytes per row (BigQuery's billing sizes: STRING and JSON 2 bytes + their UTF-8 bytes,
   INT64 / FLOAT64 / TIMESTAMP / DATE 8, BOOL 1; string lengths measured on a sample of 100,000 rows);
2. scaled to the target: bronze, silver and event-keyed gold tables by events (1B / events here), identity
   and the other gold tables by profiles (5M / profiles here);
3. per model (dbt's manifest), what it reads: a full scan of each input, except an incremental model reading
   an input partitioned by bronze_loaded_at (dbt_project.yml), which scans only the partitions since its
   watermark: one day's partition for a run every hour (1B events a year = 2.74M a day).
   Of each input, the bytes of the columns the model's compiled SQL names (BigQuery bills the columns a query
   reads; a `*` counts them all). Not counted: the statements macros run themselves (identity's
   connected-components rounds over its work tables, a few scans of the identity graph per run).
Prints the full-build and the hourly-run bytes, the biggest readers, and the on-demand price at $6.25 / TiB.

    python benchmarks/bigquery_cost.py [--warehouse var/bench/identity/warehouse.duckdb]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
DBT = str(Path(sys.executable).parent / "dbt")
PRICE_PER_TIB = 6.25  # on-demand, US multi-region
FIXED = {"BIGINT": 8, "INTEGER": 8, "DOUBLE": 8, "FLOAT": 8, "TIMESTAMP": 8, "TIMESTAMP WITH TIME ZONE": 8,
         "DATE": 8, "BOOLEAN": 1, "HUGEINT": 16, "DECIMAL": 16}
EVENT_SCALED_GOLD = {"consent_events", "whatsapp_message_insights", "profile_events"}


def table_sizes(warehouse: Path) -> dict[str, tuple[int, dict[str, float]]]:
    """schema.table -> (rows, {column: BigQuery logical bytes per row})."""
    sizes = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables "
                             "where table_type = 'BASE TABLE' and table_schema in "
                             "('bronze', 'silver', 'identity', 'gold', 'reference')").fetchall()
        for schema, table in tables:
            rows = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
            columns = con.execute("select column_name, data_type from information_schema.columns "
                                  "where table_schema = ? and table_name = ?", [schema, table]).fetchall()
            per_column = {c.lower(): float(FIXED.get(t.split("(")[0], 2)) for c, t in columns}
            variable = [c for c, t in columns if t.split("(")[0] not in FIXED]
            if variable and rows:
                sums = ", ".join(f'avg(2 + coalesce(strlen(cast("{c}" as varchar)), 0))' for c in variable)
                sample = f'(select * from "{schema}"."{table}" using sample 100000 rows)'
                for column, size in zip(variable, con.execute(f"select {sums} from {sample}").fetchone(), strict=True):
                    per_column[column.lower()] = size or 2.0
            sizes[f"{schema}.{table}"] = (rows, per_column)
    return sizes


def manifest(warehouse: Path) -> tuple[dict, dict[str, str]]:
    """The BigQuery target's manifest (its models carry the partitioning: macros/portability/bigquery_layout.sql;
    parsing needs no connection) and each model's SQL compiled on the DuckDB warehouse (compiling reads it)."""
    with tempfile.TemporaryDirectory() as target:
        env = {**os.environ, "CDP_BIGQUERY_PROJECT": os.environ.get("CDP_BIGQUERY_PROJECT", "cost-estimate")}
        subprocess.run([DBT, "parse", "--target", "bigquery", "--target-path", target, "--quiet"], cwd=ROOT,
                       check=True, env=env)
        parsed = json.loads((Path(target) / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as target:
        env = {**os.environ, "CDP_WAREHOUSE_PATH": str(warehouse.resolve())}
        subprocess.run([DBT, "compile", "--target", "duckdb", "--target-path", target, "--quiet",
                        "--select", "resource_type:model"], cwd=ROOT, check=True, env=env)
        compiled = json.loads((Path(target) / "manifest.json").read_text())
    code = {nid: n.get("compiled_code") or n["raw_code"] for nid, n in compiled["nodes"].items()}
    return parsed, code


def referenced_bytes(per_column: dict[str, float], sql: str, relation: str) -> float:
    """Bytes per row of `relation`'s columns that a model's SQL names (BigQuery bills those); all of them when
    the SQL selects `*` straight from it."""
    text = sql.lower()
    schema, table = relation.split(".")
    star = rf'select\s+(distinct\s+)?\*\s+from\s+("?\w+"?\.)?"?{schema}"?\."?{table}"?'
    if re.search(star, text):
        return sum(per_column.values())
    words = set(re.findall(r"[a-z_][a-z0-9_]*", text))
    return sum(size for column, size in per_column.items() if column in words)


def estimate(warehouse: Path, profiles: float, events: float, runs_per_day: int) -> dict:
    sizes = table_sizes(warehouse)
    here_events = sizes["silver.events"][0]
    here_profiles = sizes["gold.profiles"][0]

    def scale(relation: str) -> float:
        schema, table = relation.split(".")
        if schema in ("bronze", "silver") or table in EVENT_SCALED_GOLD:
            return events / here_events
        if schema == "reference":
            return 1.0
        return profiles / here_profiles

    parsed, code = manifest(warehouse)
    nodes = parsed["nodes"]
    by_id = {nid: n for nid, n in nodes.items() if n["resource_type"] in ("model", "seed")}

    def relation(node: dict) -> str:
        return f"{node['config'].get('schema') or node['schema']}.{node.get('alias') or node['name']}"

    day_share = 1.0 / 365  # one day's partition of a year of events

    def scanned(node: dict, sql: str, incremental: bool) -> tuple[float, float]:
        """(full, hourly) bytes a query with this SQL scans of `node`'s inputs. A view is read through, and an
        incremental reader's watermark filter reaches the partitioned tables under it (BigQuery pushes
        predicates on the partitioning column down through views)."""
        full = hourly = 0.0
        for parent_id in node["depends_on"]["nodes"]:
            parent = by_id.get(parent_id)
            if parent is None:
                continue
            if parent["config"].get("materialized") == "view":
                view_full, view_hourly = scanned(parent, code.get(parent_id, ""), incremental)
                full, hourly = full + view_full, hourly + view_hourly
                continue
            if relation(parent) not in sizes:
                continue
            rows, per_column = sizes[relation(parent)]
            total = rows * scale(relation(parent)) * referenced_bytes(per_column, sql, relation(parent))
            full += total
            hourly += total * day_share if incremental and parent["config"].get("partition_by") else total
        return full, hourly

    full, hourly, readers = 0.0, 0.0, []
    for node_id, node in by_id.items():
        if node["resource_type"] != "model" or node["config"].get("materialized") == "view":
            continue  # a view scans nothing until read: its readers count it
        model_full, model_hourly = scanned(node, code.get(node_id, ""),
                                           node["config"].get("materialized") == "incremental")
        full += model_full
        hourly += model_hourly
        readers.append((model_hourly, relation(node), node["config"].get("materialized")))
    stored = sum(rows * scale(rel) * sum(per_column.values()) for rel, (rows, per_column) in sizes.items())
    return {"events_here": here_events, "profiles_here": here_profiles, "stored_bytes": stored,
            "full_build_bytes": full, "hourly_run_bytes": hourly, "runs_per_day": runs_per_day,
            "readers": sorted(readers, reverse=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, default=ROOT / "var/bench/identity/warehouse.duckdb")
    parser.add_argument("--profiles", type=float, default=5e6)
    parser.add_argument("--events", type=float, default=1e9)
    parser.add_argument("--runs-per-day", type=int, default=24)
    args = parser.parse_args()
    if not args.warehouse.exists():
        raise SystemExit(f"no warehouse at {args.warehouse}: run benchmarks/identity.py first (or pass --warehouse)")
    result = estimate(args.warehouse, args.profiles, args.events, args.runs_per_day)
    tib = 2 ** 40
    print(f"measured on {result['profiles_here']:,} profiles / {result['events_here']:,} events; "
          f"scaled to {args.profiles:,.0f} profiles / {args.events:,.0f} events")
    print(f"stored (logical):     {result['stored_bytes'] / tib:8.2f} TiB")
    print(f"full build scans:     {result['full_build_bytes'] / tib:8.2f} TiB  "
          f"(${result['full_build_bytes'] / tib * PRICE_PER_TIB:,.0f} on demand)")
    print(f"hourly run scans:     {result['hourly_run_bytes'] / tib:8.2f} TiB  "
          f"(${result['hourly_run_bytes'] / tib * PRICE_PER_TIB:,.2f}; "
          f"x{args.runs_per_day} a day = ${result['hourly_run_bytes'] / tib * PRICE_PER_TIB * args.runs_per_day:,.0f})")
    incremental = sum(b for b, _, kind in result["readers"] if kind == "incremental")
    print(f"  of which incremental models: {incremental / 2**30:,.1f} GiB "
          f"(${incremental / tib * PRICE_PER_TIB:,.2f}); the rest is table models that rescan their inputs")
    print("biggest readers per hourly run:")
    for scanned, name, kind in result["readers"][:8]:
        print(f"  {name:<45} {kind:<12} {scanned / 2**30:10.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
