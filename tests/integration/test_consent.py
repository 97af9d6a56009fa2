"""Consent end to end: hand-written source files (tests/fixtures/consent/<source>/, then <source>/later/)
landed the way users land them, `dbt build` into a temporary DuckDB twice, and the consent ledger,
current consent, profiles, suppression list and WhatsApp insights checked after each run.

- Mara: a web form with her private address and mobile, a second form with her work address (one
  browser: one profile), an app login with a push token, a WhatsApp question and STOP; later START,
  and an unsubscribe from her work address.
- Ole: a form, then a cookie banner opting out of analytics and a preference centre opting in to SMS
  (`consent_updated`, as the ingestion API lands them); his address bounces hard.
- Jonas: a Salesforce Contact without opt-out (a soft bounce), later HasOptedOutOfEmail true.

Finally the warehouse is rebuilt with --full-refresh: incremental runs must equal a rebuild.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from connectors.landing import SOURCES, LandingZone
from connectors.registry import file_source

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "consent"
BIN = Path(sys.executable).parent

MARA_EMAIL, MARA_WORK_EMAIL, MARA_PHONE = "mara.kohl@posteo.de", "mara.kohl@firma-nord.de", "+4915122334455"
OLE_EMAIL = "ole.berg@posteo.de"
JONAS_CRM_ID, JONAS_EMAIL = "0035g00000CsJonAAV", "jonas.lind@posteo.de"
CHANNELS = {"email", "whatsapp", "sms", "push", "analytics"}

pytestmark = pytest.mark.integration


def dbt_executable() -> str:
    beside_python = BIN / "dbt"
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

    def profile_of(self, identifier_type: str, value: str) -> str:
        rows = self.query(
            "select distinct profile_id from gold.profile_identifiers "
            "where identifier_type = ? and identifier_value = ?",
            [identifier_type, value],
        )
        assert len(rows) == 1, f"{identifier_type}:{value} is in profiles {rows}"
        return rows[0][0]

    def consent(self, profile_id: str) -> dict[str, dict]:
        """channel -> the consent_current row of the profile."""
        with duckdb.connect(str(self.path), read_only=True) as con:
            cursor = con.execute("select * from gold.consent_current where profile_id = ?", [profile_id])
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        assert {r["channel"] for r in rows} == CHANNELS and len(rows) == 5, rows
        return {r["channel"]: r for r in rows}

    def profile_consent(self, profile_id: str) -> tuple[str, str]:
        rows = self.query(
            "select email_consent, whatsapp_consent from gold.profiles where profile_id = ?", [profile_id])
        assert len(rows) == 1
        return rows[0]

    def suppressions(self) -> set[tuple[str, str, str, str]]:
        return set(self.query("select identifier_hash, identifier_type, channel, reason from gold.suppression_list"))


@dataclass
class Home:
    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

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

    def land(self, subfolder: str = "") -> None:
        zone = LandingZone(self.landing)
        for source in SOURCES:
            folder = FIXTURES / source / subfolder
            if folder.is_dir() and any(p.is_file() for p in folder.iterdir()):
                file_source(source, [folder]).land(zone)

    def snapshot(self, name: str) -> Warehouse:
        copy = self.root / f"{name}.duckdb"
        shutil.copyfile(self.warehouse, copy)
        return Warehouse(copy)


def md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()


@dataclass
class Runs:
    first: Warehouse
    second: Warehouse
    rebuilt: Warehouse


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    home = Home(tmp_path_factory.mktemp("consent"))
    home.land()
    home.dbt_build()
    first = home.snapshot("first")
    home.land("later")
    home.dbt_build()
    second = home.snapshot("second")
    home.dbt_build("--full-refresh")
    return Runs(first, second, Warehouse(home.warehouse))


def test_email_and_phone_are_one_profile(runs: Runs) -> None:
    mara = runs.first.profile_of("email", MARA_EMAIL)
    assert runs.first.profile_of("email", MARA_WORK_EMAIL) == mara
    assert runs.first.profile_of("phone", MARA_PHONE) == mara
    assert runs.first.profile_of("user_id", "usr_cs_0001") == mara


def test_whatsapp_stop_opts_the_whole_profile_out(runs: Runs) -> None:
    mara = runs.first.profile_of("email", MARA_EMAIL)
    consent = runs.first.consent(mara)
    assert consent["whatsapp"]["status"] == "opted_out"
    assert consent["whatsapp"]["can_contact"] is False
    assert consent["whatsapp"]["source"] == "whatsapp"
    assert str(consent["whatsapp"]["status_at"]) == "2026-03-01 13:05:00"
    # the other channels keep their own state
    assert (consent["email"]["status"], consent["email"]["legal_basis"], consent["email"]["can_contact"]) == (
        "implied", "legitimate_interest", True)
    assert (consent["push"]["status"], consent["push"]["legal_basis"], consent["push"]["source"]) == (
        "opted_in", "consent", "app")
    assert consent["analytics"]["status"] == "implied"
    assert (consent["sms"]["status"], consent["sms"]["can_contact"]) == ("unknown", False)
    assert runs.first.profile_consent(mara) == ("implied", "opted_out")
    # the phone is suppressed on WhatsApp, hashed
    assert (md5(MARA_PHONE), "phone", "whatsapp", "whatsapp_stop") in runs.first.suppressions()


def test_start_after_stop_opts_in_again(runs: Runs) -> None:
    mara = runs.second.profile_of("email", MARA_EMAIL)
    consent = runs.second.consent(mara)
    assert (consent["whatsapp"]["status"], consent["whatsapp"]["legal_basis"], consent["whatsapp"]["can_contact"]) == (
        "opted_in", "consent", True)
    assert str(consent["whatsapp"]["status_at"]) == "2026-03-03 09:00:00"
    assert not any(s[0] == md5(MARA_PHONE) for s in runs.second.suppressions())
    # the ledger keeps both statements of the phone
    statements = runs.second.query(
        "select status, reason from gold.consent_events where identifier_value = ? order by occurred_at", [MARA_PHONE])
    assert statements == [("opted_out", "whatsapp_stop"), ("opted_in", "whatsapp_start")]


def test_unsubscribe_of_a_second_address_opts_the_profile_out(runs: Runs) -> None:
    mara = runs.second.profile_of("email", MARA_EMAIL)
    consent = runs.second.consent(mara)
    assert (consent["email"]["status"], consent["email"]["can_contact"], consent["email"]["source"]) == (
        "opted_out", False, "email")
    assert runs.second.profile_consent(mara) == ("opted_out", "opted_in")
    assert (md5(MARA_WORK_EMAIL), "email", "email", "unsubscribed") in runs.second.suppressions()


def test_crm_opt_out_flag(runs: Runs) -> None:
    jonas_first = runs.first.profile_of("crm_id", JONAS_CRM_ID)
    # HasOptedOutOfEmail false at the first version states nothing; a soft bounce suppresses nothing
    assert runs.first.consent(jonas_first)["email"]["status"] == "implied"
    assert not runs.first.query("select * from gold.consent_events where source = 'salesforce'")
    assert not any(s[0] == md5(JONAS_EMAIL) for s in runs.first.suppressions())

    jonas = runs.second.profile_of("crm_id", JONAS_CRM_ID)
    email = runs.second.consent(jonas)["email"]
    assert (email["status"], email["source"], str(email["status_at"])) == (
        "opted_out", "salesforce", "2026-03-03 08:00:00")
    assert runs.second.profile_consent(jonas)[0] == "opted_out"
    assert (md5(JONAS_CRM_ID), "crm_id", "email", "crm_opt_out") in runs.second.suppressions()


def test_api_consent_updates_and_hard_bounce(runs: Runs) -> None:
    ole = runs.second.profile_of("email", OLE_EMAIL)
    consent = runs.second.consent(ole)
    assert (consent["sms"]["status"], consent["sms"]["can_contact"], consent["sms"]["source"]) == (
        "opted_in", True, "web")
    assert (consent["analytics"]["status"], consent["analytics"]["can_contact"]) == ("opted_out", False)
    # a hard bounce is deliverability, not consent: suppressed, but the consent stays implied
    assert consent["email"]["status"] == "implied"
    suppressions = runs.second.suppressions()
    assert (md5(OLE_EMAIL), "email", "email", "hard_bounce") in suppressions
    assert (md5("anon_cs_ole01"), "anonymous_id", "analytics", "api") in suppressions


def test_a_consent_update_without_a_known_channel_and_status_is_quarantined(runs: Runs) -> None:
    """Mara's app sends two broken consent_updated events (an unknown channel; no status): both are quarantined
    with the reason, neither reaches the ledger, and her push consent stays what the push permission says."""
    reasons = dict(runs.second.query(
        "select json_extract_string(payload, '$.event_id'), reason from silver.quarantine "
        "where source = 'app' and payload like '%consent_updated%'"))
    assert reasons == {
        "6c000001-0001-4000-8000-000000000090": "consent_updated needs properties.channel (email, whatsapp, sms, "
        "push, analytics) and properties.status (opted_in, opted_out), got channel \"carrier_pigeon\", "
        "status \"opted_out\"",
        "6c000001-0001-4000-8000-000000000091": "consent_updated needs properties.channel (email, whatsapp, sms, "
        "push, analytics) and properties.status (opted_in, opted_out), got channel \"push\", status none",
    }
    assert runs.second.query(
        "select count(*) from gold.consent_events where source_event_id like '6c000001-0001-4000-8000-00000000009%'"
    ) == [(0,)]
    mara = runs.second.profile_of("email", MARA_EMAIL)
    assert runs.second.consent(mara)["push"]["status"] == "opted_in"


def test_suppression_list_holds_no_raw_identifiers(runs: Runs) -> None:
    rows = runs.second.query("select * from gold.suppression_list")
    assert len(rows) == 4  # Mara's work address, Jonas's contact, Ole's bounce and his analytics opt-out
    text = " ".join(str(v) for row in rows for v in row)
    for raw in (MARA_EMAIL, MARA_WORK_EMAIL, MARA_PHONE, OLE_EMAIL, JONAS_CRM_ID, "@", "+49"):
        assert raw not in text


def test_whatsapp_insights(runs: Runs) -> None:
    mara = runs.second.profile_of("email", MARA_EMAIL)
    rows = runs.second.query(
        "select intent, program_entity, sentiment_label, profile_id from gold.whatsapp_message_insights "
        "order by received_at")
    assert rows == [
        ("deadline_question", "MBA", "neutral", mara),
        ("opt_out", None, "neutral", mara),
        ("opt_in", None, "neutral", mara),
    ]
    columns = {r[0] for r in runs.second.query(
        "select column_name from information_schema.columns where table_name = 'whatsapp_message_insights'")}
    assert "body" not in columns and "phone" not in columns


def test_incremental_runs_equal_a_full_refresh(runs: Runs) -> None:
    for sql in (
        "select * exclude (loaded_at) from gold.consent_events order by consent_event_id",
        "select * exclude (updated_at) from gold.consent_current order by profile_id, channel",
        "select * exclude (updated_at) from gold.suppression_list order by suppression_id",
        "select profile_id, email_consent, whatsapp_consent from gold.profiles order by profile_id",
        "select * exclude (updated_at, bronze_loaded_at) from gold.whatsapp_message_insights order by message_id",
    ):
        assert runs.second.query(sql) == runs.rebuilt.query(sql), sql
