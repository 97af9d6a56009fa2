"""Sample-data generator: determinism, the documented formats, mess rates, ground truth, manifest."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from connectors.generator import SOURCES, MessRates, generate, resolvable_flags
from connectors.generator.ids import salesforce_id
from connectors.generator.salesforce import FIELDS

PEOPLE = 2000
CHUNK = 700  # three chunks: late records cross part files
SEED = 7

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ISO_MS_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
ISO_S_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SF_BULK_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")
SF_REST_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000\+0000$")
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
NATIONAL = re.compile(r"^0\d+( \d+)*$")
ID_FIELD = {"web": "event_id", "app": "event_id", "email": "sg_event_id", "whatsapp": "MessageSid"}
REQUIRED = {
    "web": ("event_id", "event", "anonymous_id", "timestamp"),
    "app": ("event_id", "event_name", "device_id", "timestamp"),
    "email": ("sg_event_id", "event", "email", "timestamp"),
    "whatsapp": ("MessageSid", "From", "ReceivedAt"),
}
TIMESTAMP_FIELD = {"web": "timestamp", "app": "timestamp", "email": "timestamp", "whatsapp": "ReceivedAt"}


def _valid_iso(value: str, pattern: re.Pattern) -> bool:
    if not isinstance(value, str) or not pattern.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _timestamp_ok(source: str, value: object) -> bool:
    if source == "web":
        return _valid_iso(value, ISO_MS_Z)
    if source == "app":
        return _valid_iso(value, ISO_MS_OFFSET)
    if source == "email":
        return isinstance(value, int) and 1_750_000_000 < value < 1_800_000_000
    return _valid_iso(value, ISO_S_Z)


class Output:
    """A generated folder, parsed once: lines per source, ground truth, manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest = orjson.loads((root / "manifest.json").read_bytes())
        gt = pq.read_table(root / "ground_truth.parquet").to_pylist()
        self.truth = {(r["source"], r["record_id"]): r for r in gt}
        self.truth_rows = gt
        self.lines: dict[str, list[tuple[str, bytes]]] = {}  # source -> [(file name, raw line)]
        for source in ("web", "app", "email", "whatsapp"):
            self.lines[source] = [
                (f.name, line)
                for f in sorted((root / source).glob("part-*.ndjson"))
                for line in f.read_bytes().splitlines()
            ]
        self.csv_rows: list[list[str]] = []
        self.csv_header: list[str] = []
        self.rest: list[dict] = []
        for f in sorted((root / "salesforce").glob("contacts-bulk-*.csv")):
            rows = list(csv.reader(io.StringIO(f.read_text(encoding="utf-8"), newline="")))
            self.csv_header = rows[0]
            self.csv_rows.extend(rows[1:])
        for f in sorted((root / "salesforce").glob("contacts-query-*.json")):
            page = orjson.loads(f.read_bytes())
            assert page["done"] is True and page["totalSize"] == len(page["records"])
            self.rest.extend(page["records"])

    def record_id(self, source: str, line: bytes) -> str:
        """The record id of a line, also from a truncated line (it is near the start of the line)."""
        m = re.search(rb'"%s":"([^"]+)"' % ID_FIELD[source].encode(), line)
        assert m, line
        return m.group(1).decode()

    def parsed(self, source: str) -> list[dict]:
        """The well-formed records of a JSON-lines source (per ground truth)."""
        out = []
        for _, line in self.lines[source]:
            rid = self.record_id(source, line)
            if not self.truth[(source, rid)]["is_malformed"]:
                out.append(orjson.loads(line))
        return out

    def person_of(self, source: str, rid: str) -> str:
        return self.truth[(source, rid)]["person_id"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Output:
    root = tmp_path_factory.mktemp("gen") / "out"
    calls: list[tuple[int, int]] = []
    result = generate(root, PEOPLE, seed=SEED, chunk_people=CHUNK, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(700, PEOPLE), (1400, PEOPLE), (2000, PEOPLE)]
    assert result.people == PEOPLE and result.seed == SEED
    assert set(result.files) == set(SOURCES)
    assert all(p.is_file() for files in result.files.values() for p in files)
    return Output(root)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


# -- determinism ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 900, seed=3, chunk_people=300, workers=1)
    b = generate(tmp_path / "b", 900, seed=3, chunk_people=300, workers=2)
    files_a, files_b = _file_bytes(a.out_dir), _file_bytes(b.out_dir)
    # per chunk 4 JSON-lines parts + 2 Salesforce files, then the ground truth; no scratch files left over
    assert len(files_a) == (4 + 2) * 3 + 1
    assert files_a == files_b
    man_a = orjson.loads((a.out_dir / "manifest.json").read_bytes())
    man_b = orjson.loads((b.out_dir / "manifest.json").read_bytes())
    man_a.pop("generated_at")
    man_b.pop("generated_at")
    assert man_a == man_b


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 300, seed=1)
    b = generate(tmp_path / "b", 300, seed=2)
    files_a, files_b = _file_bytes(a.out_dir), _file_bytes(b.out_dir)
    assert files_a.keys() == files_b.keys()
    assert all(files_a[k] != files_b[k] for k in files_a if files_a[k])


# -- formats ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["web", "app", "email", "whatsapp"])
def test_json_lines_carry_required_fields_and_malformed_lines_fail(out: Output, source: str) -> None:
    malformed = 0
    for _, line in out.lines[source]:
        rid = out.record_id(source, line)
        broken = out.truth[(source, rid)]["is_malformed"]
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            assert broken, line
            malformed += 1
            continue
        ok = all(rec.get(f) is not None for f in REQUIRED[source]) and _timestamp_ok(
            source, rec[TIMESTAMP_FIELD[source]]
        )
        assert ok != broken, line
        malformed += broken
    assert malformed == out.manifest["sources"][source]["malformed"]
    if len(out.lines[source]) > 2000:  # whatsapp is too small to be sure to have one at 0.5 %
        assert malformed > 0


def test_web_events(out: Output) -> None:
    paths = {"/mba", "/msc-data-science", "/msc-finance", "/bsc-business", "/executive-education",
             "/", "/admissions", "/fees", "/campus", "/apply",
             "/mba/curriculum", "/mba/fees", "/mba/admissions", "/mba/careers", "/mba/faculty"}
    events = Counter()
    for rec in out.parsed("web"):
        events[rec["event"]] += 1
        assert rec["type"] == ("page" if rec["event"] == "page_view" else "track")
        assert rec["anonymous_id"].startswith("anon_") and rec["session_id"].startswith("sess_")
        assert _valid_iso(rec["sent_at"], ISO_MS_Z) and rec["sent_at"] >= rec["timestamp"]
        assert rec["page"]["path"] in paths and rec["page"]["url"].startswith("https://www.northbridge.edu/")
        assert set(rec["utm"]) == {"source", "medium", "campaign", "term", "content"}
        if rec["utm"]["source"]:
            assert f"utm_source={rec['utm']['source']}" in rec["page"]["url"]
        if rec["event"] == "form_submit":
            assert rec["properties"]["form_id"] in ("request_info", "application_start")
            assert set(rec["traits"]) == {"email", "first_name", "last_name", "phone", "country"}
            assert "@" in rec["traits"]["email"] and len(rec["traits"]["country"]) == 2
            phone = rec["traits"]["phone"]
            assert phone is None or E164.match(phone) or NATIONAL.match(phone)
        elif rec["event"] == "brochure_download":
            assert set(rec["properties"]) == {"program", "brochure_id"}
        else:
            assert rec["event"] == "page_view" and rec["traits"] == {}
    assert events["page_view"] > events["form_submit"] > events["brochure_download"] > 0


def test_app_events(out: Output) -> None:
    names = Counter()
    for rec in out.parsed("app"):
        names[rec["event_name"]] += 1
        assert rec["device_id"].startswith("dev_") and rec["platform"] in ("ios", "android")
        assert rec["timestamp"][-6:] in ("+00:00", "+01:00", "+02:00")
        assert _valid_iso(rec["sent_at"], ISO_MS_OFFSET)
        props = rec["properties"]
        if rec["event_name"] == "login":
            assert "@" in props["email"] and props["method"]
            assert re.match(r"^usr_\d{8}$", rec["user_id"])
        elif rec["event_name"] == "lesson_completed":
            assert set(props) == {"course", "lesson_id", "duration_s"} and rec["user_id"]
        elif rec["event_name"] == "quiz_submitted":
            assert set(props) == {"course", "quiz_id", "score"} and 0 <= props["score"] <= 1
        elif rec["event_name"] == "push_token_registered":
            assert props["push_token"]
    assert set(names) == {"app_open", "login", "lesson_completed", "quiz_submitted", "push_token_registered"}


def test_app_user_id_is_null_only_before_the_first_login_on_a_device(out: Output) -> None:
    by_device = defaultdict(list)
    for rec in out.parsed("app"):
        by_device[rec["device_id"]].append(rec)
    # a broken record (say a login without its device_id) may hide a login: skip those people's devices
    broken = {r["person_id"] for r in out.truth_rows if r["source"] == "app" and r["is_malformed"]}
    checked = 0
    for events in by_device.values():
        if any(out.person_of("app", r["event_id"]) in broken for r in events):
            continue
        events.sort(key=lambda r: datetime.fromisoformat(r["timestamp"]))
        logged_in = False
        for rec in events:
            logged_in = logged_in or rec["event_name"] == "login"
            assert (rec["user_id"] is not None) == logged_in, rec
        checked += 1
    assert checked > 0.9 * len(by_device)


def test_email_events(out: Output) -> None:
    kinds = Counter()
    for rec in out.parsed("email"):
        kinds[rec["event"]] += 1
        assert len(rec["sg_event_id"]) == 22 and re.match(r"^[A-Za-z0-9_-]+$", rec["sg_event_id"])
        assert ".filterdrecv-" in rec["sg_message_id"] and rec["template_id"].startswith("d-")
        assert isinstance(rec["marketing_campaign_id"], int) and rec["category"]
        if rec["event"] == "click":
            assert rec["url"].startswith("https://www.northbridge.edu/") and rec["useragent"] and rec["ip"]
        elif rec["event"] == "bounce":
            assert rec["type"] in ("bounce", "blocked") and rec["status"] and rec["reason"]
        elif rec["event"] == "dropped":
            assert rec["reason"]
    assert {"processed", "delivered", "open", "click", "bounce", "dropped", "unsubscribe"} <= set(kinds)
    assert kinds["processed"] >= kinds["delivered"] > kinds["open"] > kinds["click"]


def test_whatsapp_messages(out: Output) -> None:
    bodies = []
    for rec in out.parsed("whatsapp"):
        assert all(isinstance(v, str) for v in rec.values())
        assert rec["From"].startswith("whatsapp:+") and rec["WaId"] == rec["From"][len("whatsapp:+"):]
        assert rec["MessageSid"] == rec["SmsSid"] == rec["SmsMessageSid"]
        assert re.match(r"^(SM|MM)[0-9a-f]{32}$", rec["MessageSid"]) and rec["AccountSid"].startswith("AC")
        if rec["NumMedia"] == "1":
            assert rec["MediaUrl0"].startswith("https://api.twilio.com/") and rec["MediaContentType0"]
        bodies.append(rec["Body"])
    assert any("deadline" in b or "scholarship" in b.lower() for b in bodies)
    assert any(b.upper() == "STOP" for b in bodies)


def test_salesforce_bulk_csv_and_rest_pages(out: Output) -> None:
    assert out.csv_header == list(FIELDS)
    assert out.rest and out.csv_rows
    for row in out.csv_rows:
        rid = f"{row[0]}@{row[-1]}"
        broken = out.truth[("salesforce", rid)]["is_malformed"]
        assert (len(row) != len(FIELDS)) == broken, row  # a malformed row misses a column
        if broken:
            continue
        rec = dict(zip(FIELDS, row, strict=True))
        assert len(rec["Id"]) == 18 and rec["Id"].startswith("003") and rec["LastName"]
        assert rec["HasOptedOutOfEmail"] in ("true", "false")
        assert SF_BULK_DT.match(rec["CreatedDate"]) and SF_BULK_DT.match(rec["LastModifiedDate"])
        assert "null" not in row and "None" not in row
    versions = defaultdict(list)
    for rec in out.rest:
        rid = f"{rec['Id']}@{rec['LastModifiedDate']}"
        broken = out.truth[("salesforce", rid)]["is_malformed"]
        ok = bool(rec.get("LastName")) and _valid_iso(rec["LastModifiedDate"], SF_REST_DT)
        assert ok != broken, rec
        if broken:
            continue
        url = f"/services/data/v59.0/sobjects/Contact/{rec['Id']}"
        assert rec["attributes"] == {"type": "Contact", "url": url}
        assert list(rec)[1:] == list(FIELDS)
        assert isinstance(rec["HasOptedOutOfEmail"], bool) and SF_REST_DT.match(rec["CreatedDate"])
        assert rec["MailingState"] is None or rec["MailingState"]  # null, never an empty string
        versions[rec["Id"]].append(rec["LastModifiedDate"])
    stages = {r["Application_Stage__c"] for r in out.rest if "LastName" in r}
    assert stages <= {
        "Inquiry", "Application Started", "Application Submitted", "Offer Made", "Offer Accepted"
    }
    assert "Offer Accepted" in stages
    assert any(r["HasOptedOutOfEmail"] for r in out.rest)


def test_salesforce_ids_are_valid_18_character_ids() -> None:
    assert salesforce_id(0) != salesforce_id(1)
    for n in (0, 1, 61, 62, 10**6):
        sfid = salesforce_id(n)
        assert len(sfid) == 18 and sfid.startswith("0035g")
        # the checksum suffix: one bit per upper-case letter of each 5-character block
        for block, ch in enumerate(sfid[15:]):
            bits = sum(1 << i for i, c in enumerate(sfid[block * 5 : block * 5 + 5]) if c.isupper())
            assert "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits] == ch


def _inquiries(out: Output) -> set[str]:
    """People whose every CRM version (of every contact) is still an inquiry: gold's lifecycle 'inquiry'."""
    states = defaultdict(set)
    records = [dict(zip(FIELDS, row, strict=True)) for row in out.csv_rows if len(row) == len(FIELDS)]
    records += [r for r in out.rest if "LastName" in r]
    for r in records:
        if "Application_Stage__c" in r:  # a malformed REST record may lack the field
            person = out.person_of("salesforce", f"{r['Id']}@{r['LastModifiedDate']}")
            states[person].add((r["Application_Stage__c"], r["Enrollment_Status__c"]))
    return {p for p, s in states.items() if s == {("Inquiry", "Not Enrolled")}}


def test_some_mba_inquiries_are_researching_the_mba_in_the_last_week(out: Output) -> None:
    # what the segment high_intent_mba_prospect looks for: >= 3 views of /mba or /mba/... in the 7 days before
    # as-of (the latest event), by an inquiry
    web = out.parsed("web")
    as_of = datetime.fromisoformat(max(r["timestamp"] for r in web).replace("Z", "+00:00"))
    since = (as_of - timedelta(days=7)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    views = Counter()
    for r in web:
        path = r["page"]["path"]
        if r["event"] == "page_view" and (path == "/mba" or path.startswith("/mba/")) and r["timestamp"] > since:
            views[out.person_of("web", r["event_id"])] += 1
    hot = {p for p, n in views.items() if n >= 3}
    inquiries = _inquiries(out)
    assert 0.025 < len(hot & inquiries) / len(inquiries) < 0.06
    assert len(hot - inquiries) <= 0.1 * len(hot)  # applicants and students are not the ones bursting
    # the burst is on browsers the person used before (most have one; a second one may be new)
    anons_before, anons_in_week = defaultdict(set), defaultdict(set)
    for r in web:
        person = out.person_of("web", r["event_id"])
        if person in hot:
            (anons_in_week if r["timestamp"] > since else anons_before)[person].add(r["anonymous_id"])
    known = sum(anons_in_week[p] <= anons_before[p] for p in hot)
    assert known > 0.8 * len(hot)
    # a share of them writes to admissions on WhatsApp in the same week (a conversation they start)
    writers = {out.person_of("whatsapp", r["MessageSid"]) for r in out.parsed("whatsapp") if r["ReceivedAt"] > since}
    assert 0.1 < len(writers & hot) / len(hot) < 0.5


# -- ground truth and manifest ----------------------------------------------------------------------------


def _distinct_ids(out: Output) -> dict[str, Counter]:
    ids: dict[str, Counter] = {s: Counter() for s in SOURCES}
    for source in ("web", "app", "email", "whatsapp"):
        for _, line in out.lines[source]:
            ids[source][out.record_id(source, line)] += 1
    for row in out.csv_rows:
        ids["salesforce"][f"{row[0]}@{row[-1]}"] += 1
    for rec in out.rest:
        ids["salesforce"][f"{rec['Id']}@{rec['LastModifiedDate']}"] += 1
    return ids


def test_ground_truth_covers_every_distinct_record_exactly_once(out: Output) -> None:
    assert len(out.truth) == len(out.truth_rows)  # no (source, record_id) twice
    ids = _distinct_ids(out)
    for source in SOURCES:
        truth_ids = {rid for (s, rid) in out.truth if s == source}
        assert truth_ids == set(ids[source]), source
    persons = {r["person_id"] for r in out.truth_rows}
    assert all(re.match(r"^P\d{7}$", p) for p in persons)
    assert len(persons) > 0.9 * PEOPLE


def test_manifest_counts_match_files_and_ground_truth(out: Output) -> None:
    man = out.manifest
    assert man["people"] == PEOPLE and man["seed"] == SEED and man["rates"] == MessRates().as_dict()
    assert man["generated_at"]
    ids = _distinct_ids(out)
    malformed = Counter(r["source"] for r in out.truth_rows if r["is_malformed"])
    for source in SOURCES:
        entry = man["sources"][source]
        assert entry["records"] == sum(ids[source].values())
        assert entry["duplicates"] == entry["records"] - len(ids[source])
        assert entry["malformed"] == malformed[source]
        assert all((out.root / f).is_file() for f in entry["files"])
    assert len(man["files"]) == len(set(man["files"])) == (4 + 2) * 3 + 1


# -- mess rates ---------------------------------------------------------------------------------------------


def test_duplicate_and_malformed_rates(out: Output) -> None:
    man = out.manifest["sources"]
    distinct = len(out.truth_rows)
    dup_rate = sum(m["duplicates"] for m in man.values()) / distinct
    mal_rate = sum(m["malformed"] for m in man.values()) / distinct
    assert 0.014 < dup_rate < 0.026
    assert 0.002 < mal_rate < 0.009
    # duplicates are exact copies of a line
    for source in ("web", "app", "email"):
        by_id = defaultdict(set)
        for _, line in out.lines[source]:
            by_id[out.record_id(source, line)].add(line)
        assert all(len(v) == 1 for v in by_id.values())


def test_late_records_land_in_a_later_part_or_out_of_order(out: Output) -> None:
    positions = []
    files = Counter()
    for name, line in out.lines["web"]:
        rid = out.record_id("web", line)
        if out.truth[("web", rid)]["is_malformed"]:
            continue
        files[name] += 1
        positions.append((name, orjson.loads(line)["timestamp"]))
    backwards = sum(1 for (f1, t1), (f2, t2) in pairwise(positions) if f1 == f2 and t2 < t1)
    assert backwards > 0.01 * len(positions)
    # the tail of part-00001 holds chunk 0's late records, whose people belong to chunk 0 (P0000001..P0000700)
    tail = [line for name, line in out.lines["web"] if name == "part-00001.ndjson"][-20:]
    assert any(int(out.person_of("web", out.record_id("web", line))[1:]) <= CHUNK for line in tail)


def test_anonymous_only_share_of_web_visitors(out: Output) -> None:
    visitors, identified = set(), set()
    for rec in out.parsed("web"):
        person = out.person_of("web", rec["event_id"])
        visitors.add(person)
        if rec["event"] == "form_submit":
            identified.add(person)
    for r in out.truth_rows:  # a broken form_submit line still means the person identified
        if r["source"] == "web" and r["is_malformed"]:
            identified.discard(r["person_id"])
    share = 1 - len(identified) / len(visitors)
    assert 0.27 < share < 0.40


def test_national_phone_and_email_variant_rates(out: Output) -> None:
    phones = [r["traits"]["phone"] for r in out.parsed("web") if r["event"] == "form_submit"]
    phones += [row[3] for row in out.csv_rows if len(row) == len(FIELDS)]
    phones = [p for p in phones if p]
    national = sum(1 for p in phones if p.startswith("0")) / len(phones)
    assert all(E164.match(p) or NATIONAL.match(p) for p in phones)
    assert 0.42 < national < 0.58
    emails = [r["traits"]["email"] for r in out.parsed("web") if r["event"] == "form_submit"]
    emails += [r["properties"]["email"] for r in out.parsed("app") if r["event_name"] == "login"]
    variants = sum(1 for e in emails if e != e.strip().lower()) / len(emails)
    assert 0.025 < variants < 0.08


def test_shared_devices_have_two_to_six_people(out: Output) -> None:
    people_on_device = defaultdict(set)
    for rec in out.parsed("app"):
        if rec["event_name"] == "login":
            people_on_device[rec["device_id"]].add(out.person_of("app", rec["event_id"]))
    sizes = [len(p) for p in people_on_device.values()]
    shared = [s for s in sizes if s > 1]
    assert shared and max(shared) <= 6
    assert len(shared) / len(sizes) < 0.06


def test_people_have_unique_emails_and_phones(out: Output) -> None:
    owners = defaultdict(set)
    for rec in out.parsed("web"):
        if rec["event"] == "form_submit":
            owners[rec["traits"]["email"].strip().lower()].add(out.person_of("web", rec["event_id"]))
    for rec in out.parsed("whatsapp"):
        owners[rec["From"]].add(out.person_of("whatsapp", rec["MessageSid"]))
    assert owners and all(len(p) == 1 for p in owners.values())


def test_crm_duplicate_contacts_share_no_identifier(out: Output) -> None:
    contacts = defaultdict(dict)  # person -> Id -> first CSV row
    for row in out.csv_rows:
        if len(row) == len(FIELDS):
            rec = dict(zip(FIELDS, row, strict=True))
            contacts[out.person_of("salesforce", f"{row[0]}@{row[-1]}")][rec["Id"]] = rec
    dups = [list(c.values()) for c in contacts.values() if len(c) == 2]
    assert 0 < len(dups) < 0.05 * len(contacts)
    for a, b in dups:
        assert a["Birthdate"] == b["Birthdate"] and a["MailingPostalCode"] == b["MailingPostalCode"]
        assert a["Email"].strip().lower() != b["Email"].strip().lower()
        assert not b["MobilePhone"] and not b["Phone"]
        assert (a["FirstName"], a["LastName"]) != (b["FirstName"], b["LastName"])


def test_rates_can_be_switched_off(tmp_path: Path) -> None:
    rates = MessRates.from_overrides({"duplicate_delivery": 0, "malformed": 0, "late_or_out_of_order": 0})
    result = generate(tmp_path / "clean", 400, seed=5, rates=rates, chunk_people=200)
    assert sum(result.duplicates.values()) == 0 and sum(result.malformed.values()) == 0
    for source in ("web", "app", "email", "whatsapp"):
        for f in result.files[source]:
            lines = f.read_bytes().splitlines()
            stamps = [orjson.loads(line)[TIMESTAMP_FIELD[source]] for line in lines]
            assert all(_timestamp_ok(source, s) for s in stamps)
    all_anonymous = MessRates.from_overrides({"anonymous_only_visitors": 1})
    anon = generate(tmp_path / "anon", 300, seed=5, rates=all_anonymous)
    assert not any(b"form_submit" in f.read_bytes() for f in anon.files["web"])


# -- resolvability ------------------------------------------------------------------------------------------


def test_resolvable_flags_directly() -> None:
    records = [
        ("anon_a", "sess_1"),  # page view, same browser and session as the form submit
        ("anon_a", "sess_1", "max@example.com", "+4915112345678"),  # form submit
        ("0035g000001ABCDEAA", "max@example.com"),  # CRM contact with the same email
        ("anon_b", "sess_2"),  # a lone page view from another browser: nothing shared
        ("+4915112345678", "+4915112345678"),  # a record repeating its own identifier is still alone...
    ]
    assert resolvable_flags(records) == [True, True, True, False, True]  # ...but the phone is on the form
    assert resolvable_flags([("x@example.com", "x@example.com")]) == [False]
    assert resolvable_flags([()]) == [False]
    assert resolvable_flags([]) == []


def test_ground_truth_resolvability(out: Output) -> None:
    for rec in out.parsed("web"):
        if rec["event"] == "form_submit":
            assert out.truth[("web", rec["event_id"])]["is_resolvable"]
    # people whose only record is a single page view are not resolvable
    per_person = defaultdict(list)
    for r in out.truth_rows:
        per_person[r["person_id"]].append(r)
    lone = [rows[0] for rows in per_person.values() if len(rows) == 1]
    assert lone and not any(r["is_resolvable"] for r in lone)
    assert any(not r["is_resolvable"] for r in out.truth_rows if r["is_malformed"])
    share = sum(r["is_resolvable"] for r in out.truth_rows) / len(out.truth_rows)
    assert 0.9 < share < 1


# -- API validation -----------------------------------------------------------------------------------------


def test_mess_rates_overrides_are_validated() -> None:
    assert MessRates.from_overrides({"malformed": 0.1}).malformed == 0.1
    assert MessRates.from_overrides({}) == MessRates()
    unknown = r"unknown mess rate.*typo_rate.*valid names: anonymous_only_visitors"
    with pytest.raises(ValueError, match=unknown):
        MessRates.from_overrides({"typo_rate": 0.1})
    for bad in (1.5, -0.1, float("nan"), "abc"):
        with pytest.raises(ValueError, match="malformed"):
            MessRates.from_overrides({"malformed": bad})
    with pytest.raises(ValueError, match="between 0 and 1"):
        MessRates(shared_device=2)


def test_generate_refuses_bad_arguments_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="people"):
        generate(tmp_path / "a", 0)
    with pytest.raises(ValueError, match="chunk_people"):
        generate(tmp_path / "a", 10, chunk_people=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a previous generator output"):
        generate(foreign, 10)
    (foreign / "manifest.json").write_text('{"nodes": {}}')  # e.g. dbt's target/manifest.json
    with pytest.raises(ValueError, match="not written by the sample-data generator"):
        generate(foreign, 10)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_generate_overwrites_a_previous_output(tmp_path: Path) -> None:
    first = generate(tmp_path / "o", 600, seed=1, chunk_people=200)
    assert len(first.files["web"]) == 3
    second = generate(tmp_path / "o", 100, seed=1, chunk_people=200)
    assert sorted(p.name for p in (tmp_path / "o" / "web").iterdir()) == ["part-00000.ndjson"]
    assert orjson.loads((tmp_path / "o" / "manifest.json").read_bytes())["people"] == 100
    assert second.records["web"] == sum(1 for _ in (tmp_path / "o" / "web" / "part-00000.ndjson").open("rb"))
