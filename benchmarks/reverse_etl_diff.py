"""Reverse-ETL change detection at scale: time `reverse_etl.runner.plan()` on a 1M-row sync payload.

1. build (not timed), in a temporary DuckDB file: a payload table of --rows contacts shaped like
   activation.sync_salesforce_contacts (12 mapped columns), and the sync state as a run that delivered it would
   leave it, then change 1 % of the rows and remove 0.5 % (a mirror sync: updates and deletes);
2. time --repeat plans (copy of the model with a row hash per key, diff against the state, counts, samples) and
   report the median; check that the plan found exactly the changed and removed rows.
The goal is a diff of 1M rows under 10 s.

    python benchmarks/reverse_etl_diff.py [--rows 1000000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contacts_payload import contacts_select

from reverse_etl.config import SyncConfig
from reverse_etl.runner import _row_hash_sql, plan
from reverse_etl.state import STATE, ensure_tables

GOAL_SECONDS = 10.0

SYNC = SyncConfig(
    name="bench_contacts",
    model="bench_contacts",
    destination="salesforce",
    object="Contact",
    mode="mirror",
    match_key="CDP_Profile_Id__c",
    mapping={
        "CDP_Profile_Id__c": "profile_id",
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "MobilePhone": "phone",
        "CDP_Lifecycle_Stage__c": "lifecycle_stage",
        "CDP_Engagement_Score__c": "engagement_score",
        "CDP_Segments__c": "segments",
        "CDP_Last_Seen_At__c": "last_seen_at",
        "HasOptedOutOfEmail": "has_opted_out_of_email",
        "CDP_Email_Consent__c": "email_consent",
        "CDP_WhatsApp_Consent__c": "whatsapp_consent",
    },
    schedule="*/15 * * * *",
    relation="main.payload",
)


def build(con: duckdb.DuckDBPyConnection, rows: int) -> tuple[int, int]:
    """The payload and the state of a run that delivered it; then 1 % changed, 0.5 % removed. Returns both counts."""
    con.execute(f"create or replace table payload as {contacts_select(rows, 'prf_', 24)}")
    ensure_tables(con)
    con.execute(f"delete from {STATE} where sync = ?", [SYNC.name])
    con.execute(
        f"insert into {STATE} (sync, key, row_hash, destination_id, delivered_at, run_id) "
        f"select ?, profile_id, {_row_hash_sql(SYNC)}, 'sf-' || profile_id, now(), 'bench' from payload",
        [SYNC.name],
    )
    # 1 % changed (every 100th row gets a new score), 0.5 % removed (every 200th row, offset so none overlap)
    changed = con.execute("update payload set engagement_score = engagement_score + 0.5 "
                          "where cast(substr(profile_id, 5) as bigint) % 100 = 0").fetchall()[0][0]
    removed = con.execute("delete from payload where cast(substr(profile_id, 5) as bigint) % 200 = 7").fetchall()[0][0]
    con.execute("checkpoint")
    return int(changed), int(removed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the results there too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cdp-bench-reverse-etl-") as tmp:
        con = duckdb.connect(str(Path(tmp) / "warehouse.duckdb"))
        started = time.perf_counter()
        changed, removed = build(con, args.rows)
        print(f"built {args.rows:,} payload rows and their sync state in {time.perf_counter() - started:.1f} s "
              f"({changed:,} changed, {removed:,} removed)", flush=True)
        timings = []
        for attempt in range(1, args.repeat + 1):
            result = plan(con, SYNC)
            timings.append(result.seconds)
            print(f"plan {attempt}: {result.seconds:.2f} s: {result.adds:,} adds, {result.updates:,} updates, "
                  f"{result.deletes:,} deletes, {result.unchanged:,} unchanged", flush=True)
            if (result.adds, result.updates, result.deletes) != (0, changed, removed):
                print(f"WRONG PLAN: expected 0 adds, {changed:,} updates, {removed:,} deletes", file=sys.stderr)
                return 1
        con.close()
    median = statistics.median(timings)
    verdict = "ok" if median < GOAL_SECONDS else "TOO SLOW"
    print(f"diff of {args.rows:,} rows: median {median:.2f} s over {len(timings)} runs (goal < {GOAL_SECONDS:.0f} s): "
          f"{verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "changed": changed, "removed": removed,
                                               "seconds": timings, "median_seconds": median,
                                               "goal_seconds": GOAL_SECONDS}, indent=2) + "\n")
    return 0 if median < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
