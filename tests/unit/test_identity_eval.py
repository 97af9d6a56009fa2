"""`cdp eval identity`: pairwise precision / recall / F1 of the profiles against the ground truth, on tiny
hand-computed warehouses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.cli import main
from orchestration.identity_eval import IdentityEvalError, IdentityEvaluation, evaluate_identity

# (source, record_id, person_id, is_resolvable, is_malformed)
TruthRow = tuple[str, str, str, bool, bool]
# (source, event_id, profile_id)
EventRow = tuple[str, str, str | None]


def write_truth(path: Path, rows: list[TruthRow]) -> Path:
    names = ["source", "record_id", "person_id", "is_resolvable", "is_malformed"]
    table = pa.table(
        {name: [row[i] for row in rows] for i, name in enumerate(names)},
        schema=pa.schema([(n, pa.bool_() if n.startswith("is_") else pa.string()) for n in names]),
    )
    pq.write_table(table, path)
    return path


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple | list]) -> None:
    if rows:  # executemany refuses an empty list
        con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", rows)


def write_warehouse(path: Path, events: list[EventRow], identifiers: dict[str, int] | None = None) -> Path:
    """gold.profile_events (a view, as dbt builds it), gold.profiles and gold.profile_identifiers.

    `identifiers`: profile -> number of identifiers; by default one per profile."""
    profiles = {profile for _, _, profile in events if profile is not None}
    identifiers = identifiers if identifiers is not None else dict.fromkeys(sorted(profiles), 1)
    with duckdb.connect(str(path)) as con:
        con.execute("create schema gold")
        con.execute("create table gold.events_table (source varchar, event_id varchar, profile_id varchar)")
        _insert(con, "gold.events_table", events)
        con.execute("create view gold.profile_events as select * from gold.events_table")
        con.execute("create table gold.profiles (profile_id varchar)")
        _insert(con, "gold.profiles", [[p] for p in sorted(profiles | set(identifiers))])
        con.execute("create table gold.profile_identifiers (profile_id varchar, identifier_type varchar, "
                    "identifier_value varchar)")
        rows = [[profile, "email", f"{profile}-{i}@x.org"] for profile, n in identifiers.items() for i in range(n)]
        _insert(con, "gold.profile_identifiers", rows)
    return path


def evaluate(
    tmp_path: Path, truth: list[TruthRow], events: list[EventRow], identifiers: dict[str, int] | None = None
) -> IdentityEvaluation:
    return evaluate_identity(
        write_warehouse(tmp_path / "warehouse.duckdb", events, identifiers),
        write_truth(tmp_path / "ground_truth.parquet", truth),
    )


def resolvable(person: str, *records: str) -> list[TruthRow]:
    return [("web", record, person, True, False) for record in records]


def anonymous(person: str, *records: str) -> list[TruthRow]:
    return [("web", record, person, False, False) for record in records]


def in_profile(profile: str | None, *records: str) -> list[EventRow]:
    return [("web", record, profile) for record in records]


def scores(result: IdentityEvaluation) -> tuple[float, float, float]:
    return result.precision, result.recall, result.f1


def test_a_perfect_resolution_scores_one(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2", "a3") + resolvable("B", "b1", "b2") + resolvable("C", "c1")
    events = in_profile("pA", "a1", "a2", "a3") + in_profile("pB", "b1", "b2") + in_profile("pC", "c1")
    result = evaluate(tmp_path, truth, events)
    assert scores(result) == (1.0, 1.0, 1.0)
    assert (result.true_pairs, result.predicted_pairs, result.true_positive_pairs) == (4, 4, 4)
    assert (result.profiles, result.persons, result.merged_persons, result.split_persons) == (3, 3, 0, 0)
    assert (result.missing_records, result.null_profile_records, result.evaluated_records) == (0, 0, 6)


def test_an_over_merge_costs_precision(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2") + resolvable("B", "b1", "b2")
    result = evaluate(tmp_path, truth, in_profile("p1", "a1", "a2", "b1", "b2"))
    # 6 predicted pairs, 2 of them true (a1-a2, b1-b2); both true pairs found.
    assert (result.true_pairs, result.predicted_pairs, result.true_positive_pairs) == (2, 6, 2)
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == 1.0
    assert result.f1 == pytest.approx(0.5)
    assert (result.merged_persons, result.split_persons) == (1, 0)
    assert result.largest_cluster_persons == 2


def test_a_split_costs_recall(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2", "a3", "a4")
    result = evaluate(tmp_path, truth, in_profile("p1", "a1", "a2") + in_profile("p2", "a3", "a4"))
    # 6 true pairs, 2 predicted, both right.
    assert (result.true_pairs, result.predicted_pairs, result.true_positive_pairs) == (6, 2, 2)
    assert result.precision == 1.0
    assert result.recall == pytest.approx(1 / 3)
    assert result.f1 == pytest.approx(0.5)
    assert (result.merged_persons, result.split_persons) == (0, 1)


def test_records_without_a_profile_are_singletons(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2", "a3") + resolvable("B", "b1") + resolvable("C", "c1")
    # a3, b1 and c1 have no profile: the nulls must not pair with one another.
    events = in_profile("p1", "a1", "a2") + in_profile(None, "a3", "b1", "c1")
    result = evaluate(tmp_path, truth, events)
    assert (result.true_pairs, result.predicted_pairs, result.true_positive_pairs) == (3, 1, 1)
    assert scores(result) == (1.0, pytest.approx(1 / 3), pytest.approx(0.5))
    assert result.null_profile_records == 3 and result.missing_records == 0
    assert result.split_persons == 1  # A: p1 and a record of its own; B and C have one record each
    assert result.merged_persons == 0


def test_records_missing_from_gold_are_counted_and_hurt_recall(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2", "a3") + resolvable("B", "b1", "b2")
    events = in_profile("p1", "a1", "a2") + in_profile("p2", "b1")  # a3 and b2 never made it
    result = evaluate(tmp_path, truth, events)
    assert result.missing_records == 2 and result.null_profile_records == 0
    assert (result.true_pairs, result.predicted_pairs, result.true_positive_pairs) == (4, 1, 1)
    assert scores(result) == (1.0, 0.25, pytest.approx(0.4))
    assert result.split_persons == 2


def test_the_same_record_id_in_another_source_is_another_record(tmp_path: Path) -> None:
    truth = [("web", "x", "A", True, False), ("app", "x", "A", True, False)]
    result = evaluate(tmp_path, truth, [("web", "x", "p1"), ("app", "x", "p2")])
    assert (result.true_pairs, result.predicted_pairs, result.missing_records) == (1, 0, 0)
    assert scores(result) == (1.0, 0.0, 0.0)


def test_anonymous_records_are_counted_apart_and_flagged_in_foreign_profiles(tmp_path: Path) -> None:
    truth = (
        resolvable("A", "a1", "a2")
        + anonymous("B", "b1")  # lands in A's profile: foreign
        + resolvable("C", "c1")
        + anonymous("C", "c2")  # in C's own profile: fine
        + anonymous("D", "d1")  # no profile
        + anonymous("E", "e1")  # missing from gold
    )
    events = in_profile("p1", "a1", "a2", "b1") + in_profile("p2", "c1", "c2") + in_profile(None, "d1")
    result = evaluate(tmp_path, truth, events)
    assert scores(result) == (1.0, 1.0, 1.0)  # anonymous records are not scored pairwise
    assert result.evaluated_records == 3
    assert result.unresolvable_records == 4
    assert result.unresolvable_records_in_foreign_profiles == 1
    assert result.merged_persons == 1  # p1 holds records of A and B
    assert result.split_persons == 0 and result.missing_records == 0
    assert result.persons == 5


def test_malformed_records_are_excluded(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2") + resolvable("B", "b1") + [("web", "bad", "B", True, True)]
    # The malformed record even sits in A's profile: it must change nothing.
    result = evaluate(tmp_path, truth, in_profile("p1", "a1", "a2", "bad") + in_profile("p2", "b1"))
    assert result.malformed_records == 1 and result.truth_records == 4
    assert scores(result) == (1.0, 1.0, 1.0)
    assert (result.merged_persons, result.evaluated_records) == (0, 3)


def test_cluster_sizes_come_from_the_profile_identifiers(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2") + resolvable("B", "b1") + anonymous("C", "c1") + resolvable("D", "d1")
    events = in_profile("big", "a1", "a2", "b1", "c1") + in_profile("small", "d1")
    result = evaluate(tmp_path, truth, events, identifiers={"big": 5, "small": 1, "bare": 0})
    assert (result.largest_cluster, result.largest_cluster_profile_id, result.largest_cluster_persons) == (5, "big", 3)
    stats = result.identifiers_per_profile
    assert result.profiles == 3
    assert (stats.mean, stats.p50, stats.p99, stats.max) == (2.0, 1, 5, 5)


def test_repeated_events_in_gold_are_counted_once(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2")
    result = evaluate(tmp_path, truth, in_profile("p1", "a1", "a2", "a2"))
    assert result.duplicate_events == 1
    assert (result.true_pairs, result.predicted_pairs, result.evaluated_records) == (1, 1, 2)


def test_empty_gold_counts_every_record_missing(tmp_path: Path) -> None:
    result = evaluate(tmp_path, resolvable("A", "a1", "a2"), [])
    assert result.missing_records == 2 and result.profiles == 0 and result.largest_cluster == 0
    assert scores(result) == (1.0, 0.0, 0.0)
    assert result.largest_cluster_profile_id is None


def test_as_dict_and_text_report(tmp_path: Path) -> None:
    truth = resolvable("A", "a1", "a2") + resolvable("B", "b1", "b2")
    result = evaluate(tmp_path, truth, in_profile("p1", "a1", "a2", "b1", "b2"))
    data = result.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert (data["precision"], data["recall"], data["f1"]) == (0.333333, 1.0, 0.5)
    assert (data["profiles"], data["persons"], data["largest_cluster"]) == (1, 2, 1)
    text = result.format_text()
    assert "precision" in text and "0.333333" in text and "merged profiles" in text


# --- errors -------------------------------------------------------------------------------------

def test_a_missing_truth_file_is_explained(tmp_path: Path) -> None:
    warehouse = write_warehouse(tmp_path / "w.duckdb", [])
    with pytest.raises(IdentityEvalError, match="no ground truth at"):
        evaluate_identity(warehouse, tmp_path / "nope.parquet")


def test_an_unreadable_truth_file_is_explained(tmp_path: Path) -> None:
    warehouse = write_warehouse(tmp_path / "w.duckdb", [])
    broken = tmp_path / "ground_truth.parquet"
    broken.write_text("not parquet")
    with pytest.raises(IdentityEvalError, match="cannot read the ground truth"):
        evaluate_identity(warehouse, broken)


def test_a_truth_without_the_columns_is_explained(tmp_path: Path) -> None:
    warehouse = write_warehouse(tmp_path / "w.duckdb", [])
    truth = tmp_path / "ground_truth.parquet"
    pq.write_table(pa.table({"source": ["web"], "record_id": ["a"], "person_id": ["A"]}), truth)
    with pytest.raises(IdentityEvalError, match="has no column is_resolvable, is_malformed"):
        evaluate_identity(warehouse, truth)


def test_a_missing_warehouse_says_run_first(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "ground_truth.parquet", resolvable("A", "a1"))
    with pytest.raises(IdentityEvalError, match=r"no warehouse at .*: run `cdp run` first"):
        evaluate_identity(tmp_path / "warehouse.duckdb", truth)


def test_a_warehouse_without_gold_says_run(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "ground_truth.parquet", resolvable("A", "a1"))
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema silver; create table silver.events (event_id varchar)")
    with pytest.raises(IdentityEvalError, match=r"^the warehouse has no gold.profile_events: run `cdp run`$"):
        evaluate_identity(warehouse, truth)


def test_a_locked_warehouse_is_explained(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "ground_truth.parquet", resolvable("A", "a1"))
    warehouse = write_warehouse(tmp_path / "warehouse.duckdb", in_profile("p1", "a1"))
    holder = subprocess.Popen(  # a writer, as a running pipeline would be
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(warehouse)!r}); print('ready'); "
                               "sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(IdentityEvalError, match="locked by a running pipeline"):
            evaluate_identity(warehouse, truth)
    finally:
        holder.communicate(timeout=30)  # closing stdin ends it
    assert evaluate_identity(warehouse, truth).precision == 1.0


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDP_HOME", str(tmp_path))
    monkeypatch.setenv("CDP_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.delenv("CDP_TARGET", raising=False)
    return tmp_path


def test_cli_prints_one_json_object(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = write_truth(cli_env / "ground_truth.parquet", resolvable("A", "a1", "a2") + resolvable("B", "b1", "b2"))
    write_warehouse(cli_env / "warehouse.duckdb", in_profile("p1", "a1", "a2", "b1", "b2"), {"p1": 4})
    assert main(["eval", "identity", "--truth", str(truth), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"precision", "recall", "f1", "profiles", "persons", "largest_cluster"} <= data.keys()
    assert (data["precision"], data["recall"], data["f1"]) == (0.333333, 1.0, 0.5)
    assert (data["profiles"], data["persons"], data["largest_cluster"], data["merged_persons"]) == (1, 2, 4, 1)


def test_cli_prints_a_text_report_and_accepts_the_generated_folder(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_truth(cli_env / "ground_truth.parquet", resolvable("A", "a1", "a2"))
    write_warehouse(cli_env / "warehouse.duckdb", in_profile("p1", "a1", "a2"))
    assert main(["eval", "identity", "--truth", str(cli_env)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "1.000000" in out


def test_cli_errors_are_one_line(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = write_truth(cli_env / "ground_truth.parquet", resolvable("A", "a1"))
    assert main(["eval", "identity", "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cdp: error: no warehouse at") and "run `cdp run` first" in err
    assert err.count("\n") == 1


def test_cli_refuses_a_non_duckdb_target(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = write_truth(cli_env / "ground_truth.parquet", resolvable("A", "a1"))
    monkeypatch.setenv("CDP_TARGET", "bigquery")
    assert main(["eval", "identity", "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cdp: error: eval identity reads the embedded DuckDB warehouse") and "bigquery" in err


def test_cli_requires_the_truth(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "identity"])
    assert exit_info.value.code == 2
    assert "--truth" in capsys.readouterr().err
