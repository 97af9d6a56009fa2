"""Read endpoints for profiles: by id (a retired id answers with its survivor), by any one identifier, and the
recent events of a profile. Every handler reads the in-memory index of the current snapshot (serving/index.py)
and returns bytes encoded when the snapshot was published."""

from __future__ import annotations

from typing import Annotated

from litestar import MediaType, Request, Response, get
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from orchestration.privacy.subject import normalize_email, normalize_phone
from serving.index import AmbiguousIdentifierError, BadCursorError, ServingIndex
from serving.profiles.schemas import ErrorBody, ProfileDocument, ProfileEventsPage
from serving.security import requires

READ = requires("read:profiles")
SECURITY = [{"apiKey": []}]
NO_SNAPSHOT = "no serving snapshot published yet: run the pipeline (cdp run)"
ERRORS = {
    400: ResponseSpec(ErrorBody, description="Invalid request (identifier, cursor, limit)"),
    401: ResponseSpec(ErrorBody, description="No API key, or an unknown or revoked one"),
    403: ResponseSpec(ErrorBody, description="The key lacks read:profiles"),
    404: ResponseSpec(ErrorBody, description="Nobody has it"),
    429: ResponseSpec(ErrorBody, description="Rate limit of the key exceeded"),
    503: ResponseSpec(ErrorBody, description="No serving snapshot loaded yet"),
}
IDENTIFIER_TYPES = ("email", "phone", "device_id", "anonymous_id", "crm_id", "user_id")


class ServiceUnavailableException(HTTPException):
    status_code = 503


class ConflictException(HTTPException):
    status_code = 409


def current_index(request: Request) -> ServingIndex:
    holder = request.app.state.snapshot
    index = holder.index
    if index is None:
        raise ServiceUnavailableException(
            "the serving snapshot is loading, retry in a moment" if holder.loading else NO_SNAPSHOT,
            headers={"Retry-After": "1"},
        )
    return index


def normalize_identifier(kind: str, value: str) -> str | None:
    """The identifier as dbt normalizes it in silver: emails trimmed and lower-cased, phones to E.164 (the default
    calling code for national numbers), every other id trimmed (dbt_project/models/silver/*/int_*__parsed.sql)."""
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value)
    return value.strip() or None


def _json(body: bytes) -> Response:
    return Response(body, media_type=MediaType.JSON)


@get("/v1/profiles/{profile_id:str}", guards=[READ], operation_id="getProfile", tags=["profiles"],
     summary="A profile by id", security=SECURITY, responses=ERRORS,
     description="The golden profile: traits (each with its value, source and computed_at), identifiers, "
     "segments, consent per channel and engagement. A profile id retired by a merge answers 200 with the "
     "surviving profile's document plus `merged_into` (the survivor) and `requested_profile_id`.")
async def get_profile(request: Request, profile_id: str) -> Response[ProfileDocument]:
    body = current_index(request).profile(profile_id)
    if body is None:
        raise NotFoundException(f"no profile {profile_id}")
    return _json(body)


@get("/v1/profiles", guards=[READ], operation_id="lookupProfile", tags=["profiles"],
     summary="A profile by one identifier", security=SECURITY, responses={
         **ERRORS, 409: ResponseSpec(ErrorBody, description="A shared identifier held by several profiles")},
     description="Exactly one of email, phone, device_id, anonymous_id, crm_id, user_id, normalized as the "
     "warehouse normalizes it (emails trimmed and lower-cased, phones to E.164).")
async def lookup_profile(
    request: Request,
    email: str | None = None,
    phone: str | None = None,
    device_id: str | None = None,
    anonymous_id: str | None = None,
    crm_id: str | None = None,
    user_id: str | None = None,
) -> Response[ProfileDocument]:
    given = {kind: value for kind, value in zip(
        IDENTIFIER_TYPES, (email, phone, device_id, anonymous_id, crm_id, user_id), strict=True) if value is not None}
    if len(given) != 1:
        raise ValidationException(f"give exactly one identifier of {', '.join(IDENTIFIER_TYPES)} "
                                  f"({len(given)} given)")
    (kind, value), = given.items()
    normalized = normalize_identifier(kind, value)
    if normalized is None:
        raise ValidationException(f"the {kind.replace('_', ' ')} given is not valid")
    index = current_index(request)
    try:
        body = index.lookup(f"{kind}:{normalized}")
    except AmbiguousIdentifierError as error:
        raise ConflictException(f"this {kind.replace('_', ' ')} is shared by {len(error.profile_ids)} profiles "
                                f"({', '.join(error.profile_ids)}): look them up by id") from None
    if body is None:
        raise NotFoundException(f"no profile has this {kind.replace('_', ' ')}")  # the value itself is not echoed
    return _json(body)


@get("/v1/profiles/{profile_id:str}/events", guards=[READ], operation_id="getProfileEvents", tags=["profiles"],
     summary="Recent events of a profile, newest first", security=SECURITY, responses=ERRORS, sync_to_thread=True,
     description="The latest 50 events of the profile in the snapshot, paged: pass `next_cursor` as `cursor`.")
def get_profile_events(
    request: Request,
    profile_id: str,
    limit: Annotated[int, Parameter(ge=1, le=50, description="events per page")] = 20,
    cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page")] = None,
) -> Response[ProfileEventsPage]:
    try:
        body = current_index(request).events(profile_id, limit, cursor)
    except BadCursorError as error:
        raise ValidationException(str(error)) from None
    if body is None:
        raise NotFoundException(f"no profile {profile_id}")
    return _json(body)
