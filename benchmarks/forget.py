"""Bench of the right to be forgotten: `cdp forget` on a built warehouse (goal: < 2 min at 1M people).

Erasure is destructive, so the landing zone and warehouse of --home (a built home such as var/bench/identity/ after
benchmarks/identity.py: landing/, warehouse.duckdb) are copied to --scratch first (skip with --in-place when --home
is already a disposable copy). Then --subjects random known people (seeded) are forgotten one after the other by
their email, each `cdp forget` its own process: wall time (Dagster start-up, resolution, erasure of every store,
sweep of every store) and peak memory of the process tree, median reported. Each request must end `erased`.

    python benchmarks/forget.py --home var/bench/identity [--subjects 3] [--seed 1] [--scratch var/bench/forget]

Results go to <scratch>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import CDP, ROOT, measure


def copy_home(source: Path, scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    shutil.copytree(source / "landing", scratch / "landing")
    shutil.copy2(source / "warehouse.duckdb", scratch / "warehouse.duckdb")
    print(f"copied {source} to {scratch} in {time.monotonic() - started:.0f} s", flush=True)


def pick_subjects(warehouse: Path, count: int, seed: int) -> list[str]:
    """Emails of `count` random profiles that have one (known people)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        emails = [r[0] for r in con.execute(
            "select min(identifier_value) from gold.profile_identifiers where identifier_type = 'email' "
            "group by profile_id order by 1").fetchall()]
    return random.Random(seed).sample(emails, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="a built home: landing/ and warehouse.duckdb")
    parser.add_argument("--scratch", type=Path, default=ROOT / "var" / "bench" / "forget")
    parser.add_argument("--in-place", action="store_true", help="erase in --home itself (a disposable copy)")
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    home = args.home.resolve()
    if args.in_place:
        work = home
    else:
        work = args.scratch.resolve()
        copy_home(home, work)
    env = {
        **os.environ,
        "CDP_HOME": str(work),
        "CDP_LANDING_PATH": str(work / "landing"),
        "CDP_WAREHOUSE_PATH": str(work / "warehouse.duckdb"),
        "DAGSTER_HOME": str(work / "dagster"),
        "CDP_PRIVACY_PATH": str(work / "privacy"),
    }
    with duckdb.connect(str(work / "warehouse.duckdb"), read_only=True) as con:
        people = con.execute("select count(*) from gold.profiles").fetchone()[0]
        events = con.execute("select count(*) from silver.events").fetchone()[0]
    print(f"{people:,} profiles, {events:,} silver events in {work}", flush=True)
    runs = []
    for email in pick_subjects(work / "warehouse.duckdb", args.subjects, args.seed):
        seconds, peak = measure([CDP, "forget", "--email", email, "--requested-by", "bench"], env)
        status = subprocess.run([CDP, "forget", "--status", _last_request(work)], env=env, cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
        if ": erased" not in status.splitlines()[0]:
            raise SystemExit(f"bench: the request did not end erased:\n{status}")
        runs.append({"seconds": round(seconds, 1), "peak_gib": round(peak, 2)})
        print(f"cdp forget: {seconds:.1f} s, peak {peak:.2f} GiB", flush=True)
    results = {
        "profiles": people,
        "silver_events": events,
        "runs": runs,
        "median_s": round(statistics.median(r["seconds"] for r in runs), 1),
        "median_peak_gib": round(statistics.median(r["peak_gib"] for r in runs), 2),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"median {results['median_s']} s (goal < 120 s); saved to {work / 'results.json'}")


def _last_request(work: Path) -> str:
    lines = (work / "privacy" / "audit.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["request_id"]


if __name__ == "__main__":
    main()
