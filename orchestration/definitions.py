"""The Dagster code location: `dagster dev -m orchestration.definitions` (or `make ui`)."""

import dagster as dg

from orchestration.defs import activation, automation, dbt, ingest, observability, privacy, quality, serving

defs = dg.Definitions.merge(
    ingest.defs,
    dbt.defs,
    quality.defs,
    automation.defs,
    observability.defs,
    privacy.defs,
    serving.defs,
    activation.defs,
    # One process per run: the warehouse lock (a resource) is then held from the first dbt step to the end of the
    # run, and a micro-batch does not pay for loading the definitions once per step.
    dg.Definitions(executor=dg.in_process_executor),
)
