"""The landing zone: immutable, idempotent batch files, one Parquet file per batch.

Connectors and ingest endpoints write here and nowhere else (ARCHITECTURE.md, rule 1: one writer
of the warehouse). A batch's id is a hash of its source and its bytes, so landing the same file twice
finds the batch already there and writes nothing. Files are written to a temporary name, fsynced and
renamed into place, so a reader (dbt) never sees half a batch and a crash loses nothing acknowledged.
The record payload is kept as received; the layout is documented in docs/sources.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SOURCES: tuple[str, ...] = ("web", "app", "salesforce", "email", "whatsapp")

LANDING_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("landed_at", pa.timestamp("us"), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("parse_error", pa.string()),
    ]
)

SCHEMA_FILE = "_schema.parquet"
BATCH_PREFIX = "batch-"


class LandingError(Exception):
    """A batch could not be landed (unknown source, unwritable zone...)."""


@dataclass(frozen=True)
class RawRecord:
    """One record as a connector split it out of its input; `parse_error` says why it could not be split cleanly."""

    payload: str
    parse_error: str | None = None


@dataclass(frozen=True)
class LandedBatch:
    source: str
    batch_id: str
    file_name: str
    path: Path
    records: int
    already_landed: bool


def default_landing_root() -> Path:
    """`CDP_LANDING_PATH`, else `var/landing` under the project (or current) directory."""
    configured = os.environ.get("CDP_LANDING_PATH")
    if configured:
        return Path(configured).expanduser().resolve()
    return (project_home() / "var" / "landing").resolve()


def project_home() -> Path:
    """Where `var/` lives: `CDP_HOME`, else the repository this package was installed from."""
    configured = os.environ.get("CDP_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[1]


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise LandingError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    return source


class LandingZone:
    """The folder tree `<root>/<source>/batch-<batch_id>.parquet`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_landing_root()

    def init(self) -> None:
        """Create every source folder with a zero-row schema file, so readers work before the first batch."""
        for source in SOURCES:
            folder = self.root / source
            folder.mkdir(parents=True, exist_ok=True)
            schema_file = folder / SCHEMA_FILE
            if not schema_file.exists():
                self._write_atomically(schema_file, LANDING_SCHEMA.empty_table())

    def batch_path(self, source: str, batch_id: str) -> Path:
        return self.root / check_source(source) / f"{BATCH_PREFIX}{batch_id}.parquet"

    def has_batch(self, source: str, batch_id: str) -> bool:
        return self.batch_path(source, batch_id).exists()

    def land(self, source: str, batch_id: str, file_name: str, records: Sequence[RawRecord]) -> LandedBatch:
        """Write one batch unless a batch with this id is already landed."""
        path = self.batch_path(source, batch_id)
        if path.exists():
            return LandedBatch(source, batch_id, file_name, path, pq.read_metadata(path).num_rows, True)
        self.init()
        table = records_table(source, batch_id, file_name, records, datetime.now(UTC).replace(tzinfo=None))
        self._write_atomically(path, table)
        return LandedBatch(source, batch_id, file_name, path, table.num_rows, False)

    def batch_files(self, source: str) -> list[Path]:
        folder = self.root / check_source(source)
        return sorted(folder.glob(f"{BATCH_PREFIX}*.parquet")) if folder.exists() else []

    def landed_counts(self) -> dict[str, dict[str, int]]:
        """Batches and records landed per source, read from Parquet footers only."""
        counts: dict[str, dict[str, int]] = {}
        for source in SOURCES:
            files = self.batch_files(source)
            counts[source] = {
                "batches": len(files),
                "records": sum(pq.read_metadata(f).num_rows for f in files),
            }
        return counts

    @staticmethod
    def _write_atomically(path: Path, table: pa.Table) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            tmp.unlink(missing_ok=True)


def records_table(
    source: str, batch_id: str, file_name: str, records: Iterable[RawRecord], landed_at: datetime
) -> pa.Table:
    payloads: list[str] = []
    errors: list[str | None] = []
    for record in records:
        payloads.append(record.payload)
        errors.append(record.parse_error)
    n = len(payloads)
    return pa.table(
        {
            "source": pa.array([source] * n, pa.string()),
            "batch_id": pa.array([batch_id] * n, pa.string()),
            "landed_at": pa.array([landed_at] * n, pa.timestamp("us")),
            "file_name": pa.array([file_name] * n, pa.string()),
            "position": pa.array(range(n), pa.int64()),
            "payload": pa.array(payloads, pa.string()),
            "parse_error": pa.array(errors, pa.string()),
        },
        schema=LANDING_SCHEMA,
    )
