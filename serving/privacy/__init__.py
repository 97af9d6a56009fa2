"""The privacy domain of the API: erasure requests (right to be forgotten) and consent changes.

Exports ROUTES, which serving/app.py registers."""

from typing import Any

from serving.privacy.controller import ConsentController, PrivacyController

ROUTES: list[Any] = [PrivacyController, ConsentController]
