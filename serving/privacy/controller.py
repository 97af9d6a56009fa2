"""POST /v1/privacy/deletions, GET /v1/privacy/deletions/{request_id} (scope admin:privacy) and POST /v1/consent
(scope write:events)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestration.privacy.subject import SubjectError
from serving.privacy import service
from serving.privacy.schemas import ConsentAccepted, ConsentChange, DeletionAccepted, DeletionRequest, DeletionStatus
from serving.security import requires

REQUEST_ID = re.compile(r"fgt_[0-9a-f]{16}")


class PrivacyController(Controller):
    path = "/v1/privacy/deletions"
    tags = ("privacy",)
    guards = (requires("admin:privacy"),)
    security = ({"apiKey": []},)

    @post("/", status_code=HTTP_202_ACCEPTED, operation_id="createDeletion",
          summary="Erase a person everywhere (right to be forgotten)",
          description="Records the request in the privacy ledger and starts the cdp_forget job in the background "
                      "(`cdp forget --run <id>`; with CDP_PRIVACY_AUTORUN=0 the request waits for an operator to "
                      "run that command). Poll the status URL until the status is erased or failed.")
    async def create(self, request: Request, state: State, data: DeletionRequest) -> Response[DeletionAccepted]:
        given = [(kind, value) for kind, value in (("email", data.email), ("phone", data.phone),
                 ("profile_id", data.profile_id)) if value is not None]
        if len(given) != 1:
            raise ValidationException("give exactly one of email, phone, profile_id")
        kind, value = given[0]
        key = request.scope["cdp_key"]  # type: ignore[typeddict-item]
        requested_by = data.requested_by or f"api key {key.key_id}" + (f" ({key.name})" if key.name else "")
        try:
            recorded = await anyio.to_thread.run_sync(service.record_deletion, kind, value, requested_by, data.reason)
        except SubjectError as error:
            raise ValidationException(str(error)) from None
        if service.autorun():
            try:
                await anyio.to_thread.run_sync(service.start_erasure, recorded.id, state.settings.home)
            except OSError:
                raise ServiceUnavailableException(f"request {recorded.id} recorded but its erasure could not start "
                                                  "(marked failed): file a new request") from None
        status_url = f"{self.path}/{recorded.id}"
        return Response(DeletionAccepted(id=recorded.id, status=recorded.status, status_url=status_url),
                        status_code=HTTP_202_ACCEPTED, headers={"Location": status_url})

    @get("/{request_id:str}", operation_id="getDeletion", summary="An erasure request: status, rows per store, sweep",
         description="Never the raw identifier: its kind and salted hash, profile ids, counts.")
    async def status(self, request_id: str) -> DeletionStatus:
        found = await anyio.to_thread.run_sync(service.deletion_status, request_id) \
            if REQUEST_ID.fullmatch(request_id) else None
        if found is None:
            raise NotFoundException(f"no erasure request {request_id!r}" if REQUEST_ID.fullmatch(request_id)
                                    else "no such erasure request (ids look like fgt_ and 16 hex digits)")
        return found


class ConsentController(Controller):
    path = "/v1/consent"
    tags = ("consent",)
    guards = (requires("write:events"),)
    security = ({"apiKey": []},)

    @post("/", status_code=HTTP_202_ACCEPTED, operation_id="recordConsent", summary="Record a consent change",
          description="Lands a Segment-spec `track consent_updated` event (durably, before the answer); the "
                      "profile's consent (gold.consent_current) changes with the next pipeline run.")
    async def record(self, state: State, data: ConsentChange) -> ConsentAccepted:
        try:
            message = service.consent_message(data, datetime.now(UTC))
        except SubjectError as error:
            raise ValidationException(str(error)) from None
        await service.land_consent(state, message)
        return ConsentAccepted(message_id=message["messageId"], status="accepted")
