"""`cdp`: the command line of the platform.

    cdp generate --people N --seed S --out DIR   simulate the five sources (and the ground truth)
    cdp land DIR | cdp land SOURCE PATH...       land a generated folder, or your own export files
    cdp land salesforce --from-api [--since ISO] pull changed Contacts through the Salesforce API (SALESFORCE_*)
    cdp run [--job NAME]                         materialize every asset (or run a job) through Dagster, in process
    cdp demo [--people N]                        generate, land, run, print the summary
    cdp summary                                  per source: landed / silver / quarantined
    cdp metrics [--limit N]                      per-run metrics of the latest runs (ops.run_metrics)
    cdp eval identity --truth PATH [--json]      precision / recall / F1 of the profiles vs the ground truth
    cdp forget --email X | --phone X | --profile-id X [--requested-by NAME] [--reason TEXT]
                                                 erase a person everywhere, suppress them, prove it (docs/privacy.md)
    cdp forget --status REQUEST_ID               an erasure request's status, rows per store and sweep
    cdp forget --run REQUEST_ID                  run an erasure request already recorded (by the API)
    cdp serve [--host H] [--port P] [--workers N]
                                                 the profile API (uvicorn; OpenAPI at /schema/openapi.json)
    cdp keys create --scopes S1,S2 [--name N] [--rate R] | cdp keys list | cdp keys revoke ID
                                                 API keys (the key is printed once, stored hashed)
    cdp bench api [--url URL] [--key K] [--duration S] [--connections C] [--scenario lookups|ingest|both]
                                                 load-test the API from a separate process (wrk)
    cdp sync [NAME ...] [--all] [--dry-run]      push (or plan) the reverse-ETL syncs (reverse_etl/syncs.yml)
    cdp ui                                       the Dagster UI on this project

Errors are one line on stderr (set CDP_DEBUG=1 for a traceback); long steps print progress.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import SourceError
from connectors.landing import SOURCES, LandedBatch, LandingError, LandingZone, check_source
from orchestration.settings import PROJECT_DIR, Settings

if TYPE_CHECKING:
    from connectors.generator import GenerationResult


class CliError(Exception):
    """A failure explained in one line for the user."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_rates(pairs: Sequence[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--rate expects name=value, got {pair!r}")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise CliError(f"--rate {name}: {value!r} is not a number") from None
    return rates


# --- generate ----------------------------------------------------------------------------------

def cmd_generate(args: argparse.Namespace) -> int:
    result = generate_population(Path(args.out), args.people, args.seed, _parse_rates(args.rate))
    total = sum(result.records.values())
    print(f"generated {args.people:,} people, {total:,} records in {result.seconds:.1f} s -> {result.out_dir}")
    for source in SOURCES:
        print(f"  {source:<11}{result.records.get(source, 0):>12,} records")
    return 0


def generate_population(out: Path, people: int, seed: int, overrides: dict[str, float]) -> GenerationResult:
    from connectors.generator import MessRates, generate

    if people < 1:
        raise CliError("--people must be at least 1")
    try:
        rates = MessRates.from_overrides(overrides)
    except ValueError as error:
        raise CliError(str(error)) from None
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        _progress(f"generate: {done:,}/{total:,} people ({done / total:.0%}, {time.monotonic() - start:.0f} s)")

    try:
        return generate(out, people, seed=seed, rates=rates, progress=progress)
    except ValueError as error:
        raise CliError(str(error)) from None


# --- land ---------------------------------------------------------------------------------------

def _print_batch(batch: LandedBatch) -> None:
    state = "already landed" if batch.already_landed else "landed"
    _progress(
        f"land: {batch.source}/{batch.file_name}: {state}, {batch.records:,} records (batch {batch.batch_id[:12]})"
    )


def land_paths(settings: Settings, targets: Sequence[str]) -> list[LandedBatch]:
    from connectors.registry import file_source, land_folder

    zone = LandingZone(settings.landing_root)
    if not targets:
        raise CliError("land: give a generated folder, or a source and files: cdp land web events.ndjson")
    if targets[0] in SOURCES:
        if len(targets) < 2:
            raise CliError(f"land {targets[0]}: give at least one file to land")
        return file_source(targets[0], [Path(t) for t in targets[1:]]).land(zone, _print_batch)
    if len(targets) > 1:
        raise CliError(
            f"land: {targets[0]!r} is not a source ({', '.join(SOURCES)}); to land files, name the source first"
        )
    return land_folder(zone, Path(targets[0]), _print_batch)


def land_from_api(settings: Settings, targets: Sequence[str], since_text: str | None) -> list[LandedBatch]:
    """`cdp land salesforce --from-api [--since ISO]`: Contacts changed since the zone's watermark (or since ISO)."""
    from connectors.salesforce.api import pull_contacts

    if list(targets) != ["salesforce"]:
        raise CliError("land --from-api: only salesforce is pulled from an API: cdp land salesforce --from-api")
    since = None
    if since_text:
        try:
            since = datetime.fromisoformat(since_text)
        except ValueError:
            raise CliError(f"land --since {since_text!r}: expected an ISO 8601 time (2026-01-31T00:00:00Z)") from None
    result = pull_contacts(LandingZone(settings.landing_root), since=since, progress=_print_batch)
    if result.missing_fields:
        _progress(f"land: Contact has no {', '.join(result.missing_fields)} in this org: landed without them")
    mark = result.watermark.isoformat() if result.watermark else "none yet"
    _progress(f"land: salesforce: {result.pulled:,} Contacts changed since {result.since or 'the beginning'}; "
              f"watermark now {mark}")
    return result.batches


def cmd_land(args: argparse.Namespace) -> int:
    settings = Settings.from_env().export()
    if args.since and not args.from_api:
        raise CliError("land: --since goes with --from-api (cdp land salesforce --from-api --since 2026-01-31)")
    batches = land_from_api(settings, args.targets, args.since) if args.from_api else land_paths(settings, args.targets)
    new = [b for b in batches if not b.already_landed]
    print(
        f"landed {len(new)} new batches ({sum(b.records for b in new):,} records); "
        f"{len(batches) - len(new)} already landed; zone: {settings.landing_root}"
    )
    return 0


def cmd_bigquery_load(args: argparse.Namespace) -> int:
    """The BigQuery load path: landed batches into landing.<source> by load jobs (connectors/bigquery_load.py)."""
    from connectors.bigquery_load import BigQueryLoadError, BigQuerySettings, load_landing

    settings = Settings.from_env().export()
    try:
        for source in args.sources:
            check_source(source)
        bigquery = BigQuerySettings.from_env()
        report = load_landing(LandingZone(settings.landing_root), bigquery, tuple(args.sources) or SOURCES,
                              progress=_progress)
    except (BigQueryLoadError, LandingError) as error:
        raise CliError(f"bigquery load: {error}") from error
    loaded = sum(len(v) for v in report.loaded.values())
    print(f"loaded {loaded} batches ({sum(report.rows.values()):,} rows) into "
          f"{bigquery.project}.{bigquery.landing_dataset}; {sum(report.skipped.values())} were already there")
    return 0


def cmd_bigquery_publish(args: argparse.Namespace) -> int:
    """The API's serving snapshot from BigQuery's gold tables (what the serving_snapshot asset does in a run)."""
    from serving.settings import ServingSettings
    from serving.snapshot import SnapshotError, publish_snapshot

    settings = Settings.from_env().export()
    try:
        published = publish_snapshot(settings.warehouse_path, ServingSettings.from_env().serving_dir,
                                     target="bigquery")
    except SnapshotError as error:
        raise CliError(f"bigquery publish: {error}") from error
    print(f"published {published.path.name} from BigQuery in {published.seconds:.1f} s: "
          + ", ".join(f"{table} {rows:,}" for table, rows in sorted(published.rows.items())))
    return 0


# --- run ----------------------------------------------------------------------------------------

JOBS = ("cdp_microbatch", "cdp_crm_pull", "cdp_nightly_reconciliation")


def run_pipeline(settings: Settings, job_name: str | None = None) -> float:
    """Materialize every asset (or run the job `job_name`) in process on the persistent Dagster instance (the UI
    shows the run). Another run holding the warehouse makes this one wait (orchestration/runlock.py)."""
    import dagster as dg

    LandingZone(settings.landing_root).init()
    start = time.monotonic()
    _progress("run: loading the Dagster definitions (dbt manifest, assets)...")
    from orchestration import observability
    from orchestration.definitions import defs

    job = defs.resolve_job_def(job_name) if job_name else defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config=observability.run_config(),  # console at WARNING as before, plus var/logs/cdp.jsonl
        )
    evaluations = result.get_asset_check_evaluations()
    failed_gates = _print_gates(evaluations)
    failed_checks = sorted(f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed)
    print(f"asset checks (gates, dbt tests, freshness): {len(evaluations) - len(failed_checks)} passed, "
          f"{len(failed_checks)} failed" + (f" ({', '.join(failed_checks[:5])})" if failed_checks else ""))
    if failed_gates:
        raise CliError(
            f"run {result.run_id[:8]}: quality gate {', '.join(failed_gates)} failed, so what depends on it was "
            "not built; the failed expectations and sample rows are in the run's check results (make ui)"
        )
    if not result.success:
        failures = [
            event.step_key + ": " + (event.event_specific_data.error.message.strip().splitlines() or ["failed"])[0]
            for event in result.all_events
            if event.is_step_failure and event.event_specific_data and event.event_specific_data.error
        ]
        raise CliError(
            f"run {result.run_id[:8]} failed: " + ("; ".join(failures) or "see the run in the Dagster UI (make ui)")
        )
    return time.monotonic() - start


def _print_gates(evaluations: Sequence[Any]) -> list[str]:
    """Prints the quality gates' results (asset checks named gate_*); returns the names of those that failed."""
    failed = []
    for evaluation in sorted(evaluations, key=lambda e: (e.check_name, e.asset_key.to_user_string())):
        if not evaluation.check_name.startswith("gate_"):
            continue
        summary = evaluation.description or ""
        label = evaluation.check_name
        if label.startswith("gate_1"):  # one gate 1 per source: name the source
            label += f" ({evaluation.asset_key.path[-1]})"
        print(f"{label:<40}{'passed' if evaluation.passed else 'FAILED':<8}{summary}")
        if not evaluation.passed:
            failed.append(evaluation.check_name)
    return failed


def cmd_run(args: argparse.Namespace) -> int:
    settings = Settings.from_env().export()
    seconds = run_pipeline(settings, args.job)
    print(f"run finished in {seconds:.1f} s")
    print_summary(settings)
    return 0


# --- summary ------------------------------------------------------------------------------------

def print_summary(settings: Settings) -> None:
    from orchestration.summary import read_summary

    summary = read_summary(settings.warehouse_path)
    print()
    print(f"{'source':<11}{'landed':>12}{'silver':>12}{'quarantined':>13}{'(duplicates)':>14}  reconciled")
    for row in summary.sources:
        print(
            f"{row.source:<11}{row.landed:>12,}{row.silver:>12,}{row.quarantined:>13,}"
            f"{'(' + format(row.duplicates, ',') + ')':>14}  {'yes' if row.is_reconciled else 'NO'}"
        )
    print(f"\nunified events: {summary.events:,}   warehouse: {settings.warehouse_path}")
    if summary.top_reasons:
        print("quarantine reasons (top):")
        for source, reason, count in summary.top_reasons:
            print(f"  {count:>9,}  {source:<11}{reason}")
    identity = summary.identity
    if identity is not None:
        candidates = ", ".join(f"{n:,} {decision}" for decision, n in identity.match_candidates.items()) or "none"
        print(
            f"\nprofiles: {identity.profiles:,} ({identity.known_profiles:,} known, "
            f"{identity.profiles - identity.known_profiles:,} anonymous)   identifiers: {identity.identifiers:,} "
            f"({identity.shared_identifiers:,} shared, {identity.blocklisted_identifiers:,} blocklisted)"
        )
        print(f"match candidates: {candidates}   retired profile ids: {identity.retired_profile_ids:,}")
    _print_serving_snapshot()
    if not all(row.is_reconciled for row in summary.sources):
        raise CliError("counts do not reconcile: landed != silver + quarantined for some source")


def _print_serving_snapshot() -> None:
    from serving.settings import ServingSettings
    from serving.snapshot import current_snapshot, read_meta

    current = current_snapshot(ServingSettings.from_env().serving_dir)
    if current is not None and current.exists():
        meta = read_meta(current)
        print(f"serving snapshot: {current} ({meta.get('rows', {}).get('profiles', 0):,} profiles, "
              f"published {meta.get('published_at')}): what the API serves")


def cmd_summary(args: argparse.Namespace) -> int:
    print_summary(Settings.from_env())
    return 0


# --- metrics ------------------------------------------------------------------------------------

def cmd_metrics(args: argparse.Namespace) -> int:
    from orchestration.observability import read_run_metrics

    settings = Settings.from_env()
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    rows = read_run_metrics(settings.warehouse_path, limit=args.limit)
    if not rows:
        print(f"no run metrics yet in {settings.warehouse_path} (table ops.run_metrics): run `cdp run` first")
        return 0
    print(f"{'run':<10}{'finished (UTC)':<21}{'seconds':>8}{'landed':>10}{'quarant.':>10}{'profiles':>10}"
          f"{'match rate':>11}{'gates':>8}  job")
    for m in rows:
        rate = "" if m.identity_match_rate is None else f"{m.identity_match_rate:.1%}"
        print(f"{m.run_id[:8]:<10}{m.measured_at:%Y-%m-%d %H:%M:%S}  {m.run_seconds or 0:>7.1f}{m.rows_landed:>10,}"
              f"{m.rows_quarantined or 0:>10,}{m.profiles or 0:>10,}{rate:>11}"
              f"{f'{m.gates_passed}/{m.gates_passed + m.gates_failed}':>8}  {m.job_name or ''}")
    return 0


# --- eval ---------------------------------------------------------------------------------------

def cmd_eval_identity(args: argparse.Namespace) -> int:
    from orchestration.identity_eval import IdentityEvalError, evaluate_identity

    settings = Settings.from_env()
    if settings.target != "duckdb":
        raise CliError(
            f"eval identity reads the embedded DuckDB warehouse ({settings.warehouse_path}); "
            f"CDP_TARGET is {settings.target!r}: unset it (or set CDP_TARGET=duckdb) to evaluate a local run"
        )
    try:
        evaluation = evaluate_identity(settings.warehouse_path, Path(args.truth).resolve())
    except IdentityEvalError as error:
        raise CliError(str(error)) from None
    if args.json:
        print(json.dumps(evaluation.as_dict(), indent=2))
    else:
        print(evaluation.format_text())
    return 0


# --- forget -------------------------------------------------------------------------------------------------------

def _print_request(request: Any) -> None:
    print(f"request {request.id}: {request.status}   subject: {request.subject_kind} {request.subject_hash[:16]}… "
          f"(salted hash)   requested by {request.requested_by} at {request.created_at}")
    if request.profile_ids is not None:
        print(f"profiles: {', '.join(request.profile_ids) or 'none (the identifier matched no profile)'}")
    for store, result in (request.rows_per_store or {}).items():
        detail = ", ".join(f"{place} {rows:,}" for place, rows in result["detail"].items())
        print(f"  {store:<18}{result['status']:<16}{result['rows']:>10,} rows" + (f"  ({detail})" if detail else ""))
    sweep = request.sweep_result
    if sweep:
        found = {name: r["found"] for name, r in sweep["stores"].items() if not r["clean"]}
        verdict = "clean: no store holds the subject any more" if sweep["clean"] else "FOUND " + json.dumps(found)
        print(f"sweep: {verdict} ({', '.join(sweep['stores'])}; {sweep.get('seconds', 0):.1f} s)")
    if request.error:
        print(f"error: {request.error}")


def forget(settings: Settings, kind: str, value: str, requested_by: str, reason: str | None) -> Any:
    """Record the request, run the `cdp_forget` job in process, return the finished request."""
    from orchestration.privacy.ledger import Ledger
    from orchestration.privacy.subject import SubjectError

    ledger = Ledger()
    try:
        request = ledger.create_request(kind, value, requested_by, reason)
    except SubjectError as error:
        raise CliError(f"forget: {error}") from None
    _progress(f"forget: request {request.id} recorded in {ledger.path}; running the cdp_forget job...")
    return run_forget(request.id)


def run_forget(request_id: str) -> Any:
    """Run the `cdp_forget` job for a request already in the ledger (pending); return the finished request. The
    API records requests and starts `cdp forget --run <id>` in the background."""
    import dagster as dg

    from orchestration.privacy.ledger import Ledger, LedgerError

    ledger = Ledger()
    try:
        request = ledger.get(request_id)
    except LedgerError as error:
        raise CliError(str(error)) from None
    if request.status != "pending":
        raise CliError(f"forget: request {request_id} is {request.status}, not pending: it cannot run again "
                       "(a failed request is retried by a new request)")
    from orchestration import observability
    from orchestration.defs.privacy import cdp_forget, forget_warehouse_lock

    # The job alone, not the whole code location: loading the dbt definitions would add seconds for nothing.
    run_config = {**observability.run_config(), "ops": {"forget_subject": {"config": {"request_id": request.id}}}}
    with dg.DagsterInstance.get() as instance:
        result = cdp_forget.execute_in_process(
            instance=instance, run_config=run_config, raise_on_error=False,
            resources={"warehouse_lock": forget_warehouse_lock},
        )
    request = ledger.get(request.id)
    if request.status in ("pending", "running"):  # the run died before the erasure could record its outcome
        request = ledger.finish(request.id, status="failed", error=f"run {result.run_id[:8]} failed before the "
                                "erasure finished; see it in the Dagster UI (make ui) and file a new request")
    return request


def cmd_forget(args: argparse.Namespace) -> int:
    settings = Settings.from_env().export()
    if args.run:
        request = run_forget(args.run)
        _print_request(request)
        if request.status != "erased":
            raise CliError(f"forget: request {request.id} {request.status}: {request.error or 'see the sweep above'}")
        return 0
    if args.status:
        from orchestration.privacy.ledger import Ledger, LedgerError

        try:
            _print_request(Ledger().get(args.status))
        except LedgerError as error:
            raise CliError(str(error)) from None
        return 0
    kinds = [(kind, value) for kind, value in (("email", args.email), ("phone", args.phone),
                                                ("profile_id", args.profile_id)) if value is not None]
    if len(kinds) != 1:
        raise CliError("forget: give exactly one of --email, --phone, --profile-id (or --status REQUEST_ID)")
    kind, value = kinds[0]
    requested_by = args.requested_by or os.environ.get("USER") or "unknown"
    request = forget(settings, kind, value, requested_by, args.reason)
    _print_request(request)
    if request.status != "erased":
        raise CliError(f"forget: request {request.id} {request.status}: {request.error or 'see the sweep above'}")
    return 0


# --- demo ---------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings.from_env().export()
    # A demo starts from an empty landing zone and warehouse, so that its summary is its own.
    _progress(f"demo: resetting {settings.landing_root} and {settings.warehouse_path}")
    shutil.rmtree(settings.landing_root, ignore_errors=True)
    settings.warehouse_path.unlink(missing_ok=True)
    generated = settings.home / "var" / "demo" / "generated"
    result = generate_population(generated, args.people, args.seed, {})
    _progress(f"demo: generated {sum(result.records.values()):,} records for {args.people:,} people "
              f"in {result.seconds:.1f} s")
    batches = land_paths(settings, [str(generated)])
    _progress(f"demo: landed {len(batches)} batches ({sum(b.records for b in batches):,} records)")
    from orchestration.demo import local_destinations, print_synced

    with local_destinations(settings) as env:
        _progress(f"demo: reverse ETL to local emulators: Salesforce {env['SALESFORCE_INSTANCE_URL']}, Twilio "
                  f"{env['TWILIO_API_BASE_URL']}, SendGrid {env['SENDGRID_API_BASE_URL']}")
        seconds = run_pipeline(settings)
        print(f"demo: pipeline ran in {seconds:.1f} s through Dagster (see it with `make ui`)")
        print_summary(settings)
        print_synced(settings)
    return 0


# --- serve, keys, bench api -------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    Settings.from_env().export()  # the erasure processes the API starts read the same paths
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    _progress(f"serve: http://{args.host}:{args.port} ({args.workers} worker(s); OpenAPI at /schema/openapi.json, "
              "access log in var/logs/api.jsonl)")
    # uvicorn's own access log would print raw query strings (emails); serving/ops.py logs route templates instead
    uvicorn.run("serving.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                loop="uvloop", http="httptools", access_log=False, log_level="warning", server_header=False)
    return 0


def _key_store() -> Any:
    from serving.security import KeyStore
    from serving.settings import ServingSettings

    return KeyStore(ServingSettings.from_env().keys_path)


def cmd_keys(args: argparse.Namespace) -> int:
    store = _key_store()
    if args.action == "create":
        scopes = [s.strip() for s in (args.scopes or "").split(",") if s.strip()]
        try:
            key, secret = store.create(scopes, args.name or "", args.rate)
        except ValueError as error:
            raise CliError(f"keys create: {error}") from None
        print(secret)
        rate = f"{key.rate_limit:g} requests/s" if key.rate_limit else "the server default rate"
        _progress(f"key {key.key_id} ({', '.join(sorted(key.scopes))}; {rate}) stored hashed in {store.path}: "
                  "the key above is shown only this once")
    elif args.action == "list":
        keys = store.list()
        if not keys:
            print(f"no API keys in {store.path}: cdp keys create --scopes read:profiles")
        for key in keys:
            state = f"revoked {key['revoked_at'][:19]}" if key["revoked_at"] else "active"
            rate = f"{key['rate_limit']:g}/s" if key["rate_limit"] else "default"
            print(f"{key['key_id']:<10}{state:<28}{key['scopes']:<45}{rate:<10}{key['created_at'][:19]}  {key['name']}")
    else:
        if not args.key_id:
            raise CliError("keys revoke: give the key id (cdp keys list shows them)")
        if not store.revoke(args.key_id):
            raise CliError(f"keys revoke: no active key {args.key_id!r} in {store.path}")
        print(f"revoked key {args.key_id} (running servers refuse it within a second)")
    return 0


def cmd_bench_api(args: argparse.Namespace) -> int:
    from serving.bench import BenchError, run_bench

    try:
        report = run_bench(url=args.url, key=args.key, duration=args.duration, connections=args.connections,
                           scenario=args.scenario, threads=args.threads, emails_path=args.emails,
                           progress=_progress)
    except BenchError as error:
        raise CliError(f"bench api: {error}") from None
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        _progress(f"bench api: results in {args.json}")
    else:
        print(json.dumps(report.as_dict()))
    return 0


# --- ui -----------------------------------------------------------------------------------------

def cmd_ui(args: argparse.Namespace) -> int:
    settings = Settings.from_env().export()
    LandingZone(settings.landing_root).init()
    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster if dagster.exists() else "dagster"), "dev", "-m", "orchestration.definitions",
               "-h", args.host, "-p", str(args.port)]
    _progress(f"ui: http://{args.host}:{args.port} (Ctrl-C to stop)")
    os.chdir(PROJECT_DIR)
    os.execvp(command[0], command)  # replaces this process: Ctrl-C goes straight to dagster
    return 0


# --- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdp", description="Warehouse-native Customer Data Platform")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="simulate a student population across the five sources")
    generate.add_argument("--people", type=int, required=True)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--out", required=True, help="output folder (created; a previous output is replaced)")
    generate.add_argument("--rate", action="append", default=[], metavar="NAME=VALUE",
                          help="override a mess rate, e.g. --rate duplicate_delivery=0.05 (see README)")
    generate.set_defaults(func=cmd_generate)

    land = commands.add_parser("land", help="land a generated folder, or SOURCE FILE... (your own exports)")
    land.add_argument("targets", nargs="+", metavar="DIR | SOURCE PATH...")
    land.add_argument("--from-api", action="store_true",
                      help="with SOURCE salesforce: pull the Contacts changed since the last pull through the "
                           "Salesforce REST API (SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, or a login)")
    land.add_argument("--since", metavar="ISO",
                      help="with --from-api: pull what changed after this time (UTC unless it has an offset) "
                           "instead of after the stored watermark")
    land.set_defaults(func=cmd_land)

    bigquery = commands.add_parser("bigquery", help="BigQuery: load the landing zone (docs/bigquery.md)")
    bigquery_commands = bigquery.add_subparsers(dest="bigquery_command", required=True)
    bigquery_load = bigquery_commands.add_parser(
        "load", help="load landed batches not yet in BigQuery into landing.<source> (one load job per batch)")
    bigquery_load.add_argument("sources", nargs="*", metavar="SOURCE",
                               help="only these sources (default: all)")
    bigquery_load.set_defaults(func=cmd_bigquery_load)
    bigquery_publish = bigquery_commands.add_parser(
        "publish", help="publish the API's serving snapshot from BigQuery's gold tables (cdp serve serves it)")
    bigquery_publish.set_defaults(func=cmd_bigquery_publish)

    sync = commands.add_parser("sync", help="reverse ETL: run the declared syncs, or plan them with --dry-run")
    sync.add_argument("names", nargs="*", help="syncs to run (reverse_etl/syncs.yml)")
    sync.add_argument("--all", action="store_true", help="every declared sync")
    sync.add_argument("--dry-run", action="store_true", help="print the plan (adds, updates, deletes); send nothing")
    run = commands.add_parser("run", help="materialize every asset (landing to gold, with every check) through Dagster")
    run.add_argument("--job", choices=JOBS, help="run one of the scheduled jobs instead (e.g. the nightly "
                     "reconciliation, which rebuilds identity and gold from silver)")
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser("demo", help="generate, land, run and summarize (starts from an empty var/)")
    demo.add_argument("--people", type=int, default=10_000)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)

    summary = commands.add_parser("summary", help="per source: landed / silver / quarantined")
    summary.set_defaults(func=cmd_summary)

    metrics = commands.add_parser("metrics", help="per-run metrics (ops.run_metrics): rows, match rate, gates")
    metrics.add_argument("--limit", type=int, default=10, help="the latest N runs (10)")
    metrics.set_defaults(func=cmd_metrics)

    evaluate = commands.add_parser("eval", help="evaluate the warehouse against the generator's ground truth")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True)
    identity = evaluations.add_parser(
        "identity", help="pairwise precision / recall / F1 of the resolved profiles against ground_truth.parquet"
    )
    identity.add_argument("--truth", required=True, metavar="PATH",
                          help="the ground_truth.parquet written by `cdp generate` (or its folder)")
    identity.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    identity.set_defaults(func=cmd_eval_identity)

    forget = commands.add_parser("forget", help="right to be forgotten: erase a person everywhere and prove it")
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="an email address of the person")
    who.add_argument("--phone", help="a phone number of the person (E.164, or national: German by default)")
    who.add_argument("--profile-id", help="the person's profile id (a retired id works too)")
    who.add_argument("--status", metavar="REQUEST_ID", help="show an erasure request instead")
    who.add_argument("--run", metavar="REQUEST_ID", help="run a request already recorded (pending), e.g. by the API")
    forget.add_argument("--requested-by", help="who asks (recorded in the ledger and the audit log; default $USER)")
    forget.add_argument("--reason", help="why (for example the ticket of the data subject's request)")
    forget.set_defaults(func=cmd_forget)

    serve = commands.add_parser("serve", help="run the profile API (uvicorn; OpenAPI at /schema/openapi.json)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (1)")
    serve.set_defaults(func=cmd_serve)

    keys = commands.add_parser("keys", help="API keys: create (printed once), list, revoke")
    keys.add_argument("action", choices=("create", "list", "revoke"))
    keys.add_argument("key_id", nargs="?", help="the key id to revoke")
    keys.add_argument("--scopes", help="create: comma-separated, of read:profiles, write:events, admin:privacy")
    keys.add_argument("--name", help="create: what the key is for (shown by list)")
    keys.add_argument("--rate", type=float, help="create: this key's rate limit in requests/s (default: "
                      "CDP_API_RATE_LIMIT of the server)")
    keys.set_defaults(func=cmd_keys)

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True)
    bench_api = benches.add_parser("api", help="load-test the API with wrk from a separate process (loopback)")
    bench_api.add_argument("--url", help="the API's base URL (default: start `cdp serve` on a free port for the run; "
                           "a serving snapshot must be published)")
    bench_api.add_argument("--key", help="an API key with read:profiles and write:events (default: create one)")
    bench_api.add_argument("--duration", type=float, default=20, help="seconds per scenario (20)")
    bench_api.add_argument("--connections", type=int, default=64, help="open connections (64)")
    bench_api.add_argument("--threads", type=int, default=1, help="wrk threads (1: the server needs the other core)")
    bench_api.add_argument("--scenario", choices=("lookups", "ingest", "both"), default="both")
    bench_api.add_argument("--emails", help="lookups: a file of emails, one a line (default: from the snapshot)")
    bench_api.add_argument("--json", metavar="PATH", help="write the results there instead of printing the JSON")
    bench_api.set_defaults(func=cmd_bench_api)

    ui = commands.add_parser("ui", help="start the Dagster UI on this project")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    progress = logging.getLogger("cdp.progress")
    progress.setLevel(logging.INFO)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sync"]:  # its own parser: NAME..., --all, --dry-run (reverse_etl/cli.py)
        from reverse_etl.cli import sync_main

        return sync_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, SourceError, LandingError) as error:
        print(f"cdp: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cdp: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the one line promised to users; CDP_DEBUG=1 shows the traceback
        if os.environ.get("CDP_DEBUG"):
            raise
        print(f"cdp: error: {type(error).__name__}: {error} (set CDP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
