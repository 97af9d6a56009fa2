"""Suppression: data about an erased subject that lands later is dropped at ingestion.

The platform keeps no raw identifier of an erased subject, only salted SHA-256 hashes of its forms (subject.py:
the email lower-cased, the phone's digit strings, ids lower-cased). The salt is per installation
(`var/privacy/salt`, created once), so the hashes cannot be matched against another installation's or a
precomputed table. The ledger (ledger.py) owns the entries and exports them to `var/privacy/suppressed.txt`, one
hash a line, which the landing zone reads before writing each batch (connectors/landing.py): a record whose payload
holds a JSON string with a suppressed form is dropped, the kept records keep their positions, and the drop is
counted in `var/privacy/suppressed_at_ingestion.jsonl` (batch id, source, count, the hashes that matched: never the
data). This is the one place where the platform's "never drop a record" yields: to erasure.

With an empty list (the usual case) landing pays one stat() per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from orchestration.privacy import privacy_root
from orchestration.privacy.subject import payload_match_sql

SALT_FILE = "salt"
SUPPRESSED_FILE = "suppressed.txt"
INGESTION_LOG = "suppressed_at_ingestion.jsonl"


def read_salt(root: Path | None = None, *, create: bool = False) -> str | None:
    """The installation's salt (64 hex characters); created on first use when `create`."""
    path = (root or privacy_root()) / SALT_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(salt)
    try:
        os.link(tmp, path)  # never replaces a salt another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def hash_form(salt: str, form: str) -> str:
    return hashlib.sha256((salt + form).encode()).hexdigest()


def write_suppressed(hashes: set[str], root: Path | None = None) -> Path:
    """Replace the exported list atomically (readers see the old or the new list, never half)."""
    path = (root or privacy_root()) / SUPPRESSED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(f"{h}\n" for h in sorted(hashes)))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def match_payloads(payloads: pa.Array, wanted: set[str], *, salt: str | None = None) -> dict[int, set[str]]:
    """Row index -> the forms (or hashes, when `salt` is given) each matching payload holds."""
    import duckdb

    if not wanted or len(payloads) == 0:
        return {}
    records = pa.table({"row_key": pa.array(range(len(payloads)), pa.int64()), "payload": payloads})
    forms = pa.table({"form": pa.array(sorted(wanted), pa.string())})
    con = duckdb.connect()
    try:
        con.register("records", records)
        con.register("wanted_forms", forms)
        rows = con.execute(payload_match_sql("records", "wanted_forms", salt=salt)).fetchall()
    finally:
        con.close()
    matches: dict[int, set[str]] = {}
    for row_index, form in rows:
        matches.setdefault(row_index, set()).add(form)
    return matches


@dataclass(frozen=True)
class SuppressionList:
    """The exported hashes and the salt they were made with."""

    salt: str
    hashes: frozenset[str]
    root: Path

    @classmethod
    def load(cls, root: Path | None = None) -> SuppressionList | None:
        """None when nothing is suppressed (no file, or an empty one): the cheap, usual case."""
        root = root or privacy_root()
        path = root / SUPPRESSED_FILE
        try:
            if path.stat().st_size == 0:
                return None
        except FileNotFoundError:
            return None
        salt = read_salt(root)
        hashes = frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())
        if not hashes or salt is None:
            return None
        return cls(salt, hashes, root)

    def filter_table(self, table: pa.Table) -> tuple[pa.Table, dict[str, int]]:
        """The landing table without the records about suppressed subjects, and hash -> records dropped."""
        matches = match_payloads(table.column("payload").combine_chunks(), set(self.hashes), salt=self.salt)
        if not matches:
            return table, {}
        per_hash: dict[str, int] = {}
        for found in matches.values():
            for digest in found:
                per_hash[digest] = per_hash.get(digest, 0) + 1
        keep = pa.array([i not in matches for i in range(table.num_rows)])
        return table.filter(keep), per_hash

    def record_drop(self, source: str, batch_id: str, file_name: str, dropped: int, per_hash: dict[str, int]) -> None:
        """One line per batch that had records dropped: counts and hashes, never the data."""
        line: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "source": source,
            "batch_id": batch_id,
            "file_name_sha256": hashlib.sha256(file_name.encode()).hexdigest()[:16],
            "suppressed": dropped,
            "hashes": {digest[:16]: count for digest, count in sorted(per_hash.items())},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / INGESTION_LOG, "a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def suppress_at_landing(source: str, batch_id: str, file_name: str, table: pa.Table) -> pa.Table:
    """The landing zone's hook: drops the records of suppressed subjects (see the module docstring)."""
    suppression = SuppressionList.load()
    if suppression is None:
        return table
    kept, per_hash = suppression.filter_table(table)
    dropped = table.num_rows - kept.num_rows
    if dropped:
        suppression.record_drop(source, batch_id, file_name, dropped, per_hash)
    return kept


def read_ingestion_log(root: Path | None = None) -> list[dict[str, Any]]:
    path = (root or privacy_root()) / INGESTION_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
