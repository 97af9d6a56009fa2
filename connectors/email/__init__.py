"""Email marketing: SendGrid Event Webhook events, one per line or as a webhook POST body (a JSON array)."""

from typing import ClassVar

from connectors.base import FileSource


class SendGridEventsSource(FileSource):
    name: ClassVar[str] = "email"
