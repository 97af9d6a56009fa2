"""`cdp demo` end to end, as `make demo` runs it: the pipeline builds, and the reverse-ETL syncs deliver to the local
Salesforce, Twilio and SendGrid emulators the demo starts. Read back from the emulators' saved state afterwards:
every payload row of the Salesforce sync is a Contact carrying the CDP fields, the WhatsApp advisor messages went
exactly once to high-intent prospects with WhatsApp consent and to nobody else, and the email lists mirror the
segments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
PEOPLE = 10_000  # what `make demo` runs


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "var" / "landing"),
           "CDP_WAREHOUSE_PATH": str(home / "var" / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster")}
    for inherited in ("CDP_SERVING_PATH", "CDP_PRIVACY_PATH", "SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN",
                      "TWILIO_API_BASE_URL", "SENDGRID_API_KEY", "SENDGRID_API_BASE_URL"):
        env.pop(inherited, None)
    result = subprocess.run([CDP, "demo", "--people", str(PEOPLE)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = home / "var" / "demo" / "emulators"
    return {"out": result.stdout, "warehouse": env["CDP_WAREHOUSE_PATH"],
            **{name: json.loads((states / f"{name}.json").read_text()) for name in ("salesforce", "twilio",
                                                                                      "sendgrid")}}


def query(demo: dict, sql: str) -> list[tuple]:
    with duckdb.connect(demo["warehouse"], read_only=True) as con:
        return con.execute(sql).fetchall()


def test_every_contact_payload_row_is_in_salesforce_with_the_cdp_fields(demo: dict) -> None:
    contacts = {c["CDP_Profile_Id__c"]: c for c in demo["salesforce"]["records"]["Contact"].values()}
    rows = query(demo, "select profile_id, lifecycle_stage, engagement_score, segments, email "
                       "from activation.sync_salesforce_contacts")
    assert len(rows) > 1000 and set(contacts) == {r[0] for r in rows}  # each profile once, nobody else
    for profile_id, stage, score, segments, email in rows:
        contact = contacts[profile_id]
        assert contact["CDP_Lifecycle_Stage__c"] == stage and contact["Email"] == email
        assert (contact["CDP_Engagement_Score__c"] is None) == (score is None)
        if score is not None:
            assert abs(float(contact["CDP_Engagement_Score__c"]) - float(score)) < 0.01
        assert (contact.get("CDP_Segments__c") or None) == (segments or None)
    match = re.search(r"salesforce: ([\d,]+) Contacts carry the CDP fields", demo["out"])
    assert match and int(match.group(1).replace(",", "")) == len(rows)


def test_whatsapp_messages_went_once_to_consenting_high_intent_prospects_only(demo: dict) -> None:
    messages = demo["twilio"]["messages"]
    payload = query(demo, "select phone, profile_id from activation.sync_whatsapp_advisor_intro")
    assert messages, "the demo population has high-intent MBA prospects with WhatsApp consent"
    sent_to = [m["to"] for m in messages]
    assert len(sent_to) == len(set(sent_to))  # exactly one message per person
    assert sorted(sent_to) == sorted(f"whatsapp:{phone}" for phone, _ in payload)
    allowed = {row[0] for row in query(demo, """
        select distinct i.identifier_value
        from gold.profile_identifiers as i
        join gold.consent_current as c on c.profile_id = i.profile_id and c.channel = 'whatsapp' and c.can_contact
        join gold.segment_results as s on s.profile_id = i.profile_id and s.segment = 'high_intent_mba_prospect'
        where i.identifier_type = 'phone'""")}
    assert {to.removeprefix("whatsapp:") for to in sent_to} <= allowed
    assert all(m["content_sid"] and m["from"] == "whatsapp:+14155238886" for m in messages)
    assert re.search(rf"twilio: {len(messages):,} WhatsApp advisor messages", demo["out"])


def test_email_lists_mirror_the_segments(demo: dict) -> None:
    lists = {entry["name"]: set(entry["contact_ids"]) for entry in demo["sendgrid"]["lists"].values()}
    emails_by_id = {contact["id"]: contact["email"] for contact in demo["sendgrid"]["contacts"]}
    expected: dict[str, set[str]] = {}
    for segment, email in query(demo, "select segment, email from activation.sync_email_segment_lists"):
        expected.setdefault(f"CDP: {segment}", set()).add(email)
    assert expected and {name: {emails_by_id[c] for c in ids} for name, ids in lists.items()} == expected
    assert "CDP: email_suppressed" not in lists  # a segment of people not to mail is no email audience
