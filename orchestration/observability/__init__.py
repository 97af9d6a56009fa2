"""Observability of the pipeline: structured JSON logs with the run id, PII redacted (logs.py), and per-run
metrics kept in the warehouse table ops.run_metrics (metrics.py). The Dagster side is orchestration/defs/
observability.py."""

from orchestration.observability.logs import JSON_LOGGER, default_log_path, redact, run_config
from orchestration.observability.metrics import RunMetrics, read_run_metrics

__all__ = ["JSON_LOGGER", "RunMetrics", "default_log_path", "read_run_metrics", "redact", "run_config"]
