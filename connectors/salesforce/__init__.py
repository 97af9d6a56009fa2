"""Salesforce Contacts: Bulk API 2.0 CSV exports and REST query responses (`{"records": [...]}`) landed from files,
or pulled from the org through the REST API.

The API pull (`connectors.salesforce.api.pull_contacts`, `cdp land salesforce --from-api`) runs a SOQL query with a
LastModifiedDate watermark through simple-salesforce and lands each page as the bytes of a saved query response, so
bronze and silver read both paths alike. It is imported on demand: it needs the reverse-ETL Salesforce client.
"""

from typing import ClassVar

from connectors.base import FileSource


class SalesforceContactsSource(FileSource):
    name: ClassVar[str] = "salesforce"
    formats: ClassVar[tuple[str, ...]] = (".csv", ".json", ".ndjson", ".jsonl")
