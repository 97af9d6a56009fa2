"""Mess rates: how dirty the generated sources are.

Every rate is a probability in [0, 1]. The defaults are the documented realistic defaults; the CLI
overrides single rates with ``--rate name=value`` through :meth:`MessRates.from_overrides`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class MessRates:
    """Probabilities of each kind of real-world mess (see the field comments for what each one means)."""

    anonymous_only_visitors: float = 0.33  # web visitors who never identify (no form submit, no login)
    email_variant: float = 0.05  # an email written with case or whitespace variants ("  Max.Doe@Gmail.COM ")
    phone_national_format: float = 0.5  # phones written in national format ("0151 2345678") instead of E.164
    duplicate_delivery: float = 0.02  # records delivered twice (identical line, maybe in a later part file)
    late_or_out_of_order: float = 0.05  # records written to a later part file / out of timestamp order
    crm_name_typo: float = 0.03  # CRM first/last name with a typo (swap, drop, double letter)
    crm_duplicate_contact: float = 0.02  # 2nd CRM contact: typo'd name, other email, same birthdate+postcode
    shared_device: float = 0.02  # app devices shared by 2 to 6 people (a family tablet)
    malformed: float = 0.005  # per source: truncated line, missing required field, unparseable timestamp

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"mess rate {f.name} must be a number, got {value!r}")
            if math.isnan(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"mess rate {f.name} must be between 0 and 1, got {value!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_overrides(cls, overrides: dict[str, float]) -> MessRates:
        """Defaults with some rates replaced; unknown names or values outside [0, 1] raise ValueError."""
        valid = cls.names()
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown mess rate(s): {', '.join(unknown)}; valid names: {', '.join(valid)}")
        parsed: dict[str, float] = {}
        for name, raw in overrides.items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"mess rate {name} must be a number between 0 and 1, got {raw!r}") from None
            if math.isnan(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"mess rate {name} must be between 0 and 1, got {raw!r}")
            parsed[name] = value
        return replace(cls(), **parsed)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
