"""`cdp forget` end to end: a generated population is landed and built, one person with identifiers in every source
is forgotten by their email, and then: nothing of them is left in the landing files or any warehouse table, every
other record is untouched, the ledger and the audit hold the proof without the identifiers, a file landed later
with the person's records has them dropped and counted, and the next `cdp run` does not bring the person back.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors.landing import SOURCES

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
PEOPLE = 400

pytestmark = pytest.mark.integration


def cdp(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def query(env: dict[str, str], sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def landing_records(home: Path) -> dict[tuple[str, str, int], str]:
    """(source, batch_id, position) -> payload of every landed record."""
    records = {}
    for source in SOURCES:
        for path in sorted((home / "landing" / source).glob("batch-*.parquet")):
            table = pq.read_table(path, columns=["batch_id", "position", "payload"]).to_pylist()
            records.update({(source, r["batch_id"], r["position"]): r["payload"] for r in table})
    return records


def base_tables(env: dict[str, str]) -> dict[str, int]:
    tables = query(env, "select table_schema || '.' || table_name from information_schema.tables "
                        "where table_type = 'BASE TABLE' order by 1")
    return {t: query(env, f"select count(*) from {t}")[0][0] for (t,) in tables}


def mentions(payload: str, needles: set[str]) -> bool:
    text = payload.lower()
    return any(needle in text for needle in needles)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("forget_home")
    env = {
        **os.environ,
        "CDP_HOME": str(home),
        "CDP_LANDING_PATH": str(home / "landing"),
        "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"),
        "DAGSTER_HOME": str(home / "dagster"),
    }
    env.pop("CDP_PRIVACY_PATH", None)
    generated = home / "generated"
    cdp("generate", "--people", str(PEOPLE), "--seed", "5", "--out", str(generated), env=env)
    cdp("land", str(generated), env=env)
    cdp("run", env=env)

    # The subject: a known person seen in all five sources with an email, a phone, a CRM contact and an app
    # device, and no shared identifier (a family tablet stays its own profile, see docs/identity.md).
    profile_id = query(env, """
        select profile_id from gold.profile_identifiers
        where profile_id in (select profile_id from gold.profiles where not has_shared_identifier)
        group by profile_id
        having count(distinct source) = 5 and count(distinct identifier_type) = 6
        order by count(*) desc, profile_id limit 1""")[0][0]
    identifiers = query(env, "select distinct identifier_type, identifier_value from gold.profile_identifiers "
                             "where profile_id = ?", [profile_id])
    email = next(value for kind, value in identifiers if kind == "email")
    # What the test itself looks for: every identifier, the phone also as WhatsApp digits and as a German
    # national number (the generator writes half the phones that way), lower-cased.
    needles = {value.lower() for _, value in identifiers}
    for kind, value in identifiers:
        if kind == "phone" and value.startswith("+49"):
            needles |= {value[1:], "0" + value[3:]}
    records_before = landing_records(home)
    subject_records = {key for key, payload in records_before.items()
                       if mentions(payload.replace(" ", "").replace("-", ""), needles)}
    assert {source for source, _, _ in subject_records} == set(SOURCES)
    tables_before = base_tables(env)
    profiles_before = query(env, "select count(*) from gold.profiles")[0][0]

    forget = cdp("forget", "--email", f"  {email.upper()} ", "--requested-by", "dpo@northbridge.edu",
                 "--reason", "ticket 4711", env=env)
    request_id = forget.stdout.split()[1].rstrip(":")
    return {
        "home": home, "env": env, "profile_id": profile_id, "identifiers": identifiers, "email": email,
        "needles": needles, "records_before": records_before, "subject_records": subject_records,
        "tables_before": tables_before, "profiles_before": profiles_before, "forget": forget,
        "request_id": request_id,
    }


def test_forget_reports_erased_with_a_clean_sweep(world: dict) -> None:
    out = world["forget"].stdout
    assert f"request {world['request_id']}: erased" in out
    assert "sweep: clean" in out
    # cdp run published a serving snapshot: the store rewrote it without the person (see test_api_snapshot.py)
    assert "serving_snapshot  erased" in out and "destinations      not configured" in out
    status = cdp("forget", "--status", world["request_id"], env=world["env"]).stdout
    assert "erased" in status and "sweep: clean" in status
    for _, value in world["identifiers"]:
        assert value not in out + world["forget"].stderr + status


def test_landing_files_lose_exactly_the_subjects_records(world: dict) -> None:
    after = landing_records(world["home"])
    before = world["records_before"]
    removed = set(before) - set(after)
    assert removed == world["subject_records"]
    # every other record is still there, byte for byte, at its batch and position
    assert all(after[key] == before[key] for key in after)
    assert not any(mentions(payload.replace(" ", "").replace("-", ""), world["needles"]) for payload in after.values())


def test_warehouse_tables_hold_nothing_of_the_subject_and_everything_else(world: dict) -> None:
    env = world["env"]
    after = base_tables(env)
    before = world["tables_before"]
    removed = before["bronze.brz_web__records"] - after["bronze.brz_web__records"]
    assert removed > 0
    for source in SOURCES:  # bronze loses what the landing zone lost, per source
        landed = sum(1 for s, _, _ in world["subject_records"] if s == source)
        assert before[f"bronze.brz_{source}__records"] - after[f"bronze.brz_{source}__records"] == landed, source
    assert after["gold.profiles"] == before["gold.profiles"] - 1
    assert after["gold.profile_identifiers"] < before["gold.profile_identifiers"]
    assert not query(env, "select 1 from gold.profiles where profile_id = ?", [world["profile_id"]])
    # no text column of any table mentions an identifier of the subject
    columns = query(env, "select table_schema, table_name, column_name from information_schema.columns c "
                         "join information_schema.tables t using (table_schema, table_name) "
                         "where t.table_type = 'BASE TABLE' and c.data_type in ('VARCHAR', 'JSON')")
    for schema, table, column in columns:
        needles = " or ".join(f"contains(lower(cast(\"{column}\" as varchar)), '{n}')" for n in world["needles"])
        found = query(env, f'select count(*) from "{schema}"."{table}" where {needles}')[0][0]
        assert found == 0, f"{schema}.{table}.{column}"


def test_ledger_and_audit_keep_the_proof_without_the_identifiers(world: dict) -> None:
    privacy = world["home"] / "var" / "privacy"
    with sqlite3.connect(privacy / "ledger.sqlite") as con:
        con.row_factory = sqlite3.Row
        row = dict(con.execute("select * from requests where id = ?", (world["request_id"],)).fetchone())
    assert row["status"] == "erased" and row["pending_subject"] is None
    assert row["requested_by"] == "dpo@northbridge.edu" and row["finished_at"]
    sweep = json.loads(row["sweep_result"])
    assert sweep["clean"] and set(sweep["stores"]) >= {"warehouse", "landing", "serving_snapshot", "destinations"}
    rows = json.loads(row["rows_per_store"])
    assert rows["landing"]["rows"] == len(world["subject_records"])
    assert world["profile_id"] in json.loads(row["profile_ids"])

    audit = [json.loads(line) for line in (privacy / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["request_id"] == world["request_id"] and audit[-1]["status"] == "erased"
    assert audit[-1]["rows_per_store"]["warehouse"]["rows"] > 0 and audit[-1]["sweep"]["clean"]
    # no raw identifier in any file of the ledger, the audit or Dagster's run history
    files = [p for folder in (privacy, world["home"] / "dagster") for p in folder.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes().lower()
        for needle in world["needles"]:
            assert needle.encode() not in data, f"{needle[:3]}… in {path}"


def test_later_records_of_the_subject_are_suppressed_at_landing_and_the_next_run_keeps_them_out(world: dict) -> None:
    env, home = world["env"], world["home"]
    identifiers = dict(world["identifiers"])
    late = home / "late"
    late.mkdir()
    web = late / "clicks-late.ndjson"
    subject_event = {"event_id": "late-0001", "type": "track", "event": "form_submit", "anonymous_id": "anon_new_1",
                     "timestamp": "2026-06-01T10:00:00Z", "traits": {"email": world["email"].title(),
                                                                     "phone": identifiers["phone"]}}
    stranger = {"event_id": "late-0002", "type": "page", "event": "page_view", "anonymous_id": "anon_stranger_1",
                "timestamp": "2026-06-01T10:00:01Z"}
    web.write_text("\n".join(json.dumps(e) for e in (subject_event, stranger)) + "\n")
    app = late / "events-late.ndjson"
    app.write_text(json.dumps({"event_id": "late-0003", "event_name": "app_open", "device_id": identifiers["device_id"],
                               "timestamp": "2026-06-01T10:00:02Z"}) + "\n")
    cdp("land", "web", str(web), env=env)
    cdp("land", "app", str(app), env=env)

    log = [json.loads(line) for line in (home / "var" / "privacy" / "suppressed_at_ingestion.jsonl")
           .read_text().splitlines()]
    assert [(entry["source"], entry["suppressed"]) for entry in log] == [("web", 1), ("app", 1)]
    landed = landing_records(home)
    new = {key: payload for key, payload in landed.items() if key not in world["records_before"]}
    assert [json.loads(p)["event_id"] for p in new.values()] == ["late-0002"]  # the stranger only
    assert [key[2] for key in new] == [1]  # kept records keep their positions

    cdp("run", env=env)
    assert not query(env, "select 1 from gold.profiles where profile_id = ?", [world["profile_id"]])
    assert query(env, "select count(*) from silver.events where event_id = 'late-0002'")[0][0] == 1
    assert all(r[0] for r in query(env, "select is_reconciled from silver.source_reconciliation"))
    for kind, value in world["identifiers"]:
        assert not query(env, "select 1 from gold.profile_identifiers where identifier_value = ?", [value]), kind
        assert not query(env, "select 1 from silver.events where ? in (email, phone, crm_id, device_id, user_id, "
                              "anonymous_id)", [value]), kind
    assert query(env, "select count(*) from gold.profiles")[0][0] == world["profiles_before"]  # -1 subject, +1 stranger
