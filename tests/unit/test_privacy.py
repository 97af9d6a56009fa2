"""The privacy building blocks: normalization like dbt's, forms, the ledger, suppression at landing, and the sweep
failing (and the request with it) when something of the subject is still there."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.landing import LandingZone, Records
from orchestration.privacy.erasure import run_erasure
from orchestration.privacy.ledger import Ledger, LedgerError
from orchestration.privacy.stores import (
    Erasure,
    PipelineFilesStore,
    WarehouseStore,
    register_store,
    unregister_store,
)
from orchestration.privacy.subject import (
    Subject,
    SubjectError,
    normalize_email,
    normalize_identifier,
    normalize_phone,
    phone_forms,
    resolve_subject,
    token_forms,
)
from orchestration.privacy.suppression import match_payloads, read_ingestion_log
from orchestration.settings import Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CDP_HOME", str(tmp_path))
    monkeypatch.delenv("CDP_PRIVACY_PATH", raising=False)
    monkeypatch.setenv("CDP_LANDING_PATH", str(tmp_path / "landing"))
    monkeypatch.setenv("CDP_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("CDP_TARGET", "duckdb")
    return tmp_path


def test_normalization_follows_the_dbt_macros() -> None:
    assert normalize_email("  Max.Mustermann@Example.COM ") == "max.mustermann@example.com"
    assert normalize_email("max@localhost") is None and normalize_email("a b@x.de") is None
    assert normalize_phone("0151 2345 6789") == "+4915123456789"          # national: default +49, trunk 0
    assert normalize_phone("+49 (0)30 1234567") == "+49301234567"          # the "(0)" of German numbers
    assert normalize_phone("0049-151/23456789") == "+4915123456789"        # international prefix 00
    assert normalize_phone("whatsapp:+4915123456789") == "+4915123456789"
    assert normalize_phone("12345") is None
    assert normalize_identifier("profile_id", " prf_abc ") == "prf_abc"
    with pytest.raises(SubjectError):
        normalize_identifier("email", "not-an-email")
    with pytest.raises(SubjectError):
        normalize_identifier("phone", "call me")


def test_normalization_matches_the_warehouse_sql() -> None:
    """The Python rules give what dbt's macros give on the same inputs (compiled SQL of normalize_email/phone)."""
    con = duckdb.connect()
    for raw in ("  Max@Example.COM ", "x@y", "+49 (0)30 1234567", "0151 2345 6789", "0049151234567", "030-12"):
        email_sql = con.execute(
            "select case when regexp_full_match(lower(trim(?)), '[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+') "
            "then lower(trim(?)) end", [raw, raw]).fetchone()[0]
        assert normalize_email(raw) == email_sql, raw
        digits = con.execute("select translate(replace(replace(replace(lower(trim(?)), 'whatsapp:', ''), 'tel:', ''), "
                             "'(0)', ''), ' -./()', '')", [raw]).fetchone()[0]
        candidate = ("+" + digits[2:] if digits.startswith("00") else digits if digits.startswith("+")
                     else "+49" + digits[1:] if digits.startswith("0") else None)
        phone_sql = candidate if candidate and con.execute(
            "select regexp_full_match(?, '\\+[1-9][0-9]{7,14}')", [candidate]).fetchone()[0] else None
        assert normalize_phone(raw) == phone_sql, raw


def test_forms_recognize_every_way_a_phone_or_email_is_written() -> None:
    forms = phone_forms("+4915123456789")
    assert forms == {"4915123456789", "015123456789", "15123456789"}
    assert token_forms("0151 2345 6789") & forms                  # German national
    assert token_forms("whatsapp:+49 151 23456789") & forms       # Twilio From
    assert token_forms("004915123456789") & forms
    assert "4915123456789" in phone_forms("+4915123456789")       # WaId
    assert phone_forms("+12125550123") >= {"12125550123", "2125550123"}  # no trunk prefix in the US
    assert token_forms(" Max@Example.com") == {"max@example.com"}
    payloads = pa.array([
        json.dumps({"traits": {"email": "MAX@example.com", "phone": "0151 2345 6789"}}),
        json.dumps({"From": "whatsapp:+4915123456789", "Body": "hi"}),
        json.dumps(["003", "0151-23456789"]),                    # a CSV row of the wrong width
        json.dumps({"email": "amax@example.com"}),                # someone else
        '{"email": "max@example.com", "trunc',                    # truncated JSON
    ], pa.large_string())
    assert set(match_payloads(payloads, forms | {"max@example.com"})) == {0, 1, 2, 4}


def test_ledger_forgets_the_raw_identifier_when_the_request_ends(home: Path) -> None:
    ledger = Ledger()
    request = ledger.create_request("email", "Max@Example.com", "dpo", "ticket 1")
    assert request.status == "pending" and request.pending_subject == "Max@Example.com"
    assert request.subject_hash == ledger.subject_hash("email", " max@example.com")  # same subject, same hash
    assert ledger.start(request.id, "run-1") == "Max@Example.com"
    done = ledger.finish(request.id, status="erased", rows_per_store={"landing": {"rows": 1}})
    assert done.status == "erased" and done.pending_subject is None and done.finished_at
    with pytest.raises(LedgerError):
        ledger.start(request.id, "run-2")
    assert b"max@example.com" not in (home / "var" / "privacy" / "ledger.sqlite").read_bytes().lower()
    with pytest.raises(SubjectError):
        ledger.create_request("phone", "no number", "dpo")


def test_suppressed_records_are_dropped_at_landing_and_counted(home: Path) -> None:
    Ledger().add_suppressions("fgt_test", phone_forms("+4915123456789") | {"max@example.com"})
    zone = LandingZone(home / "landing")
    records = Records.from_lists([
        json.dumps({"event_id": "1", "traits": {"email": "someone@else.org"}}),
        json.dumps({"event_id": "2", "traits": {"email": "Max@Example.com"}}),
        json.dumps({"event_id": "3", "From": "whatsapp:+49 151 23456789"}),
        json.dumps({"event_id": "4", "anonymous_id": "anon_x"}),
    ])
    batch = zone.land("web", "b" * 32, "clicks.ndjson", records)
    table = pq.read_table(batch.path)
    assert batch.records == 2 and table.column("position").to_pylist() == [0, 3]  # positions kept
    assert [json.loads(p)["event_id"] for p in table.column("payload").to_pylist()] == ["1", "4"]
    (entry,) = read_ingestion_log()
    assert entry["batch_id"] == "b" * 32 and entry["suppressed"] == 2 and entry["source"] == "web"
    text = (home / "var" / "privacy" / "suppressed_at_ingestion.jsonl").read_text()
    assert "example.com" not in text.lower() and "2345" not in text


def _warehouse(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema gold; create schema silver")
        con.execute("create table gold.profile_identifiers (profile_id varchar, identifier_type varchar, "
                    "identifier_value varchar, identifier_key varchar)")
        con.execute("insert into gold.profile_identifiers values "
                    "('prf_1', 'email', 'max@example.com', 'email:max@example.com'), "
                    "('prf_1', 'device_id', 'dev_1', 'device_id:dev_1'), "
                    "('prf_2', 'email', 'amax@example.com', 'email:amax@example.com')")
        con.execute("create table silver.notes (record_key varchar, note varchar, payload json)")
        con.execute("""insert into silver.notes values ('b1:0', 'seen dev_1 today', '{"x": 1}'),
            ('b1:1', 'nothing', '{"email": "amax@example.com"}'), ('b1:2', 'x', '{"device": "dev_10"}')""")


def test_warehouse_sweep_reports_a_planted_row(home: Path) -> None:
    settings = Settings.from_env()
    _warehouse(settings.warehouse_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        subject = resolve_subject(con, "email", "MAX@example.com")
    assert subject.profile_ids == {"prf_1"} and ("device_id", "dev_1") in subject.identifiers
    store = WarehouseStore(settings)
    # the erasure deletes by equality (the landing store names content matches by record key; none here) ...
    erasure = store.erase(subject, print)
    assert erasure.detail == {"gold.profile_identifiers": 2}
    # ... so the sweep's whole-word search finds the note that mentions dev_1, and repair deletes it
    findings = store.sweep(subject, print)
    assert findings == {"silver.notes": 1}
    assert store.repair(subject, findings, print).detail == {"silver.notes": 1}  # dev_10 and amax@ stay
    assert "b1:0" in subject.record_keys  # found by content: the landing zone erases it too
    assert store.sweep(subject, print) == {}
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("""insert into silver.notes values ('b9:9', 'late', '{"email": "max@example.com"}')""")
    assert store.sweep(subject, print) == {"silver.notes": 1}


class _RacingWriter:
    """A store whose 'erasure' writes the subject back into the warehouse: what a writer racing the job would do."""

    name = "racing_writer"

    def __init__(self, settings: Settings) -> None:
        self.path = settings.warehouse_path

    def erase(self, subject: Subject, progress: object) -> Erasure:
        with duckdb.connect(str(self.path)) as con:
            con.execute("""insert into silver.notes values ('b9:9', 'late', '{"email": "max@example.com"}')""")
        return Erasure()

    def sweep(self, subject: Subject, progress: object) -> dict[str, int]:
        return {}


class _StubbornStore:
    """A store that still holds the subject after its erasure and cannot repair it."""

    name = "stubborn"

    def __init__(self, settings: Settings) -> None:
        pass

    def erase(self, subject: Subject, progress: object) -> Erasure:
        return Erasure()

    def sweep(self, subject: Subject, progress: object) -> dict[str, int]:
        return {"stubborn.table": 1}


def test_a_row_written_back_during_the_erasure_is_repaired_before_the_proof(home: Path) -> None:
    settings = Settings.from_env()
    _warehouse(settings.warehouse_path)
    ledger = Ledger()
    request = ledger.create_request("email", "max@example.com", "dpo")
    register_store("racing_writer", _RacingWriter)
    try:
        finished = run_erasure(request.id, "run-x", print, settings=settings, ledger=ledger)
    finally:
        unregister_store("racing_writer")
    assert finished.status == "erased" and finished.sweep_result["clean"]
    # the planted row and the note that mentions dev_1 (equality does not see inside text)
    assert finished.rows_per_store["warehouse"]["repaired"] == {"silver.notes": 2}


def test_request_fails_when_the_sweep_finds_the_subject(home: Path) -> None:
    settings = Settings.from_env()
    _warehouse(settings.warehouse_path)
    ledger = Ledger()
    request = ledger.create_request("email", "max@example.com", "dpo")
    register_store("stubborn", _StubbornStore)
    try:
        finished = run_erasure(request.id, "run-x", print, settings=settings, ledger=ledger)
    finally:
        unregister_store("stubborn")
    assert finished.status == "failed" and finished.pending_subject is None
    assert finished.sweep_result["stores"]["stubborn"] == {"clean": False, "found": {"stubborn.table": 1}}
    assert finished.sweep_result["stores"]["warehouse"]["clean"]
    assert not finished.sweep_result["clean"] and "sweep found" in finished.error
    audit = [json.loads(line) for line in (home / "var" / "privacy" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["status"] == "failed" and "max@example.com" not in json.dumps(audit)


def test_rejected_api_requests_lose_the_subject_lines_only(home: Path) -> None:
    """The API keeps refused requests whole in landing/_rejected (serving/ingest): erasure drops the lines about
    the subject there, like log lines, and the sweep proves it."""
    settings = Settings.from_env()
    rejected = settings.landing_root / "_rejected" / "2026-12-04.ndjson"
    rejected.parent.mkdir(parents=True)
    rejected.write_text('{"reason": "bad", "payload": {"traits": {"email": "max@example.com"}}}\n'
                        '{"reason": "bad", "payload": {"traits": {"email": "amax@example.com"}}}\n')
    subject = Subject("email", "max@example.com", "max@example.com", identifiers={("email", "max@example.com")})
    store = PipelineFilesStore(settings)
    assert store.sweep(subject, print) == {str(rejected): 1}
    assert store.erase(subject, print).rows == 1
    assert store.sweep(subject, print) == {}
    assert "amax@example.com" in rejected.read_text()
