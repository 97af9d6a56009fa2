"""Segments at scale: time `dbt build` of the engagement scores, every segment and the membership history
on an existing warehouse (by default the 1M-people warehouse benchmarks/identity.py leaves in
var/bench/identity/).

1. prepare (not timed): `dbt run` of everything the segments are built on, so that consent and WhatsApp
   insights exist and are current;
2. time --repeat builds (models and their data and unit tests) of engagement_scores, the segment models,
   segment_results, segment_changes, segment_memberships and segment_definitions, and report the median.
   The first build on a warehouse records every member as an entry; later ones record only changes;
3. count segments, members and changes, and save the results to --out (var/bench/segments/results.json).
The goal is a build under 30 s at 1M people (about 10M events).

    python benchmarks/segments.py [--warehouse var/bench/identity/warehouse.duckdb] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import ROOT, measure

DBT = str(Path(sys.executable).parent / "dbt")
# selected by folder and name: a segment added to models/segments/ is benchmarked without a change here
SEGMENT_MODELS = [
    "engagement_scores", "path:dbt_project/models/segments", "segment_results", "segment_changes",
    "segment_memberships", "segment_definitions",
]
GOAL_SECONDS = 30.0


def dbt(env: dict[str, str], target: Path, *args: str) -> tuple[float, float, float]:
    """Wall seconds (dbt start-up included), peak GiB, and dbt's own elapsed seconds of the command."""
    seconds, peak = measure([DBT, *args, "--target-path", str(target), "--log-path", str(target / "logs")], env)
    run_results = json.loads((target / "run_results.json").read_text())
    return seconds, peak, float(run_results.get("elapsed_time") or 0.0)


def counts(warehouse: Path) -> dict:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        def one(sql: str) -> int:
            return int(con.execute(sql).fetchone()[0])

        return {
            "profiles": one("select count(*) from gold.profiles"),
            "events": one("select count(*) from silver.events"),
            "segments": one("select count(*) from gold.segment_definitions"),
            "members": dict(con.execute(
                "select segment, members from gold.segment_definitions order by segment").fetchall()),
            "changes_per_run": [row[1] for row in con.execute(
                "select run_id, count(*) from gold.segment_changes group by run_id order by min(changed_at)"
            ).fetchall()],
            "memberships": one("select count(*) from gold.segment_memberships"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=ROOT / "var" / "bench" / "identity" / "warehouse.duckdb",
                        help="an existing warehouse with silver, identity and gold built")
    parser.add_argument("--landing", type=Path, default=None,
                        help="its landing zone (default: `landing` beside the warehouse)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "segments" / "results.json")
    args = parser.parse_args()
    warehouse = args.warehouse.resolve()
    if not warehouse.exists():
        raise SystemExit(f"bench: no warehouse at {warehouse}: build one first (python benchmarks/identity.py)")
    landing = (args.landing or warehouse.parent / "landing").resolve()
    target = args.out.parent.resolve() / "target"
    target.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CDP_HOME": str(warehouse.parent),
        "CDP_LANDING_PATH": str(landing),
        "CDP_WAREHOUSE_PATH": str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }

    print(f"prepare: everything the segments read, on {warehouse} ...", flush=True)
    upstream = ["+segment_results", "--exclude", *SEGMENT_MODELS]
    prepare_s, _, _ = dbt(env, target, "run", "--select", *upstream)
    print(f"  {prepare_s:.1f} s", flush=True)

    runs = []
    for index in range(args.repeat):
        runs.append(dbt(env, target, "build", "--select", *SEGMENT_MODELS))
        seconds, peak, elapsed = runs[-1]
        print(f"segments build {index + 1}/{args.repeat}: {seconds:.1f} s (dbt elapsed {elapsed:.1f} s), "
              f"peak {peak:.2f} GiB", flush=True)

    median_s = statistics.median(r[0] for r in runs)
    results = {
        "warehouse": str(warehouse),
        **counts(warehouse),
        "prepare_s": round(prepare_s, 1),
        "build_s": [round(r[0], 1) for r in runs],
        "build_dbt_elapsed_s": [round(r[2], 1) for r in runs],
        "build_peak_gib": [round(r[1], 2) for r in runs],
        "median_build_s": round(median_s, 1),
        "goal_s": GOAL_SECONDS,
        "goal_met": median_s < GOAL_SECONDS,
        "repeats": args.repeat,
    }
    print(f"{results['segments']} segments over {results['profiles']:,} profiles and {results['events']:,} events: "
          f"median build {median_s:.1f} s (goal < {GOAL_SECONDS:.0f} s: {'met' if results['goal_met'] else 'missed'})",
          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
