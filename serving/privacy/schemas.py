"""The wire format of the privacy and consent endpoints (msgspec structs, documented in the OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]
Text = Annotated[str, msgspec.Meta(max_length=1000)]


class DeletionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of email, phone, profile_id: the person to erase (the whole resolved person, docs/privacy.md)."""

    email: Identifier | None = None
    phone: Identifier | None = None
    profile_id: Identifier | None = None
    requested_by: Text | None = None  # who asks (recorded in the ledger; default: the API key's id and name)
    reason: Text | None = None  # why, e.g. the ticket of the data subject's request


class DeletionAccepted(msgspec.Struct):
    id: str
    status: str  # pending: recorded, the erasure job is starting
    status_url: str


class DeletionStatus(msgspec.Struct):
    """An erasure request as the ledger holds it: never the raw identifier (only its salted hash)."""

    id: str
    status: Literal["pending", "running", "erased", "failed"]
    created_at: str
    requested_by: str
    reason: str | None
    subject_kind: str
    subject_hash: str
    profile_ids: list[str] | None
    rows_per_store: dict[str, Any] | None  # store -> {status, rows, detail: {table/source/file: rows}}
    sweep: dict[str, Any] | None  # {clean, stores: {store: {clean, found}}}: counts, never values
    error: str | None
    dagster_run_id: str | None
    started_at: str | None
    finished_at: str | None


Channel = Literal["email", "whatsapp", "sms", "push", "analytics"]
ConsentStatus = Literal["opted_in", "opted_out"]


class ConsentChange(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one identifier of the person, the channel and the new status."""

    channel: Channel
    status: ConsentStatus
    email: Identifier | None = None
    phone: Identifier | None = None
    user_id: Identifier | None = None
    anonymous_id: Identifier | None = None
    timestamp: datetime | None = None  # when the person gave or withdrew consent (default: now)


class ConsentAccepted(msgspec.Struct):
    message_id: str  # the Segment messageId of the consent_updated event landed for the pipeline
    status: str  # accepted: durably written; the profile's consent changes with the next pipeline run
