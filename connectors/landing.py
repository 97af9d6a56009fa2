"""The landing zone: immutable, idempotent batch files, one Parquet file per batch.

Connectors and ingest endpoints write here and nowhere else (ARCHITECTURE.md, rule 1: one writer
of the warehouse). A batch's id is a hash of its source and its bytes, so landing the same file twice
finds the batch already there and writes nothing. Files are written to a temporary name, fsynced and
renamed into place, so a reader (dbt) never sees half a batch and a crash loses nothing acknowledged.
The record payload is kept as received; the layout is documented in docs/sources.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
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
        pa.field("payload", pa.large_string(), nullable=False),
        pa.field("parse_error", pa.string()),
    ]
)

SCHEMA_FILE = "_schema.parquet"
BATCH_PREFIX = "batch-"


class LandingError(Exception):
    """A batch could not be landed (unknown source, unwritable zone...)."""


@dataclass(frozen=True)
class Records:
    """The records a connector split out of one input, column-wise as Arrow arrays: a batch of a
    million records stays two buffers instead of a million Python objects.

    `parse_errors` says, per record, why the connector could not split it cleanly (null when it could);
    None means no record has an error.
    """

    payloads: pa.Array
    parse_errors: pa.Array | None = None

    @classmethod
    def from_lists(cls, payloads: list[str], parse_errors: list[str | None] | None = None) -> Records:
        errors = None
        if parse_errors is not None and any(e is not None for e in parse_errors):
            errors = pa.array(parse_errors, pa.string())
        return cls(pa.array(payloads, pa.large_string()), errors)

    def __len__(self) -> int:
        return len(self.payloads)


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

    def land(self, source: str, batch_id: str, file_name: str, records: Records) -> LandedBatch:
        """Write one batch unless a batch with this id is already landed."""
        path = self.batch_path(source, batch_id)
        if path.exists():
            return LandedBatch(source, batch_id, file_name, path, pq.read_metadata(path).num_rows, True)
        self.init()
        table = records_table(source, batch_id, file_name, records, datetime.now(UTC).replace(tzinfo=None))
        # Records about an erased subject are dropped (and counted) here: the one exception to "never drop",
        # made for erasure (docs/privacy.md). Kept records keep their positions.
        from orchestration.privacy.suppression import suppress_at_landing

        table = suppress_at_landing(source, batch_id, file_name, table)
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


def records_table(source: str, batch_id: str, file_name: str, records: Records, landed_at: datetime) -> pa.Table:
    n = len(records)

    def constant(value: object, type_: pa.DataType) -> pa.Array:
        return pa.nulls(n, type_).fill_null(pa.scalar(value, type_))

    errors = records.parse_errors if records.parse_errors is not None else pa.nulls(n, pa.string())
    return pa.table(
        {
            "source": constant(source, pa.string()),
            "batch_id": constant(batch_id, pa.string()),
            "landed_at": constant(landed_at, pa.timestamp("us")),
            "file_name": constant(file_name, pa.string()),
            "position": pa.array(np.arange(n, dtype=np.int64)),
            "payload": records.payloads.cast(pa.large_string()),
            "parse_error": errors.cast(pa.string()),
        },
        schema=LANDING_SCHEMA,
    )
