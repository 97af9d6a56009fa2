"""The ingest domain of the API: Segment's HTTP Tracking API and the SendGrid and Twilio webhooks, written to the
landing zone through a durable spool (controllers.py, schemas.py, segment.py, service.py, spool.py, webhooks.py).

Exports ROUTES, ON_STARTUP (lands what a crash left in the spool, then starts the sealer) and ON_SHUTDOWN (lands
everything still spooled), which serving/app.py registers."""

from typing import Any

from litestar import Litestar

from serving.ingest.controllers import TrackingController, WebhookController
from serving.ingest.service import IngestService
from serving.ingest.spool import seal_all

__all__ = ["ON_SHUTDOWN", "ON_STARTUP", "ROUTES", "seal_all"]


async def start_ingest(app: Litestar) -> None:
    settings = app.state.settings
    service = IngestService(settings.landing_root, sendgrid_public_key=settings.sendgrid_public_key)
    await service.start()
    app.state.ingest = service


async def stop_ingest(app: Litestar) -> None:
    service = getattr(app.state, "ingest", None)
    if service is not None:
        await service.stop()


ROUTES: list[Any] = [TrackingController, WebhookController]
ON_STARTUP: list[Any] = [start_ingest]
ON_SHUTDOWN: list[Any] = [stop_ingest]
