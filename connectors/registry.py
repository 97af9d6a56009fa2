"""The five sources by name, and landing of a whole generated folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from connectors.app import MobileAppSource
from connectors.base import FileSource, SourceError, expand_paths
from connectors.email import SendGridEventsSource
from connectors.landing import SOURCES, LandedBatch, LandingZone
from connectors.salesforce import SalesforceContactsSource
from connectors.web import WebClickstreamSource
from connectors.whatsapp import TwilioWhatsAppSource

FILE_SOURCES: dict[str, type[FileSource]] = {
    cls.name: cls
    for cls in (
        WebClickstreamSource,
        MobileAppSource,
        SalesforceContactsSource,
        SendGridEventsSource,
        TwilioWhatsAppSource,
    )
}
assert tuple(FILE_SOURCES) == SOURCES


def file_source(source: str, paths: list[Path]) -> FileSource:
    if source not in FILE_SOURCES:
        raise SourceError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    return FILE_SOURCES[source](paths=expand_paths(paths))


def _land_one(source: str, path: Path, zone_root: Path) -> LandedBatch:
    (batch,) = FILE_SOURCES[source](paths=[path]).land(LandingZone(zone_root))
    return batch


def land_folder(
    zone: LandingZone,
    folder: Path,
    on_batch: Callable[[LandedBatch], None] | None = None,
    workers: int | None = None,
) -> list[LandedBatch]:
    """Land `folder/<source>/*` for every source folder present (a `cdp generate` output or the same layout).

    Files are independent batches, so large folders are landed by a small process pool (splitting
    and compressing are CPU-bound); results are reported in file order either way.
    """
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    present = [s for s in SOURCES if (folder / s).is_dir()]
    if not present:
        raise SourceError(f"{folder} has none of the source folders {', '.join(SOURCES)}")
    jobs = [(source, path) for source in present for path in FILE_SOURCES[source].files_in(folder / source)]
    for source, path in jobs:
        FILE_SOURCES[source](paths=[path]).check()
    zone.init()
    total_bytes = sum(path.stat().st_size for _, path in jobs)
    workers = workers or min(2, os.cpu_count() or 1)
    landed: list[LandedBatch] = []
    if workers == 1 or total_bytes < 64 * 2**20:
        for source, path in jobs:
            landed.append(_land_one(source, path, zone.root))
            if on_batch is not None:
                on_batch(landed[-1])
        return landed
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_land_one, source, path, zone.root) for source, path in jobs]
        for future in futures:
            landed.append(future.result())
            if on_batch is not None:
                on_batch(landed[-1])
    return landed
