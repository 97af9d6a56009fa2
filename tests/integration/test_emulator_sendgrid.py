"""The SendGrid Marketing Campaigns emulator, driven over HTTP with httpx as the email destination does."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulators.sendgrid import DEMO_API_KEY, Faults, SendGridEmulator

ROOT = Path(__file__).resolve().parents[2]

AUTH_ERROR = {"errors": [{"field": None, "message": "authorization required"}]}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def emu() -> Iterator[SendGridEmulator]:
    with SendGridEmulator(import_delay_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture
def client(emu: SendGridEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {DEMO_API_KEY}"}, timeout=30) as c:
        yield c


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v3/marketing/contacts/imports/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] != "pending":
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still pending after {timeout}s")


def create_list(client: httpx.Client, name: str) -> str:
    response = client.post("/v3/marketing/lists", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upsert(client: httpx.Client, contacts: list[dict], list_ids: list[str] | None = None) -> dict:
    body: dict = {"contacts": contacts}
    if list_ids is not None:
        body["list_ids"] = list_ids
    response = client.put("/v3/marketing/contacts", json=body)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["job_id"])


def test_auth_errors(emu: SendGridEmulator) -> None:
    with httpx.Client(base_url=emu.url) as anonymous:
        for headers in ({}, {"Authorization": "Bearer SG.wrong"}, {"Authorization": f"Basic {DEMO_API_KEY}"}):
            response = anonymous.get("/v3/marketing/lists", headers=headers)
            assert response.status_code == 401
            assert response.json() == AUTH_ERROR
            assert all(h in response.headers for h in RATE_HEADERS)
        ok = anonymous.get("/v3/marketing/lists", headers={"Authorization": f"Bearer {DEMO_API_KEY}"})
        assert ok.status_code == 200
        assert all(h in ok.headers for h in RATE_HEADERS)
    with SendGridEmulator(api_keys=["SG.custom"]) as other, httpx.Client(base_url=other.url) as c:
        assert c.get("/v3/marketing/lists", headers={"Authorization": f"Bearer {DEMO_API_KEY}"}).status_code == 401
        assert c.get("/v3/marketing/lists", headers={"Authorization": "Bearer SG.custom"}).status_code == 200


def test_custom_fields_and_lists(client: httpx.Client) -> None:
    ids = {}
    for name, kind in (("lifecycle_stage", "Text"), ("engagement_score", "Number"), ("last_seen", "Date")):
        response = client.post("/v3/marketing/field_definitions", json={"name": name, "field_type": kind})
        assert response.status_code == 200, response.text
        body = response.json()
        assert re.fullmatch(rf"e\d+_{kind[0]}", body["id"]) and body["name"] == name and body["field_type"] == kind
        ids[name] = body["id"]
    definitions = client.get("/v3/marketing/field_definitions").json()
    assert {f["name"]: f["id"] for f in definitions["custom_fields"]} == ids
    assert {"email", "first_name", "last_name"} <= {f["name"] for f in definitions["reserved_fields"]}
    duplicate = client.post("/v3/marketing/field_definitions", json={"name": "Lifecycle_Stage", "field_type": "Text"})
    assert duplicate.status_code == 400 and duplicate.json()["errors"][0]["field"] == "name"
    assert (
        client.post("/v3/marketing/field_definitions", json={"name": "email", "field_type": "Text"}).status_code == 400
    )
    bad_type = client.post("/v3/marketing/field_definitions", json={"name": "x", "field_type": "Boolean"})
    assert bad_type.status_code == 400 and bad_type.json()["errors"][0]["field"] == "field_type"

    created = client.post("/v3/marketing/lists", json={"name": "segment_alumni"})
    assert created.status_code == 201
    body = created.json()
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"]) and body["contact_count"] == 0
    assert body["_metadata"]["self"].endswith(f"/v3/marketing/lists/{body['id']}")
    duplicate_list = client.post("/v3/marketing/lists", json={"name": "segment_alumni"})
    assert duplicate_list.status_code == 400 and "already exists" in duplicate_list.json()["errors"][0]["message"]
    assert client.post("/v3/marketing/lists", json={}).status_code == 400
    for i in range(4):
        create_list(client, f"segment_{i}")
    names, url = [], "/v3/marketing/lists?page_size=2"
    while url:
        page = client.get(url).json()
        assert len(page["result"]) <= 2
        names += [item["name"] for item in page["result"]]
        url = page["_metadata"].get("next")
    assert names == ["segment_alumni", "segment_0", "segment_1", "segment_2", "segment_3"]
    assert client.get("/v3/marketing/lists?page_size=0").status_code == 400
    renamed = client.patch(f"/v3/marketing/lists/{body['id']}", json={"name": "alumni"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "alumni"
    assert client.get(f"/v3/marketing/lists/{body['id']}").json()["name"] == "alumni"
    assert client.delete(f"/v3/marketing/lists/{body['id']}").status_code == 204
    missing = client.get(f"/v3/marketing/lists/{body['id']}")
    assert missing.status_code == 404 and missing.json()["errors"][0]["message"]


def test_upsert_30000_contacts_into_one_list(client: httpx.Client, emu: SendGridEmulator) -> None:
    score = client.post("/v3/marketing/field_definitions", json={"name": "score", "field_type": "Number"}).json()["id"]
    list_id = create_list(client, "everyone")
    contacts = [
        {
            "email": f"Student{i:05d}@Example.org",
            "first_name": "Ada",
            "external_id": f"p-{i}",
            "custom_fields": {score: i},
        }
        for i in range(30_000)
    ]
    started = time.perf_counter()
    response = client.put("/v3/marketing/contacts", json={"list_ids": [list_id], "contacts": contacts})
    assert response.status_code == 202
    assert re.fullmatch(r"[0-9a-f-]{36}", response.json()["job_id"])
    job = wait_job(client, response.json()["job_id"])
    elapsed = time.perf_counter() - started
    print(f"\n30,000-contact upsert: request + async apply + poll = {elapsed:.2f} s")
    assert job["status"] == "completed" and job["job_type"] == "upsert"
    assert job["results"] == {
        "requested_count": 30_000,
        "created_count": 30_000,
        "updated_count": 0,
        "deleted_count": 0,
        "errored_count": 0,
    }
    assert job["started_at"] and job["finished_at"]
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 30_000
    assert client.get(f"/v3/marketing/lists/{list_id}/contacts/count").json()["contact_count"] == 30_000
    found = client.post("/v3/marketing/contacts/search/emails", json={"emails": ["student00042@example.org"]})
    contact = found.json()["result"]["student00042@example.org"]["contact"]
    assert contact["email"] == "student00042@example.org"  # lower-cased
    assert contact["custom_fields"] == {"score": 42} and contact["list_ids"] == [list_id]
    assert client.get(f"/v3/marketing/contacts/{contact['id']}").json()["external_id"] == "p-42"
    assert len(emu.list_members("everyone")) == 30_000
    # Re-sending a contact updates it (all its identifiers present), it does not create a second one.
    again = upsert(client, [{"email": "student00042@example.org", "external_id": "p-42", "first_name": "Grace"}])
    assert again["results"]["updated_count"] == 1 and again["results"]["created_count"] == 0
    assert emu.contacts_by_email()["student00042@example.org"]["first_name"] == "Grace"
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 30_000


def test_upsert_limits(client: httpx.Client) -> None:
    too_many = [{"email": f"u{i}@x.org"} for i in range(30_001)]
    response = client.put("/v3/marketing/contacts", json={"contacts": too_many})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "contacts" and "30000" in error["message"]
    too_big = [{"email": f"u{i}@x.org", "address_line_1": "x" * 100, "unique_name": "y" * 250} for i in range(20_000)]
    response = client.put("/v3/marketing/contacts", json={"contacts": too_big})
    assert len(response.request.content) > 6 * 1024 * 1024
    assert response.status_code == 413 and "6 MB" in response.json()["errors"][0]["message"]
    assert client.put("/v3/marketing/contacts", json={"contacts": []}).status_code == 400
    assert client.put("/v3/marketing/contacts", content=b"{not json").json() == {
        "errors": [{"field": None, "message": "invalid JSON"}]
    }
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 0


def test_malformed_contacts_rejected_with_field_path(client: httpx.Client) -> None:
    contacts = [{"email": f"ok{i}@example.org"} for i in range(3)] + [{"email": "not-an-email"}]
    response = client.put("/v3/marketing/contacts", json={"contacts": contacts})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "contacts[3].email"
    response = client.put(
        "/v3/marketing/contacts",
        json={"contacts": [{"first_name": "No identifier"}, {"email": "a@b.org", "first_name": "x" * 51}]},
    )
    fields = [e["field"] for e in response.json()["errors"]]
    assert response.status_code == 400 and fields == ["contacts[0]", "contacts[1].first_name"]
    unknown_list = client.put("/v3/marketing/contacts", json={"list_ids": ["nope"], "contacts": [{"email": "a@b.org"}]})
    assert unknown_list.status_code == 404 and unknown_list.json()["errors"][0]["field"] == "list_ids"
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 0


def test_invalid_contact_inside_an_import_is_reported_and_others_applied(client: httpx.Client) -> None:
    score = client.post("/v3/marketing/field_definitions", json={"name": "score", "field_type": "Number"}).json()["id"]
    contacts = [{"email": f"s{i}@example.org", "custom_fields": {score: i}} for i in range(5)]
    contacts[2]["custom_fields"] = {score: "high"}
    job = upsert(client, contacts)
    assert job["status"] == "errored"
    assert job["results"]["errored_count"] == 1 and job["results"]["created_count"] == 4
    rows = list(csv.DictReader(io.StringIO(httpx.get(job["results"]["errors_url"]).text)))
    assert rows[0]["email"] == "s2@example.org" and "Number" in rows[0]["message"]
    result = client.post("/v3/marketing/contacts/search/emails", json={"emails": ["s1@example.org", "s2@example.org"]})
    assert result.json()["result"]["s1@example.org"]["contact"]["custom_fields"] == {"score": 1}
    assert result.json()["result"]["s2@example.org"] == {"error": "contact not found"}
    # An update must carry every identifier the contact already has (as the docs say).
    upsert(client, [{"email": "ext@example.org", "external_id": "p-9"}])
    missing_identifier = upsert(client, [{"email": "ext@example.org", "first_name": "X"}])
    assert missing_identifier["status"] == "failed" and missing_identifier["results"]["errored_count"] == 1
    by_external_id = upsert(client, [{"external_id": "p-9", "email": "ext@example.org", "first_name": "Y"}])
    assert by_external_id["status"] == "completed" and by_external_id["results"]["updated_count"] == 1
    unknown_field = upsert(client, [{"email": "u@example.org", "custom_fields": {"e99_T": "x"}}])
    assert unknown_field["status"] == "failed"


def test_search_emails(client: httpx.Client) -> None:
    upsert(client, [{"email": "jane@example.org", "alternate_emails": ["jane.alt@example.org"], "first_name": "Jane"}])
    response = client.post(
        "/v3/marketing/contacts/search/emails",
        json={"emails": ["JANE@example.org", "jane.alt@example.org", "no@x.org"]},
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["jane@example.org"]["contact"]["first_name"] == "Jane"
    assert result["jane.alt@example.org"]["contact"]["email"] == "jane@example.org"
    assert result["no@x.org"] == {"error": "contact not found"}
    contact = result["jane@example.org"]["contact"]
    assert {"id", "list_ids", "segment_ids", "created_at", "updated_at", "custom_fields", "_metadata"} <= set(contact)
    assert client.post("/v3/marketing/contacts/search/emails", json={"emails": ["no@x.org"]}).status_code == 404
    assert client.post("/v3/marketing/contacts/search/emails", json={"emails": ["bad"]}).status_code == 400


def test_sgql_search_by_list(client: httpx.Client) -> None:
    tier = client.post("/v3/marketing/field_definitions", json={"name": "tier", "field_type": "Text"}).json()["id"]
    alumni, applicants = create_list(client, "alumni"), create_list(client, "applicants")
    upsert(
        client,
        [{"email": f"a{i}@uni.edu", "external_id": f"a-{i}", "custom_fields": {tier: "gold"}} for i in range(60)],
        [alumni],
    )
    upsert(client, [{"email": f"b{i}@school.org", "external_id": f"b-{i}"} for i in range(5)], [applicants])

    def search(query: str) -> dict:
        response = client.post("/v3/marketing/contacts/search", json={"query": query})
        assert response.status_code == 200, response.text
        return response.json()

    by_list = search(f"CONTAINS(list_ids, '{alumni}')")
    assert by_list["contact_count"] == 60 and len(by_list["result"]) == 50  # only the first 50 are returned
    assert all(alumni in c["list_ids"] for c in by_list["result"])
    assert search(f"CONTAINS(list_ids, '{alumni}') OR CONTAINS(list_ids, '{applicants}')")["contact_count"] == 65
    assert search(f"CONTAINS(list_ids, '{applicants}') AND email LIKE 'b1%'")["contact_count"] == 1
    assert search("email IN ('a1@uni.edu', 'b2@school.org', 'zz@x.org')")["contact_count"] == 2
    assert [c["email"] for c in search("external_id = 'b-3'")["result"]] == ["b3@school.org"]
    assert search("email = lower('A7@UNI.EDU')")["contact_count"] == 1
    assert search("tier = 'gold' AND NOT (email LIKE 'a1%')")["contact_count"] == 49
    bad = client.post("/v3/marketing/contacts/search", json={"query": "favourite_colour = 'red'"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "query"
    assert client.post("/v3/marketing/contacts/search", json={"query": "email LIKE"}).status_code == 400


def test_remove_contacts_from_a_list(client: httpx.Client, emu: SendGridEmulator) -> None:
    list_id = create_list(client, "trial")
    upsert(client, [{"email": f"t{i}@example.org"} for i in range(4)], [list_id])
    ids = [
        c["id"]
        for c in client.post("/v3/marketing/contacts/search", json={"query": "email LIKE 't%'"}).json()["result"]
    ]
    response = client.delete(f"/v3/marketing/lists/{list_id}/contacts", params={"contact_ids": ",".join(ids[:2])})
    assert response.status_code == 202
    wait_job(client, response.json()["job_id"])
    assert client.get(f"/v3/marketing/lists/{list_id}/contacts/count").json()["contact_count"] == 2
    assert client.get(f"/v3/marketing/contacts/{ids[0]}").json()["list_ids"] == []  # still a contact
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 4
    assert len(emu.list_members("trial")) == 2
    sample = client.get(f"/v3/marketing/lists/{list_id}", params={"contact_sample": "true"}).json()["contact_sample"]
    assert {c["id"] for c in sample} == set(ids[2:])
    unknown = client.delete(f"/v3/marketing/lists/{list_id}/contacts", params={"contact_ids": "not-a-contact"})
    assert unknown.status_code == 404
    assert client.delete(f"/v3/marketing/lists/{list_id}/contacts").status_code == 400


def test_delete_contacts_is_async(client: httpx.Client, emu: SendGridEmulator) -> None:
    upsert(client, [{"email": f"d{i}@example.org"} for i in range(5)])
    ids = list(emu.state()["contacts"])
    emu.import_delay_seconds = 0.5
    response = client.delete("/v3/marketing/contacts", params={"ids": ",".join(ids[:2])})
    assert response.status_code == 202
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 5  # not applied yet
    job = wait_job(client, response.json()["job_id"])
    assert job["job_type"] == "delete" and job["status"] == "completed" and job["results"]["deleted_count"] == 2
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 3
    assert client.get(f"/v3/marketing/contacts/{ids[0]}").status_code == 404
    emu.import_delay_seconds = 0.05
    assert client.delete("/v3/marketing/contacts").status_code == 400
    everything = client.delete("/v3/marketing/contacts", params={"delete_all_contacts": "true"})
    assert wait_job(client, everything.json()["job_id"])["results"]["deleted_count"] == 3
    assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == 0


def call_with_retry(
    client: httpx.Client, method: str, url: str, attempts: int = 10, **kwargs
) -> tuple[httpx.Response, int]:
    """What a well-behaved client does: on 429 wait until X-RateLimit-Reset, then retry."""
    for limited in range(attempts):
        response = client.request(method, url, **kwargs)
        if response.status_code != 429:
            return response, limited
        time.sleep(max(0.0, int(response.headers["X-RateLimit-Reset"]) - time.time()) + 0.01)
    raise AssertionError("still rate limited")


def test_429_fault_then_retry_after_reset_succeeds(client: httpx.Client, emu: SendGridEmulator) -> None:
    emu.set_faults({"rate_429": 1.0})
    response = client.get("/v3/marketing/lists")
    assert response.status_code == 429
    assert response.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > time.time() - 1
    with pytest.raises(httpx.HTTPStatusError) as info:
        response.raise_for_status()
    assert info.value.response.status_code == 429
    emu.set_faults({"rate_429": 0.6, "seed": 3})
    response, limited = call_with_retry(client, "POST", "/v3/marketing/lists", json={"name": "retried"})
    assert response.status_code == 201 and limited >= 1
    assert [li["name"] for li in emu.state()["lists"].values()] == ["retried"]


def test_5xx_fault(client: httpx.Client, emu: SendGridEmulator) -> None:
    emu.set_faults({"rate_5xx": 1.0, "seed": 1})
    statuses = set()
    for _ in range(8):
        response = client.post("/v3/marketing/lists", json={"name": "never"})
        statuses.add(response.status_code)
        assert response.json()["errors"][0]["message"] in ("internal error", "service unavailable")
        with pytest.raises(httpx.HTTPStatusError):
            response.raise_for_status()
    assert statuses == {500, 503}
    assert emu.state()["lists"] == {}  # a 5xx here means nothing was done


def test_drop_after_commit(client: httpx.Client, emu: SendGridEmulator) -> None:
    emu.set_faults({"drop_after_commit": 1.0})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.put("/v3/marketing/contacts", json={"contacts": [{"email": "lost.reply@example.org"}]})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/v3/marketing/lists", json={"name": "committed"})
    emu.set_faults({})
    emu.wait_for_jobs()
    state = emu.state()
    assert [li["name"] for li in state["lists"].values()] == ["committed"]
    assert [j["status"] for j in state["jobs"].values()] == ["completed"]
    # The client reconciles by looking the contact up: the change was applied although the reply was lost.
    found = client.post("/v3/marketing/contacts/search/emails", json={"emails": ["lost.reply@example.org"]})
    assert found.status_code == 200
    assert any(r["dropped"] for r in emu.requests_log())


def test_rate_limit_per_second_token_bucket(client: httpx.Client, emu: SendGridEmulator) -> None:
    emu.set_faults({"rate_limit_per_second": 5})
    responses = [client.get("/v3/marketing/contacts/count") for _ in range(8)]
    codes = [r.status_code for r in responses]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["X-RateLimit-Limit"] == "5" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.json() == {"errors": [{"field": None, "message": "too many requests"}]}
    response, _ = call_with_retry(client, "GET", "/v3/marketing/contacts/count")
    assert response.status_code == 200
    # Another key has its own bucket.
    emu.api_keys.append("SG.second")
    assert client.get("/v3/marketing/lists", headers={"Authorization": "Bearer SG.second"}).status_code == 200


def test_rate_import_error_is_deterministic(client: httpx.Client, emu: SendGridEmulator) -> None:
    counts = []
    for run in range(2):
        emu.reset()
        emu.set_faults({"rate_import_error": 0.3, "seed": 11})
        job = upsert(client, [{"email": f"r{i}@example.org"} for i in range(1000)])
        assert job["status"] == "errored"
        results = job["results"]
        assert results["created_count"] + results["errored_count"] == 1000
        assert 200 < results["errored_count"] < 400
        assert client.get("/v3/marketing/contacts/count").json()["contact_count"] == results["created_count"]
        counts.append((run, results["errored_count"]))
    assert counts[0][1] == counts[1][1]


def test_control_endpoints_and_env_faults(emu: SendGridEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with httpx.Client(base_url=emu.url) as c:
        assert c.put("/__emulator/faults", json={"rate_429": 0.25, "seed": 5}).status_code == 200
        assert c.get("/__emulator/faults").json()["rate_429"] == 0.25
        assert c.put("/__emulator/faults", json={"rate_4299": 1}).status_code == 400
        assert c.put("/__emulator/faults", json={"rate_5xx": 2}).status_code == 400
        c.get("/v3/marketing/lists")
        assert c.get("/__emulator/requests").json()["requests"][-1]["status"] == 401
        assert set(c.get("/__emulator/state").json()) == {"contacts", "lists", "field_definitions", "jobs"}
        assert c.post("/__emulator/reset").status_code == 200
        assert c.get("/__emulator/requests").json()["requests"] == []
        assert c.post("/__emulator/save").status_code == 400  # no state file
    monkeypatch.setenv("CDP_EMULATOR_FAULTS", '{"rate_5xx": 0.5, "seed": 9}')
    with SendGridEmulator() as from_env:
        assert from_env.faults == Faults(rate_5xx=0.5, seed=9)


def test_state_file_round_trip(tmp_path: Path) -> None:
    state_file = tmp_path / "sendgrid.json"
    with SendGridEmulator(state_file=state_file, import_delay_seconds=0.01) as first:
        with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {DEMO_API_KEY}"}) as c:
            field = c.post("/v3/marketing/field_definitions", json={"name": "stage", "field_type": "Text"}).json()["id"]
            list_id = create_list(c, "kept")
            upsert(
                c, [{"email": "keep@example.org", "external_id": "k-1", "custom_fields": {field: "alumni"}}], [list_id]
            )
            assert c.post("/__emulator/save").status_code == 200
            assert json.loads(state_file.read_text())["contacts"][0]["email"] == "keep@example.org"
        before = first.state()
    with SendGridEmulator(state_file=state_file) as second:
        assert second.state() | {"contacts": None} == before | {"contacts": None}
        contact = next(iter(second.state()["contacts"].values()))
        assert contact["custom_fields"] == {"stage": "alumni"} and contact["list_ids"] == [list_id]
        with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {DEMO_API_KEY}"}) as c:
            again = upsert(c, [{"email": "keep@example.org", "external_id": "k-1"}])
            assert again["results"]["updated_count"] == 1  # identifier indexes were rebuilt from the file
            assert second.list_members("kept") == ["keep@example.org"]


def test_cli_subprocess_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "cli-state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators.sendgrid", "--port", "0", "--state-file", str(state_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.fullmatch(r"sendgrid emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        with httpx.Client(base_url=match.group(1), headers={"Authorization": f"Bearer {DEMO_API_KEY}"}) as c:
            assert c.post("/v3/marketing/lists", json={"name": "from-cli"}).status_code == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    saved = json.loads(state_file.read_text())
    assert [li["name"] for li in saved["lists"].values()] == ["from-cli"]
