"""The five sources by name, and landing of a whole generated folder."""

from __future__ import annotations

from collections.abc import Callable
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


def land_folder(
    zone: LandingZone, folder: Path, on_batch: Callable[[LandedBatch], None] | None = None
) -> list[LandedBatch]:
    """Land `folder/<source>/*` for every source folder present (a `cdp generate` output or the same layout)."""
    if not folder.is_dir():
        raise SourceError(f"{folder} is not a folder")
    present = [s for s in SOURCES if (folder / s).is_dir()]
    if not present:
        raise SourceError(f"{folder} has none of the source folders {', '.join(SOURCES)}")
    landed: list[LandedBatch] = []
    for source in present:
        cls = FILE_SOURCES[source]
        paths = cls.files_in(folder / source)
        if paths:
            landed.extend(cls(paths=paths).land(zone, on_batch))
    return landed
