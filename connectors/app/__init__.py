"""Mobile app events: one JSON event per line, or a JSON array of events as an SDK batch."""

from typing import ClassVar

from connectors.base import FileSource


class MobileAppSource(FileSource):
    name: ClassVar[str] = "app"
