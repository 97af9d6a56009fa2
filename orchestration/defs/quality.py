"""Quality gates as blocking Dagster asset checks (Great Expectations suites in orchestration/quality/).

- Gate 1 (landing -> bronze) guards each `landing/<source>`: it validates the batch files it has not validated
  yet. A file without the landing schema (or with a wrong source, batch id or missing record keys) fails it and
  bronze is not built; records with a bad payload, a missing required field or a malformed timestamp pass
  through to silver, which quarantines them with the reason, and the gate reports them with samples.
- Gate 2 (bronze -> silver) guards `silver/events`: when it fails, the identity and gold step does not
  start (the check is blocking and the dbt build runs in two steps, see defs/dbt.py).
- Gate 3 (silver -> gold) guards `gold/profiles`: what reads gold later (serving, reverse ETL) waits on it.

Gate 2 validates only the events loaded since the last run that passed it (a watermark kept in
var/quality/); a failed gate keeps its watermark, so the bad rows are checked again until they are fixed.
Each validation writes Great Expectations data docs (HTML) under var/quality/docs/<gate>/.
"""

import json
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from connectors.landing import SOURCES, LandingZone
from orchestration.defs.ingest import landing_asset_key
from orchestration.observability.logs import redact, redact_value
from orchestration.quality.gates import ExpectationOutcome, GateResult
from orchestration.settings import Settings

EVENTS = dg.AssetKey(["silver", "events"])
PROFILES = dg.AssetKey(["gold", "profiles"])


def _quality_dir() -> Path:
    path = Settings.from_env().home / "var" / "quality"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _verdict(expectation: ExpectationOutcome) -> str:
    if expectation.success:
        return "passed"
    return "**failed**" if expectation.blocking else "records quarantined"


def _result(context: dg.AssetCheckExecutionContext, outcome: GateResult) -> dg.AssetCheckResult:
    context.log.info(outcome.summary())  # cdp run prints the gate table itself
    failed = outcome.failed()
    metadata: dict[str, dg.MetadataValue | str | int | float] = {
        "summary": outcome.summary(),
        "rows_checked": outcome.rows_checked,
        "seconds": round(outcome.seconds, 2),
        "expectations": dg.MetadataValue.md(
            "| expectation | result | observed |\n|---|---|---|\n"
            + "\n".join(
                f"| `{e.expectation}` | {_verdict(e)} | {redact(e.observed)} |"
                for e in outcome.expectations
            )
        ),
    }
    for label, outcomes in (("failed", failed), ("quarantined", outcome.quarantined())):
        for e in outcomes:
            # sample rows hold timestamps: round-trip through JSON text so that Dagster can store them
            # redacted: a gate that finds an email where none belongs (gate 4) must not copy it into Dagster
            sample = json.loads(json.dumps({"observed": e.observed, "sample_rows": e.sample_rows}, default=str))
            sample = redact_value(sample)
            metadata[f"{label}: {e.expectation}"[:120]] = dg.MetadataValue.json(sample)
    if outcome.docs_path is not None:
        metadata["data_docs"] = dg.MetadataValue.path(str(outcome.docs_path))
    return dg.AssetCheckResult(
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=outcome.summary(),
    )


@dg.asset_check(
    asset=EVENTS,
    name="gate_2_bronze_to_silver",
    blocking=True,
    description="Great Expectations gate 2: required fields, types, source values, unique event_id, "
    "every batch in bronze. Blocks identity and gold when it fails.",
)
def gate_2_bronze_to_silver(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from orchestration.quality import run_gate

    settings = Settings.from_env()
    state_file = _quality_dir() / "gate_2_watermark.json"
    since = None
    if state_file.exists():
        since = datetime.fromisoformat(json.loads(state_file.read_text())["validated_through"])
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        outcome = run_gate("gate_2_silver", con, since=since, docs_dir=_quality_dir() / "docs" / "gate_2")
        latest = con.execute("select max(bronze_loaded_at) from silver.events").fetchone()[0]
    if outcome.success and latest is not None:
        state_file.write_text(json.dumps({"validated_through": latest.isoformat()}))
    return _result(context, outcome)


@dg.asset_check(
    asset=PROFILES,
    name="gate_3_silver_to_gold",
    blocking=True,
    description="Great Expectations gate 3: profile completeness >= 60 %, mean identity confidence >= 0.85, "
    "no orphan identifiers, largest cluster below CDP_GATE_MAX_CLUSTER (50).",
)
def gate_3_silver_to_gold(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    import os

    from orchestration.quality import run_gate

    settings = Settings.from_env()
    max_cluster = int(os.environ.get("CDP_GATE_MAX_CLUSTER", "50"))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        outcome = run_gate(
            "gate_3_gold", con, docs_dir=_quality_dir() / "docs" / "gate_3", max_cluster_size=max_cluster
        )
    return _result(context, outcome)


def build_gate_1(source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=landing_asset_key(source),
        name="gate_1_landing_to_bronze",
        blocking=True,
        description=f"Great Expectations gate 1 on the new {source} batch files: landing schema, source, batch id "
        "and record keys (blocks bronze when it fails); JSON object, required fields and timestamp format per "
        "record (failing records are quarantined by silver with the reason).",
    )
    def gate_1(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        from orchestration.quality.gate_1 import run_gate_1

        settings = Settings.from_env()
        state_file = _quality_dir() / f"gate_1_{source}_validated.json"
        validated = set(json.loads(state_file.read_text())) if state_file.exists() else set()
        files = [path for path in LandingZone(settings.landing_root).batch_files(source) if path.name not in validated]
        outcome = run_gate_1(source, files, docs_dir=_quality_dir() / "docs" / f"gate_1_{source}")
        if outcome.success:
            # a failed gate validates the same files again next time, until they are fixed or removed
            state_file.write_text(json.dumps(sorted(validated | {path.name for path in files})))
        return _result(context, outcome)

    return gate_1


gate_1_checks = [build_gate_1(source) for source in SOURCES]

defs = dg.Definitions(asset_checks=[*gate_1_checks, gate_2_bronze_to_silver, gate_3_silver_to_gold])
