"""The right to be forgotten in the destinations: the erasure job's `destinations` store.

A subject erased from the warehouse must also disappear from what reverse ETL pushed out: the Salesforce Contacts
upserted by CDP_Profile_Id__c (or holding the subject's email), the SendGrid contacts (by email or external id =
profile id) and the Twilio messages to or from the subject's numbers (WhatsApp and SMS, outbound and inbound:
Twilio keeps their bodies until they are deleted). Each destination configured in the environment is erased and
then swept (searched again by every identifier: nothing found is the proof). A destination not configured here
reports "not configured" and is not counted as erased. A message cannot be unsent, but its record is deleted; what
the CDP keeps about it (reverse_etl.message_sends) is in the warehouse and erased by the warehouse store.

Errors of a destination (down, throttled) are raised: the erasure request then ends `failed` with the reason and can
be run again (every step is idempotent: deleting what is gone counts 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from orchestration.privacy.stores import Erasure, register_store
from orchestration.privacy.subject import Subject
from orchestration.settings import Settings
from reverse_etl.base import DestinationNotConfigured

Progress = Callable[[str], None]


def _emails(subject: Subject) -> set[str]:
    found = {value for kind, value in subject.identifiers if kind == "email"}
    if subject.kind == "email":
        found.add(subject.normalized)
    return found | {form.strip().lower() for form in subject.raw_forms if "@" in form}


def _phones(subject: Subject) -> set[str]:
    found = {value for kind, value in subject.identifiers if kind == "phone"}
    if subject.kind == "phone":
        found.add(subject.normalized)
    return found


class DestinationsStore:
    """Salesforce, SendGrid and Twilio, each when configured (SALESFORCE_INSTANCE_URL..., SENDGRID_API_KEY,
    TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)."""

    name = "destinations"

    def __init__(self, settings: Settings, env: Any = None) -> None:
        self.settings = settings
        self.env = os.environ if env is None else env

    # --- per destination: (erase, sweep) or None when not configured ------------------------------------------

    def _salesforce(self) -> Any:
        from reverse_etl.destinations.salesforce import connect_from_env

        try:
            return connect_from_env(self.env)
        except DestinationNotConfigured:
            return None

    def _sendgrid(self) -> Any:
        if not self.env.get("SENDGRID_API_KEY", "").strip():
            return None
        from reverse_etl.destinations.email import SendGridClient

        return SendGridClient.from_env()

    def _twilio(self) -> Any:
        from reverse_etl.destinations.twilio import twilio_client

        try:
            return twilio_client(self.env)
        except DestinationNotConfigured:
            return None

    def erase(self, subject: Subject, progress: Progress) -> Erasure:
        emails, profile_ids = _emails(subject), sorted(subject.profile_ids)
        detail: dict[str, int] = {}
        configured = []
        sf = self._salesforce()
        if sf is not None:
            from reverse_etl.destinations.salesforce import erase_subject

            configured.append("salesforce")
            detail["salesforce.Contact"] = erase_subject(sf, emails, profile_ids)
            progress(f"destinations: salesforce: {detail['salesforce.Contact']} contacts deleted")
        client = self._sendgrid()
        if client is not None:
            from reverse_etl.destinations.email import erase_subject as erase_email

            configured.append("email")
            try:
                detail["sendgrid.contacts"] = erase_email(client, emails, profile_ids)
            finally:
                client.close()
            progress(f"destinations: sendgrid: {detail['sendgrid.contacts']} contacts deleted")
        twilio = self._twilio()
        if twilio is not None:
            from reverse_etl.destinations.twilio import erase_subject_messages

            configured.append("twilio")
            detail["twilio.messages"] = erase_subject_messages(twilio, _phones(subject))
            progress(f"destinations: twilio: {detail['twilio.messages']} messages deleted")
        if not configured:
            return Erasure(status="not configured")
        return Erasure(rows=sum(detail.values()), detail={k: v for k, v in detail.items() if v})

    def sweep(self, subject: Subject, progress: Progress) -> dict[str, int]:
        emails, profile_ids = _emails(subject), sorted(subject.profile_ids)
        findings: dict[str, int] = {}
        sf = self._salesforce()
        if sf is not None:
            from reverse_etl.destinations.salesforce import subject_record_ids

            for obj, ids in subject_record_ids(sf, emails, profile_ids).items():
                if ids:
                    findings[f"salesforce.{obj}"] = len(ids)
        client = self._sendgrid()
        if client is not None:
            from reverse_etl.destinations.email import find_subject_contacts

            try:
                found = find_subject_contacts(client, emails, profile_ids)
            finally:
                client.close()
            if found:
                findings["sendgrid.contacts"] = len(found)
        twilio = self._twilio()
        if twilio is not None:
            from reverse_etl.destinations.twilio import find_subject_messages

            if messages := find_subject_messages(twilio, _phones(subject)):
                findings["twilio.messages"] = len(messages)
        return findings


def register() -> None:
    """Plug the destinations into the erasure job's stores (replaces the hook of the same name)."""
    register_store("destinations", DestinationsStore)
