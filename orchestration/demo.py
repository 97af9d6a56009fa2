"""The demo's destinations: local Salesforce, Twilio and SendGrid servers, and what the syncs delivered to them.

`cdp demo` has no real CRM, messaging or email account, so it starts the emulators of `emulators/` as separate
processes (`python -m emulators.<name>`, never imported here: production code does not know it talks to an
emulator) and points the destinations at them with the same environment variables a deployment sets
(SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, TWILIO_* with TWILIO_API_BASE_URL, SENDGRID_* with
SENDGRID_API_BASE_URL). The credentials below are the emulators' documented demo defaults. Their state is kept in
var/demo/emulators/*.json while the demo runs and stopped with it.

After the run, `print_synced` reads back through the same real clients what arrived: Contacts with the CDP fields,
WhatsApp messages, email lists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from orchestration.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EMULATORS = ("salesforce", "twilio", "sendgrid")
SALESFORCE_TOKEN = "00D000000000001!emulator"
TWILIO_ACCOUNT_SID = "ACc0ffee00000000000000000000000001"
TWILIO_AUTH_TOKEN = "emulator-auth-token"
TWILIO_FROM_WHATSAPP = "whatsapp:+14155238886"
SENDGRID_API_KEY = "SG.emulator.demo-key"
START_SECONDS = 30


class DemoError(RuntimeError):
    """A local destination server did not start."""


def _start(name: str, state_dir: Path) -> tuple[subprocess.Popen[str], str]:
    state = state_dir / f"{name}.json"
    state.unlink(missing_ok=True)  # a demo starts empty, like its warehouse
    process = subprocess.Popen(
        [sys.executable, "-m", f"emulators.{name}", "--port", "0", "--state-file", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert process.stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_SECONDS)
    line = first[0].strip() if first else ""
    if " listening on " not in line:
        process.kill()
        raise DemoError(f"the {name} emulator did not start: {line or 'no output in 30 s'}")
    # keep draining its output so a chatty emulator never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    return process, line.rsplit(" ", 1)[1]


@contextmanager
def local_destinations(settings: Settings) -> Iterator[dict[str, str]]:
    """Start the three emulators, export the destinations' environment variables for this process (and the Dagster
    run in it), yield them, then stop the emulators and restore the environment."""
    state_dir = settings.home / "var" / "demo" / "emulators"
    state_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[str]] = []
    saved = dict(os.environ)
    try:
        urls = {}
        for name in EMULATORS:
            process, urls[name] = _start(name, state_dir)
            processes.append(process)
        env = {
            "SALESFORCE_INSTANCE_URL": urls["salesforce"], "SALESFORCE_ACCESS_TOKEN": SALESFORCE_TOKEN,
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "TWILIO_FROM_WHATSAPP": TWILIO_FROM_WHATSAPP, "TWILIO_API_BASE_URL": urls["twilio"],
            "SENDGRID_API_KEY": SENDGRID_API_KEY, "SENDGRID_API_BASE_URL": urls["sendgrid"],
            # the demo's prospects live in many time zones: without this, those in their night (21:00-08:00
            # local) would get their message from a later run only, and the demo would show fewer than it sends
            "TWILIO_QUIET_HOURS": "off",
        }
        for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_DOMAIN"):
            os.environ.pop(name, None)  # token mode against the emulator, whatever the shell holds
        os.environ.update(env)
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the emulator saves its state and exits
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _sync_runs(settings: Settings) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        if not con.execute("select count(*) from information_schema.tables where table_schema = 'reverse_etl' "
                           "and table_name = 'sync_runs'").fetchone()[0]:
            return []
        return con.execute("""
            select sync, destination, status, planned_adds + planned_updates + planned_deletes, sent, succeeded,
                failed, api_calls
            from reverse_etl.sync_runs
            where not dry_run
            qualify row_number() over (partition by sync order by started_at desc) = 1
            order by sync
        """).fetchall()


def print_synced(settings: Settings) -> None:
    """What the syncs of this run delivered, from the audit table and read back from each destination."""
    runs = _sync_runs(settings)
    if not runs:
        print("reverse ETL: no sync ran")
        return
    print(f"{'sync':<26}{'destination':<13}{'status':<12}{'planned':>9}{'sent':>9}{'ok':>9}{'failed':>8}{'calls':>7}")
    for sync, destination, status, planned, sent, ok, failed, calls in runs:
        print(f"{sync:<26}{destination:<13}{status:<12}{planned or 0:>9,}{sent or 0:>9,}{ok or 0:>9,}{failed or 0:>8,}"
              f"{calls or 0:>7,}")
    _print_salesforce()
    _print_twilio()
    _print_sendgrid()


def _print_salesforce() -> None:
    from reverse_etl.destinations.salesforce import connect_from_env

    sf = connect_from_env()
    total = sf.query("SELECT COUNT() FROM Contact WHERE CDP_Profile_Id__c != null")["totalSize"]
    sample = sf.query("SELECT CDP_Profile_Id__c, CDP_Lifecycle_Stage__c, CDP_Engagement_Score__c, CDP_Segments__c "
                      "FROM Contact WHERE CDP_Segments__c != null ORDER BY CDP_Engagement_Score__c DESC LIMIT 3")
    print(f"salesforce: {total:,} Contacts carry the CDP fields (CDP_Profile_Id__c, lifecycle stage, engagement "
          "score, segments, consent), e.g.")
    for record in sample["records"]:
        print(f"  {record['CDP_Profile_Id__c']}  stage={record['CDP_Lifecycle_Stage__c']}  "
              f"score={record['CDP_Engagement_Score__c']}  segments={record['CDP_Segments__c']}")


def _print_twilio() -> None:
    from reverse_etl.destinations.twilio import twilio_client

    messages = twilio_client().messages.list(from_=os.environ["TWILIO_FROM_WHATSAPP"], limit=1000)
    print(f"twilio: {len(messages):,} WhatsApp advisor messages to high-intent MBA prospects"
          + (f", e.g. to ***{messages[0].to[-4:]}: {messages[0].body[:90]}..." if messages else "")
          + " (quiet hours off for the demo: TWILIO_QUIET_HOURS=off)")


def _print_sendgrid() -> None:
    from reverse_etl.destinations.email import SendGridClient

    client = SendGridClient.from_env()
    try:
        lists = client.request("GET", "/v3/marketing/lists", params={"page_size": 100}).json()["result"]
    finally:
        client.close()
    print("sendgrid: " + (", ".join(f"{item['name']} ({item['contact_count']:,} contacts)" for item in lists)
                          or "no lists"))
