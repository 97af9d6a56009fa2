"""`make bench` (identity part): identity resolution and gold at scale, full and incremental.

1. generate N people (default 1M, about 10M records), land them and build bronze + silver;
2. time `dbt run` of the identity and gold models (full build) and its peak memory;
3. evaluate identity against the ground truth (pairwise precision / recall / F1), deterministic;
4. make --new-events new events of existing people (copies of landed web, app, email and WhatsApp
   records with new ids, so they touch existing profiles), land them, build bronze + silver
   incrementally, then time the incremental identity + gold run; steps 2 and 4 run --repeat times
   and medians are reported;
5. rebuild with probabilistic auto-merge on and evaluate again (what auto-merge adds).

Generated data and the warehouse stay in var/bench/identity/ between runs (--reuse skips steps 1 and
the silver build when they are there). Results go to var/bench/identity/results.json.

    python benchmarks/identity.py [--people 1000000] [--new-events 10000] [--repeat 3] [--reuse]
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
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import CDP, ROOT, measure

DBT = str(Path(sys.executable).parent / "dbt")
IDENTITY_AND_GOLD = ["path:dbt_project/models/identity", "path:dbt_project/models/gold"]
BRONZE_AND_SILVER = ["path:dbt_project/models/bronze", "path:dbt_project/models/silver"]
ID_FIELDS = {"web": "event_id", "app": "event_id", "email": "sg_event_id", "whatsapp": "MessageSid"}


def dbt(env: dict[str, str], *args: str) -> tuple[float, float]:
    return measure([DBT, *args, "--target-path", str(Path(env["CDP_HOME"]) / "target")], env)


def new_events(generated: Path, out: Path, count: int, seed: int) -> dict[str, Path]:
    """`count` new events spread over four sources: copies of existing records (same people, same
    identifiers) with fresh ids, so that an incremental run touches existing components."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    per_source = {"web": count * 5 // 10, "app": count * 3 // 10, "email": count * 15 // 100}
    per_source["whatsapp"] = count - sum(per_source.values())
    for source, wanted in per_source.items():
        lines = []
        for part in sorted((generated / source).glob("part-*.ndjson")):
            with part.open("rb") as handle:
                for line in handle:
                    if len(lines) < wanted * 4:
                        lines.append(line)
                    else:
                        break
            if len(lines) >= wanted * 4:
                break
        picked = []
        for line in rng.sample(lines, min(wanted, len(lines))):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a record the generator broke on purpose
            if not isinstance(record, dict):
                continue
            record[ID_FIELDS[source]] = ("SM" + uuid.UUID(int=rng.getrandbits(128)).hex) if source == "whatsapp" \
                else str(uuid.UUID(int=rng.getrandbits(128)))
            picked.append(orjson.dumps(record))
        path = out / f"{source}-new.ndjson"
        path.write_bytes(b"\n".join(picked) + b"\n")
        files[source] = path
    return files


def evaluate(env: dict[str, str], truth: Path) -> dict:
    result = subprocess.run([CDP, "eval", "identity", "--truth", str(truth), "--json"], env=env, cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument("--reuse", action="store_true", help="keep the generated data and silver build")
    parser.add_argument("--repeat", type=int, default=3, help="full and incremental runs, medians reported")
    args = parser.parse_args()
    home = ROOT / "var" / "bench" / "identity"
    env = {
        **os.environ,
        "CDP_HOME": str(home),
        "CDP_LANDING_PATH": str(home / "landing"),
        "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    generated = home / "generated"
    results: dict = {"people": args.people, "new_events": args.new_events}
    ready = args.reuse and (home / "silver.ok").exists()
    if not ready:
        if not (args.reuse and (generated / "manifest.json").exists()):
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            print(f"generating {args.people:,} people ...", flush=True)
            measure([CDP, "generate", "--people", str(args.people), "--seed", "7", "--out", str(generated)], env)
        shutil.rmtree(home / "landing", ignore_errors=True)
        (home / "warehouse.duckdb").unlink(missing_ok=True)
        print("landing ...", flush=True)
        measure([CDP, "land", str(generated)], env)
        print("bronze + silver ...", flush=True)
        dbt(env, "seed")
        seconds, _ = dbt(env, "run", "--select", *BRONZE_AND_SILVER)
        print(f"  bronze + silver {seconds:.1f} s", flush=True)
        (home / "silver.ok").write_text("ok")
    else:
        print("reusing generated data and the silver build; full-refreshing identity and gold", flush=True)
        dbt(env, "seed")

    fulls = []
    for _ in range(args.repeat):
        fulls.append(dbt(env, "run", "--full-refresh", "--select", *IDENTITY_AND_GOLD))
        print(f"identity + gold, full build: {fulls[-1][0]:.1f} s, peak {fulls[-1][1]:.2f} GiB", flush=True)
    results["full_s"] = round(statistics.median(f[0] for f in fulls), 1)
    results["full_gib"] = round(statistics.median(f[1] for f in fulls), 2)
    seconds, _ = dbt(env, "test", "--select", *IDENTITY_AND_GOLD)
    results["tests_s"] = round(seconds, 1)
    print(f"identity + gold data tests: {seconds:.1f} s", flush=True)
    results["deterministic"] = evaluate(env, generated / "ground_truth.parquet")
    det = results["deterministic"]
    print(f"deterministic: precision {det['precision']:.4f} recall {det['recall']:.4f} f1 {det['f1']:.4f} "
          f"profiles {det['profiles']:,} persons {det['persons']:,} largest cluster {det['largest_cluster']}",
          flush=True)

    silver_runs, identity_runs = [], []
    for _ in range(args.repeat):
        # fresh events every time (a new folder, a new seed): the same events again would be duplicates
        runs = home / "new-events"
        batch_dir = runs / f"run-{len(list(runs.glob('run-*'))) if runs.exists() else 0:03d}"
        files = new_events(generated, batch_dir, args.new_events, seed=1000 + len(list(runs.glob("run-*"))))
        for source, path in files.items():
            measure([CDP, "land", source, str(path)], env)
        silver_runs.append(dbt(env, "run", "--select", *BRONZE_AND_SILVER))
        identity_runs.append(dbt(env, "run", "--select", *IDENTITY_AND_GOLD))
        print(f"{args.new_events:,} new events: bronze + silver {silver_runs[-1][0]:.1f} s, "
              f"identity + gold {identity_runs[-1][0]:.1f} s, peak {identity_runs[-1][1]:.2f} GiB", flush=True)
    results["incremental_silver_s"] = round(statistics.median(r[0] for r in silver_runs), 1)
    results["incremental_s"] = round(statistics.median(r[0] for r in identity_runs), 1)
    results["incremental_gib"] = round(statistics.median(r[1] for r in identity_runs), 2)
    results["repeats"] = args.repeat

    seconds, _ = dbt(env, "run", "--select", *IDENTITY_AND_GOLD, "--vars", "{cdp__identity_auto_merge: true}")
    results["auto_merge_s"] = round(seconds, 1)
    results["with_auto_merge"] = evaluate(env, generated / "ground_truth.parquet")
    auto = results["with_auto_merge"]
    print(f"with auto-merge: precision {auto['precision']:.4f} recall {auto['recall']:.4f} f1 {auto['f1']:.4f} "
          f"profiles {auto['profiles']:,}", flush=True)
    dbt(env, "run", "--select", *IDENTITY_AND_GOLD)  # back to the default (review only)

    (home / "results.json").write_text(json.dumps(results, indent=2))
    print(f"saved to {home / 'results.json'}")


if __name__ == "__main__":
    main()
