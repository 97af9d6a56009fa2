"""The write-ahead spool: where accepted events wait, fsynced, until they become an ordinary landing batch.

Layout: `<landing_root>/_spool/<source>/`. A process appends NDJSON lines (one message each) to its own open file
`<source>-<utc time>-<pid>-<seq>.ndjson.open`; sealing renames it to `....ndjson` (dropping `.open`), and landing a
sealed file writes it with `LandingZone.land(source, content_batch_id(source, bytes), file name, lines)` and then
deletes it. Landing is idempotent (the batch id is a hash of the bytes), so a crash between landing and deleting
only lands the same batch again, which is a no-op.

Two lock files per source folder make this safe across threads and processes (uvicorn workers, the API and the
`cdp forget` job):
- `.write.lock` (flock) is held by a writer for each append + fsync, and by whoever seals. A writer checks, under
  the lock, that its open file still has its `.open` name; if someone sealed it, the writer starts a new file. So
  every append is either inside a sealed file or in a later one: never in a file already landed.
- `.land.lock` is held while sealed files are landed and deleted, so two landers never race on one file (the
  erasure job rewrites batches after `seal_all`, and a late second landing must not bring a record back).

A crash can leave a torn last line (a write in progress, never acknowledged): it is cut off when the file is landed
and counted in a log line. Nothing acknowledged is lost because the acknowledgement waits for the fsync.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import content_batch_id, split_ndjson
from connectors.landing import SOURCES, LandingZone

log = logging.getLogger("cdp.serving.ingest")

SPOOL_DIR = "_spool"
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".ndjson"
SEAL_SECONDS = 2.0  # an open file with data is sealed (and landed) this long after its first line
SEAL_BYTES = 8 * 1024 * 1024  # ... or as soon as it is this big


def spool_root(landing_root: Path) -> Path:
    return Path(landing_root) / SPOOL_DIR


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`. Each call opens its own descriptor, so two threads of one process exclude
    each other as two processes do (flock locks belong to the open file description)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class LandedSpoolFile:
    source: str
    file_name: str
    records: int
    torn_bytes: int
    already_landed: bool


class SourceSpool:
    """The open spool file of one source in this process. Not thread-safe: one writer thread calls it."""

    _sequence = itertools.count()

    def __init__(self, landing_root: Path, source: str) -> None:
        self.source = source
        self.folder = spool_root(landing_root) / source
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_lock = self.folder / ".write.lock"
        self.path: Path | None = None  # the open file, while there is one
        self.fd: int | None = None
        self.size = 0
        self.opened_at = 0.0  # monotonic time of the first line in the open file

    def _open_new(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{self.source}-{stamp}-{os.getpid()}-{next(self._sequence):06d}{SEALED_SUFFIX}{OPEN_SUFFIX}"
        self.path = self.folder / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.folder)  # the new name survives a power loss before the first append's fsync is relied on
        self.size = 0
        self.opened_at = time.monotonic()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.path, self.size = None, None, 0

    def append(self, data: bytes) -> None:
        """Write `data` (whole lines) and fsync it. Raises on failure, after setting the file aside (sealed) so
        that a partly written line can only ever be the last line of a file, where landing cuts it off."""
        with _flock(self.write_lock):
            if self.path is not None and not self.path.exists():
                self._close()  # sealed by someone else (seal_all): its lines are theirs to land
            if self.fd is None:
                self._open_new()
            assert self.fd is not None
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self.fd, view)
                    view = view[written:]
                os.fsync(self.fd)
            except OSError:
                self._seal_locked()
                raise
            self.size += len(data)

    def due(self, now: float, seal_seconds: float, seal_bytes: int) -> bool:
        return self.fd is not None and self.size > 0 and (
            now - self.opened_at >= seal_seconds or self.size >= seal_bytes)

    def seal(self) -> None:
        """Close the open file and give it its sealed name (it is then landed by `land_sealed`)."""
        with _flock(self.write_lock):
            self._seal_locked()

    def _seal_locked(self) -> None:
        path = self.path
        self._close()
        if path is not None and path.exists():
            path.rename(path.with_name(path.name.removesuffix(OPEN_SUFFIX)))
            _fsync_dir(path.parent)


def _cut_torn_tail(data: bytes) -> tuple[bytes, int]:
    """The file without a last line that has no newline (a write cut by a crash), and how many bytes went."""
    if not data or data.endswith(b"\n"):
        return data, 0
    keep = data.rfind(b"\n") + 1
    return data[:keep], len(data) - keep


def land_spool_file(zone: LandingZone, source: str, path: Path) -> LandedSpoolFile:
    """Land one sealed spool file as a batch and delete it. The caller holds the source's land lock."""
    data, torn = _cut_torn_tail(path.read_bytes())
    file_name = path.name
    if torn:
        log.warning("spool %s/%s: cut a torn last line of %d bytes (a write cut by a crash, never acknowledged)",
                    source, file_name, torn)
    landed = LandedSpoolFile(source, file_name, 0, torn, False)
    if data:
        batch = zone.land(source, content_batch_id(source, data), file_name, split_ndjson(data))
        landed.records, landed.already_landed = batch.records, batch.already_landed
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return landed


def land_sealed(landing_root: Path, source: str) -> list[LandedSpoolFile]:
    """Land every sealed spool file of `source` (any process's), oldest name first."""
    folder = spool_root(landing_root) / source
    if not folder.is_dir():
        return []
    zone = LandingZone(landing_root)
    with _flock(folder / ".land.lock"):
        return [land_spool_file(zone, source, path) for path in sorted(folder.glob(f"*{SEALED_SUFFIX}"))]


def seal_all(landing_root: Path) -> list[LandedSpoolFile]:
    """Seal every open spool file of every process and land everything in the spool now.

    Used on start-up (leftovers of a crash) and by the erasure job before it scans the landing zone, so that the
    right to be forgotten covers events still in the spool. A running API keeps appending safely: its next write
    finds its file sealed and starts a new one.
    """
    landed: list[LandedSpoolFile] = []
    root = spool_root(landing_root)
    if not root.is_dir():
        return landed
    for source in SOURCES:
        folder = root / source
        if not folder.is_dir():
            continue
        with _flock(folder / ".write.lock"):
            opened = sorted(folder.glob(f"*{SEALED_SUFFIX}{OPEN_SUFFIX}"))
            for path in opened:
                path.rename(path.with_name(path.name.removesuffix(OPEN_SUFFIX)))
            if opened:
                _fsync_dir(folder)
        landed += land_sealed(landing_root, source)
    return landed


class SpoolWriter:
    """The spools of every source in this process, written by one thread (group commit happens above it: the
    caller hands it everything pending at once, so one fsync per source acknowledges many requests)."""

    def __init__(self, landing_root: Path, seal_seconds: float = SEAL_SECONDS, seal_bytes: int = SEAL_BYTES) -> None:
        self.landing_root = Path(landing_root)
        self.seal_seconds, self.seal_bytes = seal_seconds, seal_bytes
        self.spools = {source: SourceSpool(self.landing_root, source) for source in SOURCES}

    def write(self, pending: dict[str, list[bytes]]) -> list[str]:
        """Append each source's lines and fsync; returns the sources whose file grew past the size to seal."""
        full = []
        for source, lines in pending.items():
            if not lines:
                continue
            spool = self.spools[source]
            spool.append(b"".join(lines))
            if spool.size >= self.seal_bytes:
                spool.seal()
                full.append(source)
        return full

    def seal_due(self) -> list[str]:
        """Seal the open files that are old or big enough; returns their sources."""
        now = time.monotonic()
        due = [s for s, spool in self.spools.items() if spool.due(now, self.seal_seconds, self.seal_bytes)]
        for source in due:
            self.spools[source].seal()
        return due

    def seal_every(self) -> None:
        for spool in self.spools.values():
            spool.seal()
