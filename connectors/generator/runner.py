"""``generate()``: the whole population, chunk by chunk, into a generator output folder.

Chunks of ``chunk_people`` people are simulated independently (in up to two worker processes) and
collected in chunk order, so the output is byte-identical for the same people, seed, rates and chunk
size, whatever the scheduling. The parent appends each chunk's late records to the next chunk's part
files, streams the ground truth into one Parquet file and writes ``manifest.json`` last.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .rates import MessRates
from .simulate import GROUND_TRUTH_SCHEMA, NDJSON_SOURCES, ChunkJob, ChunkResult, part_files, run_chunk
from .sink import SOURCES

GENERATOR = "northbridge-edtech-sample"
MANIFEST_VERSION = 1
MAX_PEOPLE = 9_999_999  # person ids are P + 7 digits; phone/user-id numbering is unique below 10^7
_OUTPUTS = (*SOURCES, "ground_truth.parquet", "manifest.json")
_SCRATCH = ".ground_truth-*.arrow"  # per-chunk ground truth on its way from a worker to the Parquet file


@dataclass
class GenerationResult:
    out_dir: Path
    people: int
    seed: int
    records: dict[str, int]  # per source: records written (lines/rows incl. duplicate deliveries, malformed)
    duplicates: dict[str, int]
    malformed: dict[str, int]
    files: dict[str, list[Path]]
    seconds: float


def generate(
    out_dir: Path,
    people: int,
    seed: int = 42,
    rates: MessRates = MessRates(),  # noqa: B008 - frozen dataclass, safe as a default
    chunk_people: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> GenerationResult:
    """Simulate ``people`` people with ``seed`` and write the five sources, ground truth and manifest.

    ``workers``: processes simulating chunks in parallel (default: up to 2, never more than the CPUs or
    chunks); 1 runs everything in this process. The output does not depend on it.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(people, seed, rates, chunk_people, workers)
    _prepare_out_dir(out_dir)
    n_chunks = -(-people // chunk_people)
    for source in SOURCES:
        (out_dir / source).mkdir(parents=True)
    # a provisional manifest marks the folder as generator output, so a crashed run can be overwritten
    _write_manifest(out_dir, {"generator": GENERATOR, "version": MANIFEST_VERSION, "complete": False})
    jobs = [
        ChunkJob(out_dir, c, n_chunks, c * chunk_people, min(chunk_people, people - c * chunk_people), seed,
                 rates)
        for c in range(n_chunks)
    ]
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1, n_chunks))
    workers = min(workers, n_chunks)

    records = dict.fromkeys(SOURCES, 0)
    duplicates = dict.fromkeys(SOURCES, 0)
    malformed = dict.fromkeys(SOURCES, 0)
    files: dict[str, list[Path]] = {s: [] for s in SOURCES}
    truth_rows = 0
    done = 0
    pending: ChunkResult | None = None
    truth_path = out_dir / "ground_truth.parquet"
    with pq.ParquetWriter(truth_path, GROUND_TRUTH_SCHEMA, compression="zstd") as truth:
        for result in _results(jobs, workers):
            chunk_files = part_files(out_dir, result.chunk)
            if pending is not None:
                _append_late(chunk_files, pending)
            pending = result
            with pa.memory_map(str(result.ground_truth)) as src:
                truth.write_table(pa.ipc.open_file(src).read_all(), row_group_size=1_000_000)
            result.ground_truth.unlink()
            truth_rows += result.ground_truth_rows
            for s in SOURCES:
                records[s] += result.records[s]
                duplicates[s] += result.duplicates[s]
                malformed[s] += result.malformed[s]
                files[s].extend(chunk_files[s])
            done += result.people
            if progress is not None:
                progress(done, people)
        if pending is not None:  # the last chunk's late records go to the end of its own part files
            _append_late(part_files(out_dir, pending.chunk), pending)

    seconds = time.perf_counter() - started
    all_files = [str(p.relative_to(out_dir)) for s in SOURCES for p in files[s]] + ["ground_truth.parquet"]
    _write_manifest(out_dir, {
        "generator": GENERATOR,
        "version": MANIFEST_VERSION,
        "complete": True,
        "people": people,
        "seed": seed,
        "chunk_people": chunk_people,
        "rates": rates.as_dict(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "sources": {
            s: {
                "records": records[s],
                "duplicates": duplicates[s],
                "malformed": malformed[s],
                "files": [str(p.relative_to(out_dir)) for p in files[s]],
            }
            for s in SOURCES
        },
        "ground_truth": {"file": "ground_truth.parquet", "rows": truth_rows},
        "files": all_files,
    })
    return GenerationResult(out_dir, people, seed, records, duplicates, malformed, files, seconds)


def _validate(people: int, seed: int, rates: MessRates, chunk_people: int, workers: int | None) -> None:
    if isinstance(people, bool) or not isinstance(people, int) or people < 1:
        raise ValueError(f"people must be a whole number >= 1, got {people!r}")
    if people > MAX_PEOPLE:
        raise ValueError(f"people must be at most {MAX_PEOPLE:,}, got {people:,}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(rates, MessRates):
        raise ValueError(f"rates must be a MessRates, got {type(rates).__name__}")
    if isinstance(chunk_people, bool) or not isinstance(chunk_people, int) or chunk_people < 1:
        raise ValueError(f"chunk_people must be a whole number >= 1, got {chunk_people!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the folder, or clear a previous generator output; refuse anything else that is not empty."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        manifest = out_dir / "manifest.json"
        if not manifest.is_file():
            raise ValueError(
                f"output directory {out_dir} is not empty and is not a previous generator output "
                "(no manifest.json); refusing to overwrite it - choose an empty or new directory"
            )
        try:
            data = orjson.loads(manifest.read_bytes())
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or data.get("generator") != GENERATOR:
            raise ValueError(
                f"output directory {out_dir} has a manifest.json that was not written by the sample-data "
                "generator; refusing to overwrite it"
            )
        for path in out_dir.glob(_SCRATCH):
            path.unlink()
        for name in _OUTPUTS:
            path = out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _results(jobs: list[ChunkJob], workers: int) -> Iterator[ChunkResult]:
    if workers <= 1:
        for job in jobs:
            yield run_chunk(job)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        yield from pool.imap(run_chunk, jobs, chunksize=1)


def _append_late(chunk_files: dict[str, list[Path]], result: ChunkResult) -> None:
    for source in NDJSON_SOURCES:
        data = result.late_lines[source]
        if data:
            with open(chunk_files[source][0], "ab") as f:
                f.write(data)


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(out_dir / "manifest.json")
