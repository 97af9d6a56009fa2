"""The right to be forgotten in the destinations: the erasure job's `destinations` store deletes the subject's
Salesforce Contacts and SendGrid contacts through the real clients (the local emulators here), leaves everyone else,
and its sweep finds nothing afterwards; without configuration it says "not configured"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulators.salesforce import SalesforceEmulator
from emulators.sendgrid import DEMO_API_KEY, SendGridEmulator
from orchestration.privacy.subject import Subject
from orchestration.settings import Settings
from reverse_etl.privacy import DestinationsStore

pytestmark = pytest.mark.integration

SUBJECT_EMAIL = "lena.voss@example.org"
SUBJECT_PROFILES = {"p_subject_1", "p_subject_2"}  # a merged person: two profile ids over time


@pytest.fixture()
def emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SalesforceEmulator, SendGridEmulator]]:
    with SalesforceEmulator() as sf, SendGridEmulator() as sg:
        monkeypatch.setenv("SALESFORCE_INSTANCE_URL", sf.url)
        monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", sf.access_token)
        monkeypatch.setenv("SENDGRID_API_KEY", DEMO_API_KEY)
        monkeypatch.setenv("SENDGRID_API_BASE_URL", sg.url)
        sf.seed_records("Contact", [
            {"LastName": "Voss", "Email": SUBJECT_EMAIL, "CDP_Profile_Id__c": "p_subject_1"},
            {"LastName": "Voss", "Email": "lena.old@example.org", "CDP_Profile_Id__c": "p_subject_2"},
            {"LastName": "Voss", "Email": SUBJECT_EMAIL.upper()},  # entered by an advisor, no profile id
            {"LastName": "Other", "Email": "max@example.org", "CDP_Profile_Id__c": "p_other"},
        ])
        contacts = [{"email": SUBJECT_EMAIL, "external_id": "p_subject_1"},
                    {"email": "lena.old@example.org", "external_id": "p_subject_2"},
                    {"email": "max@example.org", "external_id": "p_other"}]
        answer = httpx.put(f"{sg.url}/v3/marketing/contacts", json={"contacts": contacts},
                           headers={"Authorization": f"Bearer {DEMO_API_KEY}"})
        assert answer.status_code == 202, answer.text
        sg.wait_for_jobs()
        yield sf, sg


def subject() -> Subject:
    return Subject(kind="email", given=SUBJECT_EMAIL, normalized=SUBJECT_EMAIL, profile_ids=set(SUBJECT_PROFILES),
                   identifiers={("email", SUBJECT_EMAIL), ("email", "lena.old@example.org")})


def test_erasure_deletes_the_subject_in_every_destination_and_the_sweep_proves_it(
        emulators: tuple[SalesforceEmulator, SendGridEmulator], tmp_path: Path) -> None:
    sf, sg = emulators
    store = DestinationsStore(Settings.from_env())
    before = store.sweep(subject(), print)
    assert before == {"salesforce.Contact": 3, "sendgrid.contacts": 2}

    erasure = store.erase(subject(), print)
    assert erasure.status == "erased"
    assert erasure.detail == {"salesforce.Contact": 3, "sendgrid.contacts": 2} and erasure.rows == 5
    assert store.sweep(subject(), print) == {}  # the proof
    assert [c["Email"] for c in sf.records("Contact")] == ["max@example.org"]
    assert set(sg.contacts_by_email()) == {"max@example.org"}
    again = store.erase(subject(), print)  # idempotent: a request run twice deletes nothing more
    assert again.rows == 0 and again.status == "erased"


def test_without_configuration_the_store_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME", "SENDGRID_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    store = DestinationsStore(Settings.from_env())
    assert store.erase(subject(), print).status == "not configured"
    assert store.sweep(subject(), print) == {}
