"""The work behind the privacy and consent endpoints: the privacy ledger (orchestration/privacy/ledger.py, SQLite,
never the warehouse), the detached erasure process, and consent events written durably for the pipeline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from connectors.base import content_batch_id
from connectors.landing import LandingZone, Records
from orchestration.privacy.ledger import Ledger, LedgerError, Request
from orchestration.privacy.subject import SubjectError, normalize_email, normalize_phone
from serving.privacy.schemas import ConsentChange, DeletionStatus

CONSENT_SOURCE = "web"  # a Segment track without a device: the web source (helper E's routing rule)
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


def record_deletion(kind: str, value: str, requested_by: str, reason: str | None) -> Request:
    """A pending request in the ledger; SubjectError when `value` cannot be a `kind`."""
    return Ledger().create_request(kind, value, requested_by, reason)


def autorun() -> bool:
    """CDP_PRIVACY_AUTORUN=0 records requests without starting the erasure: an operator (a DPO's approval, a
    scheduled job) runs `cdp forget --run <id>`. Default: start at once."""
    return os.environ.get("CDP_PRIVACY_AUTORUN", "1").strip().lower() not in ("0", "false", "no", "off")


def start_erasure(request_id: str, home: Path) -> None:
    """`cdp forget --run <id>` in its own session, so that it outlives a restart of the API; its output (hashes and
    counts only) goes to var/logs/forget-<id>.log."""
    _reap()
    log_dir = home / "var" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_dir / f"forget-{request_id}.log", "ab") as output:
            child = subprocess.Popen(
                [sys.executable, "-m", "orchestration.cli", "forget", "--run", request_id],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                env=os.environ.copy(),
            )
    except OSError as error:  # the request must not wait forever holding the raw identifier
        Ledger().finish(request_id, status="failed", error=f"the erasure process could not start: {error.strerror}")
        raise
    with _children_lock:
        _children.add(child)


def _reap() -> None:
    """Collect erasure processes that ended (no zombies in a long-running server)."""
    with _children_lock:
        for child in [c for c in _children if c.poll() is not None]:
            _children.discard(child)


def deletion_status(request_id: str) -> DeletionStatus | None:
    _reap()
    try:
        request = Ledger().get(request_id)
    except LedgerError:
        return None
    public = request.public()
    return DeletionStatus(
        id=public["id"], status=public["status"], created_at=public["created_at"],
        requested_by=public["requested_by"], reason=public["reason"], subject_kind=public["subject_kind"],
        subject_hash=public["subject_hash"], profile_ids=public["profile_ids"],
        rows_per_store=public["rows_per_store"], sweep=public["sweep_result"], error=public["error"],
        dagster_run_id=public["dagster_run_id"], started_at=public["started_at"], finished_at=public["finished_at"],
    )


def consent_message(change: ConsentChange, received_at: datetime) -> dict[str, Any]:
    """The Segment-spec `track consent_updated` message that silver reads like a native consent_updated (its
    identifier in context.traits, or as userId / anonymousId); raises SubjectError on a bad identifier."""
    given = [(kind, value) for kind, value in (("email", change.email), ("phone", change.phone),
             ("user_id", change.user_id), ("anonymous_id", change.anonymous_id)) if value is not None]
    if len(given) != 1:
        raise SubjectError("give exactly one of email, phone, user_id, anonymous_id")
    kind, value = given[0]
    message: dict[str, Any] = {"type": "track", "event": "consent_updated", "messageId": f"api-{uuid.uuid4()}",
                               "userId": None, "anonymousId": None}
    if kind in ("email", "phone"):
        normalized = normalize_email(value) if kind == "email" else normalize_phone(value)
        if normalized is None:
            raise SubjectError(f"{value!r} is not a valid {kind}")
        # Segment needs a userId or an anonymousId: a stable pseudonym of the identifier, so the message stands alone
        message["anonymousId"] = "api:" + hashlib.sha256(f"{kind}:{normalized}".encode()).hexdigest()[:24]
        message["context"] = {"traits": {kind: normalized}}
    else:
        if not value.strip():
            raise SubjectError(f"{kind} must not be blank")
        message["userId" if kind == "user_id" else "anonymousId"] = value.strip()
        message["context"] = {}
    message["properties"] = {"channel": change.channel, "status": change.status, "source": "api"}
    occurred = change.timestamp or received_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    message["timestamp"] = occurred.astimezone(UTC).isoformat()
    message["receivedAt"] = received_at.isoformat()
    return message


async def land_consent(state: Any, message: dict[str, Any]) -> None:
    """Durable on return: through the ingestion spool when the app has one (`state.ingest.commit`: group-committed
    and fsynced, landed as a batch within seconds), else as a one-record landing batch (fsynced and renamed into
    place). Either way an ordinary landing batch of the web source for silver."""
    payload = msgspec.json.encode(message)
    ingest = getattr(state, "ingest", None)
    if ingest is not None and hasattr(ingest, "commit"):
        await ingest.commit({CONSENT_SOURCE: [payload + b"\n"]})
        return
    import anyio.to_thread

    settings = state.settings
    batch_id = content_batch_id(CONSENT_SOURCE, payload)
    records = Records.from_lists([payload.decode()])
    await anyio.to_thread.run_sync(
        LandingZone(settings.landing_root).land, CONSENT_SOURCE, batch_id, f"api-consent-{message['messageId']}.json",
        records,
    )
