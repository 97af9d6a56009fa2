"""The segments domain's wire types (msgspec), as the OpenAPI documents them."""

from __future__ import annotations

import msgspec


class SegmentInfo(msgspec.Struct):
    segment: str  # the segment's model name (its id in the API)
    name: str | None
    description: str | None
    kind: str | None  # realtime, batch or scored
    owner: str | None
    destinations: list[str]
    members: int


class SegmentList(msgspec.Struct):
    segments: list[SegmentInfo]


class SegmentMember(msgspec.Struct):
    profile_id: str
    entered_at: str | None  # when the profile's current stay in the segment began (UTC)
    score: float | None  # the segment's score for scored segments


class SegmentMembersPage(msgspec.Struct):
    segment: str
    members: list[SegmentMember]
    next_cursor: str | None  # pass as ?cursor= for the next page; null on the last page
    total: int
