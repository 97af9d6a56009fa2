"""The Salesforce connector pulls Contacts through simple-salesforce from the local emulator.

A real SalesforceEmulator on 127.0.0.1 (port 0) is seeded with 3,000 Contacts (national phone formats, mixed-case
emails, a data load of 400 stamped with one LastModifiedDate); SALESFORCE_INSTANCE_URL / SALESFORCE_ACCESS_TOKEN are
set in the environment. The scenario: a first pull lands every Contact once; a pull with nothing new lands nothing;
a Contact stamped with exactly the watermark's time (a strict `>` would miss it) is landed alone by the next pull;
10 Contacts are updated through simple-salesforce and the next pull lands exactly those; then dbt builds bronze and
silver on the landing zone and silver's current Contacts equal the emulator's. Errors: a bad token, no
configuration, and a Salesforce error code come back as one-line SourceErrors.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from connectors.base import SourceError
from connectors.landing import LandingZone
from connectors.salesforce import SalesforceContactsSource
from connectors.salesforce.api import CONTACT_FIELDS, pull_contacts, read_watermark, watermark_path
from emulators.salesforce import OBJECTS, SalesforceEmulator, format_datetime
from reverse_etl.destinations.salesforce import connect_from_env

ROOT = Path(__file__).resolve().parents[2]
CONTACTS = 3_000
PAGE = 500
MODIFIED = 10

pytestmark = pytest.mark.integration

FIRST = ("Anna", "Lukas", "Mia", "Jonas", "Lea", "Finn", "Olivia", "Noah", "Amelia", "Oliver", "Chloé", "Hugo",
         "Sofia", "Matteo", "Emma", "Liam", "Zoë", "Mateo", "Aisha", "Yusuf")
LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Smith", "Jones", "Taylor", "Brown", "Williams",
        "Martin", "Bernard", "Dubois", "Rossi", "Russo", "O'Brien", "García", "Nowak", "Jansen", "de Vries")
CITIES = {  # country: (calling code, cities, national landline prefix)
    "Germany": ("49", ("Berlin", "Hamburg", "München", "Köln"), "030"),
    "United Kingdom": ("44", ("London", "Manchester", "Leeds", "Bristol"), "020"),
    "Austria": ("43", ("Wien", "Graz", "Linz", "Salzburg"), "01"),
}


def contact(rng: random.Random, i: int, modified: datetime) -> tuple[dict[str, Any], str | None]:
    """A Contact as a CRM holds it, and the E.164 number silver should make of its mobile (national format)."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    country = rng.choice(tuple(CITIES))
    code, cities, landline = CITIES[country]
    local = f"{rng.randrange(10**7, 10**8)}"
    mobile = f"0151 {local}" if rng.random() < 0.7 else None
    mailbox = re.sub(r"[^a-z]", "", f"{first}.{last}".lower()) or "contact"
    domain = rng.choice(("example.com", "example.org", "Mail.Example.net"))
    email = f"{mailbox}{i}@{domain}"
    if rng.random() < 0.3:
        email = email.title()  # typed with capitals: silver lower-cases it
    record = {
        "FirstName": first, "LastName": last, "Email": email, "MobilePhone": mobile,
        "Phone": f"{landline} {rng.randrange(10**6, 10**7)}" if rng.random() < 0.5 else None,
        "Birthdate": f"{rng.randrange(1995, 2008)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        "MailingStreet": f"{rng.randrange(1, 200)} {rng.choice(('Hauptstraße', 'High Street', 'Ringstraße'))}",
        "MailingCity": rng.choice(cities), "MailingPostalCode": f"{rng.randrange(10000, 99999)}",
        "MailingCountry": country, "HasOptedOutOfEmail": rng.random() < 0.1,
        "CreatedDate": format_datetime(modified - timedelta(days=rng.randrange(0, 30))),
        "LastModifiedDate": format_datetime(modified),
    }
    return record, (f"+{code}151{local}" if mobile else None)


def seed(emulator: SalesforceEmulator) -> dict[str, str | None]:
    """3,000 Contacts over 2025; the last 400 come from one data load, all stamped with the same second.
    Returns {Id: expected E.164 mobile}."""
    rng = random.Random(7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    records, mobiles = [], []
    for i in range(CONTACTS):
        modified = start + timedelta(minutes=rng.randrange(0, 300 * 24 * 60)) if i < CONTACTS - 400 else \
            datetime(2025, 11, 3, 9, 30, tzinfo=UTC)
        record, mobile = contact(rng, i, modified)
        records.append(record)
        mobiles.append(mobile)
    ids = emulator.seed_records("Contact", records)
    return dict(zip(ids, mobiles, strict=True))


def landed_payloads(zone: LandingZone, batches: list) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in batches:
        rows += [orjson.loads(p) for p in pq.read_table(batch.path, columns=["payload"]).column("payload").to_pylist()]
    return rows


@pytest.fixture
def emulator() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(port=0) as server:
        yield server


@pytest.fixture
def salesforce_env(emulator: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SalesforceEmulator:
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", emulator.url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", emulator.access_token)
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # the landing zone's erasure hook reads the suppression list under CDP_HOME: keep it in tmp
    monkeypatch.setenv("CDP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CDP_PRIVACY_PATH", raising=False)
    return emulator


def dbt_build_salesforce(tmp: Path, landing: Path, warehouse: Path) -> None:
    """bronze + silver of the salesforce source only (and the seeds they read), as tests/integration/test_dbt_silver
    runs dbt: on a temporary landing zone and warehouse, artifacts apart."""
    dbt = Path(sys.executable).parent / "dbt"
    executable = str(dbt) if dbt.exists() else shutil.which("dbt")
    if executable is None:
        pytest.skip("dbt is not installed")
    env = {**os.environ, "CDP_TARGET": "duckdb", "CDP_LANDING_PATH": str(landing),
           "CDP_WAREHOUSE_PATH": str(warehouse), "DBT_TARGET_PATH": str(tmp / "target"),
           "DBT_LOG_PATH": str(tmp / "logs"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    result = subprocess.run(
        # cautious: leave out tests that also read other sources' models (not built here)
        [executable, "build", "--no-use-colors", "--profiles-dir", str(ROOT), "--select",
         "+stg_salesforce__contacts_latest", "--indirect-selection", "cautious"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"dbt build failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"


def test_pull_is_incremental_idempotent_and_silver_matches_the_emulator(salesforce_env: SalesforceEmulator,
                                                                         tmp_path: Path) -> None:
    emulator = salesforce_env
    mobiles = seed(emulator)
    zone = LandingZone(tmp_path / "landing")

    # 1. every Contact lands once, in pages of 500 (nextRecordsUrl paging), ordered by LastModifiedDate
    reported: list[str] = []
    first = pull_contacts(zone, since=None, page_size=PAGE, progress=lambda b: reported.append(b.batch_id))
    assert first.count == first.pulled == CONTACTS
    assert len(first.batches) == CONTACTS // PAGE and reported == [b.batch_id for b in first.batches]
    assert not any(b.already_landed for b in first.batches)
    records = landed_payloads(zone, first.batches)
    assert sorted(r["Id"] for r in records) == sorted(mobiles)  # each once
    assert [r["LastModifiedDate"] for r in records] == sorted(r["LastModifiedDate"] for r in records)
    assert first.watermark == datetime(2025, 11, 3, 9, 30, tzinfo=UTC)
    mark = read_watermark(zone)
    assert mark is not None and len(mark.ids) == 400  # the whole data load shares the watermark's second
    # a field the org's Contact lacks (the emulator has no admissions custom fields yet) is left out of the SELECT
    assert first.missing_fields == tuple(f for f in CONTACT_FIELDS if OBJECTS["Contact"].field(f) is None)
    assert set(records[0]) == {"attributes", *first.fields}
    assert records[0]["attributes"]["type"] == "Contact"

    # the batches are the bytes of a saved query response: `cdp land salesforce page.json` lands the same batch
    saved = tmp_path / "page.json"
    saved.write_bytes(orjson.dumps({"totalSize": PAGE, "done": True, "records": records[:PAGE]}))
    (as_file,) = SalesforceContactsSource(paths=[saved]).land(zone)
    assert as_file.already_landed and as_file.batch_id == first.batches[0].batch_id

    # 2. nothing new: nothing lands, the watermark stays
    before = watermark_path(zone).read_bytes()
    again = pull_contacts(zone, since=None, page_size=PAGE)
    assert again.count == again.pulled == 0 and again.batches == [] and watermark_path(zone).read_bytes() == before

    # 3. a Contact stamped with exactly the watermark's time (the data load's second, like 400 landed already) is
    # landed by the next pull, alone: a strict `LastModifiedDate >` would miss it
    (tied,) = emulator.seed_records("Contact", [{"LastName": "Tie", "Email": "Tie@Example.com",
                                                 "LastModifiedDate": "2025-11-03T09:30:00.000+0000"}])
    mobiles[tied] = None
    tie = pull_contacts(zone, since=None, page_size=PAGE)
    assert tie.count == 1 and landed_payloads(zone, tie.batches)[0]["Id"] == tied
    stored = read_watermark(zone)
    assert stored is not None and len(stored.ids) == 401

    # 4. ten Contacts changed through simple-salesforce: exactly those land, then nothing
    sf = connect_from_env(os.environ)
    changed = random.Random(3).sample(sorted(mobiles), MODIFIED)
    new_emails = {}
    for n, contact_id in enumerate(changed):
        new_emails[contact_id] = f"Changed.Address{n}@Example.COM"
        sf.Contact.update(contact_id, {"Email": new_emails[contact_id], "MailingCity": "Leipzig"})
    second = pull_contacts(zone, since=None, page_size=PAGE)
    assert second.count == MODIFIED and len(second.new_batches) == 1
    assert {r["Id"]: r["Email"] for r in landed_payloads(zone, second.batches)} == new_emails
    assert second.watermark is not None and second.watermark > first.watermark
    assert pull_contacts(zone, since=None, page_size=PAGE).count == 0

    # 5. bronze + silver on that landing zone: silver's current Contacts are the emulator's
    warehouse = tmp_path / "warehouse.duckdb"
    dbt_build_salesforce(tmp_path, zone.root, warehouse)
    truth = {r["Id"]: r for r in emulator.records("Contact")}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        latest = con.execute(
            "select contact_id, email, mobile_phone, mailing_city, last_name, export_format "
            "from silver.stg_salesforce__contacts_latest").fetchall()
        versions = con.execute("select count(*) from silver.stg_salesforce__contacts").fetchone()[0]
        quarantined = con.execute("select count(*) from silver.int_salesforce__checked "
                                  "where quarantine_reason is not null").fetchone()[0]
    landed = zone.landed_counts()["salesforce"]["records"]
    assert landed == CONTACTS + MODIFIED + 1 == versions and quarantined == 0  # landed = silver + quarantined
    assert {row[0] for row in latest} == set(truth) and len(latest) == len(truth)
    for contact_id, email, mobile, city, last_name, export_format in latest:
        expected = truth[contact_id]
        assert email == expected["Email"].strip().lower(), contact_id
        assert mobile == mobiles[contact_id], (contact_id, expected["MobilePhone"])
        assert (city, last_name, export_format) == (expected["MailingCity"], expected["LastName"], "rest_json")
    assert {row[0] for row in latest if row[3] == "Leipzig"} == set(changed)


def test_a_pull_interrupted_after_a_batch_resumes_and_relanding_is_idempotent(salesforce_env: SalesforceEmulator,
                                                                              tmp_path: Path) -> None:
    seed(salesforce_env)
    zone = LandingZone(tmp_path / "landing")

    class Crash(Exception):
        pass

    def crash_after_two(batch: Any, seen: list[Any] = []) -> None:  # noqa: B006 - the list counts the calls
        seen.append(batch)
        if len(seen) == 2:
            raise Crash

    with pytest.raises(Crash):
        pull_contacts(zone, since=None, page_size=PAGE, progress=crash_after_two)
    assert len(zone.batch_files("salesforce")) == 2
    resumed = pull_contacts(zone, since=None, page_size=PAGE)
    assert resumed.count == CONTACTS - 2 * PAGE and len(zone.batch_files("salesforce")) == CONTACTS // PAGE

    # the watermark lost: everything is pulled again, and every batch is found landed already (same bytes)
    watermark_path(zone).unlink()
    again = pull_contacts(zone, since=None, page_size=PAGE)
    assert again.pulled == CONTACTS and again.count == 0 and all(b.already_landed for b in again.batches)
    # an explicit --since re-pulls what is newer than it and never moves the stored watermark back
    mark = json.loads(watermark_path(zone).read_text())["last_modified_date"]
    backfill = pull_contacts(zone, since=datetime(2025, 11, 1, tzinfo=UTC), page_size=PAGE)
    assert backfill.pulled == 400 + sum(1 for r in salesforce_env.records("Contact")
                                        if "2025-11-01" < r["LastModifiedDate"] < "2025-11-03T09:30")
    # cut into pages from another starting point, the bytes differ: a new batch, whose records silver's
    # Id@LastModifiedDate deduplication quarantines as duplicates (documented in connectors/salesforce/api.py)
    assert backfill.count == 400 and len(backfill.new_batches) == 1
    assert json.loads(watermark_path(zone).read_text())["last_modified_date"] == mark


def test_bad_token_missing_configuration_and_salesforce_errors_are_clear(salesforce_env: SalesforceEmulator,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    zone = LandingZone(tmp_path / "landing")
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "00D000000000001!not-a-session")
    with pytest.raises(SourceError, match=r"HTTP 401 INVALID_SESSION_ID: .*renew SALESFORCE_ACCESS_TOKEN"):
        pull_contacts(zone, since=None)
    assert zone.batch_files("salesforce") == [] and not watermark_path(zone).exists()

    with pytest.raises(SourceError, match="set SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN, or SALESFORCE_US"):
        pull_contacts(zone, since=None, env={})
    with pytest.raises(SourceError, match="SALESFORCE_ACCESS_TOKEN is set but SALESFORCE_INSTANCE_URL is not"):
        pull_contacts(zone, since=None, env={"SALESFORCE_ACCESS_TOKEN": "x"})

    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", salesforce_env.access_token)
    salesforce_env.set_faults(rate_429=1.0)
    with pytest.raises(SourceError, match=r"HTTP 403 REQUEST_LIMIT_EXCEEDED: .*pull again later"):
        pull_contacts(zone, since=None)
    salesforce_env.set_faults()
    with pytest.raises(SourceError, match=r"page_size 50 is outside 200\.\.2000"):
        pull_contacts(zone, since=None, page_size=50)

    closed = SalesforceEmulator(port=0).start()
    url = closed.url
    closed.stop()
    with pytest.raises(SourceError, match=f"cannot reach {re.escape(url)}"):
        pull_contacts(zone, since=None, env={"SALESFORCE_INSTANCE_URL": url, "SALESFORCE_ACCESS_TOKEN": "t"})


def test_the_select_list_is_what_silver_reads() -> None:
    """CONTACT_FIELDS mirrors the payload fields of int_salesforce__parsed.sql: a field added there must be pulled."""
    sql = (ROOT / "dbt_project/models/silver/salesforce/int_salesforce__parsed.sql").read_text()
    block = re.search(r"payload_fields = \{(.*?)\}", sql, re.S)
    assert block is not None
    assert set(re.findall(r"'(\w+)': 'string'", block.group(1))) == set(CONTACT_FIELDS)
