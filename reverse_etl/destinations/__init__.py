"""The destinations by name, as syncs.yml names them, imported only when a sync uses one.

A factory takes the sync's configuration and the destination's ApiBudget and returns a connected-but-unchecked
`Destination` (reverse_etl/base.py): `factory(sync, budget)`. It reads its endpoint and credentials from the
environment (ARCHITECTURE.md: SALESFORCE_*, TWILIO_*, SENDGRID_*) and spends `budget` before every request. The
budget is a parameter, not something a destination opens, because it lives in the warehouse, which only the
runner's connection may write.

    DESTINATIONS["salesforce"](sync, budget)      # or open_destination(sync, budget)

A destination not installed (or failing to import) raises DestinationUnavailable with the reason. Tests and plugins
may register their own: DESTINATIONS["memory"] = MyDestination.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from reverse_etl.base import ApiBudget, Destination, DestinationError

if TYPE_CHECKING:
    from reverse_etl.config import SyncConfig

DestinationFactory = Callable[["SyncConfig", ApiBudget], Destination]

# name -> "module:attribute" of the factory (usually the destination class)
FACTORY_PATHS: dict[str, str] = {
    "salesforce": "reverse_etl.destinations.salesforce:SalesforceDestination",
    "twilio": "reverse_etl.destinations.twilio:TwilioDestination",
    "email": "reverse_etl.destinations.email:EmailDestination",
}


class DestinationUnavailable(DestinationError):
    """No destination of that name can be loaded."""


class _Registry(dict[str, DestinationFactory]):
    """A dict of factories that imports a known destination the first time it is asked for."""

    def __missing__(self, name: str) -> DestinationFactory:
        path = FACTORY_PATHS.get(name)
        if path is None:
            known = ", ".join(sorted({*FACTORY_PATHS, *self}))
            raise DestinationUnavailable(f"destination {name} is not available: unknown destination (known: {known})")
        module_name, _, attribute = path.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except ImportError as error:
            raise DestinationUnavailable(f"destination {name} is not available: {error} ({path})") from error
        except AttributeError:
            raise DestinationUnavailable(
                f"destination {name} is not available: {module_name} has no {attribute} ({path})"
            ) from None
        self[name] = factory
        return factory


DESTINATIONS: dict[str, DestinationFactory] = _Registry()


def open_destination(sync: SyncConfig, budget: ApiBudget) -> Destination:
    """The destination of `sync`, created with its budget (DestinationUnavailable when it cannot be loaded)."""
    destination = DESTINATIONS[sync.destination](sync, budget)
    if getattr(destination, "name", None) != sync.destination:
        raise DestinationUnavailable(
            f"destination {sync.destination} is not available: its factory returned a destination named "
            f"{getattr(destination, 'name', None)!r}"
        )
    return destination
