"""Salesforce CRM Contacts: a Bulk API 2.0 CSV export (first version of each contact) and REST query
response pages (later versions).

The REST query runs every two weeks, so several changes in between show up as one version (the last state).

Every person who submitted a web form, applied, or left details offline has a Contact (Id prefix
``003``, deterministic from the person number). The first version is created a few minutes after the
inquiry (web-to-lead) and exported in the bulk CSV. Later versions are written to REST query pages:
stage changes (application started/submitted, offer made/accepted, enrolled, active, alumni/withdrawn),
an advisor call that adds the mobile number, and email opt-outs after an unsubscribe or spam report.

Mess: names typed with a typo (``crm_name_typo``), emails with case/whitespace variants, mobile numbers
in national format, and for ``crm_duplicate_contact`` people a second Contact with a typo'd name, a
different email, no phone, but the same birthdate and postcode (no identifier in common).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ids import rr, salesforce_id
from .journey import STAGES
from .population import Person, email_variant, typo
from .timefmt import MS_DAY, MS_HOUR, T_END, sf_bulk, sf_rest

if TYPE_CHECKING:
    from .simulate import ChunkContext

FIELDS = (
    "Id", "Email", "Phone", "MobilePhone", "FirstName", "LastName", "Birthdate", "MailingStreet",
    "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "Program_Interest__c",
    "Application_Stage__c", "Enrollment_Status__c", "HasOptedOutOfEmail", "CreatedDate", "LastModifiedDate",
)
API_VERSION = "v59.0"
POLL_INTERVAL = 14 * MS_DAY  # the incremental REST query (LastModifiedDate > last run) runs fortnightly
_LAST = T_END - MS_HOUR


class Contact:
    """One CRM contact of a person and its change history ``versions`` = [(time, changed fields)]."""

    __slots__ = ("created_t", "email", "id", "ids", "state", "versions")

    def __init__(self, sfid: str, email: str, created_t: int, state: dict) -> None:
        self.id = sfid
        self.email = email  # the true (normalized) address, for the email campaigns
        self.created_t = created_t
        self.state = state
        self.versions: list[tuple[int, dict]] = []
        self.ids: tuple[str, ...] = ()


def plan_contacts(p: Person, ctx: ChunkContext) -> list[Contact]:
    """The person's contact(s) with every change that is known before the email campaigns run."""
    if p.stage == 0:
        return []
    rng = ctx.rng
    rand = rng.random
    rates = ctx.rates
    first, last = p.first, p.last
    if rand() < rates.crm_name_typo:
        if rand() < 0.5:
            first = typo(rng, first)
        else:
            last = typo(rng, last)
    created = p.crm_created_t
    mobile = None
    later_mobile_t = None  # the phone was first given on the application form, after the inquiry
    if p.phone_known and p.phone_t <= created:
        mobile = p.mobile_written(rng, rates.phone_national_format)
    elif p.phone_known:
        later_mobile_t = p.phone_t + rr(rng, 60_000, 30 * 60_000)
    elif p.offline and rand() < 0.6:
        mobile = p.mobile_written(rng, rates.phone_national_format)
        p.phone_known = True
        p.phone_t = created
    state = {
        "Id": salesforce_id(p.idx * 2),
        "Email": email_variant(rng, p.email) if rand() < rates.email_variant else p.email,
        "Phone": p.landline, "MobilePhone": mobile, "FirstName": first, "LastName": last,
        "Birthdate": p.birthdate, "MailingStreet": p.street, "MailingCity": p.city.name,
        "MailingState": p.state, "MailingPostalCode": p.postcode, "MailingCountry": p.country.name,
        "Program_Interest__c": p.program.name, "Application_Stage__c": STAGES[0],
        "Enrollment_Status__c": "Not Enrolled", "HasOptedOutOfEmail": False,
        "CreatedDate": created, "LastModifiedDate": created,
    }
    main = Contact(state["Id"], p.email, created, state)
    versions = main.versions
    if later_mobile_t is not None:
        versions.append((later_mobile_t, {"MobilePhone": p.mobile_written(rng, rates.phone_national_format)}))
    elif mobile is None and rand() < 0.35:
        t = created + rr(rng, 2 * MS_DAY, 20 * MS_DAY)  # an advisor calls and notes the mobile
        if t < _LAST:
            versions.append((t, {"MobilePhone": p.mobile_written(rng, rates.phone_national_format)}))
            p.phone_known = True
            p.phone_t = t
    for t, changes in (
        (p.start_t, {"Application_Stage__c": STAGES[1]}),
        (p.submit_t, {"Application_Stage__c": STAGES[2]}),
        (p.offer_t, {"Application_Stage__c": STAGES[3]}),
        (p.accept_t, {"Application_Stage__c": STAGES[4], "Enrollment_Status__c": "Enrolled"}),
        (p.active_t, {"Enrollment_Status__c": "Active"}),
        (p.end_t, {"Enrollment_Status__c": p.enrollment}),
    ):
        if t is not None:
            versions.append((t + rr(rng, MS_HOUR), changes))
    contacts = [main]
    if rand() < rates.crm_duplicate_contact:
        t = created + rr(rng, 5 * MS_DAY, 200 * MS_DAY)  # entered again, e.g. at an education fair
        if t < _LAST:
            dup_first, dup_last = (typo(rng, first), last) if rand() < 0.5 else (first, typo(rng, last))
            email = ctx.pop.emails.make(p.first, p.last, p.country, p.birth_year, avoid=p.email)
            dup_state = dict(state)
            dup_state.update({
                "Id": salesforce_id(p.idx * 2 + 1), "Email": email, "Phone": None, "MobilePhone": None,
                "FirstName": dup_first, "LastName": dup_last,
                "MailingStreet": p.street if rand() < 0.5 else None, "MailingState": None,
                "Application_Stage__c": STAGES[0], "Enrollment_Status__c": "Not Enrolled",
                "CreatedDate": t, "LastModifiedDate": t,
            })
            contacts.append(Contact(dup_state["Id"], email, t, dup_state))
    return contacts


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def emit_contacts(p: Person, contacts: list[Contact], ctx: ChunkContext) -> None:
    """Write every version: the first to the bulk CSV, the later ones to the REST query page."""
    sink = ctx.sink
    for c in contacts:
        state = c.state
        ids = _identifiers(p, c, state)
        row = [_csv_value(state[f]) for f in FIELDS[:-2]]
        row.append(sf_bulk(state["CreatedDate"]))
        row.append(sf_bulk(state["LastModifiedDate"]))
        sink.sf_csv(len(sink.sf.csv), row, f"{c.id}@{row[-1]}", ids)
        if not c.versions:
            continue
        last_t = state["LastModifiedDate"]
        url = f"/services/data/{API_VERSION}/sobjects/Contact/{c.id}"
        created = sf_rest(state["CreatedDate"])
        versions = sorted(c.versions, key=lambda v: v[0])
        for i, (t, changes) in enumerate(versions):
            # Salesforce timestamps have second resolution and a contact's versions strictly increase
            t = max(t - t % 1000, last_t + 1000)
            last_t = t
            state.update(changes)
            state["LastModifiedDate"] = t
            if "MobilePhone" in changes:
                ids = _identifiers(p, c, state)
            if i + 1 < len(versions) and versions[i + 1][0] // POLL_INTERVAL == t // POLL_INTERVAL:
                continue  # changed again before the next incremental query: only the last state is seen
            record = {"attributes": {"type": "Contact", "url": url}}
            record.update(state)
            record["CreatedDate"] = created
            record["LastModifiedDate"] = sf_rest(t)
            sink.sf_rest(t, record, ids)


def _identifiers(p: Person, c: Contact, state: dict) -> tuple[str, ...]:
    ids = [c.id, c.email]
    if state["MobilePhone"] is not None:
        ids.append(p.mobile_e164)
    if state["Phone"] is not None:
        ids.append(p.landline_e164)
    return tuple(ids)
