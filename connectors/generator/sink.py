"""Where emitted records go: delivery mess (duplicates, late and out-of-order records, malformed records)
and the ground truth rows, per chunk.

Emitters hand over one record at a time with its record id and the TRUE normalized identifiers it
carries. The sink decides, from the chunk RNG, whether the record is broken on purpose, delivered twice
or late, serializes it, and keeps one ground-truth row per distinct record. When a person is finished,
:func:`resolvable_flags` marks which of the person's records share an identifier with another record of
that person.

Serialized records are spilled to scratch files as they are made, with only their order key and
length kept in memory; the part file is then written in key order from the scratch files (see
:class:`Spill`). This keeps a worker's memory flat (about 200 MB for 50,000 people) instead of holding
half a GB of lines.
"""

from __future__ import annotations

import csv
import io
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson

from .ids import pick, rr
from .rates import MessRates
from .timefmt import MS_DAY, MS_MIN, T0_UNIX, T_END, break_iso, iso_s_z

SOURCES = ("web", "app", "salesforce", "email", "whatsapp")

_NL = orjson.OPT_APPEND_NEWLINE
dumps = orjson.dumps


def resolvable_flags(records: Sequence[Sequence[str]]) -> list[bool]:
    """For one person's records (each given by the normalized identifiers it carries): is each record
    resolvable, i.e. does it carry an identifier that also appears on another record of the person?

    A record's own repeated identifier (Phone and MobilePhone holding the same number) does not count.
    """
    counts: dict[str, int] = {}
    uniq = [set(ids) if len(ids) > 1 else ids for ids in records]
    for ids in uniq:
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    out = []
    for ids in uniq:
        flag = False
        for i in ids:
            if counts[i] > 1:
                flag = True
                break
        out.append(flag)
    return out


@dataclass(frozen=True)
class BreakSpec:
    """How a JSON source's records are broken: which required fields may go missing (and which identifier
    is lost with them), which field holds the timestamp."""

    droppable: tuple[str, ...]
    identifier_of: dict[str, Callable[[object], str]]
    timestamp_field: str
    unix_timestamp: bool = False


class Spill:
    """Serialized records in scratch files, bucketed by order key, plus (key, length) arrays.

    Records are copied into a per-bucket buffer (which also frees orjson's over-sized output buffers at
    once) and the buffer is appended to the bucket's scratch file when it reaches 256 KiB.
    ``write_sorted`` reads one bucket at a time (a few MB), sorts it by key and appends it to the output;
    since buckets are key ranges, the result is fully sorted. Memory stays at about one bucket, whatever
    the chunk size, and all file access is sequential.
    """

    __slots__ = ("count", "keys", "lens", "n", "pending", "prefix", "span", "written")

    _BLOCK = 1 << 18  # bytes per write to a bucket file

    def __init__(self, prefix: Path, buckets: int = 1, span: int = 1) -> None:
        self.prefix = prefix
        self.n = buckets
        self.span = span  # keys in [0, span) spread over the buckets; larger keys go to the last one
        self.pending = [bytearray() for _ in range(buckets)]
        self.written = [False] * buckets
        self.keys = [array("q") for _ in range(buckets)]
        self.lens = [array("q") for _ in range(buckets)]
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, key: int, data: bytes) -> None:
        if self.n == 1:
            b = 0
        else:
            b = key * self.n // self.span
            b = 0 if b < 0 else b if b < self.n else self.n - 1
        pending = self.pending[b]
        pending += data
        self.keys[b].append(key)
        self.lens[b].append(len(data))
        self.count += 1
        if len(pending) >= self._BLOCK:
            self._flush(b)

    def _flush(self, b: int) -> None:
        with open(f"{self.prefix}.{b}", "ab" if self.written[b] else "wb") as f:
            f.write(self.pending[b])
        self.written[b] = True
        self.pending[b] = bytearray()

    def write_sorted(self, out: BinaryIO, skip_first_byte: bool = False) -> None:
        """Append all records to ``out`` ordered by key (stable) and delete the scratch files."""
        first = True
        for b in range(self.n):
            if not self.keys[b]:
                continue
            data = bytes(self.pending[b])
            self.pending[b] = bytearray()
            if self.written[b]:
                path = Path(f"{self.prefix}.{b}")
                data = path.read_bytes() + data
                path.unlink()
            lens = np.frombuffer(self.lens[b], dtype=np.int64)
            ends = np.cumsum(lens)
            order = np.argsort(np.frombuffer(self.keys[b], dtype=np.int64), kind="stable")
            ends = ends[order]
            offs = (ends - lens[order]).tolist()
            ends = ends.tolist()
            if first and skip_first_byte:
                offs[0] += 1
            first = False
            out.write(b"".join([data[o:e] for o, e in zip(offs, ends, strict=True)]))
            self.keys[b] = array("q")
            self.lens[b] = array("q")
            self.written[b] = False

    def discard(self) -> None:
        """Delete the scratch files (after an error)."""
        for b in range(self.n):
            Path(f"{self.prefix}.{b}").unlink(missing_ok=True)


class NdjsonOut:
    """Lines of one JSON-lines source for one chunk."""

    __slots__ = ("duplicates", "malformed", "next_part", "spill")

    def __init__(self, spill_prefix: Path) -> None:
        # 32 buckets by receipt time: about 6 MB each for the web source of a 50,000-people chunk
        self.spill = Spill(spill_prefix, 32, T_END)
        self.next_part: list[bytes] = []  # lines that arrive late, in the next part file
        self.duplicates = 0
        self.malformed = 0

    @property
    def records(self) -> int:
        return len(self.spill) + len(self.next_part)


class SalesforceOut:
    """Bulk CSV rows (first version of each contact) and REST query records (later versions); REST
    records are stored with a leading comma (the separator inside the page's ``records`` array)."""

    def __init__(self, csv_prefix: Path, rest_prefix: Path) -> None:
        self.csv = Spill(csv_prefix)  # keys are row positions, a few MB per chunk: one bucket
        self.rest = Spill(rest_prefix, 16, T_END)
        self._buf = io.StringIO()
        # Bulk API 2.0 conventions: minimal quoting, LF line endings
        self._writer = csv.writer(self._buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        self.duplicates = 0
        self.malformed = 0

    def csv_line(self, row: Sequence[str]) -> bytes:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._writer.writerow(row)
        return buf.getvalue().encode()

    @property
    def records(self) -> int:
        return len(self.csv) + len(self.rest)


class Sink:
    def __init__(self, rng: random.Random, rates: MessRates, out_dir: Path, chunk: int) -> None:
        self.rng = rng
        self.p_malformed = rates.malformed
        self.p_dup = rates.duplicate_delivery
        self.p_late = rates.late_or_out_of_order
        # scratch files live in the source folders, so clearing a crashed run's output removes them too
        self.out = {
            s: NdjsonOut(out_dir / s / f".part-{chunk:05d}.spill") for s in SOURCES if s != "salesforce"
        }
        sf_dir = out_dir / "salesforce"
        self.sf = SalesforceOut(sf_dir / f".bulk-{chunk:05d}.spill", sf_dir / f".query-{chunk:05d}.spill")
        self.gt_source: list[str] = []
        self.gt_record: list[str] = []
        self.gt_person: list[str] = []
        self.gt_malformed: list[bool] = []
        self.gt_resolvable: list[bool] = []
        self._ids: list[Sequence[str]] = []
        self._pid = ""
        # bound methods of the hot path, looked up once
        self._rand = rng.random
        self._add_source = self.gt_source.append
        self._add_record = self.gt_record.append
        self._add_person = self.gt_person.append
        self._add_malformed = self.gt_malformed.append
        self._add_ids = self._ids.append

    def discard(self) -> None:
        for out in self.out.values():
            out.spill.discard()
        self.sf.csv.discard()
        self.sf.rest.discard()

    # -- ground truth -------------------------------------------------------------------------------
    def begin_person(self, pid: str) -> None:
        self._pid = pid
        self._ids = []
        self._add_ids = self._ids.append

    def end_person(self) -> None:
        self.gt_resolvable.extend(resolvable_flags(self._ids))

    def _truth(self, source: str, record_id: str, ids: Sequence[str], malformed: bool) -> None:
        self.gt_source.append(source)
        self.gt_record.append(record_id)
        self.gt_person.append(self._pid)
        self.gt_malformed.append(malformed)
        self._ids.append(ids)

    # -- JSON line sources ----------------------------------------------------------------------------
    def event(
        self, source: str, key: int, obj: dict, record_id: str, ids: Sequence[str], spec: BreakSpec
    ) -> None:
        """One web/app/email/whatsapp record; ``key`` is its receipt time (orders the part file)."""
        rand = self._rand
        out = self.out[source]
        if rand() < self.p_malformed:
            line, ids = self._break(obj, ids, spec)
            out.malformed += 1
            out.spill.add(key, line)
            self._truth(source, record_id, ids, True)
            return
        line = dumps(obj, option=_NL)
        # _truth() inlined: this is the hottest path of the generator
        self._add_source(source)
        self._add_record(record_id)
        self._add_person(self._pid)
        self._add_malformed(False)
        self._add_ids(ids)
        dup = rand() < self.p_dup
        late = rand() < self.p_late
        in_spill = not (late and rand() < 0.5)
        if in_spill:
            if late:
                key += rr(self.rng, MS_MIN, 3 * MS_DAY)  # late, but still in this part: out of order
            out.spill.add(key, line)
        else:
            # so late that it lands in the next part file; bytes() drops orjson's spare output buffer
            out.next_part.append(bytes(memoryview(line)))
        if dup:
            # the webhook/collector retried: the identical line again, seconds to minutes later
            out.duplicates += 1
            if rand() < 0.3:
                out.next_part.append(bytes(memoryview(line)))
            else:
                out.spill.add(key + rr(self.rng, 200, 10 * MS_MIN), line)

    def _break(self, obj: dict, ids: Sequence[str], spec: BreakSpec) -> tuple[bytes, Sequence[str]]:
        rng = self.rng
        kind = rr(rng, 3)
        if kind == 0:
            # truncated line (a crashed writer): unparseable, so it carries no usable identifier
            line = dumps(obj)
            cut = int(len(line) * (0.55 + 0.35 * rng.random()))
            while cut > 1 and (line[cut] & 0xC0) == 0x80:  # never split a UTF-8 character
                cut -= 1
            return line[:cut] + b"\n", ()
        obj = dict(obj)
        if kind == 1:
            field = pick(rng, spec.droppable)
            value = obj.pop(field)
            to_id = spec.identifier_of.get(field)
            if to_id is not None:
                lost = to_id(value)
                ids = tuple(i for i in ids if i != lost)
            return dumps(obj, option=_NL), ids
        ts = obj[spec.timestamp_field]
        if spec.unix_timestamp:
            obj[spec.timestamp_field] = break_iso(iso_s_z((ts - T0_UNIX) * 1000))
        else:
            obj[spec.timestamp_field] = break_iso(ts)
        return dumps(obj, option=_NL), ids

    # -- Salesforce ------------------------------------------------------------------------------------
    def sf_csv(self, order: int, row: list[str], record_id: str, ids: Sequence[str]) -> None:
        """A Bulk API CSV row; broken rows miss one column (so they cannot be aligned to the header).
        ``order`` is the row's position in the export; duplicates reappear a few hundred rows later."""
        rng = self.rng
        sf = self.sf
        key = order * 1000
        if rng.random() < self.p_malformed:
            row = list(row)
            del row[rr(rng, 1, len(row) - 1)]  # never Id or LastModifiedDate: the record stays identifiable
            sf.malformed += 1
            sf.csv.add(key, sf.csv_line(row))
            self._truth("salesforce", record_id, (), True)
            return
        self._truth("salesforce", record_id, ids, False)
        line = sf.csv_line(row)
        sf.csv.add(key, line)
        if rng.random() < self.p_dup:
            sf.duplicates += 1  # the export job retried a batch: the same row a little further down
            sf.csv.add(key + rr(rng, 1000, 300_000), line)

    def sf_rest(self, key: int, record: dict, ids: Sequence[str]) -> None:
        """A REST query record (a later version); broken ones miss LastName or have an unparseable
        LastModifiedDate. The record id is Id@LastModifiedDate exactly as written."""
        rng = self.rng
        sf = self.sf
        if rng.random() < self.p_malformed:
            record = dict(record)
            if rng.random() < 0.5:
                del record["LastName"]
            else:
                record["LastModifiedDate"] = break_iso(record["LastModifiedDate"])
            sf.malformed += 1
            sf.rest.add(key, b"," + dumps(record))
            self._truth("salesforce", f"{record['Id']}@{record['LastModifiedDate']}", ids, True)
            return
        self._truth("salesforce", f"{record['Id']}@{record['LastModifiedDate']}", ids, False)
        if rng.random() < self.p_late:
            key += rr(rng, MS_MIN, 3 * MS_DAY)  # out of LastModifiedDate order in the page
        data = b"," + dumps(record)
        sf.rest.add(key, data)
        if rng.random() < self.p_dup:
            sf.duplicates += 1
            sf.rest.add(key + rr(rng, 1000, MS_DAY), data)
