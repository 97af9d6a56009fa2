"""Segment-spec messages: validated, given what Segment adds server-side, routed to a source, and turned into
spool lines that keep the message's own bytes.

A message is landed as received: its JSON bytes are kept and the fields the server adds are appended before the
closing brace (`receivedAt`; `messageId` when absent; the batch's `context`, `integrations` and `sentAt` when the
message has none, as Segment does). Only when one of those keys is already present (say `"messageId": null`), or
the message carries a `writeKey` (a secret, never landed), is the message decoded and re-encoded instead, key order
kept. Raw newlines between tokens (a pretty-printed body) become spaces so that one message stays one line.

Routing: a `screen`, or a message whose context has `device.id`, goes to source `app`; anything else to `web`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

MESSAGE_TYPES = ("track", "identify", "page", "screen", "alias", "group")


class MessageError(ValueError):
    """Why one message is refused (the text goes to the client and to the quarantine)."""


class _Context(msgspec.Struct):
    device: Any = None


class _AnyObject(msgspec.Struct):
    """Any JSON object: the decoder checks the type and skips the contents (fast, and a clear error otherwise)."""


Id = str | int  # Segment's SDKs send strings; numbers are accepted too


class _MessageView(msgspec.Struct):
    """What validation reads of a message; other fields are skipped by the decoder. The types are checked by the
    decoder, whose error names the field (`Expected `str | null`, got `int` - at `$.event``)."""

    type: str | UnsetType | None = UNSET
    messageId: str | UnsetType | None = UNSET
    userId: Id | UnsetType | None = UNSET
    anonymousId: Id | UnsetType | None = UNSET
    event: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    previousId: Id | UnsetType | None = UNSET
    groupId: Id | UnsetType | None = UNSET
    properties: _AnyObject | UnsetType | None = UNSET
    traits: _AnyObject | UnsetType | None = UNSET
    context: _Context | UnsetType | None = UNSET
    integrations: _AnyObject | UnsetType | None = UNSET
    timestamp: datetime | UnsetType | None = UNSET  # RFC 3339 (ISO 8601 with a T and a time)
    sentAt: datetime | UnsetType | None = UNSET
    receivedAt: Any = UNSET
    writeKey: Any = UNSET


class BatchEnvelope(msgspec.Struct):
    """The body of /v1/batch, messages and batch-level values kept as raw bytes."""

    batch: list[msgspec.Raw]
    context: msgspec.Raw | UnsetType = UNSET  # Raw | None would accept only null
    integrations: msgspec.Raw | UnsetType = UNSET
    sentAt: Any = None


_view_decoder = msgspec.json.Decoder(_MessageView)
_envelope_decoder = msgspec.json.Decoder(BatchEnvelope)
_context_decoder = msgspec.json.Decoder(_Context)


@dataclass(frozen=True)
class BatchDefaults:
    """What the batch gives to messages that lack it: raw JSON values, and the device id of its context."""

    context: bytes | None = None
    integrations: bytes | None = None
    sent_at: bytes | None = None
    device_id: Any = None


@dataclass(slots=True)
class PreparedMessage:
    source: str  # web or app
    message_id: str
    line: bytes  # the JSON message and a newline


_NO_DEFAULTS = BatchDefaults()


def decode_envelope(body: bytes) -> tuple[list[msgspec.Raw], BatchDefaults]:
    """The messages of a /v1/batch body and the defaults it gives them; MessageError when it is not one."""
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.ValidationError as error:
        raise MessageError(f"body is not a Segment batch: {error}") from None
    except msgspec.DecodeError as error:
        raise MessageError(f"body is not valid JSON: {error}") from None
    context = bytes(envelope.context) if envelope.context is not UNSET else None
    integrations = bytes(envelope.integrations) if envelope.integrations is not UNSET else None
    for label, raw in (("context", context), ("integrations", integrations)):
        if raw is not None and not raw.startswith((b"{", b"null")):
            raise MessageError(f"batch {label} is not an object")
    context = None if context == b"null" else context
    integrations = None if integrations == b"null" else integrations
    sent_at = None
    if envelope.sentAt is not None:
        if not isinstance(envelope.sentAt, str) or not _is_iso_datetime(envelope.sentAt):
            raise MessageError("batch sentAt is not an ISO 8601 date-time")
        sent_at = msgspec.json.encode(envelope.sentAt)
    device_id = _device_id(_context_decoder.decode(context)) if context is not None else None
    return envelope.batch, BatchDefaults(context, integrations, sent_at, device_id)


def _device_id(context: _Context | UnsetType | None) -> Any:
    if context is None or context is UNSET:
        return None
    device = context.device  # type: ignore[union-attr]
    return device.get("id") if isinstance(device, dict) else None


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) and value.strip() != "") or (isinstance(value, int) and not isinstance(value, bool))


def _is_iso_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _check(view: _MessageView, message_type: str) -> None:
    user_id = view.userId
    if not (_is_id(user_id) or _is_id(view.anonymousId)):
        raise MessageError("neither userId nor anonymousId is given (one is required)")
    if message_type == "track":
        if not (view.event and view.event.strip()):  # type: ignore[union-attr]
            raise MessageError("track without event")
    elif message_type == "alias" and not (_is_id(view.previousId) and _is_id(user_id)):
        raise MessageError("alias needs previousId and userId")
    elif message_type == "group" and not _is_id(view.groupId):
        raise MessageError("group without groupId")
    if view.messageId == "":
        raise MessageError("messageId is empty")


def received_stamp(received_at: str) -> bytes:
    """The `receivedAt` member as appended to every message of one request (computed once per request)."""
    return b'"receivedAt":' + msgspec.json.encode(received_at)


def prepare_message(
    raw: bytes,
    *,
    received_at: str | bytes,
    endpoint_type: str | None = None,
    defaults: BatchDefaults | None = None,
    max_event_bytes: int,
) -> PreparedMessage:
    """Validate one message and build its spool line; MessageError says why it is refused.

    `received_at` is the time (ISO 8601 text) or its `received_stamp`. `endpoint_type` is the type the path
    implies (/v1/track: "track"), None in a batch (where `type` is required).
    """
    if len(raw) > max_event_bytes:
        raise MessageError(f"message of {len(raw):,} bytes is over the {max_event_bytes // 1024} KB limit per event")
    try:
        view = _view_decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise MessageError(f"not a Segment message: {error}") from None
    except msgspec.DecodeError as error:
        raise MessageError(f"not valid JSON: {error}") from None
    message_type: str = view.type  # type: ignore[assignment]
    if message_type is UNSET or message_type is None:
        if endpoint_type is None:
            raise MessageError("type is missing")
        message_type = endpoint_type
    if message_type not in MESSAGE_TYPES:
        raise MessageError(f"unknown type {message_type!r}: expected one of {', '.join(MESSAGE_TYPES)}")
    if endpoint_type is not None and message_type != endpoint_type:
        raise MessageError(f"type {message_type!r} sent to the {endpoint_type} endpoint")
    _check(view, message_type)
    defaults = defaults or _NO_DEFAULTS
    stamp = received_at if isinstance(received_at, bytes) else received_stamp(received_at)

    # what the server adds, as JSON members (`"key":value`); re-encode only when a key is there already (as null)
    added: list[bytes] = []
    reencode = view.receivedAt is not UNSET or view.writeKey is not UNSET
    if view.type is UNSET or view.type is None:  # the path says it
        added.append(b'"type":' + msgspec.json.encode(message_type))
        reencode = reencode or view.type is None
    message_id = view.messageId
    if message_id is UNSET or message_id is None:
        message_id = str(uuid.uuid4())
        added.append(b'"messageId":' + msgspec.json.encode(message_id))
        reencode = reencode or view.messageId is None
    if view.context is UNSET and defaults.context is not None:
        added.append(b'"context":' + defaults.context)
    if view.integrations is UNSET and defaults.integrations is not None:
        added.append(b'"integrations":' + defaults.integrations)
    if view.sentAt is UNSET and defaults.sent_at is not None:
        added.append(b'"sentAt":' + defaults.sent_at)
    added.append(stamp)

    if reencode:
        line = _reencode(raw, added)
    else:
        body = raw.rstrip()
        if b"\n" in body or b"\r" in body:
            # outside strings (where JSON escapes them) a raw newline is whitespace: safe to blank
            body = body.replace(b"\r", b" ").replace(b"\n", b" ")
        head = body[:-1]
        line = head + (b"," if head.rstrip() != b"{" else b"") + b",".join(added) + b"}\n"

    device_id = _device_id(view.context) if view.context is not UNSET else defaults.device_id
    source = "app" if message_type == "screen" or (device_id is not None and _is_id(device_id)) else "web"
    return PreparedMessage(source, message_id, line)


def _reencode(raw: bytes, added: list[bytes]) -> bytes:
    message: dict[str, Any] = msgspec.json.decode(raw)
    message.pop("writeKey", None)
    message.update(msgspec.json.decode(b"{" + b",".join(added) + b"}"))  # absent or null keys, and receivedAt
    return msgspec.json.encode(message) + b"\n"
