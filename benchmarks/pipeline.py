"""`make bench`: time and peak memory of generate, land and run (landing, bronze, silver, identity and
gold through Dagster and dbt) at several population sizes, on this machine.

Every step runs as its own `cdp` process in a scratch home under var/bench/, and its peak memory is
the largest sum of resident memory over the process tree (cdp plus the dbt subprocess it starts),
sampled every 100 ms. Medians over --repeat runs are printed as a Markdown table and saved to
var/bench/results.json.

    python benchmarks/pipeline.py [--sizes 10000,100000,1000000] [--repeat 3] [--max-repeat-size 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CDP = str(Path(sys.executable).parent / "cdp")


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GiB) of the command's whole process tree."""
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.monotonic() - start
    if process.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return seconds, peak / 2**30


def run_once(people: int, scratch: Path) -> dict[str, tuple[float, float]]:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {
        **os.environ,
        "CDP_HOME": str(scratch),
        "CDP_LANDING_PATH": str(scratch / "landing"),
        "CDP_WAREHOUSE_PATH": str(scratch / "warehouse.duckdb"),
        "DAGSTER_HOME": str(scratch / "dagster"),
    }
    generated = scratch / "generated"
    steps = {
        "generate": [CDP, "generate", "--people", str(people), "--seed", "7", "--out", str(generated)],
        "land": [CDP, "land", str(generated)],
        "run": [CDP, "run"],
    }
    results = {}
    for name, command in steps.items():
        results[name] = measure(command, env)
        print(f"  {people:>9,} people  {name:<9}{results[name][0]:>8.1f} s  {results[name][1]:>6.2f} GiB", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-repeat-size", type=int, default=100_000,
                        help="sizes above this run once (a 1M run takes minutes)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bench_dir = ROOT / "var" / "bench"
    table = []
    for people in sizes:
        repeats = args.repeat if people <= args.max_repeat_size else 1
        runs = [run_once(people, bench_dir / "scratch") for _ in range(repeats)]
        row = {"people": people, "repeats": repeats}
        for step in ("generate", "land", "run"):
            row[f"{step}_s"] = round(statistics.median(r[step][0] for r in runs), 1)
            row[f"{step}_gib"] = round(statistics.median(r[step][1] for r in runs), 2)
        row["land_plus_run_s"] = round(row["land_s"] + row["run_s"], 1)
        table.append(row)
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "results.json").write_text(json.dumps(table, indent=2))
    print("\n| people | generate | land | run (bronze -> gold, with tests) | land + run "
          "| peak memory (generate / land / run) |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in table:
        print(f"| {r['people']:,} | {r['generate_s']} s | {r['land_s']} s | {r['run_s']} s | {r['land_plus_run_s']} s "
              f"| {r['generate_gib']} / {r['land_gib']} / {r['run_gib']} GiB |")
    print(f"\nmedians of {args.repeat} runs (sizes above {args.max_repeat_size:,}: one run); saved to "
          f"{bench_dir / 'results.json'}")


if __name__ == "__main__":
    main()
