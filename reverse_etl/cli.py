"""`cdp sync`: run (or plan) the declared reverse-ETL syncs from the command line.

    cdp sync NAME [NAME ...]      run these syncs (reverse_etl/syncs.yml)
    cdp sync --all                run every declared sync
    cdp sync ... --dry-run        gate 4 and the plan only: adds, updates, deletes, unchanged, with up to 5 sample
                                  rows each (emails and phone numbers masked); nothing is sent

The warehouse lock is held for the whole command (orchestration/runlock.py: DuckDB has one writer), so a sync never
overlaps a pipeline run. Exit status: 0 when every sync succeeded (or stopped on its API budget, or delivered all
but some refused rows: partial), 1 when one failed or was blocked by gate 4, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from orchestration.quality.gate_4 import DestinationField, LastSyncStore
from reverse_etl.base import ApiBudget, DestinationError
from reverse_etl.config import SyncConfig, SyncConfigError, gate_docs_dir, last_sync_path, load_syncs
from reverse_etl.runner import Plan, SyncError, SyncResult, run_sync

OK_STATUSES = ("succeeded", "partial", "budget_exhausted")
SAMPLE_WIDTH = 240


class _UsageError(Exception):
    pass


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Masking: samples are printed to terminals and CI logs


def mask_email(value: str) -> str:
    """mary@x.org -> m***@x.org"""
    local, at, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


def mask_phone(value: str) -> str:
    """+4915112345678 -> ***5678"""
    digits = "".join(ch for ch in value if ch.isdigit())
    return f"***{digits[-4:]}" if len(digits) > 4 else "***"


def masked(field: DestinationField | None, value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, (date, Decimal, float, int, bool)):
        text = str(value)
    else:
        text = str(value)
    if field is not None and field.type == "email":
        return mask_email(text)
    if field is not None and field.type == "phone":
        return mask_phone(text)
    if field is not None and field.kind == "contact":  # addresses and other contact data
        return "***"
    return text


def _sample_line(sync: SyncConfig, row: dict[str, Any]) -> str:
    key_field = sync.fields.get(sync.match_key)
    parts = [f"{sync.match_key}={masked(key_field, row['key'])}"]
    parts += [f"{name}={masked(sync.fields.get(name), value)}" for name, value in row.items() if name != "key"]
    line = "  ".join(parts)
    return line if len(line) <= SAMPLE_WIDTH else line[: SAMPLE_WIDTH - 1] + "…"


def format_plan(sync: SyncConfig, plan: Plan) -> str:
    lines = [
        f"{'rows in model':>14}{'adds':>10}{'updates':>10}{'deletes':>10}{'unchanged':>11}{'retries':>9}{'parked':>8}",
        f"{plan.rows_in_model:>14,}{plan.adds:>10,}{plan.updates:>10,}{plan.deletes:>10,}{plan.unchanged:>11,}"
        f"{plan.retries:>9,}{plan.parked:>8,}",
    ]
    totals = {"add": plan.adds, "update": plan.updates, "delete": plan.deletes}
    for op, rows in plan.samples.items():
        if not rows:
            continue
        lines.append(f"  {op}s ({len(rows)} of {totals[op]:,}):")
        lines += [f"    {_sample_line(sync, row)}" for row in rows]
    return "\n".join(lines)


def _print_result(sync: SyncConfig, result: SyncResult) -> None:
    target = f"{sync.destination} {sync.object} ({sync.mode} by {sync.match_key})"
    print(f"\nsync {sync.name} -> {target}{' [dry run]' if result.dry_run else ''}")
    if result.gate is not None:
        print(f"  {result.gate.summary()}")
        for outcome in result.gate.failed():
            print(f"    failed: {outcome.expectation}: {outcome.observed}")
    if result.plan is not None:
        print(format_plan(sync, result.plan))
    if not result.dry_run or result.status != "succeeded":
        print(f"  {result.summary()}")


# ----------------------------------------------------------------------------------------------------------------
# The command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdp sync", description="Run (or plan) the declared reverse-ETL syncs "
                                     "(reverse_etl/syncs.yml).")
    parser.add_argument("names", nargs="*", metavar="NAME", help="the syncs to run")
    parser.add_argument("--all", action="store_true", help="every declared sync")
    parser.add_argument("--dry-run", action="store_true",
                        help="gate 4 and the plan only (masked samples); send nothing")
    parser.add_argument("--syncs", metavar="PATH", help="another syncs file (default reverse_etl/syncs.yml)")
    return parser


def _select(syncs: dict[str, SyncConfig], names: Sequence[str], every: bool) -> list[SyncConfig]:
    declared = ", ".join(syncs)
    if every and names:
        raise _UsageError("give sync names or --all, not both")
    if not every and not names:
        raise _UsageError(f"give the syncs to run, or --all (declared: {declared})")
    unknown = [name for name in names if name not in syncs]
    if unknown:
        raise _UsageError(f"no sync {', '.join(unknown)} in the syncs file (declared: {declared})")
    return list(syncs.values()) if every else [syncs[name] for name in dict.fromkeys(names)]


def _run_one(con: Any, sync: SyncConfig, home: Any, dry_run: bool) -> SyncResult:
    from reverse_etl.destinations import open_destination

    last_sync = LastSyncStore(last_sync_path(home))
    docs = gate_docs_dir(home, sync.name)
    if dry_run:
        return run_sync(con, sync, None, last_sync=last_sync, dry_run=True, docs_dir=docs, progress=_progress)
    budget = ApiBudget(con, sync.destination, sync.daily_api_calls)
    destination = open_destination(sync, budget)
    return run_sync(con, sync, destination, budget=budget, last_sync=last_sync, docs_dir=docs, progress=_progress)


def sync_main(argv: list[str]) -> int:
    """`cdp sync [NAME ...] [--all] [--dry-run]`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        syncs = load_syncs(args.syncs)
        selected = _select(syncs, args.names, args.all)
    except SyncConfigError as error:
        print(f"cdp sync: error: {error}", file=sys.stderr)
        return 2
    except _UsageError as error:
        print(f"cdp sync: error: {error}", file=sys.stderr)
        return 2

    import duckdb

    from orchestration.runlock import WarehouseBusyError, WarehouseLock
    from orchestration.settings import Settings

    settings = Settings.from_env().export()
    if settings.target != "duckdb":
        print(f"cdp sync: error: the runner reads the embedded DuckDB warehouse; CDP_TARGET is {settings.target!r}",
              file=sys.stderr)
        return 2
    if not settings.warehouse_path.exists():
        print(f"cdp sync: error: no warehouse at {settings.warehouse_path}: run `cdp run` first", file=sys.stderr)
        return 1
    lock = WarehouseLock(settings.warehouse_path)
    try:
        lock.acquire(f"cdp-sync-{uuid.uuid4().hex[:12]}", on_wait=_progress)
    except WarehouseBusyError as error:
        print(f"cdp sync: error: {error}", file=sys.stderr)
        return 1
    failures: list[str] = []
    try:
        with duckdb.connect(str(settings.warehouse_path)) as con:
            for sync in selected:
                try:
                    result = _run_one(con, sync, settings.home, args.dry_run)
                except (DestinationError, SyncError) as error:  # e.g. the destination is not installed
                    print(f"\nsync {sync.name}: error: {error}", file=sys.stderr)
                    failures.append(sync.name)
                    continue
                except Exception as error:
                    if os.environ.get("CDP_DEBUG"):
                        raise
                    print(f"\nsync {sync.name}: error: {type(error).__name__}: {error} (set CDP_DEBUG=1 for the "
                          "traceback)", file=sys.stderr)
                    failures.append(sync.name)
                    continue
                _print_result(sync, result)
                if result.status not in OK_STATUSES:
                    failures.append(sync.name)
    finally:
        lock.release()
    if failures:
        print(f"\ncdp sync: {', '.join(failures)} did not succeed (see above; the audit is in "
              "reverse_etl.sync_runs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(sync_main(sys.argv[1:]))
