"""Webhook authentication and payloads: SendGrid's signed Event Webhook and Twilio's inbound messages.

SendGrid (Signed Event Webhook): ECDSA P-256 with SHA-256 over the `X-Twilio-Email-Event-Webhook-Timestamp` header
followed by the raw body; the signature (`X-Twilio-Email-Event-Webhook-Signature`) is base64 DER and the
verification key from the SendGrid settings is a base64 DER public key (a PEM block is accepted too). SendGrid
documents no replay window, so none is enforced.

Twilio: `X-Twilio-Signature` is checked with the twilio library's `RequestValidator` against the auth token, over
the URL Twilio called (CDP_API_PUBLIC_URL + path behind a proxy, else the request URL) and the form parameters.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from multidict import MultiDict
from twilio.request_validator import RequestValidator

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def load_sendgrid_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key of SENDGRID_WEBHOOK_PUBLIC_KEY (base64 DER, or PEM); ValueError when it is not one."""
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as error:
        raise ValueError(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve (ECDSA) public key")
    return key


def sendgrid_signature_valid(key: ec.EllipticCurvePublicKey, body: bytes, signature: str | None,
                             timestamp: str | None) -> bool:
    if not signature or not timestamp:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def twilio_params(body: bytes) -> MultiDict[str]:
    """The form parameters of a Twilio webhook body, repeated names kept (the validator signs every value)."""
    return MultiDict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def twilio_signature_valid(auth_token: str, url: str, params: MultiDict[str], signature: str | None) -> bool:
    return bool(signature) and RequestValidator(auth_token).validate(url, params, signature)


def twilio_payload(params: MultiDict[str], received_at: str) -> dict[str, Any]:
    """The landed record (docs/sources.md, whatsapp): the parameters as strings (a repeated one as a list of
    strings) and `ReceivedAt`, which Twilio does not send."""
    payload: dict[str, Any] = {}
    for name in params:
        if name in payload:
            continue
        values = params.getall(name)
        payload[name] = values[0] if len(values) == 1 else values
    payload["ReceivedAt"] = received_at
    return payload
