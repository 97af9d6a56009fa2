"""Twilio status callbacks: the API receives them, the next run of a Twilio sync records them.

Twilio POSTs each status change of a message (queued, sent, delivered, read, undelivered, failed) to the
StatusCallback URL given when the message was created. With `TWILIO_STATUS_CALLBACK_URL` set (the public URL of the
API's `POST /webhooks/twilio/status`), the Twilio destination passes it on every message. The API checks the
signature and appends one JSON line per callback, fsynced before its 200, to `<landing root>/_twilio_status/`: the
message SID, the status, the error code and when it was received, nothing else (no number, no text: these files
hold no personal data). The API never opens the warehouse, so the files wait there: at the start of each run the
Twilio destination claims them (rename, under the writers' lock), writes the statuses into
`reverse_etl.message_sends` (status_history, source "callback") and deletes them. A crash after the claim leaves a
`.claimed` file, taken up by the next run; recording a status twice is harmless (a repeat is not appended again).

Standard library only: the API imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DIR = "_twilio_status"
LOCK = ".lock"
FIELDS = ("MessageSid", "MessageStatus", "ErrorCode", "ReceivedAt")


def status_dir(landing_root: Path) -> Path:
    return Path(landing_root) / DIR


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def entry(params: dict[str, Any], received_at: str) -> dict[str, str | None]:
    """The line kept for one callback: FIELDS only."""
    return {"MessageSid": str(params["MessageSid"]), "MessageStatus": str(params["MessageStatus"]).lower(),
            "ErrorCode": str(params["ErrorCode"]) if params.get("ErrorCode") else None, "ReceivedAt": received_at}


def append(landing_root: Path, entries: list[dict[str, str | None]]) -> None:
    """Append the entries to this process' file and fsync it (the caller answers 200 only after this returns).
    The file is opened by name under the lock, so a claim (a rename under the same lock) never loses a line."""
    folder = status_dir(landing_root)
    data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries)
    with _locked(folder):
        fd = os.open(folder / f"status-{os.getpid()}.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def claim(landing_root: Path) -> list[Path]:
    """Take every waiting file (renamed to `.claimed`, so writers start new ones), and the files an earlier claim
    left behind; the caller reads them with `read` and deletes them with `release` once recorded."""
    folder = status_dir(landing_root)
    if not folder.is_dir():
        return []
    with _locked(folder):
        for path in sorted(folder.glob("status-*.ndjson")):
            path.rename(path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.claimed"))
        return sorted(folder.glob("*.claimed"))


def read(paths: list[Path]) -> tuple[list[dict[str, Any]], int]:
    """The entries of claimed files in order, and how many lines could not be read (a torn last line of a write
    that was never acknowledged)."""
    entries: list[dict[str, Any]] = []
    unreadable = 0
    for path in paths:
        for line in path.read_bytes().splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                unreadable += 1
                continue
            if isinstance(value, dict) and value.get("MessageSid") and value.get("MessageStatus"):
                entries.append(value)
            else:
                unreadable += 1
    return entries, unreadable


def release(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
