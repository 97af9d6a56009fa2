"""WhatsApp via Twilio: inbound webhook parameters as JSON objects, one per line."""

from typing import ClassVar

from connectors.base import FileSource


class TwilioWhatsAppSource(FileSource):
    name: ClassVar[str] = "whatsapp"
