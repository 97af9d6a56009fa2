"""Data quality gates kept as code: Great Expectations suites validated against frames read from DuckDB."""

from orchestration.quality.gates import (
    GATES,
    ExpectationOutcome,
    GateResult,
    QualityGateError,
    gate_2_silver_suite,
    gate_3_gold_suite,
    run_gate,
)

__all__ = [
    "GATES",
    "ExpectationOutcome",
    "GateResult",
    "QualityGateError",
    "gate_2_silver_suite",
    "gate_3_gold_suite",
    "run_gate",
]
