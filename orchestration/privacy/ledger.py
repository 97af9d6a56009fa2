"""The privacy ledger: every erasure request, its status and its proof, and the suppression entries.

A SQLite file (`var/privacy/ledger.sqlite`), not a warehouse table: a request must be recordable while a pipeline
run holds the DuckDB warehouse, and later by the API, which never opens the warehouse (ARCHITECTURE.md, rule 1).

The raw identifier is needed only while the erasure job runs. It is not passed in the job's run config (Dagster
keeps run config in its event log for good); it waits in the request's `pending_subject` column, which the job
nulls when it ends, erased or failed. From then on the request holds only `subject_hash` (salted SHA-256 of the
normalized identifier), profile ids and counts.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestration.privacy import privacy_root
from orchestration.privacy.subject import normalize_identifier
from orchestration.privacy.suppression import hash_form, read_salt, write_suppressed

LEDGER_FILE = "ledger.sqlite"
STATUSES = ("pending", "running", "erased", "failed")

_SCHEMA = """
create table if not exists requests (
    id text primary key,
    created_at text not null,
    requested_by text not null,
    reason text,
    subject_kind text not null,
    subject_hash text not null,
    pending_subject text,           -- the raw identifier, only until the job ends
    status text not null check (status in ('pending', 'running', 'erased', 'failed')),
    dagster_run_id text,
    profile_ids text,               -- json list
    rows_per_store text,            -- json {store: rows removed}
    sweep_result text,              -- json {store: {findings}}
    error text,
    started_at text,
    finished_at text
);
create table if not exists suppressions (
    hash text primary key,          -- salted sha256 of one form of an identifier (orchestration/privacy/subject.py)
    request_id text not null references requests (id),
    created_at text not null
);
"""


class LedgerError(Exception):
    """A request that does not exist, or is not in the state an operation needs."""


@dataclass(frozen=True)
class Request:
    id: str
    created_at: str
    requested_by: str
    reason: str | None
    subject_kind: str
    subject_hash: str
    pending_subject: str | None
    status: str
    dagster_run_id: str | None
    profile_ids: list[str] | None
    rows_per_store: dict[str, Any] | None
    sweep_result: dict[str, Any] | None
    error: str | None
    started_at: str | None
    finished_at: str | None

    def public(self) -> dict[str, Any]:
        """The request without the raw identifier (what `cdp forget --status` and the API show)."""
        data = dict(self.__dict__)
        data.pop("pending_subject")
        return data


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Ledger:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else privacy_root()
        self.path = self.root / LEDGER_FILE

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("pragma journal_mode=wal")
            con.execute("pragma synchronous=full")
            con.executescript(_SCHEMA)
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    def salt(self) -> str:
        salt = read_salt(self.root, create=True)
        assert salt is not None
        return salt

    def subject_hash(self, kind: str, value: str) -> str:
        return hash_form(self.salt(), f"{kind}:{normalize_identifier(kind, value)}")

    def create_request(self, kind: str, value: str, requested_by: str, reason: str | None = None) -> Request:
        """Record a pending request (the identifier is validated first: SubjectError when it cannot be one)."""
        subject_hash = self.subject_hash(kind, value)
        request_id = "fgt_" + secrets.token_hex(8)
        with self._connect() as con:
            con.execute(
                "insert into requests (id, created_at, requested_by, reason, subject_kind, subject_hash, "
                "pending_subject, status) values (?, ?, ?, ?, ?, ?, ?, 'pending')",
                (request_id, _now(), requested_by, reason, kind, subject_hash, value),
            )
        return self.get(request_id)

    def get(self, request_id: str) -> Request:
        with self._connect() as con:
            row = con.execute("select * from requests where id = ?", (request_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no erasure request {request_id!r} in {self.path}")
        data = dict(row)
        for column in ("profile_ids", "rows_per_store", "sweep_result"):
            data[column] = json.loads(data[column]) if data[column] else None
        return Request(**data)

    def requests(self) -> list[Request]:
        with self._connect() as con:
            ids = [r[0] for r in con.execute("select id from requests order by created_at").fetchall()]
        return [self.get(i) for i in ids]

    def start(self, request_id: str, run_id: str) -> str:
        """Mark the request running; returns the raw identifier. A request that already ended cannot restart:
        its identifier is gone (a failed request is retried by a new `cdp forget`)."""
        with self._connect() as con:
            row = con.execute("select status, pending_subject from requests where id = ?", (request_id,)).fetchone()
            if row is None:
                raise LedgerError(f"no erasure request {request_id!r} in {self.path}")
            if row["pending_subject"] is None or row["status"] in ("erased", "failed"):
                raise LedgerError(f"request {request_id} is {row['status']}: its identifier is no longer kept; "
                                  "file a new request")
            con.execute("update requests set status = 'running', dagster_run_id = ?, started_at = ? where id = ?",
                        (run_id, _now(), request_id))
            return row["pending_subject"]

    def finish(
        self,
        request_id: str,
        *,
        status: str,
        profile_ids: list[str] | None = None,
        rows_per_store: dict[str, Any] | None = None,
        sweep_result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Request:
        """Record the outcome and forget the raw identifier, whatever the outcome."""
        if status not in ("erased", "failed"):
            raise LedgerError(f"a request finishes erased or failed, not {status!r}")
        with self._connect() as con:
            con.execute(
                "update requests set status = ?, pending_subject = null, profile_ids = ?, rows_per_store = ?, "
                "sweep_result = ?, error = ?, finished_at = ? where id = ?",
                (status, json.dumps(profile_ids) if profile_ids is not None else None,
                 json.dumps(rows_per_store) if rows_per_store is not None else None,
                 json.dumps(sweep_result) if sweep_result is not None else None, error, _now(), request_id),
            )
        return self.get(request_id)

    def add_suppressions(self, request_id: str, forms: set[str]) -> int:
        """Store the salted hashes of `forms` and re-export the list the landing zone reads; returns how many
        hashes are new."""
        salt = self.salt()
        hashes = {hash_form(salt, form) for form in forms}
        with self._connect() as con:
            before = con.execute("select count(*) from suppressions").fetchone()[0]
            con.executemany("insert or ignore into suppressions (hash, request_id, created_at) values (?, ?, ?)",
                            [(h, request_id, _now()) for h in sorted(hashes)])
            everything = {r[0] for r in con.execute("select hash from suppressions").fetchall()}
        write_suppressed(everything, self.root)
        return len(everything) - before

    def suppression_hashes(self) -> set[str]:
        with self._connect() as con:
            return {r[0] for r in con.execute("select hash from suppressions").fetchall()}
