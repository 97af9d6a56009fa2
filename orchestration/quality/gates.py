"""Quality gates 2 (bronze -> silver) and 3 (silver -> gold) as Great Expectations suites kept as code.

Each gate reads one pandas frame from the DuckDB warehouse, holding only the columns it checks, and validates
it with a GE suite built here (ephemeral context, pandas data source, whole-dataframe batch definition; the
SQL data source does not work over DuckDB). Checks that need other rows or other tables (an event id seen in
an older load, a batch missing from bronze, identifiers of no profile, identifiers per profile) are computed
in SQL and arrive as columns of that frame, so GE reports them with the offending rows.

- gate_2_silver: `silver.events` rows loaded after `since` (all rows when `since` is None).
- gate_3_gold: one row per profile id of `gold.profiles` or `gold.profile_identifiers` (full outer join
  with the identifiers aggregated per profile in SQL).

Great Expectations is imported inside `run_gate` (the import costs ~3 s), so importing this module is cheap.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx

GATE_2 = "gate_2_silver"
GATE_3 = "gate_3_gold"
GATES = (GATE_2, GATE_3)

SOURCES = ("web", "app", "salesforce", "email", "whatsapp")
BRONZE_TABLES = tuple(f"bronze.brz_{source}__records" for source in SOURCES)
EVENT_COLUMNS = (
    "event_id",
    "source",
    "event_type",
    "occurred_at",
    "received_at",
    "landed_at",
    "batch_id",
    "record_key",
)
EVENT_REQUIRED = ("event_id", "source", "event_type", "occurred_at", "received_at", "landed_at", "batch_id")
# pandas dtypes a DuckDB TIMESTAMP / TIMESTAMPTZ column arrives as (any unit).
DATETIME_TYPES = ["datetime64", "datetime64[ns]", "datetime64[us]", "datetime64[ms]", "DatetimeTZDtype"]

MIN_COMPLETENESS = 0.6
MIN_MEAN_CONFIDENCE = 0.85
SAMPLE_ROWS = 5

_SITE_NAME = "quality_gates"


class QualityGateError(Exception):
    """A gate cannot run (unknown gate, missing table or column); the message says what is missing."""


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str  # e.g. "expect_column_values_to_not_be_null(event_id)"
    success: bool
    observed: str  # short text of the observed value / unexpected count
    sample_rows: list[dict]  # up to 5 offending rows (or empty)
    # False for a record-level expectation whose failing records are quarantined (gate 1): reported, not blocking
    blocking: bool = True


@dataclass(frozen=True)
class GateResult:
    gate: str  # "gate_2_silver" | "gate_3_gold"
    success: bool
    rows_checked: int
    expectations: list[ExpectationOutcome]
    seconds: float
    docs_path: Path | None  # the GE data docs index.html for this validation, if built

    def failed(self) -> list[ExpectationOutcome]:
        """The failed blocking expectations: the reasons the gate failed."""
        return [outcome for outcome in self.expectations if not outcome.success and outcome.blocking]

    def quarantined(self) -> list[ExpectationOutcome]:
        """The failed record-level expectations: their records are quarantined, the gate still passes."""
        return [outcome for outcome in self.expectations if not outcome.success and not outcome.blocking]

    def summary(self) -> str:
        passed = sum(outcome.success for outcome in self.expectations)
        verdict = "passed" if self.success else "FAILED"
        text = f"{self.gate}: {verdict} {passed}/{len(self.expectations)} expectations on {self.rows_checked:,} rows"
        if not self.success:
            text += " (failed: " + ", ".join(outcome.expectation for outcome in self.failed()) + ")"
        if self.quarantined():
            # "59 payload_is_json_object, 60 missing_required_field": unexpected count and column of each
            text += "; to quarantine: " + ", ".join(
                f"{outcome.observed.split(' unexpected')[0]} {outcome.expectation.partition('(')[2].rstrip(')')}"
                for outcome in self.quarantined()
            )
        return text


# ----------------------------------------------------------------------------------------------------------------
# Suites


def _name(expectation_type: str, column: str) -> str:
    return f"{expectation_type}({column})"


def _named(expectation: Any, why: str, *, blocking: bool = True) -> Any:
    """Give an expectation a stable name (its type and column) and say why it exists.

    `blocking=False`: a record-level expectation whose failing records are quarantined; it does not fail the gate.
    """
    column = getattr(expectation, "column", None) or ",".join(getattr(expectation, "column_list", None) or [])
    expectation.meta = {"name": _name(expectation.expectation_type, column), "why": why, "blocking": blocking}
    return expectation


def gate_2_silver_suite() -> gx.ExpectationSuite:
    """Gate 2 (bronze -> silver) on the new rows of `silver.events`.

    The frame holds the event columns plus two columns computed in SQL: `event_id_seen_before` (the event id
    also exists among rows loaded before `since`) and `batch_id_in_bronze` (the batch id exists in one of the
    `bronze.brz_<source>__records` tables; null when batch_id is null, which the not-null check reports).
    """
    import great_expectations as gx

    ex = gx.expectations
    expectations = [
        _named(ex.ExpectColumnValuesToNotBeNull(column=column), f"{column} is required on every silver event")
        for column in EVENT_REQUIRED
    ]
    expectations += [
        _named(
            ex.ExpectColumnValuesToBeInSet(column="source", value_set=list(SOURCES)),
            "only the five connected sources land in bronze; anything else is a mapping bug",
        ),
        _named(
            ex.ExpectColumnValuesToBeUnique(column="event_id"),
            "event_id is the primary key of silver.events (duplicates are removed before silver)",
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(column="event_id_seen_before", value_set=[False]),
            "an incremental load must not re-insert an event id that an earlier load already wrote",
        ),
        *(
            _named(
                ex.ExpectColumnValuesToBeInTypeList(column=column, type_list=DATETIME_TYPES),
                f"{column} must be a timestamp (watermarks, sessions and recency depend on it)",
            )
            for column in ("occurred_at", "received_at")
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(column="batch_id_in_bronze", value_set=[True]),
            "lineage: every silver row comes from a batch loaded into bronze",
        ),
    ]
    return gx.ExpectationSuite(
        name=GATE_2,
        expectations=expectations,
        meta={"why": "silver.events is the single input of identity resolution and of every gold model"},
    )


def gate_3_gold_suite(max_cluster_size: int = 50) -> gx.ExpectationSuite:
    """Gate 3 (silver -> gold) on one row per profile id of `gold.profiles` / `gold.profile_identifiers`.

    Profile completeness is defined as the share of known profiles (lifecycle_stage <> 'anonymous') that have
    an email or a phone: `has_contact_point` is 1.0 or 0.0 for known profiles and null for anonymous ones (and
    for identifiers of no profile), so its mean is that share; it must be at least 60 %.

    Columns computed in SQL: `profile_exists` (false for a profile_id found only in `gold.profile_identifiers`:
    orphan identifiers) and `cluster_size` (distinct (identifier_type, identifier_value) per profile), whose
    maximum must not exceed `max_cluster_size`.
    """
    import great_expectations as gx

    ex = gx.expectations
    expectations = [
        _named(
            ex.ExpectColumnMeanToBeBetween(column="has_contact_point", min_value=MIN_COMPLETENESS),
            "completeness: at least 60 % of known (non-anonymous) profiles have an email or a phone",
        ),
        _named(
            ex.ExpectColumnMeanToBeBetween(column="identity_confidence", min_value=MIN_MEAN_CONFIDENCE),
            "a low mean confidence means weak links or probabilistic merges dominate the stitching",
        ),
        _named(
            ex.ExpectColumnValuesToBeBetween(column="identity_confidence", min_value=0.0, max_value=1.0),
            "identity_confidence is a probability",
        ),
        _named(
            ex.ExpectColumnValuesToBeInSet(column="profile_exists", value_set=[True]),
            "every row of gold.profile_identifiers belongs to a profile of gold.profiles (no orphan identifiers)",
        ),
        _named(
            ex.ExpectColumnMaxToBeBetween(column="cluster_size", min_value=0, max_value=max_cluster_size),
            f"more than {max_cluster_size} distinct identifiers in one profile is an over-merge "
            "(a shared device or address that merge protection missed)",
        ),
    ]
    return gx.ExpectationSuite(
        name=GATE_3,
        expectations=expectations,
        meta={
            "why": "gold profiles feed activation and reverse ETL: a bad merge or an empty golden record "
            "reaches customers"
        },
    )


# ----------------------------------------------------------------------------------------------------------------
# Frames read from DuckDB


def _require(con: duckdb.DuckDBPyConnection, gate: str, needs: dict[str, tuple[str, ...]]) -> None:
    """Raise QualityGateError naming the first missing table or column."""
    rows = con.execute(
        "select table_schema || '.' || table_name, column_name from information_schema.columns "
        "where table_catalog = current_database()"
    ).fetchall()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    for table, wanted in needs.items():
        if table not in columns:
            raise QualityGateError(f"{gate} needs table {table}, which does not exist in this warehouse")
        missing = [column for column in wanted if column not in columns[table]]
        if missing:
            raise QualityGateError(f"{gate} needs column(s) {', '.join(missing)} of table {table}")


def _naive_utc(since: datetime) -> datetime:
    """Warehouse timestamps are naive UTC; an aware `since` is converted to that."""
    return since if since.tzinfo is None else since.astimezone(UTC).replace(tzinfo=None)


def _gate_2_frame(con: duckdb.DuckDBPyConnection, since: datetime | None) -> pd.DataFrame:
    _require(
        con,
        GATE_2,
        {"silver.events": (*EVENT_COLUMNS, "bronze_loaded_at"), **{table: ("batch_id",) for table in BRONZE_TABLES}},
    )
    columns = ", ".join(EVENT_COLUMNS)
    params: dict[str, Any] | None
    bronze = " union all ".join(
        f"select batch_id from {table} where batch_id in (select batch_id from new)" for table in BRONZE_TABLES
    )
    if since is None:
        new = f"select {columns} from silver.events"
        seen_before = "false"
        params = None
    else:
        new = f"select {columns} from silver.events where bronze_loaded_at > $since"
        # event ids of the new rows that an earlier load already wrote (rows not loaded after `since`)
        seen_before = (
            "coalesce(event_id in (select event_id from silver.events "
            "where not coalesce(bronze_loaded_at > $since, false) and event_id in (select event_id from new)), false)"
        )
        params = {"since": _naive_utc(since)}
    sql = f"""
        with new as ({new}),
        bronze_batches as (select distinct batch_id from ({bronze}))
        select {columns},
            {seen_before} as event_id_seen_before,
            case when batch_id is null then null
                 else batch_id in (select batch_id from bronze_batches) end as batch_id_in_bronze
        from new
    """
    return con.execute(sql, params).df()


def _gate_3_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    _require(
        con,
        GATE_3,
        {
            "gold.profiles": ("profile_id", "lifecycle_stage", "email", "phone", "identity_confidence"),
            "gold.profile_identifiers": ("profile_id", "identifier_type", "identifier_value"),
        },
    )
    sql = """
        with ids as (
            select profile_id,
                count(*) as identifier_rows,
                count(distinct (identifier_type, identifier_value)) as cluster_size
            from gold.profile_identifiers
            group by profile_id
        )
        select coalesce(p.profile_id, i.profile_id) as profile_id,
            p.lifecycle_stage,
            case when p.profile_id is null or p.lifecycle_stage = 'anonymous' then null
                 when nullif(trim(p.email), '') is not null or nullif(trim(p.phone), '') is not null then 1.0
                 else 0.0 end as has_contact_point,
            p.identity_confidence,
            p.profile_id is not null as profile_exists,
            coalesce(i.cluster_size, 0) as cluster_size,
            coalesce(i.identifier_rows, 0) as identifier_rows
        from gold.profiles as p
        full outer join ids as i on i.profile_id = p.profile_id
    """
    return con.execute(sql).df()


# Rows to show for aggregate expectations (GE reports no unexpected rows for a mean or a max).
_AGGREGATE_SAMPLES: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    _name("expect_column_mean_to_be_between", "has_contact_point"): lambda df: df[df["has_contact_point"] == 0.0],
    _name("expect_column_mean_to_be_between", "identity_confidence"): lambda df: df.nsmallest(
        SAMPLE_ROWS, "identity_confidence"
    ),
}


def _cluster_sample(max_cluster_size: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def sample(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["cluster_size"] > max_cluster_size].nlargest(SAMPLE_ROWS, "cluster_size")

    return sample


# ----------------------------------------------------------------------------------------------------------------
# Results


def _plain(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        try:
            return _plain(value.item())
        except (ValueError, TypeError):
            return value
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [
        {column: _plain(value) for column, value in row.items()} for row in frame.head(SAMPLE_ROWS).to_dict("records")
    ]


def _short(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "no values"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _observed(result: dict[str, Any]) -> str:
    if "unexpected_count" in result:
        text = f"{result['unexpected_count']:,} unexpected of {result.get('element_count', 0):,}"
        values = [v for v in map(_plain, result.get("partial_unexpected_list") or []) if not isinstance(v, bool | None)]
        if values:
            shown = ", ".join(repr(_plain(v)) for v in dict.fromkeys(values[:20]))
            text += f" (e.g. {shown[:80]})"
        return text
    if "observed_value" in result:
        return _short(result["observed_value"])
    return ""


def _outcome(
    validation: Any,
    frame: pd.DataFrame,
    samples: dict[str, Callable[[pd.DataFrame], pd.DataFrame]],
) -> ExpectationOutcome:
    config = validation.expectation_config
    name = (config.meta or {}).get("name") or _name(config.type, config.kwargs.get("column", ""))
    blocking = bool((config.meta or {}).get("blocking", True))
    result = validation.result or {}
    exception = (validation.exception_info or {}).get("exception_message") if validation.exception_info else None
    if exception:
        return ExpectationOutcome(name, False, f"error: {str(exception)[:200]}", [], blocking)
    observed = _observed(result)
    rows: list[dict] = []
    if not validation.success:
        index = result.get("partial_unexpected_index_list") or result.get("unexpected_index_list") or []
        if index:
            rows = _records(frame.loc[list(index)[:SAMPLE_ROWS]])
        elif name in samples:
            rows = _records(samples[name](frame))
    return ExpectationOutcome(name, bool(validation.success), observed, rows, blocking)


# ----------------------------------------------------------------------------------------------------------------
# Running a gate


def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _validate(
    gate: str,
    suite: gx.ExpectationSuite,
    frame: pd.DataFrame,
    docs_dir: Path | None,
) -> tuple[Any, Path | None]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas(name="warehouse")
        .add_dataframe_asset(name=gate)
        .add_batch_definition_whole_dataframe(name="whole_frame")
    )
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=gate, data=batch_definition, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(
            site_name=_SITE_NAME,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[_SITE_NAME]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=gate,
            validation_definitions=[definition],
            actions=actions,
            # SUMMARY: counts plus the first 20 unexpected values and row indexes; COMPLETE would carry every
            # unexpected row (and render it into the data docs).
            result_format={"result_format": "SUMMARY", "return_unexpected_index_query": False},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (validation_result,) = result.run_results.values()
    docs_path = None
    if docs_dir is not None and (docs_dir / "index.html").exists():
        docs_path = docs_dir / "index.html"
    return validation_result, docs_path


def run_gate(
    gate: str,
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime | None = None,
    docs_dir: Path | None = None,
    max_cluster_size: int = 50,
) -> GateResult:
    """Run quality gate `gate` ("gate_2_silver" or "gate_3_gold") on the warehouse behind `con`.

    `since`: gate 2 checks only the silver.events rows with bronze_loaded_at > since (all rows when None);
    gate 3 ignores it. `docs_dir`: write GE data docs there and return their index.html; the site is rebuilt
    from this validation alone (an ephemeral context keeps no history), so give each gate its own directory.
    `max_cluster_size`: gate 3's limit on distinct identifiers per profile. The caller owns `con` (read-only is
    fine).
    """
    if gate not in GATES:
        raise ValueError(f"unknown quality gate {gate!r}; gates: {', '.join(GATES)}")
    started = time.perf_counter()
    samples = dict(_AGGREGATE_SAMPLES)
    if gate == GATE_2:
        frame = _gate_2_frame(con, since)
    else:
        frame = _gate_3_frame(con)
        samples[_name("expect_column_max_to_be_between", "cluster_size")] = _cluster_sample(max_cluster_size)

    _quiet_gx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = gate_2_silver_suite() if gate == GATE_2 else gate_3_gold_suite(max_cluster_size)
        validation_result, docs_path = _validate(gate, suite, frame, Path(docs_dir) if docs_dir else None)

    order = {expectation.meta["name"]: position for position, expectation in enumerate(suite.expectations)}
    outcomes = [_outcome(result, frame, samples) for result in validation_result.results]
    outcomes.sort(key=lambda outcome: order.get(outcome.expectation, len(order)))
    return GateResult(
        gate=gate,
        success=all(outcome.success or not outcome.blocking for outcome in outcomes),
        rows_checked=len(frame),
        expectations=outcomes,
        seconds=time.perf_counter() - started,
        docs_path=docs_path,
    )
