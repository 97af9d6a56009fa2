"""Identity resolution end to end: hand-written source files and a generated population, landed the way
users land them, `dbt build` into temporary DuckDB warehouses, and the profiles checked.

Fixtures (tests/fixtures/identity/<scenario>/<source>/, in the formats of docs/sources.md):
- walkthrough     one person seen as an anonymous browser, a web form, an app login with the email in
                  another case, a Salesforce Contact with a national mobile number, a WhatsApp chat and two
                  SendGrid events;
- shared_device   a tablet three students log in on, and a system mailbox (noreply@) used by two people;
- merge_history   two fragments of one person, joined by a record of the second run (`<source>/later/`);
- probabilistic   a Contact entered twice with a typo, and another person with the same birth date and postcode;
- cli_duplicates  Contacts of the first run, and a CSV of typo'd duplicates (`salesforce/cli/`) landed with
                  `cdp land salesforce FILE` in the second.

The scenarios use disjoint identifiers, birth dates and postcodes, so they are landed together into
one warehouse (two runs: the fixture folders, then their `later/` folders and the CLI landing), and a
copy of it is rebuilt with cdp__identity_auto_merge on. A generated population checks that landing in
steps with a run after each gives exactly what one run over everything and a full refresh give.

dbt unit tests are excluded from these builds (`--exclude-resource-type unit_test`): they do not read
the landed data and only cost time; the data tests and model contracts do run.
"""

from __future__ import annotations

import csv
import json
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
FIXTURES = ROOT / "tests" / "fixtures" / "identity"
SCENARIOS = ("walkthrough", "shared_device", "merge_history", "probabilistic", "cli_duplicates")
BIN = Path(sys.executable).parent
THRESHOLD = 0.85

pytestmark = pytest.mark.integration


# --- helpers ------------------------------------------------------------------------------------


def dbt_executable() -> str:
    beside_python = BIN / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if found is None:
        pytest.skip("dbt is not installed")
    return found


@dataclass
class Home:
    """One landing zone, one warehouse and the dbt artifacts of its runs, all under tmp_path."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CDP_HOME": str(self.root),
            "CDP_TARGET": "duckdb",
            "CDP_LANDING_PATH": str(self.landing),
            "CDP_WAREHOUSE_PATH": str(self.warehouse),
            "DAGSTER_HOME": str(self.root / "dagster"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }

    def dbt_build(self, *extra: str) -> None:
        # one target path per warehouse: partial parsing works from its second run on, and runs on
        # other warehouses (other profiles) never share artifacts
        args = [
            dbt_executable(), "build", "--no-use-colors", "--profiles-dir", str(ROOT),
            "--target-path", str(self.root / "dbt_target"), "--log-path", str(self.root / "dbt_logs"),
            "--exclude-resource-type", "unit_test", *extra,
        ]
        result = subprocess.run(args, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (
            f"dbt build {' '.join(extra)} failed:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
        )

    def cdp(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "cdp"), *args], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def snapshot(self, name: str) -> Warehouse:
        """A copy of the warehouse as the last run left it (later runs do not change it)."""
        copy = self.root / f"{name}.duckdb"
        shutil.copyfile(self.warehouse, copy)
        return Warehouse(copy)


@dataclass
class Warehouse:
    path: Path

    def query(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute(sql, list(params or [])).fetchall()

    def value(self, sql: str, params: Sequence | None = None):
        rows = self.query(sql, params)
        assert len(rows) == 1, f"expected one row from {sql!r} {params}, got {rows}"
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def profiles_of(self, identifiers: Sequence[tuple[str, str]]) -> set[str]:
        """The profiles holding any of these (type, value) identifiers."""
        found: set[str] = set()
        for identifier_type, value in identifiers:
            rows = self.query(
                "select distinct profile_id from gold.profile_identifiers "
                "where identifier_type = ? and identifier_value = ?",
                [identifier_type, value],
            )
            assert rows, f"{identifier_type}:{value} is in no profile"
            found.update(r[0] for r in rows)
        return found

    def profile_of(self, identifier_type: str, value: str) -> str:
        (profile,) = self.profiles_of([(identifier_type, value)])
        return profile

    def identifiers_of(self, profile_id: str) -> set[tuple[str, str]]:
        return set(
            self.query(
                "select distinct identifier_type, identifier_value from gold.profile_identifiers where profile_id = ?",
                [profile_id],
            )
        )

    def profile(self, profile_id: str) -> dict:
        with duckdb.connect(str(self.path), read_only=True) as con:
            cursor = con.execute("select * from gold.profiles where profile_id = ?", [profile_id])
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        assert len(rows) == 1, f"profile {profile_id}: {rows}"
        return dict(zip(names, rows[0], strict=True))

    def candidates(self) -> dict[frozenset[str], dict]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            cursor = con.execute("select * from gold.identity_match_candidates")
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        result = {}
        for row in rows:
            record = dict(zip(names, row, strict=True))
            result[frozenset((record["left_record_id"], record["right_record_id"]))] = record
        return result


def land_fixtures(zone: LandingZone, subfolder: str = "") -> None:
    """Every scenario's `<source>/` (or `<source>/<subfolder>/`) files, one batch per file, scenario by
    scenario and source by source in SOURCES order (so web batches of a scenario land before its CRM)."""
    for scenario in SCENARIOS:
        for source in SOURCES:
            folder = FIXTURES / scenario / source / subfolder
            if folder.is_dir() and any(p.is_file() for p in folder.iterdir()):
                file_source(source, [folder]).land(zone)


def fixture_event_ids(scenario: str) -> dict[str, str]:
    """silver event_id -> source of every record in a scenario's first-run files (all valid)."""
    ids: dict[str, str] = {}
    for source in SOURCES:
        folder = FIXTURES / scenario / source
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            text = path.read_text()
            if source == "salesforce" and path.suffix == ".csv":
                records = list(csv.DictReader(text.splitlines()))
            elif source == "salesforce":
                records = json.loads(text)["records"]
            else:
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            for r in records:
                event_id = {
                    "web": lambda r: r["event_id"],
                    "app": lambda r: r["event_id"],
                    "salesforce": lambda r: r["Id"] + "@" + r["LastModifiedDate"],
                    "email": lambda r: r["sg_event_id"],
                    "whatsapp": lambda r: r["MessageSid"],
                }[source](r)
                ids[event_id] = source
    return ids


# --- the fixture warehouse: two runs, and a copy rebuilt with auto-merge ---------------------------


@dataclass
class FixtureRuns:
    first: Warehouse
    second: Warehouse
    auto_merged: Warehouse
    unmerged: Warehouse
    cli_stdout: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> FixtureRuns:
    home = Home(tmp_path_factory.mktemp("identity_fixtures"))
    zone = LandingZone(home.landing)

    land_fixtures(zone)
    home.dbt_build()
    first = home.snapshot("first")

    # second run: the later/ files, and a Salesforce CSV landed with the real CLI
    land_fixtures(zone, "later")
    cli_csv = FIXTURES / "cli_duplicates" / "salesforce" / "cli" / "contacts-bulk-00001.csv"
    cli_stdout = home.cdp("land", "salesforce", str(cli_csv))
    home.dbt_build()
    second = home.snapshot("second")

    # the same warehouse rebuilt with auto-merge on (a copy in its own home)
    auto = Home(tmp_path_factory.mktemp("identity_auto_merge"))
    shutil.copytree(home.landing, auto.landing)
    shutil.copyfile(home.warehouse, auto.warehouse)
    auto.dbt_build("--vars", "{cdp__identity_auto_merge: true}")
    auto_merged = auto.snapshot("auto_merged")

    # and auto-merge turned off again: an incremental run must undo the merge (a copy in its own home)
    off = Home(tmp_path_factory.mktemp("identity_auto_merge_off"))
    shutil.copytree(auto.landing, off.landing)
    shutil.copyfile(auto.warehouse, off.warehouse)
    off.dbt_build()
    return FixtureRuns(first, second, auto_merged, Warehouse(off.warehouse), cli_stdout)


# --- 1. five identities, one person ----------------------------------------------------------------

LENA = {
    ("anonymous_id", "anon_wt_lena01"),
    ("email", "lena.vogel@mailbox.de"),
    ("device_id", "dev_wt_lena01"),
    ("user_id", "usr_wt_0001"),
    ("crm_id", "0035g00000WtLenAAV"),
    ("phone", "+4915148392716"),  # MobilePhone "0151 4839 2716", MailingCountry Germany; WhatsApp +4915148392716
}


def test_one_profile_holds_every_identity_of_the_walkthrough(runs: FixtureRuns) -> None:
    for warehouse in (runs.first, runs.second):
        profiles = warehouse.profiles_of(sorted(LENA))
        assert len(profiles) == 1, f"Lena is split over {profiles}"
        # and nothing else: the app login's ' LENA.VOGEL@Mailbox.DE ' is the same email, the CRM landline is
        # no identifier
        assert warehouse.identifiers_of(profiles.pop()) == LENA


def test_walkthrough_profile_takes_its_contact_and_lifecycle_from_the_crm(runs: FixtureRuns) -> None:
    warehouse = runs.second
    profile = warehouse.profile(warehouse.profile_of("crm_id", "0035g00000WtLenAAV"))
    assert profile["lifecycle_stage"] == "applicant"  # Application_Stage__c 'Application Submitted'
    assert profile["application_stage"] == "Application Submitted"
    assert profile["crm_contact_id"] == "0035g00000WtLenAAV"
    assert profile["contact_source"] == "salesforce"
    assert (profile["first_name"], profile["last_name"], profile["city"]) == ("Lena", "Vogel", "Hamburg")
    assert (profile["email"], profile["phone"]) == ("lena.vogel@mailbox.de", "+4915148392716")
    # activity of every anchor is rolled up into the one profile
    counts = {k: profile[k] for k in ("web_events", "app_events", "crm_versions", "email_events", "whatsapp_messages")}
    assert counts == {"web_events": 2, "app_events": 3, "crm_versions": 1, "email_events": 2, "whatsapp_messages": 1}
    assert profile["identifier_count"] == len(LENA)
    assert profile["crm_contacts"] == 1
    assert 0 < profile["identity_confidence"] < 1  # several link types, none probabilistic
    assert profile["is_probabilistic_merge"] is False
    assert profile["has_shared_identifier"] is False


def test_every_walkthrough_event_maps_to_that_profile(runs: FixtureRuns) -> None:
    warehouse = runs.second
    lena = warehouse.profile_of("email", "lena.vogel@mailbox.de")
    expected = fixture_event_ids("walkthrough")
    assert set(expected.values()) == set(SOURCES)
    rows = warehouse.query(
        "select event_id, source, profile_id from gold.profile_events where event_id in "
        f"({', '.join('?' * len(expected))})",
        list(expected),
    )
    assert {event_id: source for event_id, source, _ in rows} == expected
    assert {event_id: profile for event_id, _, profile in rows} == dict.fromkeys(expected, lena)


# --- 2. merge protection: a shared tablet and a blocklisted email -----------------------------------

TABLET = "dev_sd_tablet01"
STUDENTS = {
    "jonas": [("user_id", "usr_sd_0001"), ("email", "jonas.keller@uni-mail.eu"), ("crm_id", "0035g00000SdJonAAV"),
              ("phone", "+491605550101")],
    "mia": [("user_id", "usr_sd_0002"), ("email", "mia.schulz@uni-mail.eu"), ("crm_id", "0035g00000SdMiaAAV"),
            ("phone", "+491704441212"), ("device_id", "dev_sd_mia_phone")],
    "ali": [("user_id", "usr_sd_0003"), ("email", "ali.yilmaz@mailbox.de"), ("crm_id", "0035g00000SdAliAAV"),
            ("phone", "+491763332323")],
}


def test_students_sharing_a_tablet_stay_three_profiles(runs: FixtureRuns) -> None:
    warehouse = runs.second
    profiles = {}
    for student, identifiers in STUDENTS.items():
        found = warehouse.profiles_of(identifiers)
        assert len(found) == 1, f"{student}'s own identifiers are split over {found}"
        profiles[student] = found.pop()
        held = warehouse.identifiers_of(profiles[student])
        assert held == set(identifiers), f"{student}: {held}"
        assert ("device_id", TABLET) not in held
    assert len(set(profiles.values())) == 3
    student_emails = {value for ids in STUDENTS.values() for t, value in ids if t == "email"}
    mixed = warehouse.query(
        "select profile_id, list(distinct identifier_value) from gold.profile_identifiers "
        "where identifier_type = 'email' and identifier_value in (?, ?, ?) "
        "group by profile_id having count(distinct identifier_value) > 1",
        sorted(student_emails),
    )
    assert mixed == []
    # the tablet's own events (app_open before any login) are a profile of their own, flagged
    tablet_profile = warehouse.profile_of("device_id", TABLET)
    assert tablet_profile not in profiles.values()
    assert warehouse.identifiers_of(tablet_profile) == {("device_id", TABLET)}
    assert warehouse.profile(tablet_profile)["has_shared_identifier"] is True
    assert warehouse.profile(profiles["mia"])["has_shared_identifier"] is False
    # the students' events on the tablet belong to each student (their user_id is the stronger anchor)
    by_event = dict(
        warehouse.query(
            "select event_id, profile_id from gold.profile_events where device_id = ? and user_id is not null", [TABLET]
        )
    )
    assert len(by_event) == 6
    assert set(by_event.values()) == set(profiles.values())


def test_the_tablet_is_shared_and_each_cut_link_says_why(runs: FixtureRuns) -> None:
    warehouse = runs.second
    key = f"device_id:{TABLET}"
    is_shared, shared_reason, is_blocked = warehouse.value(
        "select is_shared, shared_reason, is_blocked from identity.int_identity__nodes where identifier_key = ?", [key]
    )
    assert (is_shared, is_blocked) == (True, False)
    assert "3 user_id" in shared_reason
    assert warehouse.query(
        "select distinct is_shared from gold.profile_identifiers where identifier_type = 'device_id' "
        "and identifier_value = ?",
        [TABLET],
    ) == [(True,)]
    cut = warehouse.query(
        "select identifier_key_a, identifier_key_b, cut_reason from identity.int_identity__cut_edges "
        "where ? in (identifier_key_a, identifier_key_b) order by 1, 2",
        [key],
    )
    assert [(a, b) for a, b, _ in cut] == [(f"user_id:usr_sd_000{i}", key) for i in (1, 2, 3)]
    for _, _, reason in cut:
        assert reason.startswith("shared device_id: linked to 3 user_id identifiers"), reason
    # Mia's own phone is not shared and keeps its link
    assert warehouse.value(
        "select is_shared from identity.int_identity__nodes where identifier_key = 'device_id:dev_sd_mia_phone'"
    ) is False


def test_a_blocklisted_email_merges_nobody(runs: FixtureRuns) -> None:
    warehouse = runs.second
    otto = warehouse.profile_of("crm_id", "0035g00000BlOttAAV")
    ylva = warehouse.profile_of("anonymous_id", "anon_bl_ylva01")
    assert otto != ylva
    assert warehouse.identifiers_of(otto) == {("crm_id", "0035g00000BlOttAAV"), ("phone", "+491712223344")}
    assert ("crm_id", "0035g00000BlOttAAV") not in warehouse.identifiers_of(ylva)
    key = "email:noreply@mailbox.de"  # the web form's 'NoReply@mailbox.de', normalized
    assert warehouse.value(
        "select is_blocked, component_id from identity.int_identity__components where identifier_key = ?", [key]
    ) == (True, None)
    assert warehouse.query("select * from gold.profile_identifiers where identifier_value = 'noreply@mailbox.de'") == []
    cut = warehouse.query(
        "select case when identifier_key_a = ? then identifier_key_b else identifier_key_a end, cut_reason "
        "from identity.int_identity__cut_edges where ? in (identifier_key_a, identifier_key_b) order by 1",
        [key, key],
    )
    assert {other for other, _ in cut} >= {"anonymous_id:anon_bl_ylva01", "crm_id:0035g00000BlOttAAV"}
    assert all(reason.startswith("blocklisted email: placeholder or system mailbox") for _, reason in cut), cut
    # Otto's CRM record still belongs to him (its Id is its anchor), Ylva's page view to her browser
    assert warehouse.value(
        "select profile_id from gold.profile_events where event_id = '0035g00000BlOttAAV@2026-03-02T10:00:00.000Z'"
    ) == otto
    assert warehouse.value(
        "select profile_id from gold.profile_events where event_id = '1d000002-0001-4000-8000-000000000001'"
    ) == ylva


# --- 3. stable ids and merge history ----------------------------------------------------------------

PAUL_WEB = ("email", "paul.richter@mailbox.de")
PAUL_CRM = ("crm_id", "0035g00000MhPauAAV")
UWE = ("user_id", "usr_mh_0003")


def test_two_fragments_are_two_profiles_in_the_first_run(runs: FixtureRuns) -> None:
    first = runs.first
    web, crm = first.profile_of(*PAUL_WEB), first.profile_of(*PAUL_CRM)
    assert web != crm
    assert first.identifiers_of(web) == {PAUL_WEB, ("anonymous_id", "anon_mh_paul01")}
    assert first.identifiers_of(crm) == {PAUL_CRM, ("email", "p.richter@uni-mail.eu"), ("phone", "+491577654321")}
    # the web fragment landed first (its batch before the CRM batch): it is the older profile
    web_landed, crm_landed = (
        first.value(
            "select min(first_landed_at) from identity.int_identity__components where component_id = ?", [profile]
        )
        for profile in (web, crm)
    )
    assert web_landed < crm_landed


def test_a_linking_record_merges_them_and_the_older_id_survives(runs: FixtureRuns) -> None:
    first, second = runs.first, runs.second
    web_id, crm_id = first.profile_of(*PAUL_WEB), first.profile_of(*PAUL_CRM)
    merged = second.profiles_of([PAUL_WEB, PAUL_CRM, ("anonymous_id", "anon_mh_paul02")])
    assert merged == {web_id}
    assert second.identifiers_of(web_id) == {
        PAUL_WEB, PAUL_CRM, ("email", "p.richter@uni-mail.eu"), ("phone", "+491577654321"),
        ("anonymous_id", "anon_mh_paul01"), ("anonymous_id", "anon_mh_paul02"),
    }
    assert second.query("select * from gold.profiles where profile_id = ?", [crm_id]) == []
    # the retired id resolves to the survivor
    assert second.value(
        "select surviving_profile_id, merge_kind, retired_at is not null from gold.profile_merges "
        "where retired_profile_id = ?",
        [crm_id],
    ) == (web_id, "deterministic", True)
    assert second.query("select * from gold.profile_merges where retired_profile_id = ?", [web_id]) == []
    profile = second.profile(web_id)
    assert profile["crm_contact_id"] == PAUL_CRM[1]
    assert profile["lifecycle_stage"] == "applicant"
    assert profile["web_events"] == 4


def test_unrelated_profiles_keep_their_ids(runs: FixtureRuns) -> None:
    first, second = runs.first, runs.second
    assert second.profile_of(*UWE) == first.profile_of(*UWE)
    assert second.profile(second.profile_of(*UWE))["lessons_completed"] == 2  # one more in run 2
    # every profile of run 1 that no merge touched keeps its id
    merged_away = {r[0] for r in second.query("select retired_profile_id from gold.profile_merges")}
    assert merged_away == {first.profile_of(*PAUL_CRM)}
    before = {r[0] for r in first.query("select profile_id from gold.profiles")}
    after = {r[0] for r in second.query("select profile_id from gold.profiles")}
    assert before - merged_away <= after
    nina = second.profile_of("email", "nina.berg@mailbox.de")
    assert nina not in before


# --- 4. probabilistic matching ----------------------------------------------------------------------

KATHARINA, KATHARINA_TYPO, FELIX = "0035g00000PbKatAAV", "0035g00000PbKa2AAV", "0035g00000PbFelAAV"


def test_a_typo_duplicate_contact_waits_for_review(runs: FixtureRuns) -> None:
    warehouse = runs.second
    candidates = warehouse.candidates()
    pair = candidates.get(frozenset((KATHARINA, KATHARINA_TYPO)))
    assert pair is not None, f"no candidate for the duplicate contact; candidates: {list(candidates)}"
    assert pair["decision"] == "review"
    assert pair["score"] >= THRESHOLD
    assert (pair["left_record_id"], pair["right_record_id"]) == tuple(sorted((KATHARINA, KATHARINA_TYPO)))
    assert pair["name_similarity"] < 1  # Brandstettr
    assert pair["birth_date_similarity"] == 1.0
    assert pair["location_similarity"] == pytest.approx(1.0)  # postcode and city equal, no street on one side
    assert "birth_date+postal_code" in pair["blocking_key"]
    left = warehouse.profile_of("crm_id", pair["left_record_id"])
    right = warehouse.profile_of("crm_id", pair["right_record_id"])
    assert left != right
    assert (pair["left_profile_id"], pair["right_profile_id"]) == (left, right)
    for profile in (left, right):
        assert warehouse.profile(profile)["is_probabilistic_merge"] is False


def test_same_birth_date_and_postcode_alone_is_no_match(runs: FixtureRuns) -> None:
    for warehouse in (runs.second, runs.auto_merged):
        for pair, candidate in warehouse.candidates().items():
            if FELIX in pair:
                assert candidate["decision"] not in ("auto_merged", "approved"), candidate
        felix = warehouse.profile_of("crm_id", FELIX)
        assert felix not in warehouse.profiles_of([("crm_id", KATHARINA), ("crm_id", KATHARINA_TYPO)])
        assert warehouse.identifiers_of(felix) == {
            ("crm_id", FELIX), ("email", "felix.wagner@mailbox.de"), ("phone", "+491751928374"),
        }


def test_auto_merge_merges_the_candidate(runs: FixtureRuns) -> None:
    before, warehouse = runs.second, runs.auto_merged
    pair = warehouse.candidates()[frozenset((KATHARINA, KATHARINA_TYPO))]
    assert pair["decision"] == "auto_merged"
    (profile_id,) = warehouse.profiles_of([("crm_id", KATHARINA), ("crm_id", KATHARINA_TYPO)])
    assert warehouse.identifiers_of(profile_id) == {
        ("crm_id", KATHARINA), ("crm_id", KATHARINA_TYPO), ("email", "katharina.brandstetter@mailbox.de"),
        ("email", "kathi.b@uni-mail.eu"), ("phone", "+491529081726"),
    }
    profile = warehouse.profile(profile_id)
    assert profile["is_probabilistic_merge"] is True
    assert profile["crm_contacts"] == 2
    assert profile["identity_confidence"] <= pair["score"]
    # the surviving id is one of the two earlier ids, the other one is retired as a probabilistic merge
    earlier = {before.profile_of("crm_id", KATHARINA), before.profile_of("crm_id", KATHARINA_TYPO)}
    assert profile_id in earlier
    (retired,) = earlier - {profile_id}
    assert warehouse.value(
        "select surviving_profile_id, merge_kind from gold.profile_merges where retired_profile_id = ?", [retired]
    ) == (profile_id, "probabilistic")
    assert warehouse.query("select * from gold.profiles where profile_id = ?", [retired]) == []


def test_turning_auto_merge_off_again_restores_both_profiles(runs: FixtureRuns) -> None:
    # the survivor of an undone merge must shrink back, not keep the retired profile's events and contacts
    columns = ("profile_id, crm_contact_id, email, web_events, app_events, crm_versions, email_events, "
               "whatsapp_messages, crm_contacts, identifier_count, is_probabilistic_merge, identity_confidence")
    sql = f"select {columns} from gold.profiles order by profile_id"
    assert runs.unmerged.query(sql) == runs.second.query(sql)
    assert runs.unmerged.value("select count(*) from gold.profile_merges where merge_kind = 'probabilistic'") == 0


# --- 5. duplicates landed with the CLI ----------------------------------------------------------------

CLI_PAIRS = {
    frozenset(("0035g00000ClSebAAV", "0035g00000ClSe2AAV")),  # Sebastian Hoffmann / Sebastain Hoffman
    frozenset(("0035g00000ClMarAAV", "0035g00000ClMa2AAV")),  # Marlene Dietz / Marleen Dietz
}


def test_cli_landed_duplicates_become_match_candidates(runs: FixtureRuns) -> None:
    assert "landed 1 new batches (2 records)" in runs.cli_stdout
    cli_ids = {record for pair in CLI_PAIRS for record in pair}
    assert not [p for p in runs.first.candidates() if p & cli_ids]
    assert runs.second.value(
        "select count(*) from bronze.brz_salesforce__records where file_name = 'contacts-bulk-00001.csv'"
    ) == 2
    candidates = {p: c for p, c in runs.second.candidates().items() if p & cli_ids}
    assert set(candidates) == CLI_PAIRS
    for pair, candidate in candidates.items():
        assert candidate["decision"] == "review", candidate
        assert candidate["score"] >= THRESHOLD, candidate
        profiles = runs.second.profiles_of([("crm_id", record) for record in pair])
        assert len(profiles) == 2, pair


# --- 6. incremental runs equal one run and a full refresh ------------------------------------------------

# app, email and WhatsApp first: their records carry one identifier type each besides the app's
# user/device/email, so phones and bare email addresses become profiles of their own that the web
# forms (email + phone) and the CRM (email + mobile) of the later steps merge into older profiles
STEPS = (("app", "email", "whatsapp"), ("web",), ("salesforce",))
COMPARED = {
    "gold.profiles": ["computed_at"],
    "gold.profile_identifiers": ["updated_at"],  # when the row was written: a run's clock
    "identity.int_identity__components": None,  # only (identifier_key, component_id)
    "gold.identity_match_candidates": [],
}


def comparable(warehouse: Warehouse) -> dict[str, list[tuple]]:
    tables: dict[str, list[tuple]] = {}
    for relation, excluded in COMPARED.items():
        if excluded is None:
            sql = f"select identifier_key, component_id from {relation}"
        else:
            schema, name = relation.split(".")
            timestamps = [
                r[0]
                for r in warehouse.query(
                    "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
                    "and data_type like 'TIMESTAMP%'",
                    [schema, name],
                )
            ]
            # profiles and identifiers keep their event timestamps (data); computed_at and updated_at are a run's clock.
            # Candidates have no timestamp column; any added one would be a run's clock too.
            drop = excluded + (timestamps if relation == "gold.identity_match_candidates" else [])
            sql = f"select * {'exclude (' + ', '.join(drop) + ')' if drop else ''} from {relation}"
        tables[relation] = sorted(warehouse.query(sql), key=repr)
    return tables


@dataclass
class GeneratedRuns:
    incremental: Warehouse
    all_at_once: Warehouse
    full_refresh: Warehouse


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRuns:
    stepwise = Home(tmp_path_factory.mktemp("identity_stepwise"))
    at_once = Home(tmp_path_factory.mktemp("identity_at_once"))
    population = stepwise.root / "generated"
    stepwise.cdp("generate", "--people", "300", "--seed", "5", "--out", str(population))

    def land(home: Home, sources: Sequence[str]) -> None:
        for source in sources:
            files = sorted(p for p in (population / source).iterdir() if p.is_file())
            home.cdp("land", source, *map(str, files))

    for step in STEPS:
        land(stepwise, step)
        stepwise.dbt_build()
    incremental = stepwise.snapshot("incremental")
    stepwise.dbt_build("--full-refresh")
    full_refresh = stepwise.snapshot("full_refresh")

    # the same files in the same order (profile ids follow landing order), one run
    land(at_once, [s for step in STEPS for s in step])
    at_once.dbt_build()
    return GeneratedRuns(incremental, Warehouse(at_once.warehouse), full_refresh)


def assert_same(actual: dict[str, list[tuple]], expected: dict[str, list[tuple]], label: str) -> None:
    for relation, rows in expected.items():
        other = actual[relation]
        if other != rows:
            missing = [r for r in rows if r not in set(other)][:5]
            extra = [r for r in other if r not in set(rows)][:5]
            pytest.fail(
                f"{relation}: {label} differs ({len(other)} vs {len(rows)} rows)\n"
                f"  only in the reference: {missing}\n  only in {label}: {extra}"
            )


def test_incremental_runs_equal_one_run_and_a_full_refresh(generated: GeneratedRuns) -> None:
    reference = comparable(generated.all_at_once)
    for relation in ("gold.profiles", "gold.profile_identifiers", "identity.int_identity__components"):
        assert len(reference[relation]) > 100, relation
    assert reference["gold.identity_match_candidates"], "the population should hold CRM duplicates"
    assert_same(comparable(generated.incremental), reference, "incremental (3 steps)")
    assert_same(comparable(generated.full_refresh), reference, "full refresh after the steps")


def test_incremental_merges_resolve_to_live_profiles(generated: GeneratedRuns) -> None:
    for warehouse in (generated.incremental, generated.full_refresh):
        merges = warehouse.query(
            "select m.retired_profile_id, m.surviving_profile_id, p.profile_id from gold.profile_merges as m "
            "left join gold.profiles as p on p.profile_id = m.surviving_profile_id"
        )
        assert merges, "no profile was retired by the later steps"
        dangling = [m for m in merges if m[2] is None]
        assert dangling == [], f"retired ids whose survivor is no live profile: {dangling[:5]}"
        live = {r[0] for r in warehouse.query("select profile_id from gold.profiles")}
        assert not live & {m[0] for m in merges}, "a retired id is still a live profile"
