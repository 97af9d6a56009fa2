"""The ingestion service behind the endpoints: group commit into the spool, sealing and landing, messageId
deduplication, the quarantine of rejected payloads, and reading (and un-gzipping) bodies within their limits.

Group commit: a request hands its lines to `IngestService.commit` and waits; one writer thread takes everything
pending at that moment, appends it per source and fsyncs once, then wakes every request it carried. While it
writes, new requests queue up for the next round, so the fsync cost is shared by however many requests arrive
during one fsync. A 2xx is sent only after the round that holds the request's lines has been fsynced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import threading
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from serving.ingest.spool import SEAL_BYTES, SEAL_SECONDS, SpoolWriter, land_sealed, seal_all
from serving.ingest.webhooks import load_sendgrid_key

log = logging.getLogger("cdp.serving.ingest")

REJECTED_DIR = "_rejected"
DEDUP_IDS = 1_000_000  # messageIds remembered per process (two generations of half as many)
QUARANTINE_PAYLOAD_CAP_FACTOR = 2  # over-limit bodies are quarantined up to twice the limit, then cut
_SECRETS = (
    (re.compile(rb'("writeKey"\s*:\s*)"[^"]*"'), rb'\1"<redacted>"'),
    (re.compile(rb"cdp_[0-9a-f]{8}_[A-Za-z0-9_-]+"), b"<redacted-key>"),
)


class BodyError(ValueError):
    """A body refused before its messages are looked at (too big, bad gzip, unsupported encoding)."""

    def __init__(self, reason: str, raw: bytes | None, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.raw, self.truncated = reason, raw, truncated


def utc_now_iso(timespec: str = "milliseconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


class SeenIds:
    """Recently accepted messageIds per write key, bounded: two generations of sets, the older dropped when the
    newer is full. Keys are Python's (randomly keyed) 64-bit hash of key id and messageId: a few dozen bytes an id
    instead of the strings. Silver's dedup on messageId is the durable guarantee; this only spares the spool."""

    def __init__(self, capacity: int = DEDUP_IDS) -> None:
        self.generation_size = max(1, capacity // 2)
        self.current: set[int] = set()
        self.previous: set[int] = set()

    @staticmethod
    def _key(key_id: str, message_id: str) -> int:
        return hash((key_id, message_id))

    def __contains__(self, item: tuple[str, str]) -> bool:
        key = self._key(*item)
        return key in self.current or key in self.previous

    def add_all(self, key_id: str, message_ids: list[str]) -> None:
        for message_id in message_ids:
            self.current.add(self._key(key_id, message_id))
            if len(self.current) >= self.generation_size:
                self.previous, self.current = self.current, set()


class RejectedLog:
    """`<landing_root>/_rejected/<UTC date>.ndjson`: one line per refused request, fsynced, with the reason, when,
    from where, the key id (never the key) and the payload (secrets blanked). Nothing sent to us is lost."""

    def __init__(self, landing_root: Path) -> None:
        self.folder = Path(landing_root) / REJECTED_DIR
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any], payload: bytes | None) -> Path:
        record = dict(entry)
        if payload is not None:
            clean = payload
            for pattern, replacement in _SECRETS:
                clean = pattern.sub(replacement, clean)
            try:
                record["payload"] = clean.decode("utf-8")
            except UnicodeDecodeError:
                record["payload_base64"] = base64.b64encode(clean).decode()
        line = msgspec.json.encode(record) + b"\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{datetime.now(UTC).date().isoformat()}.ndjson"
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return path


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding (gzip or none) undone, at most `limit` bytes; BodyError otherwise."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise BodyError(f"unsupported Content-Encoding {content_encoding!r}: send gzip or none", raw)
    out = bytearray()
    data = raw
    while data:  # a gzip body may hold several members
        inflater = zlib.decompressobj(wbits=31)
        try:
            # max_length stops a small "gzip bomb" from inflating past the limit in memory
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as error:
            raise BodyError(f"body is not valid gzip: {error}", raw) from None
        if len(out) > limit:
            raise BodyError(f"body is over the {limit // 1024} KB limit once decompressed", raw)
        if not inflater.eof:
            raise BodyError("body is not valid gzip: truncated", raw)
        data = inflater.unused_data
    return bytes(out)


class IngestService:
    """One per app (created on start-up, `app.state.ingest`)."""

    def __init__(self, landing_root: Path, *, sendgrid_public_key: str | None = None,
                 seal_seconds: float = SEAL_SECONDS, seal_bytes: int = SEAL_BYTES) -> None:
        self.landing_root = Path(landing_root)
        # parsed now: a bad key fails the start-up loudly rather than refusing every webhook quietly
        self.sendgrid_key = load_sendgrid_key(sendgrid_public_key) if sendgrid_public_key else None
        self.writer = SpoolWriter(self.landing_root, seal_seconds, seal_bytes)
        self.seen = SeenIds()
        self.rejected = RejectedLog(self.landing_root)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="cdp-spool-writer")
        self._land_thread = ThreadPoolExecutor(1, thread_name_prefix="cdp-spool-lander")
        self._pending: dict[str, list[bytes]] = defaultdict(list)
        self._waiters: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self._sealer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._to_land: set[str] = set()
        # events durably spooled (counted after the fsync) and quarantined payloads, by source: /metrics
        self.accepted: dict[str, int] = defaultdict(int)
        self.rejected_payloads = 0

    # --- life cycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Land what a previous process left in the spool (a crash, a kill), then seal and land periodically."""
        loop = asyncio.get_running_loop()
        leftovers = await loop.run_in_executor(self._land_thread, seal_all, self.landing_root)
        if leftovers:
            log.warning("ingest: landed %d spool files found at start-up (%d records, %d torn lines cut)",
                     len(leftovers), sum(f.records for f in leftovers), sum(1 for f in leftovers if f.torn_bytes))
        self._sealer = asyncio.create_task(self._seal_loop(), name="cdp-spool-sealer")

    async def stop(self) -> None:
        """Finish pending writes, seal and land everything of this process."""
        if self._sealer is not None:
            self._sealer.cancel()
            await asyncio.gather(self._sealer, return_exceptions=True)
        while self._committer is not None and not self._committer.done():
            await asyncio.gather(self._committer, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write_thread, self.writer.seal_every)
        for source in self.writer.spools:
            await loop.run_in_executor(self._land_thread, land_sealed, self.landing_root, source)
        self._write_thread.shutdown()
        self._land_thread.shutdown()

    async def _seal_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.25)
            self._wake.clear()
            try:
                due = await loop.run_in_executor(self._write_thread, self.writer.seal_due)
                self._to_land.update(due)
                for source in sorted(self._to_land):
                    await loop.run_in_executor(self._land_thread, land_sealed, self.landing_root, source)
                    self._to_land.discard(source)  # only once landed: a failure is retried next round
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the sealed files stay; the next round tries again
                log.error("ingest: sealing or landing the spool failed: %s: %s", type(error).__name__, error)
                await asyncio.sleep(1.0)

    # --- group commit ---------------------------------------------------------------------------------------------

    async def commit(self, lines_by_source: dict[str, list[bytes]]) -> None:
        """Return once these lines are appended to the spool and fsynced."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        for source, lines in lines_by_source.items():
            self._pending[source].extend(lines)
        self._waiters.append(done)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_rounds())
        # shield: a client that goes away does not cancel the write of everyone else's lines
        await asyncio.shield(done)

    async def _commit_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters:
            pending, waiters = self._pending, self._waiters
            self._pending, self._waiters = defaultdict(list), []
            try:
                full = await loop.run_in_executor(self._write_thread, self.writer.write, pending)
                for source, lines in pending.items():
                    self.accepted[source] += len(lines)
            except Exception as error:
                log.error("ingest: writing the spool failed: %s: %s", type(error).__name__, error)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if full:
                self._to_land.update(full)
                self._wake.set()

    # --- quarantine -----------------------------------------------------------------------------------------------

    async def reject(self, entry: dict[str, Any], payload: bytes | None) -> None:
        await asyncio.to_thread(self.rejected.write, entry, payload)
        self.rejected_payloads += 1
