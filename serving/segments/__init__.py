"""The segments domain of the API: segment list and members (controller.py), wire types (schemas.py), over the
snapshot holder the profiles domain starts (`app.state.snapshot`).

Exports ROUTES, which serving/app.py registers."""

from typing import Any

from serving.segments.controller import list_segment_members, list_segments

ROUTES: list[Any] = [list_segments, list_segment_members]
