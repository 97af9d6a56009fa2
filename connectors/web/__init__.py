"""Website clickstream: one JSON event per line (page views, brochure downloads, form submissions)."""

from typing import ClassVar

from connectors.base import FileSource


class WebClickstreamSource(FileSource):
    name: ClassVar[str] = "web"
