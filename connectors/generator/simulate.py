"""One chunk of people, simulated and written independently of every other chunk.

A chunk's randomness comes only from ``random.Random("northbridge:<seed>:<chunk>")``, so chunks can run
in any order or in parallel processes and still produce byte-identical files. Each chunk writes its own
part files; records that arrive late are handed back to the caller, which appends them to the next
chunk's part files.
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .app import emit_app
from .email import Campaign, build_campaigns, emit_email
from .ids import hex_id
from .journey import plan_journey
from .population import PopulationContext
from .rates import MessRates
from .salesforce import FIELDS, emit_contacts, plan_contacts
from .sink import SOURCES, Sink
from .web import emit_web
from .whatsapp import emit_whatsapp

NDJSON_SOURCES = ("web", "app", "email", "whatsapp")
GROUND_TRUTH_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("record_id", pa.string()),
    ("person_id", pa.string()),
    ("is_resolvable", pa.bool_()),
    ("is_malformed", pa.bool_()),
])


def part_files(out_dir: Path, chunk: int) -> dict[str, list[Path]]:
    """The files one chunk writes, per source."""
    files = {s: [out_dir / s / f"part-{chunk:05d}.ndjson"] for s in NDJSON_SOURCES}
    files["salesforce"] = [
        out_dir / "salesforce" / f"contacts-bulk-{chunk:05d}.csv",
        out_dir / "salesforce" / f"contacts-query-{chunk:05d}.json",
    ]
    return {s: files[s] for s in SOURCES}


@dataclass
class ChunkContext:
    rng: random.Random
    rates: MessRates
    sink: Sink
    pop: PopulationContext
    campaigns: list[Campaign]
    campaign_times: list[int]
    twilio_account_sid: str
    shared_devices: list = field(default_factory=list)  # [device, family members still to come]


@dataclass(frozen=True)
class ChunkJob:
    out_dir: Path
    chunk: int
    n_chunks: int
    first_person: int
    people: int
    seed: int
    rates: MessRates


@dataclass
class ChunkResult:
    chunk: int
    people: int
    records: dict[str, int]
    duplicates: dict[str, int]
    malformed: dict[str, int]
    late_lines: dict[str, bytes]  # to append to the next chunk's part file of each JSON-lines source
    ground_truth: Path  # scratch Arrow IPC file with the chunk's ground truth rows (cheap to hand over)
    ground_truth_rows: int


def simulate_people(job: ChunkJob) -> ChunkContext:
    """Run the simulation of the chunk's people into a sink (records go to scratch files in the source
    folders of ``job.out_dir``; the part files are written by :func:`run_chunk`)."""
    rng = random.Random(f"northbridge:{job.seed}:{job.chunk}")
    campaigns, times = build_campaigns(job.seed)
    account = "AC" + hex_id(random.Random(f"northbridge-twilio:{job.seed}"), 32)
    sink = Sink(rng, job.rates, job.out_dir, job.chunk)
    pop = PopulationContext(rng, job.seed, job.chunk, job.n_chunks)
    ctx = ChunkContext(rng, job.rates, sink, pop, campaigns, times, account)
    make_person = pop.make_person
    rates = job.rates
    # no reference cycles are created here; the cyclic GC would only rescan millions of live objects
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(job.first_person, job.first_person + job.people):
            p = make_person(index)
            plan_journey(p, rng, rates)
            sink.begin_person(p.pid)
            emit_web(p, ctx)
            contacts = plan_contacts(p, ctx)
            emit_email(p, contacts, ctx)  # before the CRM versions are written: opt-outs add versions
            emit_contacts(p, contacts, ctx)
            emit_whatsapp(p, ctx)
            emit_app(p, ctx)
            sink.end_person()
    except BaseException:
        sink.discard()
        raise
    finally:
        if gc_was_enabled:
            gc.enable()
    return ctx


def run_chunk(job: ChunkJob) -> ChunkResult:
    """Simulate one chunk and write its part files; returns counts, late lines and ground truth."""
    ctx = simulate_people(job)
    try:
        return _write_chunk(job, ctx)
    except BaseException:
        ctx.sink.discard()
        raise


def _write_chunk(job: ChunkJob, ctx: ChunkContext) -> ChunkResult:
    sink = ctx.sink
    files = part_files(job.out_dir, job.chunk)
    outs = {**sink.out, "salesforce": sink.sf}
    records = {s: outs[s].records for s in SOURCES}
    late: dict[str, bytes] = {}
    for source in NDJSON_SOURCES:
        out = sink.out[source]
        with open(files[source][0], "wb") as f:
            out.spill.write_sorted(f)
        late[source] = b"".join(out.next_part)
    bulk, query = files["salesforce"]
    _write_salesforce(bulk, query, sink)
    columns = (sink.gt_source, sink.gt_record, sink.gt_person, sink.gt_resolvable, sink.gt_malformed)
    truth = pa.table(
        [_column(values, f.type) for values, f in zip(columns, GROUND_TRUTH_SCHEMA, strict=True)],
        schema=GROUND_TRUTH_SCHEMA,
    )
    truth_path = job.out_dir / f".ground_truth-{job.chunk:05d}.arrow"
    with pa.OSFile(str(truth_path), "wb") as f, pa.ipc.new_file(f, GROUND_TRUTH_SCHEMA) as writer:
        writer.write_table(truth)
    return ChunkResult(
        chunk=job.chunk,
        people=job.people,
        records=records,
        duplicates={s: outs[s].duplicates for s in SOURCES},
        malformed={s: outs[s].malformed for s in SOURCES},
        late_lines=late,
        ground_truth=truth_path,
        ground_truth_rows=truth.num_rows,
    )


def _column(values: list, type_: pa.DataType) -> pa.ChunkedArray:
    # in slices and with the system allocator: Arrow's default mimalloc pool keeps ~50-100 MB per column
    # conversion reserved, which doubled a worker's peak memory
    step = 50_000
    pool = pa.system_memory_pool()
    return pa.chunked_array(
        [pa.array(values[i : i + step], type_, memory_pool=pool) for i in range(0, len(values), step)], type_
    )


def _write_salesforce(bulk: Path, query: Path, sink: Sink) -> None:
    sf = sink.sf
    with open(bulk, "wb") as f:
        f.write(sf.csv_line(FIELDS))
        sf.csv.write_sorted(f)
    # the same bytes as orjson.dumps({"totalSize": n, "done": True, "records": [...]}); each record is
    # stored with a leading comma, dropped for the first one
    with open(query, "wb") as f:
        f.write(b'{"totalSize":%d,"done":true,"records":[' % len(sf.rest))
        sf.rest.write_sorted(f, skip_first_byte=True)
        f.write(b"]}")
