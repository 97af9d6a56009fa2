"""The source interface: a connector is a config, a `check()`, and the raw batches it has to land.

A file-based connector splits export files into records; an API-pulling connector (the Salesforce
REST client with a LastModifiedDate watermark, later) yields the same `RawBatch` objects from pages
of API responses. Either way the landing zone owns idempotency and durability, so a connector only
has to say what a batch is and give it a stable id.
"""

from __future__ import annotations

import csv
import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connectors.landing import LandedBatch, LandingZone, Records


class SourceError(Exception):
    """Bad input or configuration for a source; the message is meant for the user, one line."""


@dataclass(frozen=True)
class RawBatch:
    batch_id: str
    file_name: str
    records: Records


def content_batch_id(source: str, data: bytes) -> str:
    """Same source, same bytes, same batch: this is what makes landing idempotent."""
    return hashlib.sha256(source.encode() + b"\0" + data).hexdigest()[:32]


class Source(ABC):
    """One of the five sources. Subclasses name themselves and yield batches."""

    name: ClassVar[str]

    @abstractmethod
    def check(self) -> None:
        """Raise SourceError when the source cannot be read (missing files, bad credentials...)."""

    @abstractmethod
    def batches(self) -> Iterator[RawBatch]:
        """The raw batches to land, in order."""

    def land(
        self, zone: LandingZone, on_batch: Callable[[LandedBatch], None] | None = None
    ) -> list[LandedBatch]:
        self.check()
        landed = []
        for batch in self.batches():
            result = zone.land(self.name, batch.batch_id, batch.file_name, batch.records)
            landed.append(result)
            if on_batch is not None:
                on_batch(result)
        return landed


# --- splitting files into records -------------------------------------------------------------

def split_ndjson(data: bytes) -> Records:
    """One record per non-blank line, kept verbatim (a broken line is landed as it is and quarantined later).

    The lines are cut out of the file's bytes by vectorized Arrow code, without a Python object per
    line: this is what keeps landing millions of events fast.
    """
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    ends = newlines + 1
    if not data.endswith(b"\n") and data:
        ends = np.append(ends, len(data))
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:
        return _split_lines_with_bad_utf8(data)
    lines = pc.utf8_rtrim(lines, characters="\r\n")
    keep = pc.and_(pc.greater(pc.binary_length(lines), 0), pc.invert(pc.utf8_is_space(lines)))
    return Records(lines.filter(keep))


def _split_lines_with_bad_utf8(data: bytes) -> Records:
    """The slow path for a file with invalid UTF-8: bad lines are landed with the bytes replaced, and say so."""
    payloads: list[str] = []
    errors: list[str | None] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            payloads.append(raw.decode("utf-8").rstrip("\r"))
            errors.append(None)
        except UnicodeDecodeError as error:
            payloads.append(raw.decode("utf-8", errors="replace").rstrip("\r"))
            errors.append(f"line is not valid UTF-8 ({error.reason} at byte {error.start}); invalid bytes replaced")
    return Records.from_lists(payloads, errors)


def split_json(data: bytes, list_keys: tuple[str, ...] = ("records",)) -> Records:
    """A JSON array of records, or an API response object holding them under one of `list_keys`.

    Elements are re-encoded as compact JSON (key order and values kept). A document that is not
    valid JSON is landed whole as one record, so that it is quarantined with its reason, not lost.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        return Records.from_lists([data.decode("utf-8", errors="replace")], [f"file is not valid JSON: {error}"])
    if isinstance(document, dict):
        for key in list_keys:
            if isinstance(document.get(key), list):
                document = document[key]
                break
        else:
            return Records.from_lists([orjson.dumps(document).decode()])
    if not isinstance(document, list):
        return Records.from_lists(
            [orjson.dumps(document).decode()], ["JSON document is neither an object nor an array"]
        )
    return Records.from_lists([orjson.dumps(element).decode() for element in document])


def split_csv(data: bytes) -> Records:
    """Rows of a CSV with a header become JSON objects of strings; a row of the wrong width keeps its fields."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return Records.from_lists([])
    width = len(header)
    payloads: list[str] = []
    errors: list[str | None] = []
    for row in reader:
        if not row:
            continue
        if len(row) == width:
            payloads.append(orjson.dumps(dict(zip(header, row, strict=True))).decode())
            errors.append(None)
        else:
            payloads.append(orjson.dumps(row).decode())
            errors.append(f"CSV row has {len(row)} fields, header has {width}")
    return Records.from_lists(payloads, errors)


SPLITTERS: dict[str, Callable[[bytes], Records]] = {
    ".ndjson": split_ndjson,
    ".jsonl": split_ndjson,
    ".json": split_json,
    ".csv": split_csv,
}


@dataclass
class FileSource(Source):
    """Lands export files: each file is one batch, its records split by the file's format."""

    paths: list[Path] = field(default_factory=list)
    formats: ClassVar[tuple[str, ...]] = (".ndjson", ".jsonl", ".json")

    def check(self) -> None:
        if not self.paths:
            raise SourceError(f"{self.name}: no files given")
        for path in self.paths:
            if not path.is_file():
                raise SourceError(f"{self.name}: {path} does not exist or is not a file")
            if path.suffix.lower() not in self.formats:
                raise SourceError(
                    f"{self.name}: cannot land {path.name}: expected a {' / '.join(self.formats)} file"
                )

    def batches(self) -> Iterator[RawBatch]:
        for path in self.paths:
            data = path.read_bytes()
            records = SPLITTERS[path.suffix.lower()](data)
            yield RawBatch(content_batch_id(self.name, data), path.name, records)

    @classmethod
    def files_in(cls, folder: Path) -> list[Path]:
        """The landable files of a folder, in name order (generated parts are numbered)."""
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in cls.formats)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders replaced by their files (sorted)."""
    expanded: list[Path] = []
    for path in paths:
        expanded.extend(sorted(q for q in path.iterdir() if q.is_file()) if path.is_dir() else [path])
    return expanded
