"""The right to be forgotten in the destinations: the erasure job's `destinations` store deletes the subject's
Salesforce Contacts, SendGrid contacts and Twilio messages (to and from the subject's numbers) through the real
clients (the local emulators here), leaves everyone else, and its sweep finds nothing afterwards; without
configuration it says "not configured"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulators.salesforce import SalesforceEmulator
from emulators.sendgrid import DEMO_API_KEY, SendGridEmulator
from emulators.twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_TEMPLATE_SID, DEMO_WHATSAPP_SENDER, TwilioEmulator
from orchestration.privacy.subject import Subject
from orchestration.settings import Settings
from reverse_etl.destinations.twilio import twilio_client
from reverse_etl.privacy import DestinationsStore

pytestmark = pytest.mark.integration

SUBJECT_EMAIL = "lena.voss@example.org"
SUBJECT_PROFILES = {"p_subject_1", "p_subject_2"}  # a merged person: two profile ids over time
SUBJECT_PHONE, OTHER_PHONE = "+4915112345678", "+4915187654321"


@pytest.fixture()
def emulators(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SalesforceEmulator, SendGridEmulator,
                                                                   TwilioEmulator]]:
    with SalesforceEmulator() as sf, SendGridEmulator() as sg, TwilioEmulator(callback_delay_seconds=0.01) as tw:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEMO_ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEMO_AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_API_BASE_URL", tw.url)
        client = twilio_client()
        for phone in (SUBJECT_PHONE, OTHER_PHONE):  # the advisor's template message, then the student's answer
            client.messages.create(to=f"whatsapp:{phone}", from_=DEMO_WHATSAPP_SENDER, content_sid=DEMO_TEMPLATE_SID,
                                   content_variables='{"1": "Lena", "2": "MBA"}')
            tw.inbound(f"whatsapp:{phone}", "Yes, please call me")
        client.messages.create(to=SUBJECT_PHONE, from_="+15005550006", body="Your code is 1234")  # an SMS
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
        yield sf, sg, tw


def subject() -> Subject:
    return Subject(kind="email", given=SUBJECT_EMAIL, normalized=SUBJECT_EMAIL, profile_ids=set(SUBJECT_PROFILES),
                   identifiers={("email", SUBJECT_EMAIL), ("email", "lena.old@example.org"),
                                ("phone", SUBJECT_PHONE)})


def test_erasure_deletes_the_subject_in_every_destination_and_the_sweep_proves_it(
        emulators: tuple[SalesforceEmulator, SendGridEmulator, TwilioEmulator], tmp_path: Path) -> None:
    sf, sg, tw = emulators
    store = DestinationsStore(Settings.from_env())
    before = store.sweep(subject(), print)
    assert before == {"salesforce.Contact": 3, "sendgrid.contacts": 2, "twilio.messages": 3}

    # the messages still on their way are waited for (Twilio refuses to delete them: 20009), then deleted
    erasure = store.erase(subject(), print)
    assert erasure.status == "erased"
    assert erasure.detail == {"salesforce.Contact": 3, "sendgrid.contacts": 2, "twilio.messages": 3}
    assert erasure.rows == 8
    assert store.sweep(subject(), print) == {}  # the proof
    assert [c["Email"] for c in sf.records("Contact")] == ["max@example.org"]
    assert set(sg.contacts_by_email()) == {"max@example.org"}
    kept = tw.messages()
    assert len(kept) == 2 and all(OTHER_PHONE in (m["to"] + m["from"]) for m in kept)
    again = store.erase(subject(), print)  # idempotent: a request run twice deletes nothing more
    assert again.rows == 0 and again.status == "erased"


def test_without_configuration_the_store_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME", "SENDGRID_API_KEY",
                 "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    store = DestinationsStore(Settings.from_env())
    assert store.erase(subject(), print).status == "not configured"
    assert store.sweep(subject(), print) == {}


def test_a_message_still_on_its_way_is_waited_for_or_named_in_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from reverse_etl.base import DestinationError
    from reverse_etl.destinations.twilio import erase_subject_messages, find_subject_messages

    with TwilioEmulator(callback_delay_seconds=0.5) as tw:  # queued -> sending -> sent -> delivered, 0.5 s apart
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEMO_ACCOUNT_SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEMO_AUTH_TOKEN)
        monkeypatch.setenv("TWILIO_API_BASE_URL", tw.url)
        client = twilio_client()
        sid = client.messages.create(to=f"whatsapp:{SUBJECT_PHONE}", from_=DEMO_WHATSAPP_SENDER,
                                     content_sid=DEMO_TEMPLATE_SID, content_variables='{"1": "Lena", "2": "MBA"}').sid
        # not allowed to wait: the erasure fails naming the message and Twilio's refusal, and deletes nothing
        with pytest.raises(DestinationError, match=rf"could not delete message {sid}: .*code 20009.*run the request"):
            erase_subject_messages(client, {SUBJECT_PHONE}, wait_seconds=0)
        assert find_subject_messages(client, {SUBJECT_PHONE}) == [sid]
        # allowed to wait: deleted once the message reached a final state
        assert erase_subject_messages(client, {SUBJECT_PHONE}, wait_seconds=30) == 1
        assert find_subject_messages(client, {SUBJECT_PHONE}) == [] and tw.messages() == []
