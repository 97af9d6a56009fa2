"""The privacy domain of the API: controllers, msgspec schemas and the service behind them.

Exports ROUTES (route handlers or controllers) and optionally ON_STARTUP / ON_SHUTDOWN (callables taking the app),
which serving/app.py registers."""

from typing import Any

ROUTES: list[Any] = []
