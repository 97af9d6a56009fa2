"""Bench of the profile API (`make bench`): lookups by email and ingestion via /v1/batch, one uvicorn worker.

1. The warehouse: var/bench/identity/warehouse.duckdb when benchmarks/identity.py has built it (1M people), else
   --home's, else a new one of --people people generated, landed and run in var/bench/api/home.
2. A serving snapshot published from it into var/bench/api/serving (serving/snapshot.py; the identity bench's home
   is only read).
3. `cdp bench api --scenario both` with CDP_HOME=var/bench/api (keys, access log, the landing zone the ingestion
   scenario writes to): it starts `cdp serve` on a free port, creates a key without a practical rate limit, runs
   wrk for each scenario and stops the server.

Goals (issue 6): lookups >= 3,000 requests/s with p99 < 10 ms; ingestion >= 20,000 events/s.

Each scenario runs at every --connections count (default 16 and 64 concurrent clients), --repeat times; medians are
reported. One worker serves requests one at a time, so with C clients waiting a request waits for the others:
latency grows with C at the same throughput (Little's law: 64 clients at 4,500 req/s average 14 ms). The p99 goal is
judged at 16 clients (a busy channel backend); 64 shows the server saturated.

    python benchmarks/api.py [--home DIR] [--people N] [--duration 20] [--connections 16,64] [--repeat 3]

Results go to var/bench/api/results.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import CDP, ROOT

BENCH = ROOT / "var" / "bench" / "api"
IDENTITY_HOME = ROOT / "var" / "bench" / "identity"


def run(command: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(command[1:] if command[0] == CDP else command), flush=True)
    subprocess.run(command, env=env, cwd=ROOT, check=True)


def home_env(home: Path) -> dict[str, str]:
    return {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
            "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster")}


def warehouse(args: argparse.Namespace) -> Path:
    if args.home:
        return (args.home / "warehouse.duckdb").resolve()
    if (IDENTITY_HOME / "warehouse.duckdb").exists():
        return IDENTITY_HOME / "warehouse.duckdb"
    home = BENCH / "home"
    if not (home / "warehouse.duckdb").exists():
        shutil.rmtree(home, ignore_errors=True)
        env = home_env(home)
        run([CDP, "generate", "--people", str(args.people), "--seed", "42", "--out", str(home / "generated")], env)
        run([CDP, "land", str(home / "generated")], env)
        run([CDP, "run"], env)
    return home / "warehouse.duckdb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a built home (warehouse.duckdb) to serve")
    parser.add_argument("--people", type=int, default=10_000, help="people to build when no warehouse exists")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--connections", default="16,64", help="comma-separated concurrent client counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario and count; medians reported")
    args = parser.parse_args()
    from serving.snapshot import publish_snapshot

    source = warehouse(args)
    serving_dir = BENCH / "serving"
    started = time.monotonic()
    published = publish_snapshot(source, serving_dir)
    publish_seconds = time.monotonic() - started
    print(f"published {published.path.name} from {source} in {publish_seconds:.1f} s", flush=True)
    env = {**os.environ, "CDP_HOME": str(BENCH), "CDP_LANDING_PATH": str(BENCH / "landing"),
           "CDP_SERVING_PATH": str(serving_dir), "DAGSTER_HOME": str(BENCH / "dagster")}
    for inherited in ("CDP_API_KEYS_PATH", "CDP_PRIVACY_PATH", "CDP_API_ACCESS_LOG", "CDP_WAREHOUSE_PATH"):
        env.pop(inherited, None)
    shutil.rmtree(BENCH / "landing", ignore_errors=True)  # the ingestion scenario's events of an earlier run
    raw = BENCH / "bench_api.json"
    runs: list[dict] = []
    for connections in [int(c) for c in args.connections.split(",")]:
        for attempt in range(args.repeat):
            print(f"-- {connections} connections, run {attempt + 1} of {args.repeat}", flush=True)
            run([CDP, "bench", "api", "--scenario", "both", "--duration", str(args.duration), "--connections",
                 str(connections), "--json", str(raw)], env)
            report = json.loads(raw.read_text())
            runs += [{**result, "connections": connections, "server_peak_rss_mb": report.get("server_peak_rss_mb")}
                     for result in report["results"]]
            raw.unlink(missing_ok=True)
    medians = []
    by_case = operator.itemgetter("scenario", "connections")
    for (scenario, connections), grouped in itertools.groupby(sorted(runs, key=by_case), key=by_case):
        group = list(grouped)
        medians.append({"scenario": scenario, "connections": connections, "runs": len(group), **{
            field: statistics.median(r[field] for r in group if r[field] is not None) if any(
                r[field] is not None for r in group) else None
            for field in ("requests_per_second", "events_per_second", "p50_ms", "p95_ms", "p99_ms", "non_2xx",
                          "server_peak_rss_mb")}})
    results = {"warehouse": str(source), "snapshot": published.path.name,
               "snapshot_rows": getattr(published, "rows", None), "publish_seconds": round(publish_seconds, 1),
               "workers": 1, "medians": medians, "runs": runs}
    (BENCH / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"medians of {args.repeat} runs, one uvicorn worker:")
    for m in medians:
        goal = ("lookups >= 3,000 req/s, p99 < 10 ms at 16 connections" if m["scenario"] == "lookups"
                else "ingestion >= 20,000 events/s")
        print(f"{m['scenario']:<8} {m['connections']:>3} conns: {m['requests_per_second']:,.0f} req/s"
              + (f", {m['events_per_second']:,.0f} events/s" if m["events_per_second"] else "")
              + f", p50 {m['p50_ms']:.2f} ms, p95 {m['p95_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, "
              f"non-2xx {m['non_2xx']:,.0f}, server peak {m['server_peak_rss_mb']:,.0f} MB  (goal: {goal})")
    print(f"results in {BENCH / 'results.json'}")


if __name__ == "__main__":
    main()
