"""One erasure request from start to proof: what the `cdp_forget` Dagster job runs (orchestration/defs/privacy.py).

1. Take the raw identifier out of the ledger (status running).
2. Resolve the whole person in the warehouse (subject.py).
3. Suppress: the salted hashes of every form of every identifier go to the suppression list first, so a batch
   landing while the erasure runs is already filtered.
4. Erase from every registered store (stores.py), in order (the landing zone first), counting rows per store.
5. Sweep every store for every identifier, key and id of the subject: the request is `erased` only when no store
   finds anything, else `failed` with what was found (counts, never values).
6. Audit: one line in `var/privacy/audit.jsonl` (who, when, what: subject hash and profile ids, rows per store,
   sweep); the ledger row gets the same and forgets the raw identifier, whatever the outcome.

The run holds the warehouse lock (it deletes from the warehouse), so it never overlaps a pipeline run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orchestration.privacy.ledger import Ledger, Request
from orchestration.privacy.stores import stores
from orchestration.privacy.subject import Subject, normalize_identifier, resolve_subject
from orchestration.settings import Settings

AUDIT_FILE = "audit.jsonl"


class ErasureError(Exception):
    """The erasure stopped on an error (recorded, redacted, in the ledger and the audit log)."""


def _resolve(settings: Settings, kind: str, given: str) -> Subject:
    from orchestration.privacy.stores import WarehouseStore

    warehouse = WarehouseStore(settings)
    if not warehouse.enabled:
        return Subject(kind, given, normalize_identifier(kind, given))
    con = warehouse.connect()
    try:
        return resolve_subject(con, kind, given)
    finally:
        con.close()


def _audit(ledger: Ledger, request: Request, subject: Subject | None) -> dict[str, Any]:
    line = {
        "at": datetime.now(UTC).isoformat(),
        "request_id": request.id,
        "requested_by": request.requested_by,
        "requested_at": request.created_at,
        "subject_kind": request.subject_kind,
        "subject_hash": request.subject_hash,
        **(subject.summary() if subject is not None else {}),
        "status": request.status,
        "rows_per_store": request.rows_per_store,
        "sweep": request.sweep_result,
        "error": request.error,
        "dagster_run_id": request.dagster_run_id,
        "started_at": request.started_at,
        "finished_at": request.finished_at,
    }
    path = ledger.root / AUDIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return line


def run_erasure(
    request_id: str,
    run_id: str,
    progress: Callable[[str], None],
    *,
    settings: Settings | None = None,
    ledger: Ledger | None = None,
) -> Request:
    """Erase the subject of `request_id` everywhere and prove it; returns the finished request."""
    settings = settings or Settings.from_env()
    ledger = ledger or Ledger()
    given = ledger.start(request_id, run_id)
    request = ledger.get(request_id)
    subject: Subject | None = None
    rows: dict[str, Any] = {}
    try:
        started = time.monotonic()
        subject = _resolve(settings, request.subject_kind, given)
        summary = subject.summary()
        progress(f"forget {request_id}: {summary['resolution']}: {len(subject.profile_ids)} profile ids, "
                 f"{sum(summary['identifiers_by_type'].values())} identifiers, {len(subject.record_keys):,} records "
                 f"({time.monotonic() - started:.1f} s)")
        new = ledger.add_suppressions(request_id, subject.forms())
        progress(f"forget {request_id}: {new} suppression hashes added (the landing zone drops later records)")
        store_list = stores(settings)
        for store in store_list:
            step = time.monotonic()
            erasure = store.erase(subject, progress)
            rows[store.name] = erasure.as_dict()
            progress(f"forget {request_id}: {store.name}: {erasure.status}, {erasure.rows:,} rows removed "
                     f"({time.monotonic() - step:.1f} s)")
        sweep: dict[str, Any] = {}
        for store in store_list:
            step = time.monotonic()
            findings = store.sweep(subject, progress)
            if findings and hasattr(store, "repair"):
                # the erasure's fast path missed something the full search sees: delete that too, then prove again
                progress(f"forget {request_id}: sweep {store.name} found {findings}: repairing")
                extra = store.repair(subject, findings, progress)
                rows[store.name]["rows"] += extra.rows
                for place, count in extra.detail.items():
                    rows[store.name]["detail"][place] = rows[store.name]["detail"].get(place, 0) + count
                rows[store.name]["repaired"] = extra.detail
                findings = store.sweep(subject, progress)
            sweep[store.name] = {"clean": not findings, "found": findings}
            verdict = "clean" if not findings else f"FOUND {findings}"
            progress(f"forget {request_id}: sweep {store.name}: {verdict} ({time.monotonic() - step:.1f} s)")
        clean = all(result["clean"] for result in sweep.values())
        request = ledger.finish(
            request_id,
            status="erased" if clean else "failed",
            profile_ids=sorted(subject.profile_ids),
            rows_per_store=rows,
            sweep_result={"clean": clean, "stores": sweep, "seconds": round(time.monotonic() - started, 2)},
            error=None if clean else "the sweep found data about the subject after erasure",
        )
    except Exception as error:
        failure = f"{type(error).__name__}: {_redacted(str(error), subject, given)}"[:500]
    else:
        failure = None
    if failure is not None:
        # Raised outside the handler, without the original: its message or SQL may quote identifiers, and Dagster
        # keeps a step's error (with its chained causes) in the event log.
        request = ledger.finish(
            request_id,
            status="failed",
            profile_ids=sorted(subject.profile_ids) if subject else None,
            rows_per_store=rows or None,
            error=failure,
        )
        _audit(ledger, request, subject)
        raise ErasureError(f"erasure request {request_id} failed: {failure}")
    _audit(ledger, request, subject)
    return request


def _redacted(message: str, subject: Subject | None, given: str) -> str:
    """An error message may quote values (a failed SQL statement lists identifiers): only its first line is kept,
    with every identifier of the subject and anything that looks like an email or a phone replaced."""
    from orchestration.observability.logs import redact

    message = message.strip().splitlines()[0] if message.strip() else ""
    values = {given.strip()} | (subject.values() | subject.exact_strings() if subject else set())
    for value in sorted(values, key=len, reverse=True):
        if value:
            message = message.replace(value, "<redacted>")
    return redact(message)
