"""The right to be forgotten: the privacy ledger, subject resolution, the stores a subject is erased from, the
erasure job's work and the suppression of later data about an erased subject (docs/privacy.md).

Nothing here imports Dagster: the landing zone reads the suppression list (suppression.py) on every batch, and the
API will write the ledger without loading the orchestration.
"""

from __future__ import annotations

import os
from pathlib import Path

from connectors.landing import project_home


def privacy_root() -> Path:
    """`CDP_PRIVACY_PATH`, else `var/privacy` under CDP_HOME: the ledger, the salt, the suppression list, the audit."""
    configured = os.environ.get("CDP_PRIVACY_PATH")
    if configured:
        return Path(configured).expanduser().resolve()
    return (project_home() / "var" / "privacy").resolve()
