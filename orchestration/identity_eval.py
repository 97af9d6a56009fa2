"""How well the resolved profiles match the people the generator simulated.

The generator writes `ground_truth.parquet` (source, record_id, person_id, is_resolvable, is_malformed); the
warehouse holds `gold.profile_events` (source, event_id, profile_id). Joining the two on (source, record_id)
gives, for every record, the profile it was resolved to and the person it really belongs to.

- Pairwise scores over the resolvable, well-formed records: a pair of records is predicted when both sit in
  the same profile and true when both belong to the same person. A record without a profile (no usable
  identifier) or missing from `gold.profile_events` is a singleton: it predicts no pair.
- Anonymous-only records (not resolvable) are not scored pairwise; what matters is that they do not land in
  a profile that holds another person's records. A profile holding records of several persons is merged
  whether those records are resolvable or not; a person is split when their resolvable records span
  several profiles (a record without a profile counting as one of its own).
- Malformed records are left out (they are counted).

Everything heavy runs in DuckDB: one join of the truth with the events, aggregated to one row per
(profile, person); every figure is then read off that much smaller table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

TRUTH_COLUMNS = ("source", "record_id", "person_id", "is_resolvable", "is_malformed")
GOLD_RELATIONS = ("profile_events", "profiles", "profile_identifiers")


class IdentityEvalError(Exception):
    """The evaluation cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class IdentifierStats:
    mean: float
    p50: int
    p99: int
    max: int


@dataclass(frozen=True)
class IdentityEvaluation:
    truth: Path
    warehouse: Path
    truth_records: int
    persons: int
    malformed_records: int
    evaluated_records: int  # resolvable and well formed: the pairwise population
    missing_records: int  # evaluated records that are not in gold.profile_events
    null_profile_records: int  # evaluated records in gold.profile_events without a profile
    true_pairs: int
    predicted_pairs: int
    true_positive_pairs: int
    profiles: int
    merged_persons: int  # profiles holding well-formed records (resolvable or not) of more than one person
    split_persons: int  # persons whose resolvable records span more than one profile (or singleton)
    unresolvable_records: int
    unresolvable_records_in_foreign_profiles: int
    largest_cluster: int  # identifiers of the profile with the most identifiers
    largest_cluster_profile_id: str | None
    largest_cluster_persons: int  # distinct persons among the records of that profile
    identifiers_per_profile: IdentifierStats
    duplicate_events: int = 0  # extra rows of gold.profile_events for records of the truth (should be 0)
    seconds: float = field(default=0.0, compare=False)

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, floats rounded to 6 decimals."""
        stats = self.identifiers_per_profile
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "profiles": self.profiles,
            "persons": self.persons,
            "largest_cluster": self.largest_cluster,
            "largest_cluster_profile_id": self.largest_cluster_profile_id,
            "largest_cluster_persons": self.largest_cluster_persons,
            "identifiers_per_profile": {
                "mean": round(stats.mean, 6),
                "p50": stats.p50,
                "p99": stats.p99,
                "max": stats.max,
            },
            "merged_persons": self.merged_persons,
            "split_persons": self.split_persons,
            "true_pairs": self.true_pairs,
            "predicted_pairs": self.predicted_pairs,
            "true_positive_pairs": self.true_positive_pairs,
            "truth_records": self.truth_records,
            "evaluated_records": self.evaluated_records,
            "missing_records": self.missing_records,
            "null_profile_records": self.null_profile_records,
            "malformed_records": self.malformed_records,
            "unresolvable_records": self.unresolvable_records,
            "unresolvable_records_in_foreign_profiles": self.unresolvable_records_in_foreign_profiles,
            "truth": str(self.truth),
            "warehouse": str(self.warehouse),
            "duplicate_events": self.duplicate_events,
            "seconds": round(self.seconds, 3),
        }

    def format_text(self) -> str:
        stats = self.identifiers_per_profile
        sections: list[tuple[str, list[tuple[str, str]]]] = [
            ("pairwise, over resolvable records", [
                ("precision", f"{self.precision:.6f}"),
                ("recall", f"{self.recall:.6f}"),
                ("f1", f"{self.f1:.6f}"),
                ("true pairs", f"{self.true_pairs:,}"),
                ("predicted pairs", f"{self.predicted_pairs:,}"),
                ("correct pairs", f"{self.true_positive_pairs:,}"),
            ]),
            ("records", [
                ("in the truth", f"{self.truth_records:,}"),
                ("resolvable (evaluated)", f"{self.evaluated_records:,}"),
                ("  missing from gold", f"{self.missing_records:,}"),
                ("  without a profile", f"{self.null_profile_records:,}"),
                ("anonymous only", f"{self.unresolvable_records:,}"),
                ("  in a foreign profile", f"{self.unresolvable_records_in_foreign_profiles:,}"),
                ("malformed (excluded)", f"{self.malformed_records:,}"),
                *([("events repeated in gold", f"{self.duplicate_events:,} (each record counted once)")]
                  if self.duplicate_events else []),
            ]),
            ("profiles", [
                ("profiles", f"{self.profiles:,}"),
                ("persons", f"{self.persons:,}"),
                ("merged profiles (>1 person)", f"{self.merged_persons:,}"),
                ("split persons (>1 profile)", f"{self.split_persons:,}"),
                ("identifiers per profile",
                 f"mean {stats.mean:.2f}  p50 {stats.p50:,}  p99 {stats.p99:,}  max {stats.max:,}"),
                ("largest cluster", f"{self.largest_cluster:,} identifiers, {self.largest_cluster_persons:,} "
                                    f"person{'s' if self.largest_cluster_persons != 1 else ''}"
                                    + (f" ({self.largest_cluster_profile_id})"
                                       if self.largest_cluster_profile_id else "")),
            ]),
        ]
        width = max(len(label) for _, rows in sections for label, _ in rows) + 2
        lines = [
            "identity resolution vs ground truth",
            f"  {'truth':<{width}}{self.truth}",
            f"  {'warehouse':<{width}}{self.warehouse}",
        ]
        for title, rows in sections:
            lines += ["", title]
            lines += [f"  {label:<{width}}{value}" for label, value in rows]
        lines += ["", f"evaluated in {self.seconds:.1f} s"]
        return "\n".join(lines)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    if not warehouse.is_file():
        raise IdentityEvalError(f"no warehouse at {warehouse}: run `cdp run` first")
    try:
        return duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise IdentityEvalError(
                f"the warehouse {warehouse} is locked by a running pipeline (or another writer): "
                "retry when it has finished"
            ) from None
        raise IdentityEvalError(f"cannot open the warehouse {warehouse}: {_first_line(error)}") from None
    except duckdb.Error as error:
        raise IdentityEvalError(f"cannot open the warehouse {warehouse}: {_first_line(error)}") from None


def _check_truth(con: duckdb.DuckDBPyConnection, truth: Path) -> None:
    try:
        columns = {row[0] for row in con.execute("describe select * from read_parquet(?)", [str(truth)]).fetchall()}
    except duckdb.Error as error:
        raise IdentityEvalError(f"cannot read the ground truth {truth}: {_first_line(error)}") from None
    missing = [name for name in TRUTH_COLUMNS if name not in columns]
    if missing:
        raise IdentityEvalError(
            f"the ground truth {truth} has no column {', '.join(missing)} (expected {', '.join(TRUTH_COLUMNS)})"
        )


def _check_gold(con: duckdb.DuckDBPyConnection) -> None:
    present = {
        row[0]
        for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'gold'"
        ).fetchall()
    }
    for name in GOLD_RELATIONS:
        if name not in present:
            raise IdentityEvalError(f"the warehouse has no gold.{name}: run `cdp run`")


# One row per (profile, person): every figure below is read off this table. profile_id is null for the
# records that have no profile, and for those missing from gold.profile_events (`missing`). `{events}` is
# gold.profile_events itself (one row per event, the fast path) or, if it repeats an event, a deduplicated
# version of it.
_PAIRS_SQL = """
create or replace temp table profile_person as
with truth as (
    select source, record_id, person_id, coalesce(is_resolvable, false) as is_resolvable
    from read_parquet($truth)
    where not coalesce(is_malformed, false)
)
select e.profile_id,
       t.person_id,
       count(*) filter (where t.is_resolvable) as resolvable,
       count(*) filter (where not t.is_resolvable) as unresolvable,
       count(*) filter (where t.is_resolvable and e.event_id is null) as missing
from truth t
left join {events} e on e.source = t.source and e.event_id = t.record_id
group by all
"""
_EVENTS = "gold.profile_events"
_DEDUPLICATED_EVENTS = (
    "(select source, event_id, min(profile_id) as profile_id from gold.profile_events group by source, event_id)"
)

_PAIR_FIGURES_SQL = """
with resolved as (
    select profile_id, person_id, resolvable as n
    from profile_person
    where profile_id is not null and resolvable > 0
),
per_profile as (
    select sum(n) as n from resolved group by profile_id
),
per_person as (
    select person_id,
           sum(resolvable) as n,
           count(*) filter (where profile_id is not null and resolvable > 0)
             + coalesce(sum(resolvable) filter (where profile_id is null), 0) as clusters
    from profile_person
    where resolvable > 0
    group by person_id
)
select
    (select coalesce(sum(n::hugeint * (n - 1) // 2), 0) from resolved) as true_positive_pairs,
    (select coalesce(sum(n::hugeint * (n - 1) // 2), 0) from per_profile) as predicted_pairs,
    (select coalesce(sum(n::hugeint * (n - 1) // 2), 0) from per_person) as true_pairs,
    (select count(*) filter (where clusters > 1) from per_person) as split_persons,
    (select coalesce(sum(resolvable), 0) from profile_person) as evaluated_records,
    (select coalesce(sum(missing), 0) from profile_person) as missing_records,
    (select coalesce(sum(resolvable - missing) filter (where profile_id is null), 0) from profile_person)
        as null_profile_records
"""

# A profile is merged when it holds well-formed records (resolvable or not) of more than one person.
_MERGED_SQL = """
with merged_profiles as (
    select profile_id from profile_person where profile_id is not null group by profile_id having count(*) > 1
)
select (select count(*) from merged_profiles),
       coalesce(sum(unresolvable), 0),
       coalesce(sum(unresolvable) filter (where profile_id in (select profile_id from merged_profiles)), 0)
from profile_person
"""

_IDENTIFIERS_SQL = """
create or replace temp table identifier_counts as
-- profile_identifiers has a row per identifier and source: count each identifier once
select profile_id, count(distinct identifier_type || ':' || identifier_value) as n
from gold.profile_identifiers group by profile_id
"""

_IDENTIFIER_STATS_SQL = """
with per_profile as (
    select coalesce(c.n, 0) as n from gold.profiles p left join identifier_counts c using (profile_id)
)
select count(*), coalesce(avg(n), 0), coalesce(quantile_disc(n, 0.5), 0), coalesce(quantile_disc(n, 0.99), 0),
       coalesce(max(n), 0)
from per_profile
"""

_TRUTH_FIGURES_SQL = """
select count(*), count(distinct person_id), count(*) filter (where coalesce(is_malformed, false))
from read_parquet($truth)
"""


def evaluate_identity(warehouse: Path, truth: Path) -> IdentityEvaluation:
    """Score the warehouse's profiles against the generator's ground truth (see the module docstring)."""
    start = time.monotonic()
    if truth.is_dir() and (truth / "ground_truth.parquet").is_file():
        truth = truth / "ground_truth.parquet"
    if not truth.is_file():
        raise IdentityEvalError(f"no ground truth at {truth} (the ground_truth.parquet of `cdp generate`)")
    con = _connect(warehouse)
    try:
        _check_truth(con, truth)
        _check_gold(con)
        params = {"truth": str(truth)}
        try:
            truth_records, persons, malformed = con.execute(_TRUTH_FIGURES_SQL, params).fetchone()
            con.execute(_PAIRS_SQL.format(events=_EVENTS), params)
            joined = con.execute("select coalesce(sum(resolvable + unresolvable), 0) from profile_person").fetchone()[0]
            duplicate_events = int(joined) - (truth_records - malformed)
            if duplicate_events:  # gold.profile_events repeats some events: count each record once
                con.execute(_PAIRS_SQL.format(events=_DEDUPLICATED_EVENTS), params)
            (tp, predicted, true_pairs, split, evaluated, missing, null_profile) = con.execute(
                _PAIR_FIGURES_SQL
            ).fetchone()
            merged, unresolvable, in_foreign = con.execute(_MERGED_SQL).fetchone()
            con.execute(_IDENTIFIERS_SQL)
            profiles, mean, p50, p99, max_identifiers = con.execute(_IDENTIFIER_STATS_SQL).fetchone()
            largest = con.execute(
                "select profile_id, n from identifier_counts order by n desc, profile_id limit 1"
            ).fetchone()
            largest_persons = 0
            if largest is not None:
                largest_persons = con.execute(
                    "select count(distinct person_id) from profile_person where profile_id = ?", [largest[0]]
                ).fetchone()[0]
        except duckdb.Error as error:
            raise IdentityEvalError(f"evaluation failed: {_first_line(error)}") from None
    finally:
        con.close()
    return IdentityEvaluation(
        truth=truth,
        warehouse=warehouse,
        truth_records=truth_records,
        persons=persons,
        malformed_records=malformed,
        evaluated_records=int(evaluated),
        missing_records=int(missing),
        null_profile_records=int(null_profile),
        true_pairs=int(true_pairs),
        predicted_pairs=int(predicted),
        true_positive_pairs=int(tp),
        profiles=profiles,
        merged_persons=merged,
        split_persons=split,
        unresolvable_records=int(unresolvable),
        unresolvable_records_in_foreign_profiles=int(in_foreign),
        largest_cluster=largest[1] if largest else 0,
        largest_cluster_profile_id=largest[0] if largest else None,
        largest_cluster_persons=largest_persons,
        identifiers_per_profile=IdentifierStats(mean=float(mean), p50=int(p50), p99=int(p99), max=int(max_identifiers)),
        duplicate_events=duplicate_events,
        seconds=time.monotonic() - start,
    )
