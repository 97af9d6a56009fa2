"""The profile API: a Litestar app over the published serving snapshot (never the warehouse) and the ingestion
endpoints that write to the landing zone.

`create_app()` wires the domain packages (profiles/, segments/, ingest/, privacy/: each exports ROUTES, and
optionally ON_STARTUP / ON_SHUTDOWN hooks taking the app), the key store (`app.state.key_store`) and the rate
limiter (security.py), one error shape for every failure: `{"error": "<what went wrong>", "status": <code>}`, and the
ops layer (serving/ops.py: `/metrics`, the JSON access log, the uptime in `/health`). `cdp serve` runs it with
uvicorn; OpenAPI at /schema/openapi.json.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from serving import ingest, ops, privacy, profiles, segments
from serving.security import KeyStore, RateLimiter
from serving.settings import ServingSettings

DOMAINS = (profiles, segments, ingest, privacy)
log = logging.getLogger("cdp.serving")


def _http_error(request: Request, error: HTTPException) -> Response:
    detail = error.detail
    if isinstance(error, ValidationException) and error.extra:
        detail = f"{detail}: {error.extra}"
    if isinstance(error, RequestEntityTooLarge):
        limit = _body_limit(request)
        detail = f"request body larger than the limit of {limit:,} bytes" if limit else "request body too large"
    return Response({"error": detail, "status": error.status_code}, status_code=error.status_code,
                    headers=error.headers, media_type=MediaType.JSON)


def _body_limit(request: Request) -> int | None:
    try:
        return request.route_handler.resolve_request_max_body_size() or None
    except Exception:  # no route resolved: no limit to name
        return None


def _internal_error(request: Request, error: Exception) -> Response:
    # the message may quote data (a value, a query) and the raw path may hold an identifier: logged are the type and
    # the route template only, and nothing is returned
    route = request.scope.get("path_template") or "unmatched"
    log.error("unhandled %s on %s %s", type(error).__name__, request.method, route)
    return Response({"error": "internal error", "status": 500}, status_code=HTTP_500_INTERNAL_SERVER_ERROR,
                    media_type=MediaType.JSON)


class Health(msgspec.Struct):
    status: str
    uptime_seconds: float
    snapshot: dict[str, Any] | None  # the served snapshot (file, published_at, profiles...), null before the first


@get("/health", tags=["ops"], summary="Liveness, uptime and the snapshot being served", operation_id="health")
async def health(state: State) -> Health:
    snapshot = getattr(state, "snapshot", None)
    return Health(status="ok", uptime_seconds=round(time.time() - ops.PROCESS_STARTED, 3),
                  snapshot=snapshot.describe() if snapshot is not None else None)


@get("/metrics", tags=["ops"], summary="Prometheus metrics (text exposition format 0.0.4)", operation_id="metrics",
     media_type="text/plain; version=0.0.4; charset=utf-8")
async def metrics(state: State) -> str:
    return state.metrics.render(state)


def create_app(settings: ServingSettings | None = None) -> Litestar:
    settings = settings or ServingSettings.from_env()
    route_handlers: list[Any] = [health, metrics]
    on_startup: list[Any] = []
    on_shutdown: list[Any] = []
    for domain in DOMAINS:
        route_handlers += list(getattr(domain, "ROUTES", []))
        on_startup += list(getattr(domain, "ON_STARTUP", []))
        on_shutdown += list(getattr(domain, "ON_SHUTDOWN", []))
    app = Litestar(
        route_handlers=route_handlers,
        state=State({
            "settings": settings,
            "key_store": KeyStore(settings.keys_path),
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
    ops.install(app, settings.home)
    return app
