"""Salesforce Contacts: Bulk API 2.0 CSV exports and REST query responses (`{"records": [...]}`).

A REST client pulling through simple-salesforce with a LastModifiedDate watermark fits the same
`Source` interface; until a local Salesforce emulator exists, exports are landed from files.
"""

from typing import ClassVar

from connectors.base import FileSource


class SalesforceContactsSource(FileSource):
    name: ClassVar[str] = "salesforce"
    formats: ClassVar[tuple[str, ...]] = (".csv", ".json", ".ndjson", ".jsonl")
