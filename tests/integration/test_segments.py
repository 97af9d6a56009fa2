"""Segments over time: two people land in steps, `dbt build` runs after each step (one of them a
`--full-refresh`, as the nightly reconciliation does), and gold.segment_changes and
gold.segment_memberships must hold exactly the entries and exits those steps imply.

"Now" (cdp.as_of) is the latest event time, so each step's events also move the segment windows:
1. Mia (a CRM inquiry) submits a web form and views the MBA page twice: she enters new_inquiry_no_contact.
2. Mia views it twice more; Noah (an inquiry) submits a form and views it 3 times: both enter
   high_intent_mba_prospect, Noah also new_inquiry_no_contact.
3. `--full-refresh`; Mia is sent an email and unsubscribes: she exits high_intent (consent) and
   new_inquiry (contacted) and enters email_suppressed; the history of steps 1 and 2 is kept.
4. Mia views /fees a week later, which moves "now": Noah's views leave the 7-day window, he exits
   high_intent, and his inquiry is no longer new.
5. Noah views the MBA page 3 times again: he re-enters high_intent, a second stay.
The source files are written here in the formats of docs/sources.md and landed like users land them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from connectors.landing import LandingZone
from connectors.registry import file_source

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

MIA = "mia.keller@posteo.de"
NOAH = "noah.brandt@gmx.de"
CRM_HEADER = [
    "Id", "Email", "Phone", "MobilePhone", "FirstName", "LastName", "Birthdate", "MailingStreet", "MailingCity",
    "MailingState", "MailingPostalCode", "MailingCountry", "Program_Interest__c", "Application_Stage__c",
    "Enrollment_Status__c", "HasOptedOutOfEmail", "CreatedDate", "LastModifiedDate",
]
HIGH_INTENT = "high_intent_mba_prospect"
NEW_INQUIRY = "new_inquiry_no_contact"
SUPPRESSED = "email_suppressed"


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt is not installed")
    return found


# --- source files -------------------------------------------------------------------------------


def crm_contact(contact_id: str, email: str, first: str, last: str, at: str) -> list[str]:
    return [contact_id, email, "", "", first, last, "1995-04-02", "Hauptstraße 1", "Berlin", "", "10115",
            "Germany", "MBA", "Inquiry", "Not Enrolled", "false", at, at]


def web_event(event_id: str, anonymous_id: str, event: str, at: str, path: str,
              traits: dict | None = None, properties: dict | None = None) -> dict:
    return {
        "event_id": event_id, "type": "page" if event == "page_view" else "track", "event": event,
        "anonymous_id": anonymous_id, "session_id": f"sess_{anonymous_id}", "fingerprint": f"fp_{anonymous_id}",
        "timestamp": at, "sent_at": at,
        "page": {"url": f"https://www.northbridge.edu{path}", "path": path, "title": path, "referrer": None},
        "utm": {"source": None, "medium": None, "campaign": None, "term": None, "content": None},
        "user_agent": "Mozilla/5.0", "properties": properties or {}, "traits": traits or {},
    }


def email_event(event_id: str, email: str, event: str, epoch: int) -> dict:
    return {
        "email": email, "timestamp": epoch, "event": event, "sg_event_id": event_id,
        "sg_message_id": "msg-seg-0001.filterdrecv", "smtp-id": "<msg-seg-0001@northbridge.edu>",
        "category": ["nurture"], "marketing_campaign_id": 501, "marketing_campaign_name": "MBA spring nurture",
        "template_id": "d-segments",
    }


def mba_views(prefix: str, anonymous_id: str, times: list[str]) -> list[dict]:
    return [web_event(f"{prefix}-{i}", anonymous_id, "page_view", at, "/mba") for i, at in enumerate(times)]


def form(event_id: str, anonymous_id: str, email: str, at: str) -> dict:
    return web_event(event_id, anonymous_id, "form_submit", at, "/mba", traits={"email": email},
                     properties={"form_id": "request_info", "program": "mba"})


STEPS: list[dict[str, list]] = [
    {  # 1
        "salesforce": [crm_contact("0035g00000SegMiaAA", MIA, "Mia", "Keller", "2026-03-01T08:00:00.000Z")],
        "web": [form("5e000001-0000-4000-8000-000000000001", "anon_seg_mia", MIA, "2026-03-01T09:00:00.000Z"),
                *mba_views("5e000001-0001", "anon_seg_mia", ["2026-03-02T10:00:00.000Z", "2026-03-02T10:05:00.000Z"])],
    },
    {  # 2
        "salesforce": [crm_contact("0035g00000SegNoaAA", NOAH, "Noah", "Brandt", "2026-03-04T08:00:00.000Z")],
        "web": [*mba_views("5e000002-0001", "anon_seg_mia", ["2026-03-05T10:00:00.000Z", "2026-03-05T10:05:00.000Z"]),
                form("5e000002-0000-4000-8000-000000000002", "anon_seg_noah", NOAH, "2026-03-04T09:00:00.000Z"),
                *mba_views("5e000002-0002", "anon_seg_noah",
                           ["2026-03-04T09:10:00.000Z", "2026-03-04T09:20:00.000Z", "2026-03-04T09:30:00.000Z"])],
    },
    {  # 3 (built with --full-refresh)
        "email": [email_event("sg-seg-0001", MIA, "delivered", 1772784000),  # 2026-03-06T08:00:00Z
                  email_event("sg-seg-0002", MIA, "unsubscribe", 1772787600)],  # 2026-03-06T09:00:00Z
    },
    {  # 4
        "web": [web_event("5e000004-0000-4000-8000-000000000001", "anon_seg_mia", "page_view",
                          "2026-03-14T10:00:00.000Z", "/fees")],
    },
    {  # 5
        "web": mba_views("5e000005-0001", "anon_seg_noah",
                         ["2026-03-15T10:00:00.000Z", "2026-03-15T10:10:00.000Z", "2026-03-15T10:20:00.000Z"]),
    },
]
FULL_REFRESH_STEP = 3

# (step, person, segment, change): everything the five runs may record, nothing else
EXPECTED_CHANGES = {
    (1, "mia", NEW_INQUIRY, "enter"),
    (2, "mia", HIGH_INTENT, "enter"),
    (2, "noah", HIGH_INTENT, "enter"),
    (2, "noah", NEW_INQUIRY, "enter"),
    (3, "mia", HIGH_INTENT, "exit"),
    (3, "mia", NEW_INQUIRY, "exit"),
    (3, "mia", SUPPRESSED, "enter"),
    (4, "noah", HIGH_INTENT, "exit"),
    (4, "noah", NEW_INQUIRY, "exit"),
    (5, "noah", HIGH_INTENT, "enter"),
}


def write_step(folder: Path, step: int, records: dict[str, list]) -> dict[str, Path]:
    """One file per source of the step, named after it (a new file is a new landing batch)."""
    files: dict[str, Path] = {}
    for source, rows in records.items():
        if source == "salesforce":
            path = folder / f"contacts-bulk-step{step}.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(CRM_HEADER)
                writer.writerows(rows)
        else:
            path = folder / f"{source}-step{step}.ndjson"
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        files[source] = path
    return files


# --- the runs -----------------------------------------------------------------------------------


def dbt_build(tmp: Path, *extra: str, unit_tests: bool = False) -> None:
    env = {
        **os.environ,
        "CDP_TARGET": "duckdb",
        "CDP_LANDING_PATH": str(tmp / "landing"),
        "CDP_WAREHOUSE_PATH": str(tmp / "warehouse.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    # the segments and everything they are built on, with the data tests (memberships = results included);
    # unit tests only where asked (the first build: they must also work on a warehouse without gold yet)
    args = [
        dbt_executable(), "build", "--no-use-colors", "--profiles-dir", str(ROOT),
        "--target-path", str(tmp / "dbt_target"), "--log-path", str(tmp / "dbt_logs"),
        "--select", "+segment_memberships", "+segment_definitions", "path:dbt_project/models/segments",
        "--indirect-selection", "cautious", *([] if unit_tests else ["--exclude-resource-type", "unit_test"]), *extra,
    ]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"dbt build {' '.join(extra)} failed:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
    )


def query(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def segment_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("segments")
    zone = LandingZone(tmp / "landing")
    sources_dir = tmp / "files"
    sources_dir.mkdir()
    warehouse = tmp / "warehouse.duckdb"
    memberships_before_refresh: list[tuple] = []
    run_ids: list[str] = []
    for step, records in enumerate(STEPS, start=1):
        for source, path in write_step(sources_dir, step, records).items():
            file_source(source, [path]).land(zone)
        if step == FULL_REFRESH_STEP:
            memberships_before_refresh = query(
                warehouse, "select membership_id, segment, profile_id, entered_at from gold.segment_memberships")
        dbt_build(tmp, *(["--full-refresh"] if step == FULL_REFRESH_STEP else []), unit_tests=step == 1)
        new_runs = [r for (r,) in query(warehouse, "select distinct run_id from gold.segment_changes")
                    if r not in run_ids]
        assert len(new_runs) <= 1, f"step {step} recorded changes under several run ids: {new_runs}"
        run_ids.append(new_runs[0] if new_runs else f"(no changes in step {step})")
    people = dict(query(warehouse, f"""
        select case identifier_value when '{MIA}' then 'mia' else 'noah' end, profile_id
        from gold.profile_identifiers
        where identifier_type = 'email' and identifier_value in ('{MIA}', '{NOAH}')
    """))
    return {"warehouse": warehouse, "run_ids": run_ids, "people": people,
            "memberships_before_refresh": memberships_before_refresh}


def test_each_run_records_exactly_the_entries_and_exits(segment_runs: dict) -> None:
    warehouse, run_ids, people = segment_runs["warehouse"], segment_runs["run_ids"], segment_runs["people"]
    assert set(people) == {"mia", "noah"} and people["mia"] != people["noah"]
    person = {profile_id: name for name, profile_id in people.items()}
    step_of = {run_id: step for step, run_id in enumerate(run_ids, start=1)}
    rows = query(warehouse, "select run_id, profile_id, segment, change from gold.segment_changes")
    recorded = [(step_of.get(run_id), person.get(profile_id, profile_id), segment, change)
                for run_id, profile_id, segment, change in rows]
    assert len(recorded) == len(set(recorded)), f"a change was recorded twice: {sorted(recorded)}"
    assert set(recorded) == EXPECTED_CHANGES


def test_changes_are_ordered_in_time_with_the_run(segment_runs: dict) -> None:
    rows = query(segment_runs["warehouse"], """
        select run_id, min(changed_at), max(changed_at), count(distinct as_of)
        from gold.segment_changes group by run_id
    """)
    by_run = {run_id: (first, last, as_ofs) for run_id, first, last, as_ofs in rows}
    times = [by_run[run_id] for run_id in segment_runs["run_ids"] if run_id in by_run]
    assert len(times) == len(STEPS)
    assert all(first == last and as_ofs == 1 for first, last, as_ofs in times)  # one moment per run
    assert [t[0] for t in times] == sorted(t[0] for t in times)


def test_memberships_hold_each_stay_and_survive_the_full_refresh(segment_runs: dict) -> None:
    warehouse, people = segment_runs["warehouse"], segment_runs["people"]
    changed_at = dict(query(warehouse, "select run_id, min(changed_at) from gold.segment_changes group by run_id"))
    at = [changed_at.get(run_id) for run_id in segment_runs["run_ids"]]
    stays = query(warehouse, f"""
        select case profile_id when '{people['mia']}' then 'mia' else 'noah' end, segment, entered_at, exited_at
        from gold.segment_memberships
        order by 1, 2, 3
    """)
    assert stays == [
        ("mia", SUPPRESSED, at[2], None),
        ("mia", HIGH_INTENT, at[1], at[2]),
        ("mia", NEW_INQUIRY, at[0], at[2]),
        ("noah", HIGH_INTENT, at[1], at[3]),
        ("noah", HIGH_INTENT, at[4], None),
        ("noah", NEW_INQUIRY, at[1], at[3]),
    ]
    # the full refresh of step 3 kept every stay of steps 1 and 2 as it was
    kept = {(m, s, p, e) for m, s, p, e in query(
        warehouse, "select membership_id, segment, profile_id, entered_at from gold.segment_memberships")}
    assert set(segment_runs["memberships_before_refresh"]) <= kept
    assert len(segment_runs["memberships_before_refresh"]) == 4


def test_open_memberships_are_the_current_members(segment_runs: dict) -> None:
    warehouse, people = segment_runs["warehouse"], segment_runs["people"]
    current = set(query(warehouse, "select segment, profile_id from gold.segment_results"))
    open_stays = set(query(
        warehouse, "select segment, profile_id from gold.segment_memberships where exited_at is null"))
    assert current == open_stays == {(SUPPRESSED, people["mia"]), (HIGH_INTENT, people["noah"])}
    definitions = dict(query(warehouse, "select segment, members from gold.segment_definitions"))
    assert len(definitions) >= 10
    assert definitions[HIGH_INTENT] == 1 and definitions[SUPPRESSED] == 1 and definitions[NEW_INQUIRY] == 0
