"""The Salesforce emulator driven by the real simple-salesforce SDK over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from emulators.salesforce import SalesforceEmulator, case_safe_id

REPO = Path(__file__).resolve().parents[2]

LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com", "emulator.salesforce.com")


class _EmulatorAdapter(HTTPAdapter):
    """Sends https://<mounted host>/... to the emulator's http:// base URL (simple-salesforce always builds https)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url)
        request.url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


def emulator_session(base_url: str) -> requests.Session:
    """A requests.Session that routes the emulator host and the Salesforce login hosts to the emulator."""
    session = requests.Session()
    adapter = _EmulatorAdapter(base_url)
    for host in (urlsplit(base_url).netloc, *LOGIN_HOSTS):
        session.mount(f"https://{host}/", adapter)
    return session


def connect(emu: SalesforceEmulator) -> Salesforce:
    return Salesforce(instance_url=emu.url, session_id=emu.access_token, session=emulator_session(emu.url))


def error_code(exc: Any) -> str:
    return exc.value.content[0]["errorCode"]


def contacts_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def profile_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "CDP_Profile_Id__c": f"p{i:06d}",
            "LastName": f"Last{i}",
            "FirstName": f"First{i}",
            "Email": f"person{i}@example.com",
            "CDP_Engagement_Score__c": f"{i % 100}.5",
            "CDP_Email_Consent__c": "opted_in" if i % 2 else "opted_out",  # consent status text
        }
        for i in range(start, start + count)
    ]


@pytest.fixture
def emu() -> Iterator[SalesforceEmulator]:
    with SalesforceEmulator(bulk_processing_seconds=0.05) as emulator:
        yield emulator


# ---- auth


def test_soap_login_with_username_password_and_security_token(emu: SalesforceEmulator) -> None:
    session = emulator_session(emu.url)
    sf = Salesforce(username="cdp@example.com", password="password", security_token="token", session=session)
    assert sf.sf_instance == urlsplit(emu.url).netloc
    assert sf.session_id.startswith("00D") and sf.session_id != emu.access_token
    created = sf.Contact.create({"LastName": "Login"})
    assert created["success"] is True and created["id"].startswith("003")

    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(username="cdp@example.com", password="password", security_token="wrong", session=session)
    assert exc.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in exc.value.auth_message


def test_session_id_instance_url_and_invalid_token(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    assert sf.describe()["sobjects"][0]["name"] in ("Contact", "Lead")
    bad = Salesforce(instance_url=emu.url, session_id="nope", session=emulator_session(emu.url))
    with pytest.raises(SalesforceExpiredSession) as exc:
        bad.query("SELECT Id FROM Contact")
    assert exc.value.status == 401
    assert exc.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_oauth_password_and_client_credentials_flows(emu: SalesforceEmulator) -> None:
    session = emulator_session(emu.url)
    sf = Salesforce(
        username="cdp@example.com",
        password="password",
        consumer_key="cdp-emulator-client",
        consumer_secret="cdp-emulator-secret",
        session=session,
    )
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    sf_cc = Salesforce(
        consumer_key="cdp-emulator-client", consumer_secret="cdp-emulator-secret", domain="emulator", session=session
    )
    assert sf_cc.Lead.create({"LastName": "Cc", "Company": "Acme"})["success"]

    token = session.post(
        "https://login.salesforce.com/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": "cdp-emulator-client",
            "client_secret": "cdp-emulator-secret",
            "username": "cdp@example.com",
            "password": "passwordtoken",
        },
    ).json()
    assert set(token) >= {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
    assert token["instance_url"] == emu.url and token["token_type"] == "Bearer"

    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(
            username="cdp@example.com",
            password="bad",
            consumer_key="cdp-emulator-client",
            consumer_secret="cdp-emulator-secret",
            session=session,
        )
    assert exc.value.code == "invalid_grant"
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(consumer_key="cdp-emulator-client", consumer_secret="bad", domain="emulator", session=session)
    assert exc.value.code == "invalid_client"


def test_expired_session_makes_the_sdk_log_in_again(emu: SalesforceEmulator) -> None:
    sf = Salesforce(
        username="cdp@example.com", password="password", security_token="token", session=emulator_session(emu.url)
    )
    first_session = sf.session_id
    emu.expire_sessions()
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    assert sf.session_id != first_session


# ---- REST sObjects


def test_create_get_update_delete_describe_and_limits(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    created = sf.Contact.create(
        {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "Email": "ada@example.com",
            "Birthdate": "1815-12-10",
            "CDP_Engagement_Score__c": 12.345,
            "CDP_Last_Seen_At__c": "2026-01-02T03:04:05+01:00",
        }
    )
    rid = created["id"]
    assert created == {"id": rid, "success": True, "errors": []}
    assert len(rid) == 18 and rid[:3] == "003" and case_safe_id(rid[:15]) == rid
    record = sf.Contact.get(rid)
    assert record["attributes"]["type"] == "Contact"
    assert record["Name"] == "Ada Lovelace" and record["CDP_Engagement_Score__c"] == 12.35
    assert record["CDP_Last_Seen_At__c"] == "2026-01-02T02:04:05.000+0000"
    assert record["IsDeleted"] is False and record["CDP_Email_Consent__c"] is None  # a text field, not a checkbox
    assert sf.Contact.get(rid[:15])["Id"] == rid  # 15-character ids resolve too

    assert sf.Contact.update(rid, {"Title": "Countess", "Email": None}) == 204
    updated = sf.Contact.get(rid)
    assert updated["Title"] == "Countess" and updated["Email"] is None
    assert updated["LastModifiedDate"] >= updated["CreatedDate"]

    describe = sf.Contact.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    assert describe["keyPrefix"] == "003"
    assert fields["CDP_Profile_Id__c"]["externalId"] and fields["CDP_Profile_Id__c"]["unique"]
    assert fields["CDP_Profile_Id__c"]["length"] == 32 and fields["CDP_Segments__c"]["length"] == 4099
    assert fields["CDP_Engagement_Score__c"]["precision"] == 18 and fields["CDP_Engagement_Score__c"]["scale"] == 2
    assert fields["LastName"]["nillable"] is False and fields["Name"]["createable"] is False
    assert {f["name"] for f in sf.Lead.describe()["fields"]} >= {"Company", "Status", "CDP_SMS_Consent__c"}
    for name in ("CDP_Email_Consent__c", "CDP_WhatsApp_Consent__c", "CDP_SMS_Consent__c"):  # as the CDP declares them
        assert (fields[name]["type"], fields[name]["length"], fields[name]["nillable"]) == ("string", 20, True)

    limits = sf.limits()
    assert limits["DailyApiRequests"]["Max"] - limits["DailyApiRequests"]["Remaining"] == emu.state()["api_usage"]
    assert sf.api_usage["api-usage"].used == emu.state()["api_usage"]

    assert sf.Contact.delete(rid) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.get(rid)
    assert error_code(exc) == "ENTITY_IS_DELETED"
    assert rid in emu.state()["deleted"]["Contact"] and rid not in emu.state()["Contact"]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get("003000000000000AAA")


def test_upsert_inserts_then_updates_by_external_id(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    first = sf.Contact.upsert("CDP_Profile_Id__c/p-1", {"LastName": "One", "CDP_Segments__c": "a;b"}, raw_response=True)
    assert first.status_code == 201
    body = first.json()
    assert body["created"] is True and body["success"] is True
    second = sf.Contact.upsert("CDP_Profile_Id__c/p-1", {"CDP_Lifecycle_Stage__c": "enrolled"}, raw_response=True)
    assert second.status_code == 200
    assert second.json() == {"id": body["id"], "success": True, "errors": [], "created": False}
    record = emu.by_external_id("Contact", "CDP_Profile_Id__c", "p-1")
    assert record is not None and record["LastName"] == "One" and record["CDP_Lifecycle_Stage__c"] == "enrolled"
    assert sf.Contact.get_by_custom_id("CDP_Profile_Id__c", "p-1")["Id"] == body["id"]
    assert len(emu.records("Contact")) == 1
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.upsert("Email/x@example.com", {"LastName": "X"})
    assert error_code(exc) == "NOT_FOUND"


def test_validation_errors_match_salesforce(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    cases = [
        ({"FirstName": "NoLast"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({"LastName": "x" * 81}, "STRING_TOO_LONG", ["LastName"]),
        ({"LastName": "E", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ({"LastName": "N", "CDP_Engagement_Score__c": 1e17}, "NUMBER_OUTSIDE_VALID_RANGE", ["CDP_Engagement_Score__c"]),
        ({"LastName": "R", "Name": "Read Only"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["Name"]),
    ]
    for payload, code, fields in cases:
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Contact.create(payload)
        assert exc.value.status == 400
        assert exc.value.content[0]["errorCode"] == code, payload
        assert exc.value.content[0]["fields"] == fields
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "U", "Shoe_Size__c": 42})
    assert exc.value.content == [
        {"message": "No such column 'Shoe_Size__c' on sobject of type Contact", "errorCode": "INVALID_FIELD"}
    ]
    for payload in (
        {"LastName": "T", "CDP_Engagement_Score__c": "high"},
        {"LastName": "T", "Birthdate": "1990-13-01"},
        {"LastName": "T", "DoNotCall": "maybe"},
    ):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Contact.create(payload)
        assert error_code(exc) == "JSON_PARSER_ERROR"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create({"LastName": "NoCompany"})
    assert exc.value.content[0]["message"] == "Required fields are missing: [Company]"
    assert sf.Lead.get(sf.Lead.create({"LastName": "L", "Company": "Acme"})["id"])["Status"] == "Open - Not Contacted"

    sf.Contact.create({"LastName": "A", "CDP_Profile_Id__c": "dup"})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "B", "CDP_Profile_Id__c": "dup"})
    assert error_code(exc) == "DUPLICATE_VALUE"
    assert len(emu.records("Contact")) == 1  # nothing invalid was written


# ---- SOQL


def test_query_and_query_all_page_over_2000_records(emu: SalesforceEmulator) -> None:
    ids = emu.seed_records(
        "Contact",
        [
            {
                "LastName": f"L{i:05d}",
                "Email": f"u{i}@example.com",
                "CDP_Engagement_Score__c": i % 10,
                "LastModifiedDate": "2026-02-01T00:00:00.000+0000" if i < 100 else "2025-06-01T00:00:00.000+0000",
            }
            for i in range(4500)
        ],
    )
    sf = connect(emu)
    first = sf.query("SELECT Id, LastName FROM Contact")
    assert first["totalSize"] == 4500 and first["done"] is False and len(first["records"]) == 2000
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{sf.sf_version}/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    assert set(first["records"][0]) == {"attributes", "Id", "LastName"}
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert len(second["records"]) == 2000 and second["nextRecordsUrl"].endswith("-4000")
    everything = sf.query_all("SELECT Id FROM Contact")
    assert everything["totalSize"] == 4500 and sorted(r["Id"] for r in everything["records"]) == sorted(ids)

    recent = sf.query_all("SELECT Id FROM Contact WHERE LastModifiedDate > 2026-01-01T00:00:00Z")
    assert recent["totalSize"] == 100
    filtered = sf.query(
        "select lastname, cdp_engagement_score__c from contact where (CDP_Engagement_Score__c >= 8 "
        "AND LastName LIKE 'L000%') OR Email IN ('u4499@example.com', 'U4498@EXAMPLE.COM') "
        "ORDER BY LastName DESC LIMIT 5"
    )
    names = [r["LastName"] for r in filtered["records"]]
    assert names == ["L04499", "L04498", "L00099", "L00098", "L00089"]
    assert sf.query("SELECT COUNT() FROM Contact WHERE Email = 'u7@example.com'") == {
        "totalSize": 1,
        "done": True,
        "records": [],
    }

    sf.Contact.delete(ids[0])
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 4499
    deleted = sf.query_all("SELECT Id, IsDeleted FROM Contact WHERE IsDeleted = true", include_deleted=True)
    assert [(r["Id"], r["IsDeleted"]) for r in deleted["records"]] == [(ids[0], True)]

    for bad, code in (
        ("SELECT Id FROM", "MALFORMED_QUERY"),
        ("SELECT Id Contact", "MALFORMED_QUERY"),
        ("SELECT Shoe__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Account", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE Email = 5", "INVALID_FIELD"),
    ):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query(bad)
        assert error_code(exc) == code, bad


# ---- sObject Collections


def test_collections_upsert_200_with_per_record_errors_in_order(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    records: list[dict[str, Any]] = [
        {"attributes": {"type": "Contact"}, "CDP_Profile_Id__c": f"c{i:03d}", "LastName": f"N{i}"} for i in range(200)
    ]
    records[5]["Email"] = "broken"
    records[17].pop("LastName")
    results = sf.restful(
        "composite/sobjects/Contact/CDP_Profile_Id__c", method="PATCH", json={"allOrNone": False, "records": records}
    )
    assert len(results) == 200
    assert results[5]["success"] is False and results[5]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert results[5]["errors"][0]["fields"] == ["Email"]
    assert results[17]["errors"][0] == {
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [LastName]",
        "fields": ["LastName"],
    }
    good = [r for i, r in enumerate(results) if i not in (5, 17)]
    assert all(r["success"] and r["created"] and r["errors"] == [] for r in good)
    assert len(emu.records("Contact")) == 198
    assert emu.by_external_id("Contact", "CDP_Profile_Id__c", "c005") is None
    assert emu.by_external_id("Contact", "CDP_Profile_Id__c", "c006")["Id"] == results[6]["id"]

    again = sf.restful(
        "composite/sobjects/Contact/CDP_Profile_Id__c",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Contact"}, "CDP_Profile_Id__c": "c006", "Title": "Updated"}]},
    )
    assert again == [{"id": results[6]["id"], "success": True, "errors": [], "created": False}]

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful(
            "composite/sobjects/Contact/CDP_Profile_Id__c", method="PATCH", json={"records": [*records, records[0]]}
        )
    assert error_code(exc) == "EXCEEDED_ID_LIMIT"


def test_collections_create_update_delete_and_all_or_none(emu: SalesforceEmulator) -> None:
    sf = connect(emu)
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": "A"},
                {"attributes": {"type": "Lead"}, "LastName": "B", "Company": "Acme"},
            ],
        },
    )
    assert [r["id"][:3] for r in created] == ["003", "00Q"]
    rolled = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": "C"},
                {"attributes": {"type": "Contact"}, "FirstName": "missing last name"},
            ],
        },
    )
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert rolled[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert len(emu.records("Contact")) == 1
    updated = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "records": [
                {"attributes": {"type": "Contact"}, "id": created[0]["id"], "Title": "T"},
                {"attributes": {"type": "Contact"}, "Id": "003000000000000", "Title": "T"},
            ]
        },
    )
    assert updated[0]["success"] is True
    assert updated[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    deleted = sf.restful(
        "composite/sobjects",
        method="DELETE",
        params={"ids": f"{created[0]['id']},{created[1]['id']},bogus", "allOrNone": "false"},
    )
    assert [r["success"] for r in deleted] == [True, True, False]
    assert deleted[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert emu.records("Contact") == [] and emu.records("Lead") == []


# ---- Bulk API 2.0


def test_bulk2_upsert_with_lock_faults_then_retry_failed_rows(emu: SalesforceEmulator, tmp_path: Path) -> None:
    emu.set_faults(rate_lock=0.1, seed=3)
    sf = connect(emu)
    rows = profile_rows(5000)
    path = contacts_csv(tmp_path / "contacts.csv", rows)
    [result] = sf.bulk2.Contact.upsert(csv_file=str(path), external_id_field="CDP_Profile_Id__c", wait=0.1)
    assert result["numberRecordsTotal"] == 5000 and result["numberRecordsProcessed"] == 5000
    assert 300 < result["numberRecordsFailed"] < 700
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Contact.get_failed_records(result["job_id"]))))
    assert len(failed) == result["numberRecordsFailed"]
    assert all(
        r["sf__Error"] == "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records:--"
        for r in failed
    )
    failed_ids = {r["CDP_Profile_Id__c"] for r in failed}
    assert all(emu.by_external_id("Contact", "CDP_Profile_Id__c", p) is None for p in failed_ids)
    successful = sf.bulk2.Contact.get_successful_records(result["job_id"])
    assert successful.splitlines()[0] == '"sf__Id","sf__Created",' + ",".join(rows[0])
    assert len(successful.splitlines()) == 5001 - len(failed)
    assert emu.state()["jobs"][result["job_id"]]["state"] == "JobComplete"

    retries = 0
    pending = [{k: v for k, v in r.items() if not k.startswith("sf__")} for r in failed]
    while pending:  # faults stay on: the retry loop converges because fault draws are per record
        retries += 1
        assert retries < 6
        [retry] = sf.bulk2.Contact.upsert(records=pending, external_id_field="CDP_Profile_Id__c", wait=0.1)
        pending = [
            {k: v for k, v in r.items() if not k.startswith("sf__")}
            for r in csv.DictReader(io.StringIO(sf.bulk2.Contact.get_failed_records(retry["job_id"])))
        ]
    contacts = emu.records("Contact")
    assert len(contacts) == 5000
    sample = emu.by_external_id("Contact", "CDP_Profile_Id__c", "p004321")
    assert sample["Email"] == "person4321@example.com" and sample["CDP_Engagement_Score__c"] == 21.5
    assert sample["CDP_Email_Consent__c"] == "opted_in"


def test_bulk2_insert_update_conventions_delete_and_query(emu: SalesforceEmulator, tmp_path: Path) -> None:
    sf = connect(emu)
    [inserted] = sf.bulk2.Lead.insert(
        records=[
            {"LastName": "A", "Company": "Acme", "Email": "a@example.com"},
            {"LastName": "B", "Company": "Acme", "Email": "bad-email"},
            {"LastName": "C", "Company": "Acme", "CDP_Last_Seen_At__c": "yesterday"},
        ],
        wait=0.1,
    )
    assert inserted["numberRecordsFailed"] == 2
    errors = sorted(
        r["sf__Error"] for r in csv.DictReader(io.StringIO(sf.bulk2.Lead.get_failed_records(inserted["job_id"])))
    )
    assert errors == [
        "INVALID_EMAIL_ADDRESS:Email: invalid email address: bad-email:Email --",
        "INVALID_TYPE_ON_FIELD_IN_RECORD:CDP Last Seen At: value not of required type: yesterday:"
        "CDP_Last_Seen_At__c --",
    ]
    [ok] = list(csv.DictReader(io.StringIO(sf.bulk2.Lead.get_successful_records(inserted["job_id"]))))
    assert ok["sf__Created"] == "true" and ok["Email"] == "a@example.com"
    lead_id = ok["sf__Id"]

    # Bulk CSV: an empty cell leaves the field unchanged, #N/A sets it to null.
    sf.bulk2.Lead.update(records=[{"Id": lead_id, "Email": "#N/A", "Title": "", "City": "Paris"}], wait=0.1)
    lead = emu.records("Lead")[0]
    assert lead["Email"] is None and lead["City"] == "Paris" and lead["Company"] == "Acme"

    with pytest.raises(SalesforceOperationError, match="Field name not found : Shoe__c"):
        sf.bulk2.Lead.insert(records=[{"LastName": "X", "Company": "Y", "Shoe__c": "1"}], wait=0.1)

    emu.seed_records("Contact", [{"LastName": f"Q{i}", "CDP_Profile_Id__c": f"q{i}"} for i in range(30)])
    pages = list(
        sf.bulk2.Contact.query(
            "SELECT Id, LastName, CDP_Profile_Id__c FROM Contact ORDER BY LastName", max_records=20, wait=0.1
        )
    )
    assert len(pages) == 2
    rows = [r for page in pages for r in csv.DictReader(io.StringIO(page))]
    assert len(rows) == 30 and rows[0]["LastName"] == "Q0"

    [deleted] = sf.bulk2.Lead.delete(records=[{"Id": lead_id}], wait=0.1)
    assert deleted["numberRecordsFailed"] == 0 and emu.records("Lead") == []


def test_bulk2_job_state_machine_errors(emu: SalesforceEmulator) -> None:
    emu.bulk_processing_seconds = 0.5  # long enough to observe the intermediate states
    sf = connect(emu)
    client = sf.bulk2.Contact._client
    job = client.create_job("insert")
    assert job["state"] == "Open" and job["id"].startswith("750") and job["contentType"] == "CSV"
    client.upload_job_data(job["id"], "LastName\nZ\n")
    closed = client.close_job(job["id"])
    assert closed["state"] == "UploadComplete"
    with pytest.raises(SalesforceGeneralError) as exc:
        client.upload_job_data(job["id"], "LastName\nLate\n")
    assert exc.value.status == 409 and error_code(exc) == "INVALIDJOBSTATE"
    assert "Can not upload data when job state is" in exc.value.content[0]["message"]
    states = []
    while not states or states[-1] not in ("JobComplete", "Failed"):
        states.append(client.get_job(job["id"], False)["state"])
    assert states[0] in ("UploadComplete", "InProgress") and states[-1] == "JobComplete"
    with pytest.raises(SalesforceGeneralError) as exc:
        client.abort_job(job["id"], False)
    assert error_code(exc) == "INVALIDJOBSTATE"
    listed = sf.restful("jobs/ingest")
    assert [j["id"] for j in listed["records"]] == [job["id"]]
    aborted = client.create_job("upsert", external_id_field="CDP_Profile_Id__c")
    client.upload_job_data(aborted["id"], "CDP_Profile_Id__c,LastName\nu1,Never\n")
    assert client.abort_job(aborted["id"], False)["state"] == "Aborted"
    unprocessed = client.get_ingest_results(aborted["id"], "unprocessedrecords")
    assert unprocessed.splitlines() == ["CDP_Profile_Id__c,LastName", '"u1","Never"']
    assert emu.records("Contact") == [emu.records("Contact")[0]] and emu.records("Contact")[0]["LastName"] == "Z"
    response = sf.session.delete(
        f"{emu.url}/services/data/v59.0/jobs/ingest/{aborted['id']}",
        headers={"Authorization": f"Bearer {emu.access_token}"},
    )
    assert response.status_code == 204 and aborted["id"] not in emu.state()["jobs"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        client.create_job("upsert", external_id_field="Email")
    assert error_code(exc) == "INVALIDJOB"


# ---- faults


def test_rate_lock_fails_single_record_calls_without_writing(emu: SalesforceEmulator) -> None:
    emu.set_faults(rate_lock=1.0)
    sf = connect(emu)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Locked"})
    assert exc.value.content == [
        {
            "message": "unable to obtain exclusive access to this record or 1 records",
            "errorCode": "UNABLE_TO_LOCK_ROW",
            "fields": [],
        }
    ]
    assert emu.records("Contact") == []
    emu.set_faults(rate_record_error=1.0)
    results = sf.restful(
        "composite/sobjects", method="POST", json={"records": [{"attributes": {"type": "Contact"}, "LastName": "X"}]}
    )
    assert results[0]["errors"][0]["statusCode"] == "UNKNOWN_EXCEPTION" and emu.records("Contact") == []


def test_request_limit_exceeded_is_a_refused_request(emu: SalesforceEmulator) -> None:
    emu.set_faults(daily_api_limit=3)
    sf = connect(emu)
    for _ in range(3):
        sf.query("SELECT COUNT() FROM Contact")
    assert sf.api_usage["api-usage"].used == 3 and sf.api_usage["api-usage"].total == 3
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.query("SELECT COUNT() FROM Contact")
    assert exc.value.status == 403
    assert exc.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]

    emu.set_faults(rate_429=1.0)
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.Contact.create({"LastName": "Never"})
    assert error_code(exc) == "REQUEST_LIMIT_EXCEEDED"
    assert emu.records("Contact") == []


def test_5xx_faults_surface_as_general_errors(emu: SalesforceEmulator) -> None:
    emu.set_faults(rate_5xx=1.0, seed=1)
    sf = connect(emu)
    statuses = set()
    for _ in range(8):
        with pytest.raises(SalesforceGeneralError) as exc:
            sf.Contact.create({"LastName": "Nope"})
        statuses.add((exc.value.status, error_code(exc)))
    assert statuses == {(503, "SERVER_UNAVAILABLE"), (500, "UNKNOWN_EXCEPTION")}
    assert emu.records("Contact") == []
    emu.reset()
    emu.set_faults(rate_5xx=0.5, seed=9)
    first = [r["status"] for r in _statuses(emu, sf, 10)]
    assert 0 < first.count(200) < 10
    emu.reset()
    emu.set_faults(rate_5xx=0.5, seed=9)
    assert [r["status"] for r in _statuses(emu, sf, 10)] == first  # reproducible with the seed


def _statuses(emu: SalesforceEmulator, sf: Salesforce, count: int) -> list[dict[str, Any]]:
    for _ in range(count):
        with contextlib.suppress(SalesforceGeneralError):
            sf.query("SELECT COUNT() FROM Contact")
    return emu.requests_log()[-count:]


def test_drop_after_commit_closes_the_connection_after_writing(emu: SalesforceEmulator) -> None:
    emu.set_faults(drop_after_commit=1.0)
    sf = connect(emu)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Contact.upsert("CDP_Profile_Id__c/dropped", {"LastName": "Dropped"})
    record = emu.by_external_id("Contact", "CDP_Profile_Id__c", "dropped")
    assert record is not None and record["LastName"] == "Dropped"
    emu.set_faults(None)
    assert sf.Contact.upsert("CDP_Profile_Id__c/dropped", {"LastName": "Dropped"}) == 200  # the reconcile retry


def test_latency_and_control_endpoints(emu: SalesforceEmulator) -> None:
    put = requests.put(f"{emu.url}/__emulator/faults", json={"latency_ms": 150, "seed": 4})
    assert put.status_code == 200 and emu.faults().latency_ms == 150
    assert requests.put(f"{emu.url}/__emulator/faults", json={"rate_lock": 2}).status_code == 400
    sf = connect(emu)
    sf.Contact.create({"LastName": "Slow"})
    log = requests.get(f"{emu.url}/__emulator/requests").json()
    assert log[-1]["method"] == "POST" and log[-1]["status"] == 201 and log[-1]["duration_ms"] >= 150
    state = requests.get(f"{emu.url}/__emulator/state").json()
    assert len(state["Contact"]) == 1 and state["api_usage"] == 1
    assert requests.post(f"{emu.url}/__emulator/reset").status_code == 200
    assert emu.state()["Contact"] == {} and emu.state()["api_usage"] == 0
    versions = requests.get(f"{emu.url}/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions


# ---- persistence and CLI


def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "sf_state.json"
    with SalesforceEmulator(state_file=state_file, bulk_processing_seconds=0) as first:
        sf = connect(first)
        rid = sf.Contact.create({"LastName": "Kept", "CDP_Profile_Id__c": "keep"})["id"]
        gone = sf.Contact.create({"LastName": "Gone"})["id"]
        sf.Contact.delete(gone)
        [job] = sf.bulk2.Contact.upsert(
            records=[{"CDP_Profile_Id__c": "bulk", "LastName": "B"}], external_id_field="CDP_Profile_Id__c", wait=0.05
        )
    assert state_file.exists()
    with SalesforceEmulator(state_file=state_file) as second:
        sf = connect(second)
        assert sf.Contact.get(rid)["LastName"] == "Kept"
        assert second.by_external_id("Contact", "CDP_Profile_Id__c", "keep")["Id"] == rid
        assert gone in second.state()["deleted"]["Contact"]
        assert "bulk" in sf.bulk2.Contact.get_successful_records(job["job_id"])
        new_id = sf.Contact.create({"LastName": "Next"})["id"]
        assert new_id not in (rid, gone)  # id counters survive the restart
        with pytest.raises(SalesforceMalformedRequest):
            sf.Contact.create({"LastName": "Dup", "CDP_Profile_Id__c": "keep"})


def test_cli_prints_url_seeds_contacts_and_stops_on_sigterm(tmp_path: Path) -> None:
    seed = contacts_csv(
        tmp_path / "seed.csv",
        [
            {"LastName": "Seeded", "Email": "s@example.com", "CDP_Profile_Id__c": "s1",
             "CDP_SMS_Consent__c": "opted_in"},
            {"LastName": "Other", "Email": "", "CDP_Profile_Id__c": "s2", "CDP_SMS_Consent__c": "opted_out"},
        ],
    )
    state_file = tmp_path / "cli_state.json"
    env = {**os.environ, "CDP_EMULATOR_FAULTS": json.dumps({"seed": 5})}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators.salesforce",
            "--port",
            "0",
            "--state-file",
            str(state_file),
            "--seed-contacts",
            str(seed),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("salesforce emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        sf = Salesforce(instance_url=url, session_id="00D000000000001!emulator", session=emulator_session(url))
        seeded = sf.query("SELECT LastName, CDP_SMS_Consent__c FROM Contact WHERE CDP_Profile_Id__c = 's1'")
        assert seeded["records"][0]["CDP_SMS_Consent__c"] == "opted_in"
        assert requests.get(f"{url}/__emulator/faults").json()["seed"] == 5
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    saved = json.loads(state_file.read_text())
    assert sorted(r["LastName"] for r in saved["records"]["Contact"].values()) == ["Other", "Seeded"]
