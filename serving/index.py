"""The API's in-memory index of the current serving snapshot, and the holder that swaps it when CURRENT changes.

A request does only dictionary-free lookups in compact structures and returns bytes encoded at publish time:
- lookup keys ('profile_id:<id>' and every identifier key 'email:max@x.org'...) are 128-bit fingerprints (md5,
  computed by DuckDB at publish) in two sorted uint64 arrays with the document row beside them: a binary search,
  no Python string per key (a dict of 4M identifier strings would take ~600 MB at 1M profiles; these take 20 bytes
  a key);
- documents are the profile documents deflated with a preset dictionary, all in one bytes buffer with an offsets
  array (no object per profile); a request inflates one (~7 us);
- merges (retired id -> survivor), segment members (sorted by profile id, each member pre-encoded) and the
  segment list stay as small Python structures;
- recent events stay in the snapshot file and are read per request with a read-only DuckDB cursor (50 events per
  profile would not fit in memory at 1M profiles; the events endpoint is not the hot path).

`SnapshotHolder` loads an index at startup and whenever CURRENT names another file (a stat per second), in a
background thread, then swaps one reference: requests keep using the old index until the new one is complete,
so no request fails during a swap. The API never opens the warehouse.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import gc
import hashlib
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from serving.snapshot import current_snapshot, read_meta

log = logging.getLogger("cdp.serving.index")

_ISO = "%Y-%m-%dT%H:%M:%SZ"


class AmbiguousIdentifierError(LookupError):
    """An identifier held by several profiles (a shared device that merge protection cut)."""

    def __init__(self, profile_ids: list[str]) -> None:
        super().__init__(f"held by {len(profile_ids)} profiles")
        self.profile_ids = profile_ids


class BadCursorError(ValueError):
    """A paging cursor this API did not hand out."""


def fingerprint(key: str) -> tuple[np.uint64, np.uint64]:
    """DuckDB's (md5_number_upper, md5_number_lower) of `key`: the two little-endian halves of its md5."""
    halves = np.frombuffer(hashlib.md5(key.encode()).digest(), dtype="<u8")  # a fingerprint, not a security hash
    return halves[0], halves[1]


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, msgspec.DecodeError, ValueError):
        raise BadCursorError("invalid cursor: pass the next_cursor of the previous page unchanged") from None


@dataclass(frozen=True)
class SegmentMembers:
    profile_ids: list[str]  # sorted: the cursor is the last profile id of a page
    items: list[bytes]  # each member encoded ({"profile_id", "entered_at", "score"})


class ServingIndex:
    """One loaded snapshot. Immutable once built; shared by every request thread."""

    def __init__(self, path: Path) -> None:
        started = time.monotonic()
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self._local = threading.local()
        # this connection only reads (events); cursors per thread, closed with the index
        # bounded: DuckDB would otherwise cache blocks read at load up to most of the machine's memory
        self._con = duckdb.connect(str(self.path), read_only=True)
        self._con.execute("set memory_limit = '256MB'")
        con = self._con.cursor()
        keys = con.execute("select key_hi, key_lo, doc_row from lookup_keys order by key_hi, key_lo, doc_row") \
            .fetchnumpy()
        self.key_hi: np.ndarray = np.ascontiguousarray(keys["key_hi"], dtype=np.uint64)
        self.key_lo: np.ndarray = np.ascontiguousarray(keys["key_lo"], dtype=np.uint64)
        self.key_row: np.ndarray = np.ascontiguousarray(keys["doc_row"], dtype=np.int32)
        dictionary = con.execute("select dictionary from document_dictionary").fetchall()[0][0]
        self._inflater = zlib.decompressobj(-15, zdict=dictionary)
        blobs = con.sql("select document_z from profile_documents_z order by doc_row").to_arrow_table() \
            .column("document_z").combine_chunks()
        _, offsets, data = blobs.buffers()
        self._offsets = np.frombuffer(offsets, dtype=np.int32)[blobs.offset:blobs.offset + len(blobs) + 1].copy()
        self._data = data.to_pybytes() if data is not None else b""
        self.profiles = len(blobs)
        del blobs
        pa.default_memory_pool().release_unused()  # the Arrow copy is gone; give its pages back
        self.merges: dict[str, str] = dict(
            con.execute("select retired_profile_id, surviving_profile_id from profile_merges").fetchall())
        self.segments_body, self.segments = self._load_segments(con)
        con.close()
        self.loaded_at = datetime.now(UTC)
        self.load_seconds = time.monotonic() - started

    @staticmethod
    def _load_segments(con: duckdb.DuckDBPyConnection) -> tuple[bytes, dict[str, SegmentMembers]]:
        from serving.segments.schemas import SegmentInfo, SegmentList

        definitions = con.execute(
            "select segment, name, description, kind, owner, destinations, members from segment_definitions "
            "order by segment").fetchall()
        segments_list = SegmentList(segments=[
            SegmentInfo(segment=s, name=n, description=d, kind=k, owner=o,
                        destinations=[x for x in (dest or "").split(",") if x], members=m or 0)
            for s, n, d, k, o, dest, m in definitions
        ])
        members: dict[str, SegmentMembers] = {s: SegmentMembers([], []) for s, *_ in definitions}
        rows = con.execute(f"""
            select r.segment, r.profile_id, strftime(m.entered_at, '{_ISO}'), coalesce(r.score, m.entry_score)
            from segment_results as r
            left join segment_memberships as m on m.profile_id = r.profile_id and m.segment = r.segment
            order by r.segment, r.profile_id
        """).fetchall()
        encode = msgspec.json.Encoder().encode
        for segment, profile_id, entered_at, score in rows:
            bucket = members.setdefault(segment, SegmentMembers([], []))
            bucket.profile_ids.append(profile_id)
            bucket.items.append(encode({"profile_id": profile_id, "entered_at": entered_at, "score": score}))
        return msgspec.json.encode(segments_list), members

    # --- lookups ------------------------------------------------------------------------------------------------

    def _rows(self, key: str) -> list[int]:
        hi, lo = fingerprint(key)
        i = int(self.key_hi.searchsorted(hi))
        rows = []
        while i < len(self.key_hi) and self.key_hi[i] == hi:  # one entry, more only for a shared identifier
            if self.key_lo[i] == lo:
                rows.append(int(self.key_row[i]))
            i += 1
        return rows

    def document(self, row: int) -> bytes:
        blob = self._data[self._offsets[row]:self._offsets[row + 1]]
        return self._inflater.copy().decompress(blob)

    def _profile_row(self, profile_id: str) -> int | None:
        rows = self._rows("profile_id:" + profile_id)
        return rows[0] if rows else None

    def resolve(self, profile_id: str) -> tuple[str, int] | None:
        """(the live profile id, its document row) for a live or retired id; None when unknown."""
        live = profile_id
        for _ in range(8):  # a retired id names its survivor directly; a short chain at most
            row = self._profile_row(live)
            if row is not None:
                return live, row
            survivor = self.merges.get(live)
            if survivor is None:
                return None
            live = survivor
        return None

    def profile(self, profile_id: str) -> bytes | None:
        """The profile's document; a retired id gets its survivor's with merged_into and requested_profile_id."""
        resolved = self.resolve(profile_id)
        if resolved is None:
            return None
        live, row = resolved
        document = self.document(row)
        if live == profile_id:
            return document
        prefix = (b'{"merged_into":' + msgspec.json.encode(live) + b',"requested_profile_id":'
                  + msgspec.json.encode(profile_id) + b",")
        return prefix + document[1:]

    def lookup(self, identifier_key: str) -> bytes | None:
        """The document of the profile holding `identifier_key` ('email:max@x.org'); None when nobody has it."""
        rows = self._rows(identifier_key)
        if not rows:
            return None
        if len(rows) > 1:
            ids = sorted(msgspec.json.decode(self.document(r))["profile_id"] for r in rows)
            raise AmbiguousIdentifierError(ids)
        return self.document(rows[0])

    # --- events and segments ------------------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._con.cursor()
        return cursor

    def events(self, profile_id: str, limit: int, cursor: str | None) -> bytes | None:
        """A page of the profile's recent events, newest first; None when the profile is unknown."""
        resolved = self.resolve(profile_id)
        if resolved is None:
            return None
        live, _ = resolved
        params: list[Any] = [live]
        after = ""
        if cursor:
            position = decode_cursor(cursor)
            if not (isinstance(position, list) and len(position) == 2 and all(isinstance(p, str) for p in position)):
                raise BadCursorError("invalid cursor: pass the next_cursor of the previous page unchanged")
            try:
                occurred_at = datetime.fromisoformat(position[0])
            except ValueError:
                raise BadCursorError("invalid cursor: pass the next_cursor of the previous page unchanged") from None
            after = " and (occurred_at < ? or (occurred_at = ? and event_id > ?))"
            params += [occurred_at, occurred_at, position[1]]
        rows = self._cursor().execute(
            f"select event_id, occurred_at, strftime(occurred_at, '{_ISO}'), source, event_type, properties "
            f"from recent_events where profile_id = ?{after} order by occurred_at desc, event_id limit ?",
            [*params, limit + 1],
        ).fetchall()
        page = rows[:limit]
        next_cursor = encode_cursor([page[-1][1].isoformat(), page[-1][0]]) if len(rows) > limit else None
        events = [{"event_id": e, "occurred_at": at, "source": s, "event_type": t,
                   "properties": msgspec.Raw((p or "{}").encode())} for e, _, at, s, t, p in page]
        body: dict[str, Any] = {"profile_id": live, "events": events, "next_cursor": next_cursor}
        if live != profile_id:
            body = {"merged_into": live, "requested_profile_id": profile_id, **body}
        return msgspec.json.encode(body)

    def members(self, segment: str, limit: int, cursor: str | None) -> bytes | None:
        """A page of the segment's members in profile id order; None when the segment is unknown."""
        bucket = self.segments.get(segment)
        if bucket is None:
            return None
        start = 0
        if cursor:
            last = decode_cursor(cursor)
            if not isinstance(last, str):
                raise BadCursorError("invalid cursor: pass the next_cursor of the previous page unchanged")
            start = bisect.bisect_right(bucket.profile_ids, last)
        end = start + limit
        next_cursor = encode_cursor(bucket.profile_ids[end - 1]) if end < len(bucket.profile_ids) else None
        return (b'{"segment":' + msgspec.json.encode(segment) + b',"members":['
                + b",".join(bucket.items[start:end]) + b'],"next_cursor":' + msgspec.json.encode(next_cursor)
                + b',"total":' + str(len(bucket.profile_ids)).encode() + b"}")

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "published_at": self.meta.get("published_at"),
            "profiles": self.profiles,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "load_seconds": round(self.load_seconds, 3),
        }

    def close(self) -> None:
        self._con.close()


class SnapshotHolder:
    """The current ServingIndex (`.index`, None until the first snapshot is loaded), reloaded in a background
    thread when CURRENT changes."""

    def __init__(self, serving_dir: Path, poll_seconds: float = 1.0) -> None:
        self.serving_dir = Path(serving_dir)
        self.poll_seconds = poll_seconds
        self.index: ServingIndex | None = None
        self.loading: str | None = None
        self.last_error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="snapshot-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as error:  # a bad snapshot must not stop the watcher
                self.last_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                log.error("serving snapshot load failed: %s", self.last_error)
            self._stop.wait(self.poll_seconds)

    def refresh(self) -> bool:
        """Load the snapshot CURRENT names if it is not the one loaded; True when it swapped."""
        pointer = self.serving_dir / "CURRENT"
        try:
            stat = pointer.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            return False
        if stamp == self._stamp:
            return False
        path = current_snapshot(self.serving_dir)
        self._stamp = stamp  # a failed load is retried when CURRENT changes again
        if path is None or (self.index is not None and self.index.path == path):
            return False
        self.loading = path.name
        try:
            index = ServingIndex(path)
        finally:
            self.loading = None
        self.index = index  # one reference swap; requests in flight keep the old index
        self.last_error = None
        # The index holds millions of long-lived objects (segment member lists, the merges dict): left in the
        # collector's generations, every full collection would walk them all while requests wait (tens of ms at 1M
        # profiles, the p99). Collect what the swap freed, then move everything alive to the permanent generation.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.info("serving snapshot %s loaded: %d profiles in %.2f s", path.name, index.profiles,
                 index.load_seconds)
        return True

    def describe(self) -> dict[str, Any] | None:
        if self.index is None:
            return {"file": None, "loading": self.loading, "error": self.last_error}
        return {**self.index.describe(), "loading": self.loading, "error": self.last_error}
