"""The profiles domain of the API: profile by id or identifier, recent events (controller.py), their wire types
(schemas.py), over the in-memory index of the serving snapshot (serving/index.py).

Exports ROUTES, and ON_STARTUP / ON_SHUTDOWN, which start and stop the snapshot holder (`app.state.snapshot`)
shared with the segments domain."""

from typing import Any

from litestar import Litestar

from serving.index import SnapshotHolder
from serving.profiles.controller import get_profile, get_profile_events, lookup_profile


def start_snapshot(app: Litestar) -> None:
    """Load the current snapshot in the background and follow CURRENT (read endpoints answer 503 until loaded)."""
    holder = SnapshotHolder(app.state.settings.serving_dir)
    app.state.snapshot = holder
    holder.start()


def stop_snapshot(app: Litestar) -> None:
    holder = getattr(app.state, "snapshot", None)
    if holder is not None:
        holder.stop()


ROUTES: list[Any] = [get_profile, lookup_profile, get_profile_events]
ON_STARTUP: list[Any] = [start_snapshot]
ON_SHUTDOWN: list[Any] = [stop_snapshot]
