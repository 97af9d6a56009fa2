"""The profile API: a Litestar app over the published serving snapshot (never the warehouse) and the ingestion
endpoints that write to the landing zone.

`create_app()` wires the domain packages (profiles/, segments/, ingest/, privacy/: each exports ROUTES, and
optionally ON_STARTUP / ON_SHUTDOWN hooks taking the app), the key store and rate limiter (security.py), and one
error shape for every failure: `{"error": "<what went wrong>", "status": <code>}`. `cdp serve` runs it with
uvicorn; OpenAPI at /schema/openapi.json.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from serving import ingest, privacy, profiles, segments
from serving.security import KeyStore, RateLimiter
from serving.settings import ServingSettings

DOMAINS = (profiles, segments, ingest, privacy)
log = logging.getLogger("cdp.serving")


def _http_error(_: Request, error: HTTPException) -> Response:
    detail = error.detail
    if isinstance(error, ValidationException) and error.extra:
        detail = f"{detail}: {error.extra}"
    return Response({"error": detail, "status": error.status_code}, status_code=error.status_code,
                    headers=error.headers, media_type=MediaType.JSON)


def _internal_error(request: Request, error: Exception) -> Response:
    # the message may quote data (a value, a query): logged by type only, never returned
    log.error("unhandled %s on %s %s", type(error).__name__, request.method, request.url.path)
    return Response({"error": "internal error", "status": 500}, status_code=HTTP_500_INTERNAL_SERVER_ERROR,
                    media_type=MediaType.JSON)


@get("/health", tags=["ops"], summary="Liveness and the snapshot being served")
async def health(state: State) -> dict[str, Any]:
    snapshot = getattr(state, "snapshot", None)
    return {"status": "ok", "snapshot": snapshot.describe() if snapshot is not None else None}


def create_app(settings: ServingSettings | None = None) -> Litestar:
    settings = settings or ServingSettings.from_env()
    route_handlers: list[Any] = [health]
    on_startup: list[Any] = []
    on_shutdown: list[Any] = []
    for domain in DOMAINS:
        route_handlers += list(getattr(domain, "ROUTES", []))
        on_startup += list(getattr(domain, "ON_STARTUP", []))
        on_shutdown += list(getattr(domain, "ON_SHUTDOWN", []))
    return Litestar(
        route_handlers=route_handlers,
        state=State({
            "settings": settings,
            "keys": KeyStore(settings.keys_path),
            "limiter": RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        }),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        request_max_body_size=settings.max_batch_bytes,
        openapi_config=OpenAPIConfig(
            title="cdp profile API",
            version="1",
            path="/schema",
            components=Components(security_schemes={
                "apiKey": SecurityScheme(type="http", scheme="bearer", description="cdp keys create --scopes ..."),
                "writeKey": SecurityScheme(type="http", scheme="basic", description="the write key as user"),
            }),
        ),
        debug=False,
    )
