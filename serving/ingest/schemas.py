"""The wire shapes of the ingestion endpoints, as msgspec Structs.

Request bodies are landed as received, so the handlers read the raw body and validate it themselves
(serving/ingest/segment.py); these Structs document the bodies in the OpenAPI (`body_of`) and type the responses.
Every object is open: fields not listed here are accepted and landed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from msgspec import UNSET, UnsetType

MessageType = Literal["track", "identify", "page", "screen", "alias", "group"]


def _doc(type_: Any, description: str) -> Any:
    return Annotated[type_, msgspec.Meta(description=description)]


class _MessageFields(msgspec.Struct, kw_only=True):
    messageId: _doc(str | None, "Deduplication key per write key; generated when absent, as Segment does") = None
    userId: _doc(str | None, "Required unless anonymousId is given") = None
    anonymousId: _doc(str | None, "Required unless userId is given") = None
    event: _doc(str | None, "The action (track: required)") = None
    name: _doc(str | None, "Page or screen name") = None
    category: _doc(str | None, "Page category") = None
    previousId: _doc(str | None, "The previous id (alias: required)") = None
    groupId: _doc(str | None, "The group (group: required)") = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: _doc(dict[str, Any] | None, "context.device.id routes the message to the `app` source") = None
    integrations: dict[str, Any] | None = None
    timestamp: _doc(datetime | None, "When it happened (RFC 3339)") = None
    sentAt: _doc(datetime | None, "When the client sent it (RFC 3339)") = None


class SegmentMessage(_MessageFields, kw_only=True):
    """One call of the Segment spec (/v1/track, /v1/identify, ...): `type` may be left out, the path says it."""

    type: MessageType | None = None


class SegmentBatchMessage(_MessageFields, kw_only=True):
    """One message of /v1/batch: `type` is required."""

    type: MessageType


class SegmentBatch(msgspec.Struct, kw_only=True):
    """The body of /v1/batch. `context`, `integrations` and `sentAt` go into the messages that lack them."""

    batch: list[SegmentBatchMessage]
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sentAt: datetime | None = None


class SendGridEvent(msgspec.Struct, kw_only=True):
    """One SendGrid Event Webhook event (docs/sources.md, email). The body is a JSON array of them."""

    email: str | None = None
    timestamp: int | None = None  # Unix seconds
    event: str | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None


class TwilioInbound(msgspec.Struct, kw_only=True):
    """Twilio's inbound message webhook, form-encoded (docs/sources.md, whatsapp); every parameter is kept."""

    MessageSid: str | UnsetType = UNSET
    AccountSid: str | UnsetType = UNSET
    From: str | UnsetType = UNSET
    To: str | UnsetType = UNSET
    Body: str | UnsetType = UNSET
    NumMedia: str | UnsetType = UNSET
    ProfileName: str | UnsetType = UNSET
    WaId: str | UnsetType = UNSET


class TwilioStatusCallback(msgspec.Struct, kw_only=True):
    """Twilio's message status callback, form-encoded: what the API keeps of it is MessageSid, MessageStatus and
    ErrorCode (reverse_etl/status_callbacks.py)."""

    MessageSid: str
    MessageStatus: str
    ErrorCode: str | UnsetType = UNSET
    AccountSid: str | UnsetType = UNSET
    From: str | UnsetType = UNSET
    To: str | UnsetType = UNSET


class Accepted(msgspec.Struct):
    """Segment's answer: the events are on disk (fsynced) when it is sent."""

    success: bool = True


class ErrorBody(msgspec.Struct):
    """The API's error shape (serving/app.py)."""

    error: str
    status: int


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with msgspec's `$defs` references replaced by the definitions (none of these is recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(value, defs) for value in node]
    return node


def body_of(type_: Any, media_type: str = "application/json", description: str | None = None) -> type[Operation]:
    """An Operation class whose request body documents `type_`: for handlers that read the raw body themselves
    (Litestar documents a body only for a `data` parameter, which would decode it and drop unknown fields)."""
    schema = msgspec.json.schema(type_)
    inline = _inline_refs(schema, schema.get("$defs", {}))
    body = RequestBody(content={media_type: OpenAPIMediaType(schema=inline)},  # type: ignore[arg-type]
                       required=True, description=description)

    @dataclass
    class OperationWithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return OperationWithBody
