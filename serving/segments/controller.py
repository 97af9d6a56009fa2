"""Read endpoints for segments: the list with meta and member counts, and the members with cursor paging (stable
order by profile id). Served from the in-memory index of the current snapshot."""

from __future__ import annotations

from typing import Annotated

from litestar import MediaType, Request, Response, get
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter

from serving.index import BadCursorError
from serving.profiles.controller import ERRORS, READ, SECURITY, current_index
from serving.segments.schemas import SegmentList, SegmentMembersPage


@get("/v1/segments", guards=[READ], operation_id="listSegments", tags=["segments"], summary="Every segment",
     security=SECURITY, responses=ERRORS,
     description="Every segment with its meta (name, description, kind, owner, destinations) and member count.")
async def list_segments(request: Request) -> Response[SegmentList]:
    return Response(current_index(request).segments_body, media_type=MediaType.JSON)


@get("/v1/segments/{segment:str}/members", guards=[READ], operation_id="listSegmentMembers", tags=["segments"],
     summary="Members of a segment, paged", security=SECURITY, responses=ERRORS,
     description="Current members in profile id order; pass `next_cursor` as `cursor` for the next page. Pages "
     "stay consistent across snapshot swaps (the cursor is a position in profile id order).")
async def list_segment_members(
    request: Request,
    segment: str,
    limit: Annotated[int, Parameter(ge=1, le=1000, description="members per page")] = 100,
    cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page")] = None,
) -> Response[SegmentMembersPage]:
    try:
        body = current_index(request).members(segment, limit, cursor)
    except BadCursorError as error:
        raise ValidationException(str(error)) from None
    if body is None:
        raise NotFoundException(f"no segment {segment}")
    return Response(body, media_type=MediaType.JSON)
