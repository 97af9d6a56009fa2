"""The ingestion endpoints: Segment's HTTP Tracking API (/v1/track, /v1/identify, /v1/page, /v1/screen,
/v1/alias, /v1/group, /v1/batch) and the SendGrid and Twilio webhooks.

Handlers read the raw body (landed as received, so not decoded into Structs by Litestar), enforce the size limits
themselves (a 400 with a message, where Litestar's own limit would answer 413), undo gzip, validate, and wait for
the spool's fsync before answering. A refused payload is written to the quarantine (`_rejected/`) before the 400.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, NoReturn

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import ClientException, PermissionDeniedException
from litestar.openapi.datastructures import ResponseSpec

from reverse_etl import status_callbacks
from serving.ingest.schemas import (
    Accepted,
    ErrorBody,
    SegmentBatch,
    SegmentMessage,
    SendGridEvent,
    TwilioInbound,
    TwilioStatusCallback,
    body_of,
)
from serving.ingest.segment import MessageError, decode_envelope, prepare_message, received_stamp
from serving.ingest.service import QUARANTINE_PAYLOAD_CAP_FACTOR, BodyError, IngestService, decode_body, utc_now_iso
from serving.ingest.webhooks import (
    EMPTY_TWIML,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    TWILIO_SIGNATURE_HEADER,
    sendgrid_signature_valid,
    twilio_params,
    twilio_payload,
    twilio_signature_valid,
)
from serving.security import requires
from serving.settings import ServingSettings

SENDGRID_MAX_BODY = 4 * 1024 * 1024  # SendGrid batches events into one POST; larger than the tracking API's 500 KB
MAX_LISTED_ERRORS = 10
TWIML_MEDIA_TYPE = "text/xml"  # what Twilio expects of a webhook's TwiML answer

_errors = {
    400: ResponseSpec(data_container=ErrorBody, description="Invalid payload: nothing accepted, kept in quarantine"),
    401: ResponseSpec(data_container=ErrorBody, description="No or unknown write key"),
    403: ResponseSpec(data_container=ErrorBody, description="The key lacks write:events"),
    429: ResponseSpec(data_container=ErrorBody, description="Over the key's rate limit"),
}
_webhook_errors = {
    400: ResponseSpec(data_container=ErrorBody, description="Invalid payload: nothing accepted, kept in quarantine"),
    403: ResponseSpec(data_container=ErrorBody, description="Signature missing or wrong"),
}


def _service(request: Request) -> IngestService:
    return request.app.state.ingest  # type: ignore[no-any-return]


def _settings(request: Request) -> ServingSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _read_raw(request: Request, limit: int) -> bytes:
    """The body as sent, at most `limit` bytes; BodyError (with what was read, up to a cap) beyond."""
    cap = limit * QUARANTINE_PAYLOAD_CAP_FACTOR
    too_big = f"body is over the {limit // 1024} KB limit per request"
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > cap:
        raise BodyError(f"{too_big} ({int(announced):,} bytes announced)", None, truncated=True)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            chunks.append(chunk[: len(chunk) - (size - cap)])
            raise BodyError(too_big, b"".join(chunks), truncated=True)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if len(raw) > limit:
        raise BodyError(f"{too_big} ({len(raw):,} bytes)", raw)
    return raw


async def _reject(request: Request, message: str, payload: bytes | None, *, errors: list[dict[str, Any]] | None = None,
                  truncated: bool = False) -> NoReturn:
    """Quarantine the refused payload, then answer 400 with `message`."""
    key = request.scope.get("cdp_key")  # type: ignore[attr-defined]
    entry: dict[str, Any] = {
        "received_at": utc_now_iso(),
        "endpoint": request.url.path,
        "remote_ip": request.client.host if request.client else None,
        "key_id": getattr(key, "key_id", None),
        "content_encoding": request.headers.get("content-encoding"),
        "reason": message,
    }
    if errors:
        entry["errors"] = errors
    if truncated:
        entry["payload_truncated"] = True
    await _service(request).reject(entry, payload)
    raise ClientException(detail=message)


async def _read_body(request: Request, limit: int, *, authenticated: bool = True) -> bytes:
    """The body, its Content-Encoding undone, or a 400. The refused payload is quarantined only when the sender is
    known: a webhook's signature is checked after the body is read, and strangers must not fill our disk."""
    try:
        return decode_body(await _read_raw(request, limit), request.headers.get("content-encoding", ""), limit)
    except BodyError as error:
        if not authenticated:
            raise ClientException(detail=error.reason) from None
        await _reject(request, error.reason, error.raw, truncated=error.truncated)


async def _track(request: Request, endpoint_type: str | None) -> Accepted:
    settings, service = _settings(request), _service(request)
    key_id = request.scope["cdp_key"].key_id  # type: ignore[typeddict-item]
    stamp = received_stamp(utc_now_iso())  # one receivedAt per request, as Segment stamps it
    body = await _read_body(request, settings.max_batch_bytes)
    if endpoint_type is None:
        try:
            messages, defaults = decode_envelope(body)
        except MessageError as error:
            await _reject(request, str(error), body)
    else:
        messages, defaults = [body.strip()], None

    prepared, errors = [], []
    for index, raw in enumerate(messages):
        try:
            prepared.append(prepare_message(bytes(raw), received_at=stamp, endpoint_type=endpoint_type,
                                            defaults=defaults, max_event_bytes=settings.max_event_bytes))
        except MessageError as error:
            errors.append({"index": index, "reason": str(error)})
    if errors:
        if endpoint_type is not None:
            message = f"invalid {endpoint_type} message, not accepted: {errors[0]['reason']}"
        else:
            listed = "; ".join(f"[{e['index']}] {e['reason']}" for e in errors[:MAX_LISTED_ERRORS])
            more = f"; and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
            message = f"{len(errors)} of {len(messages)} messages invalid, none accepted: {listed}{more}"
        await _reject(request, message, body, errors=errors)

    lines: dict[str, list[bytes]] = defaultdict(list)
    fresh: list[str] = []
    in_request: set[str] = set()
    for message in prepared:
        if message.message_id in in_request or (key_id, message.message_id) in service.seen:
            continue  # acknowledged again, spooled once
        in_request.add(message.message_id)
        lines[message.source].append(message.line)
        fresh.append(message.message_id)
    if lines:
        await service.commit(lines)
    service.seen.add_all(key_id, fresh)  # only once on disk: a failed write must not turn a retry into a no-op
    return Accepted()


_tracking = {"status_code": 200, "responses": _errors, "security": [{"writeKey": []}, {"apiKey": []}]}


class TrackingController(Controller):
    """Segment's HTTP Tracking API. The write key as the HTTP Basic user (as the SDKs send it) or a Bearer key,
    with the scope write:events. 200 `{"success": true}` once the events are fsynced in the spool."""

    path = "/v1"
    tags: ClassVar[list[str]] = ["ingest"]
    guards: ClassVar[list[Any]] = [requires("write:events", basic=True)]
    request_max_body_size = None  # the handlers enforce the limits, answering 400 rather than 413

    @post("/batch", operation_id="ingestBatch", summary="Send a batch of Segment messages",
          operation_class=body_of(SegmentBatch), **_tracking)
    async def batch(self, request: Request) -> Accepted:
        """Up to 500 KB (after gzip), 32 KB per message. One bad message refuses the whole batch (400 listing each
        bad message by index and reason; the payload is kept in quarantine). Batch `context`, `integrations` and
        `sentAt` go into the messages that lack them."""
        return await _track(request, None)

    @post("/track", operation_id="ingestTrack", summary="Record an action (Segment track)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def track(self, request: Request) -> Accepted:
        return await _track(request, "track")

    @post("/identify", operation_id="ingestIdentify", summary="Tie a user to their traits (Segment identify)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def identify(self, request: Request) -> Accepted:
        return await _track(request, "identify")

    @post("/page", operation_id="ingestPage", summary="Record a page view (Segment page)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def page(self, request: Request) -> Accepted:
        return await _track(request, "page")

    @post("/screen", operation_id="ingestScreen", summary="Record an app screen view (Segment screen)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def screen(self, request: Request) -> Accepted:
        return await _track(request, "screen")

    @post("/alias", operation_id="ingestAlias", summary="Merge two user identities (Segment alias)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def alias(self, request: Request) -> Accepted:
        return await _track(request, "alias")

    @post("/group", operation_id="ingestGroup", summary="Tie a user to a group (Segment group)",
          operation_class=body_of(SegmentMessage), **_tracking)
    async def group(self, request: Request) -> Accepted:
        return await _track(request, "group")


class WebhookController(Controller):
    """Webhooks authenticated by their own signatures (no API key)."""

    path = "/webhooks"
    tags: ClassVar[list[str]] = ["ingest"]
    request_max_body_size = None

    @post("/sendgrid", operation_id="webhookSendgrid", summary="SendGrid Event Webhook", status_code=200,
          operation_class=body_of(list[SendGridEvent]), responses=_webhook_errors)
    async def sendgrid(self, request: Request) -> Accepted:
        """A JSON array of SendGrid events, each landed as received in source `email`. With
        SENDGRID_WEBHOOK_PUBLIC_KEY set, the signature headers must verify (403 otherwise); without it the endpoint
        is unauthenticated."""
        service = _service(request)
        key = service.sendgrid_key
        if key is None:  # unauthenticated by configuration: read and quarantine like any other sender's payload
            body = await _read_body(request, SENDGRID_MAX_BODY)
        else:
            try:
                raw = await _read_raw(request, SENDGRID_MAX_BODY)
            except BodyError as error:
                raise ClientException(detail=error.reason) from None
            if not sendgrid_signature_valid(key, raw, request.headers.get(SENDGRID_SIGNATURE_HEADER),
                                            request.headers.get(SENDGRID_TIMESTAMP_HEADER)):
                raise PermissionDeniedException("SendGrid Event Webhook signature missing or invalid")
            try:
                body = decode_body(raw, request.headers.get("content-encoding", ""), SENDGRID_MAX_BODY)
            except BodyError as error:
                await _reject(request, error.reason, error.raw)
        try:
            events = msgspec.json.decode(body, type=list[msgspec.Raw])
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            await _reject(request, f"body is not a JSON array of SendGrid events: {error}", body)
        bad = [{"index": i, "reason": "not a JSON object"}
               for i, event in enumerate(events) if not bytes(event).startswith(b"{")]
        if bad:
            await _reject(request, f"{len(bad)} of {len(events)} events are not JSON objects, none accepted", body,
                          errors=bad)
        # raw newlines between tokens are whitespace (JSON escapes them inside strings): one event, one line
        lines = [bytes(e).replace(b"\r", b" ").replace(b"\n", b" ") + b"\n" for e in events]
        if lines:
            await service.commit({"email": lines})
        return Accepted()

    @post("/twilio", operation_id="webhookTwilio", summary="Twilio inbound WhatsApp / SMS", status_code=200,
          media_type=TWIML_MEDIA_TYPE, responses=_webhook_errors,
          operation_class=body_of(TwilioInbound, "application/x-www-form-urlencoded"))
    async def twilio(self, request: Request) -> Response[str]:
        """Form parameters signed with X-Twilio-Signature (TWILIO_AUTH_TOKEN; without it every request gets 403),
        landed in source `whatsapp` as a JSON object of the parameters plus ReceivedAt (a status callback sent here
        is recorded as one, see twilio_status). Answers an empty TwiML."""
        settings = _settings(request)
        _, params = await _signed_twilio_form(request, settings)
        if params.get("MessageStatus") and "Body" not in params:
            # a status callback sent here (a StatusCallback URL set to the inbound one): recorded as a status,
            # not landed as a message "from" our own sender
            await _record_status(settings, params)
            return Response(EMPTY_TWIML, media_type=TWIML_MEDIA_TYPE)
        line = msgspec.json.encode(twilio_payload(params, utc_now_iso("seconds"))) + b"\n"
        await _service(request).commit({"whatsapp": [line]})
        return Response(EMPTY_TWIML, media_type=TWIML_MEDIA_TYPE)

    @post("/twilio/status", operation_id="webhookTwilioStatus", summary="Twilio message status callback",
          status_code=200, media_type=TWIML_MEDIA_TYPE, responses=_webhook_errors,
          operation_class=body_of(TwilioStatusCallback, "application/x-www-form-urlencoded"))
    async def twilio_status(self, request: Request) -> Response[str]:
        """The StatusCallback of the messages the Twilio syncs send (TWILIO_STATUS_CALLBACK_URL), signed like the
        inbound webhook. The message SID, status and error code are written (fsynced) for the next run of the
        sync, which records them in reverse_etl.message_sends; no number or text is kept."""
        settings = _settings(request)
        body, params = await _signed_twilio_form(request, settings)
        missing = [name for name in ("MessageSid", "MessageStatus") if not params.get(name)]
        if missing:
            await _reject(request, f"not a status callback: {' and '.join(missing)} missing "
                                   "(inbound messages go to /webhooks/twilio)", body)
        await _record_status(settings, params)
        return Response(EMPTY_TWIML, media_type=TWIML_MEDIA_TYPE)


async def _signed_twilio_form(request: Request, settings: ServingSettings) -> tuple[bytes, Any]:
    """The body and its form parameters, once X-Twilio-Signature verifies with TWILIO_AUTH_TOKEN over the URL
    Twilio called (CDP_API_PUBLIC_URL behind a proxy); 403 otherwise, and for every request without a token."""
    if not settings.twilio_auth_token:
        raise PermissionDeniedException("TWILIO_AUTH_TOKEN is not configured: Twilio webhooks are refused")
    body = await _read_body(request, settings.max_batch_bytes, authenticated=False)
    params = twilio_params(body)
    url = str(request.url)
    if settings.public_url:
        query = request.url.query
        url = settings.public_url + request.url.path + (f"?{query}" if query else "")
    if not twilio_signature_valid(settings.twilio_auth_token, url, params,
                                  request.headers.get(TWILIO_SIGNATURE_HEADER)):
        raise PermissionDeniedException("X-Twilio-Signature missing or invalid")
    return body, params


async def _record_status(settings: ServingSettings, params: Any) -> None:
    """Write a status callback for the next Twilio sync run (fsynced before the caller answers)."""
    entry = status_callbacks.entry(dict(params), utc_now_iso("seconds"))
    await anyio.to_thread.run_sync(status_callbacks.append, settings.landing_root, [entry])
