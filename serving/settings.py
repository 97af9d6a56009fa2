"""The API's settings, read once from the environment (the same variables as the rest of the platform, plus the
API's own). Paths resolve against CDP_HOME like orchestration/settings.py."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from connectors.landing import default_landing_root, project_home


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class ServingSettings:
    home: Path
    serving_dir: Path  # var/serving: published snapshots, the current pointer, the API keys
    keys_path: Path  # SQLite file of the API keys (hashed)
    landing_root: Path  # where accepted events go (connectors/landing.py)
    rate_limit_per_second: float  # per API key, sustained (token bucket)
    rate_limit_burst: float  # per API key, bucket size
    max_event_bytes: int  # one event of the tracking API (Segment's limit: 32 KB)
    max_batch_bytes: int  # one request body (Segment's /v1/batch limit: 500 KB)
    twilio_auth_token: str | None  # TWILIO_AUTH_TOKEN: validates X-Twilio-Signature; unset -> 403 for every webhook
    sendgrid_public_key: str | None  # SENDGRID_WEBHOOK_PUBLIC_KEY: verifies the Event Webhook signature when set
    public_url: str | None  # CDP_API_PUBLIC_URL: the URL Twilio calls (signatures are over it), behind a proxy

    @classmethod
    def from_env(cls) -> ServingSettings:
        home = project_home()
        serving_dir = Path(os.environ.get("CDP_SERVING_PATH", home / "var" / "serving")).resolve()
        return cls(
            home=home,
            serving_dir=serving_dir,
            keys_path=Path(os.environ.get("CDP_API_KEYS_PATH", serving_dir / "keys.sqlite")).resolve(),
            landing_root=default_landing_root(),
            rate_limit_per_second=_float("CDP_API_RATE_LIMIT", 2000.0),
            rate_limit_burst=_float("CDP_API_RATE_BURST", 4000.0),
            max_event_bytes=32 * 1024,
            max_batch_bytes=500 * 1024,
            twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
            sendgrid_public_key=os.environ.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
            public_url=(os.environ.get("CDP_API_PUBLIC_URL") or "").rstrip("/") or None,
        )
