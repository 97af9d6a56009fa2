"""Progress lines for people watching a long run: to the Dagster run log and, from the CLI, to stderr."""

from __future__ import annotations

import logging

import dagster as dg

progress_log = logging.getLogger("cdp.progress")


def report(context: dg.AssetExecutionContext | dg.OpExecutionContext, message: str) -> None:
    context.log.info(message)
    progress_log.info(message)
