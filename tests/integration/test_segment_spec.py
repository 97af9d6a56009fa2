"""Segment-spec messages through silver, identity and gold.

The ingestion API lands every Segment message as received, plus its `receivedAt`, into the `web` source
(or `app` for a screen or a message with context.device.id). Here the hand-written fixtures of
tests/fixtures/segment_spec/ (the shapes segment-analytics-python 2.4 builds) are landed beside native
tracker events of the same person, Lena, and `dbt build` runs twice into a temporary DuckDB:

1. web: a native page view and form submit with her email (and a native record of an unknown type);
   Segment page, "Brochure Downloaded", identify (anonymousId + userId + email + phone), a custom track,
   group, alias, a page without timestamp, the page re-sent by the SDK, five malformed messages.
   app: a native app_open of her phone; Segment "Application Opened", screen, "Lesson Completed".
2. web/later: the consent endpoint's consent_updated track (email in context.traits) and the identify
   delivered again.

Last, a real `segment.analytics.Client` posts to a small local HTTP server that keeps the bodies; those
messages (gunzipped, with receivedAt added) are landed and built: the SDK's real shapes parse.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest

from connectors.landing import LandingZone
from connectors.registry import file_source

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "segment_spec"
WEB_FILE = "segment-2026-03-10.ndjson"
LATER_FILE = "segment-2026-03-12.ndjson"

LENA_EMAIL, LENA_PHONE, LENA_USER = "lena.voss@posteo.de", "+4915111122233", "usr_seg_lena"

pytestmark = pytest.mark.integration


def message_id(n: int) -> str:
    return f"5e9a0000-0000-4000-8000-{n:012d}"


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt is not installed")
    return found


@dataclass
class Warehouse:
    path: Path

    def query(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute(sql, list(params or [])).fetchall()

    def event(self, event_id: str) -> dict:
        with duckdb.connect(str(self.path), read_only=True) as con:
            cursor = con.execute("select * from silver.events where event_id = ?", [event_id])
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        assert len(rows) == 1, f"{event_id}: {rows}"
        row = dict(zip(names, rows[0], strict=True))
        row["properties"] = json.loads(row["properties"])
        return row

    def profile_of(self, identifier_type: str, value: str) -> str:
        rows = self.query(
            "select distinct profile_id from gold.profile_identifiers "
            "where identifier_type = ? and identifier_value = ?",
            [identifier_type, value],
        )
        assert len(rows) == 1, f"{identifier_type}:{value} is in profiles {rows}"
        return rows[0][0]

    def quarantine(self, file_name: str) -> dict[int, tuple[str, bool]]:
        rows = self.query(
            "select position, reason, is_duplicate from silver.quarantine where file_name = ?", [file_name])
        return {position: (reason, is_duplicate) for position, reason, is_duplicate in rows}


@dataclass
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def land(self, source: str, folder: Path) -> None:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        file_source(source, files).land(LandingZone(self.landing))

    def dbt_build(self, *extra: str) -> None:
        env = {
            **os.environ,
            "CDP_HOME": str(self.root),
            "CDP_TARGET": "duckdb",
            "CDP_LANDING_PATH": str(self.landing),
            "CDP_WAREHOUSE_PATH": str(self.warehouse),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        args = [
            dbt_executable(), "build", "--no-use-colors", "--profiles-dir", str(ROOT),
            "--target-path", str(self.root / "dbt_target"), "--log-path", str(self.root / "dbt_logs"),
            "--exclude-resource-type", "unit_test", *extra,
        ]
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"dbt build failed:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"

    def snapshot(self, name: str) -> Warehouse:
        copy = self.root / f"{name}.duckdb"
        shutil.copyfile(self.warehouse, copy)
        return Warehouse(copy)


@dataclass
class Runs:
    first: Warehouse
    second: Warehouse
    landing: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    home = Home(tmp_path_factory.mktemp("segment_spec"))
    home.land("web", FIXTURES / "web")
    home.land("app", FIXTURES / "app")
    home.dbt_build()
    first = home.snapshot("first")
    home.land("web", FIXTURES / "web" / "later")
    home.dbt_build()
    return Runs(first, home.snapshot("second"), home.landing)


def test_segment_messages_become_silver_events_of_the_right_types(runs: Runs) -> None:
    w = runs.first
    expected = {
        1: ("web", "page_view"), 2: ("web", "brochure_download"), 3: ("web", "identify"),
        4: ("web", "custom_event"), 5: ("web", "group"), 6: ("web", "alias"), 7: ("web", "page_view"),
        101: ("app", "screen_view"), 102: ("app", "app_open"), 103: ("app", "lesson_completed"),
    }
    rows = dict(w.query(
        "select event_id, source || ':' || event_type from silver.events where event_id like '5e9a%'"))
    assert rows == {message_id(n): f"{source}:{event_type}" for n, (source, event_type) in expected.items()}
    # native events of both sources still parse beside them
    assert sorted(w.query("select event_type from silver.events where event_id like '7a1e%'")) == [
        ("app_open",), ("form_submit",), ("page_view",)]

    page = w.event(message_id(1))
    assert page["anonymous_id"] == "seg-anon-lena" and page["user_id"] is None
    assert page["occurred_at"] == datetime(2026, 3, 10, 9, 0)
    assert page["received_at"] == datetime(2026, 3, 10, 9, 0, 1, 250000)
    assert page["properties"]["page_path"] == "/mba" and page["properties"]["event_name"] == "MBA"
    assert page["properties"]["utm_campaign"] == "mba_spring"

    brochure = w.event(message_id(2))["properties"]
    assert (brochure["program"], brochure["brochure_id"], brochure["event_name"]) == (
        "mba", "br-mba-2026", "Brochure Downloaded")

    identify = w.event(message_id(3))
    assert (identify["email"], identify["phone"], identify["user_id"], identify["anonymous_id"]) == (
        LENA_EMAIL, LENA_PHONE, LENA_USER, "seg-anon-lena")
    assert (identify["properties"]["first_name"], identify["properties"]["last_name"]) == ("Lena", "Voss")

    custom = w.event(message_id(4))["properties"]
    assert custom["event_name"] == "Course Compared"
    assert custom["segment"]["properties"] == {"courses": ["mba", "msc-finance"], "tab": "fees"}

    group = w.event(message_id(5))
    assert group["properties"]["segment"]["group_id"] == "org_alumni_network"

    alias = w.event(message_id(6))
    assert (alias["anonymous_id"], alias["user_id"]) == ("seg-anon-lena-laptop", LENA_USER)

    # no timestamp: the time is the API's receivedAt
    assert w.event(message_id(7))["occurred_at"] == datetime(2026, 3, 9, 18, 0, 2)

    screen = w.event(message_id(101))
    assert (screen["device_id"], screen["user_id"], screen["properties"]["event_name"]) == (
        "dev_seg_lena", LENA_USER, "Lesson")
    opened = w.event(message_id(102))
    assert (opened["device_id"], opened["anonymous_id"], opened["properties"]["platform"]) == (
        "dev_seg_lena", "seg-app-anon-lena", "ios")
    assert w.event(message_id(103))["properties"]["duration_seconds"] == 605


def test_identify_stitches_segment_ids_and_native_events_into_one_profile(runs: Runs) -> None:
    for w in (runs.first, runs.second):
        profile = w.profile_of("email", LENA_EMAIL)
        identifiers = set(w.query(
            "select identifier_type, identifier_value from gold.profile_identifiers where profile_id = ?", [profile]))
        expected = {
            ("email", LENA_EMAIL), ("phone", LENA_PHONE), ("user_id", LENA_USER),
            ("anonymous_id", "seg-anon-lena"), ("anonymous_id", "anon_lena_native"),
            ("anonymous_id", "seg-anon-lena-laptop"), ("anonymous_id", "seg-app-anon-lena"),
            ("device_id", "dev_seg_lena"),
        }
        if w is runs.second:  # the consent endpoint's own anonymous id joins her through the email
            expected.add(("anonymous_id", w.event(message_id(201))["anonymous_id"]))
        assert identifiers == expected
        assert w.query("select count(distinct profile_id) from gold.profiles") == [(1,)]
        events = {row[0] for row in w.query("select event_id from gold.profile_events where profile_id = ?", [profile])}
        # the native page view and form submit of her email, the native app_open of her phone, every Segment event
        assert {"7a1e0000-0000-4000-8000-000000000001", "7a1e0000-0000-4000-8000-000000000002",
                "7a1e0000-0000-4000-8000-000000000101"} <= events
        assert {message_id(n) for n in (1, 2, 3, 4, 5, 6, 7, 101, 102, 103)} <= events
        first_name, last_name, email, phone = w.query(
            "select first_name, last_name, email, phone from gold.profiles where profile_id = ?", [profile])[0]
        assert (first_name, last_name, email, phone) == ("Lena", "Voss", LENA_EMAIL, LENA_PHONE)


def test_sdk_retries_are_quarantined_as_duplicates(runs: Runs) -> None:
    first = runs.first.quarantine(WEB_FILE)
    reason, is_duplicate = first[1]  # the page sent twice in one batch
    assert is_duplicate and reason.startswith("duplicate of event_id already accepted")
    assert reason.endswith("position 0)")
    later = runs.second.quarantine(LATER_FILE)
    assert set(later) == {1}  # the identify delivered again in a later batch; the consent track is accepted
    assert later[1][1] and later[1][0].endswith("position 3)")
    assert runs.second.query("select count(*) from silver.events where event_id = ?", [message_id(3)]) == [(1,)]


def test_malformed_segment_messages_are_quarantined_with_their_reason(runs: Runs) -> None:
    quarantined = runs.first.quarantine(WEB_FILE)
    assert {position: reason for position, (reason, _) in quarantined.items() if position >= 8} == {
        8: "missing required field messageId",
        9: "missing required field userId or anonymousId",
        10: 'timestamp is not a valid ISO 8601 time: "10/03/2026 10:00"',
        11: 'unknown Segment message type "pageview"',
        12: "missing required field event",
    }
    assert runs.first.quarantine("clicks-2026-03-08.ndjson") == {2: ('unknown event type "foo"', False)}
    for w in (runs.first, runs.second):
        unreconciled = w.query(
            "select source from silver.source_reconciliation where landed <> silver + quarantined")
        assert unreconciled == []


def test_gate_1_holds_segment_messages_to_segment_required_fields(runs: Runs) -> None:
    from orchestration.quality.gate_1 import ISO_8601, landing_frame

    frame = landing_frame("web", sorted((runs.landing / "web").glob("batch-*.parquet")))
    first_batch = runs.second.query(
        "select distinct batch_id from silver.quarantine where file_name = ?", [WEB_FILE])[0][0]
    rows = frame[frame["batch_id"] == first_batch]

    def is_missing(value: object) -> bool:  # the frame holds NaN where nothing is missing
        return isinstance(value, str)

    def is_bad_time(value: object) -> bool:
        return not (isinstance(value, str) and re.match(ISO_8601, value))

    missing = {int(r.position): r.missing_required_field
               for r in rows.itertuples() if is_missing(r.missing_required_field)}
    assert missing == {8: "messageId", 9: "userId or anonymousId"}
    # position 7 has no timestamp: receivedAt stands in, as in silver
    assert {int(r.position) for r in rows.itertuples() if is_bad_time(r.timestamp_raw)} == {10}
    flagged = {(r.batch_id, int(r.position)) for r in frame.itertuples()
               if is_missing(r.missing_required_field) or is_bad_time(r.timestamp_raw)}
    quarantined = set(runs.second.query("select batch_id, position from silver.quarantine"))
    assert flagged and flagged <= quarantined


def test_consent_track_of_the_api_opts_the_profile_out(runs: Runs) -> None:
    consent = "select status, can_contact from gold.consent_current where profile_id = ? and channel = 'email'"
    first = runs.first
    assert first.query(consent, [first.profile_of("email", LENA_EMAIL)]) == [("implied", True)]
    second = runs.second
    profile = second.profile_of("email", LENA_EMAIL)
    assert second.query(consent, [profile]) == [("opted_out", False)]
    ledger = second.query(
        "select identifier_type, identifier_value, status, source_event_id from gold.consent_events "
        "where channel = 'email'")
    assert ledger == [("email", LENA_EMAIL, "opted_out", message_id(201))]
    assert second.query("select email_consent from gold.profiles where profile_id = ?", [profile]) == [("opted_out",)]


# --- the real SDK -------------------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    """Keeps every POST body (gunzipped) and answers as Segment does."""

    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        type(self).bodies.append({"path": self.path, "body": json.loads(data), "received_at": received_at})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"success": true}')

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict]]]:
    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_messages_sent_by_the_real_sdk_parse_into_silver(
        collector: tuple[str, list[dict]], tmp_path: Path) -> None:
    from segment.analytics import Client

    host, bodies = collector
    sent = {}
    for gzip_bodies in (False, True):
        client = Client("wk_test", host=host, sync_mode=True, gzip=gzip_bodies, max_retries=0)
        n = 2 if gzip_bodies else 1
        calls = {
            "identify": client.identify(f"usr_sdk_{n}", {"email": f"Sdk.User{n}@Example.org", "firstName": "Sam"},
                                        anonymous_id=f"anon_sdk_{n}"),
            "page": client.page(anonymous_id=f"anon_sdk_{n}", name="MBA", properties={"path": "/mba"}),
            "track": client.track(f"usr_sdk_{n}", "Webinar Registered", {"webinar": "mba-open-day"}),
            "consent": client.track(f"usr_sdk_{n}", "Consent Updated", {"channel": "sms", "status": "opted_in"}),
            "screen": client.screen(f"usr_sdk_{n}", name="Dashboard", context={"device": {"id": f"dev_sdk_{n}"}}),
            "group": client.group(f"usr_sdk_{n}", "org_sdk"),
            "alias": client.alias(f"anon_sdk_old_{n}", f"usr_sdk_{n}"),
        }
        sent.update({msg["messageId"]: call for call, (ok, msg) in calls.items()})
    assert len(bodies) == 14 and all(b["path"] == "/v1/batch" for b in bodies)

    # what the ingestion API does: each message of a batch landed as received, plus receivedAt
    folders = {"web": tmp_path / "in" / "web", "app": tmp_path / "in" / "app"}
    lines: dict[str, list[str]] = {"web": [], "app": []}
    for body in bodies:
        for message in body["body"]["batch"]:
            message["receivedAt"] = body["received_at"]
            device_id = message.get("context", {}).get("device", {}).get("id")
            source = "app" if message["type"] == "screen" or device_id else "web"
            lines[source].append(json.dumps(message))
    for source, folder in folders.items():
        folder.mkdir(parents=True)
        (folder / "sdk.ndjson").write_text("\n".join(lines[source]) + "\n")
    home = Home(tmp_path / "home")
    for source, folder in folders.items():
        home.land(source, folder)
    home.dbt_build("--select", "+events", "+quarantine")

    w = Warehouse(home.warehouse)
    got = {event_id: (source, event_type) for event_id, source, event_type in w.query(
        "select event_id, source, event_type from silver.events")}
    expected_types = {"identify": ("web", "identify"), "page": ("web", "page_view"), "track": ("web", "custom_event"),
                      "consent": ("web", "consent_updated"), "screen": ("app", "screen_view"),
                      "group": ("web", "group"), "alias": ("web", "alias")}
    assert got == {message_id_: expected_types[call] for message_id_, call in sent.items()}
    assert w.query("select count(*) from silver.quarantine") == [(0,)]
    assert sorted(w.query("select user_id, email from silver.events where event_type = 'identify'")) == [
        ("usr_sdk_1", "sdk.user1@example.org"), ("usr_sdk_2", "sdk.user2@example.org")]
    assert sorted(w.query(
        "select anonymous_id, user_id from silver.events where event_type = 'alias'")) == [
        ("anon_sdk_old_1", "usr_sdk_1"), ("anon_sdk_old_2", "usr_sdk_2")]
    # the SDK's timestamps (+00:00, milliseconds) parse, and come before the server received them
    assert w.query("select count(*) from silver.events where occurred_at > received_at") == [(0,)]
