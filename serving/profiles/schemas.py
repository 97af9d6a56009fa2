"""The profiles domain's wire types (msgspec). The documents themselves are built as JSON by DuckDB when the
snapshot is published (serving/snapshot.py _documents_sql) and served as bytes; these structs are their schema
for the OpenAPI, and the tests decode every published document with them (strict), so the two cannot drift."""

from __future__ import annotations

from typing import Any

import msgspec


class Trait(msgspec.Struct):
    value: str | int | float | bool
    source: str  # salesforce, web, app, email, whatsapp, events (behaviour), cdp (derived), or consent's source
    computed_at: str  # when the warehouse computed it (UTC, ISO 8601)


class Identifier(msgspec.Struct):
    type: str  # email, phone, device_id, anonymous_id, crm_id, user_id
    value: str


class SegmentMembership(msgspec.Struct):
    name: str
    entered_at: str | None
    score: float | None


class ChannelConsent(msgspec.Struct):
    status: str  # opted_in, opted_out, implied, unknown
    legal_basis: str | None
    can_contact: bool | None
    source: str | None
    status_at: str | None


class Engagement(msgspec.Struct):
    score: float | None  # 0..100
    trend: str | None
    activity_30d: int | None
    activity_prev_30d: int | None
    web_points: float | None
    app_points: float | None
    email_points: float | None
    whatsapp_points: float | None
    last_engaged_at: str | None
    as_of: str | None
    computed_at: str | None


class IdentityInfo(msgspec.Struct):
    confidence: float | None
    is_probabilistic_merge: bool | None
    has_shared_identifier: bool | None
    identifier_count: int | None
    crm_contacts: int | None


class ProfileDocument(msgspec.Struct):
    profile_id: str
    lifecycle_stage: str | None
    computed_at: str | None
    traits: dict[str, Trait]
    identifiers: list[Identifier]
    segments: list[SegmentMembership]
    consent: dict[str, ChannelConsent]  # per channel: email, whatsapp, sms, push, analytics
    engagement: Engagement | None
    identity: IdentityInfo
    # set when the id asked for was retired by a merge: the document is the survivor's
    merged_into: str | None = None
    requested_profile_id: str | None = None


class ProfileEvent(msgspec.Struct):
    event_id: str
    occurred_at: str
    source: str
    event_type: str
    properties: dict[str, Any]  # a few non-identifying properties (page, program, campaign...)


class ProfileEventsPage(msgspec.Struct):
    profile_id: str
    events: list[ProfileEvent]
    next_cursor: str | None  # pass as ?cursor= for the next page; null on the last page
    merged_into: str | None = None
    requested_profile_id: str | None = None


class ErrorBody(msgspec.Struct):
    error: str
    status: int
