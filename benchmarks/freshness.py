"""`make bench` (freshness part): end-to-end freshness through the Dagster daemon and the landing sensor.

1. generate N people (default 100k), land them and build everything once with `cdp run`;
2. start `dagster-daemon` on this project (the landing sensor is on by default, every CDP_SENSOR_INTERVAL s);
3. --repeat times: land a file of --new-events new events of existing people (the same maker as the identity
   bench: copies of web, app, email and WhatsApp records with fresh ids), then wait until a run started by the
   landing sensor has materialized gold/profiles; the freshness is the time from the end of landing to that
   materialization (and to the end of the run). Medians are reported; the goal is p50 < 60 s.

Data stays in var/bench/freshness/ (--reuse keeps the base warehouse). Results: var/bench/freshness/results.json.

    python benchmarks/freshness.py [--people 100000] [--new-events 10000] [--repeat 5] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from identity import new_events
from pipeline import CDP, ROOT, measure

DAEMON = str(Path(sys.executable).parent / "dagster-daemon")
PROFILES = ["gold", "profiles"]


def sensor_run_after(env: dict[str, str], after: float, timeout: float) -> dict:
    """Wait for a landing-sensor run that materialized gold/profiles after `after`; its timings."""
    import dagster as dg

    deadline = time.time() + timeout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while time.time() < deadline:
            event = instance.get_latest_materialization_event(dg.AssetKey(PROFILES))
            if event is not None and event.timestamp > after:
                run = instance.get_run_record_by_id(event.run_id)
                if run is not None and run.dagster_run.tags.get("cdp/trigger") == "landing_sensor":
                    while run.end_time is None and time.time() < deadline:
                        time.sleep(0.5)
                        run = instance.get_run_record_by_id(event.run_id)
                    return {
                        "run_id": event.run_id,
                        "status": run.dagster_run.status.value,
                        "profiles_updated_s": round(event.timestamp - after, 1),
                        "run_started_s": round((run.start_time or after) - after, 1),
                        "run_finished_s": round((run.end_time or time.time()) - after, 1),
                    }
            failed = [r for r in instance.get_run_records(limit=3) if r.create_timestamp.timestamp() > after
                      and r.dagster_run.status.value == "FAILURE"]
            if failed:
                raise SystemExit(f"sensor-started run {failed[0].dagster_run.run_id} failed; see `make ui`")
            time.sleep(0.5)
    raise SystemExit(f"no sensor-started run updated gold/profiles within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep the generated data and the base warehouse")
    args = parser.parse_args()
    home = ROOT / "var" / "bench" / "freshness"
    env = {
        **os.environ,
        "CDP_HOME": str(home),
        "CDP_LANDING_PATH": str(home / "landing"),
        "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home / "dagster"),
        "CDP_SENSOR_INTERVAL": os.environ.get("CDP_SENSOR_INTERVAL", "2"),
    }
    generated = home / "generated"
    if not (args.reuse and (home / "base.ok").exists()):
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        print(f"generating {args.people:,} people, landing them, building the base warehouse ...", flush=True)
        measure([CDP, "generate", "--people", str(args.people), "--seed", "7", "--out", str(generated)], env)
        measure([CDP, "land", str(generated)], env)
        seconds, _ = measure([CDP, "run"], env)
        print(f"  base run: {seconds:.1f} s", flush=True)
        (home / "base.ok").write_text("ok")

    print("starting dagster-daemon (landing sensor every "
          f"{env['CDP_SENSOR_INTERVAL']} s) ...", flush=True)
    log = open(home / "daemon.log", "w")  # noqa: SIM115 - closed in finally
    daemon = subprocess.Popen([DAEMON, "run", "-m", "orchestration.definitions"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results: dict = {"people": args.people, "new_events": args.new_events, "runs": []}
    try:
        time.sleep(15)  # the daemon loads the code location; a first sensor tick finds nothing new
        for n in range(args.repeat):
            runs = home / "new-events"
            batch_dir = runs / f"run-{len(list(runs.glob('run-*'))) if runs.exists() else 0:03d}"
            files = new_events(generated, batch_dir, args.new_events,
                               seed=2000 + len(list(runs.glob("run-*"))) if runs.exists() else 2000)
            for source, path in files.items():
                measure([CDP, "land", source, str(path)], env)
            landed = time.time()
            timing = sensor_run_after(env, landed, timeout=600)
            results["runs"].append(timing)
            print(f"run {n + 1}: {args.new_events:,} events landed -> profiles updated in "
                  f"{timing['profiles_updated_s']:.1f} s (run started after {timing['run_started_s']:.1f} s, "
                  f"finished after {timing['run_finished_s']:.1f} s)", flush=True)
            if daemon.poll() is not None:
                raise SystemExit(f"dagster-daemon exited; see {home / 'daemon.log'}")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()
    updated = [r["profiles_updated_s"] for r in results["runs"]]
    results["p50_profiles_updated_s"] = round(statistics.median(updated), 1)
    results["max_profiles_updated_s"] = max(updated)
    results["p50_run_finished_s"] = round(statistics.median(r["run_finished_s"] for r in results["runs"]), 1)
    print(f"end-to-end freshness ({args.people:,} people, {args.new_events:,} new events, {args.repeat} runs): "
          f"p50 {results['p50_profiles_updated_s']:.1f} s to updated profiles (goal < 60 s), max "
          f"{results['max_profiles_updated_s']:.1f} s; p50 {results['p50_run_finished_s']:.1f} s to the run's end")
    (home / "results.json").write_text(json.dumps(results, indent=2))
    print(f"saved to {home / 'results.json'}")


if __name__ == "__main__":
    main()
