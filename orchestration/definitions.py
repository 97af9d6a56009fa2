"""The Dagster code location: `dagster dev -m orchestration.definitions` (or `make ui`)."""

import dagster as dg

from orchestration.defs import dbt, ingest, quality

defs = dg.Definitions.merge(ingest.defs, dbt.defs, quality.defs)
