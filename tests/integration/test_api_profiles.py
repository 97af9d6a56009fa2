"""The read endpoints end to end: a generated population goes through `cdp run` (whose serving/snapshot asset
publishes the snapshot), a real uvicorn serves it, and the answers are checked against the warehouse. Then a record
linking two people is landed and `cdp run` runs again while the server is up: the server picks up the new snapshot
without a restart and the retired profile id answers with its survivor."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from serving.security import KeyStore

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")

pytestmark = pytest.mark.integration


def cdp(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server died"
        try:
            snapshot = httpx.get(f"{base}/health", timeout=1).json().get("snapshot") or {}
            if snapshot.get("file"):
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not load the snapshot within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def query(env: dict[str, str], sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


class Api:
    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        keys = KeyStore(home / "var" / "serving" / "keys.sqlite")
        self.read_key = keys.create(["read:profiles"], name="test")[1]
        self.write_key = keys.create(["write:events"], name="test")[1]
        self.process, self.base = start_server(env)
        self.client = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.read_key}"},
                                   timeout=10)

    def get(self, path: str, **params: str | int) -> httpx.Response:
        return self.client.get(path, params=params)


@pytest.fixture(scope="module")
def api(built_home: Callable[[str], Path]) -> Iterator[Api]:
    home = built_home("api_profiles")  # built by `cdp run`, whose serving/snapshot asset published the snapshot
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster")}
    for inherited in ("CDP_SERVING_PATH", "CDP_API_KEYS_PATH", "CDP_PRIVACY_PATH", "CDP_API_ACCESS_LOG"):
        env.pop(inherited, None)
    assert list((home / "var" / "serving" / "snapshots").glob("snapshot-*.duckdb"))
    api = Api(env, home)
    yield api
    stop_server(api.process)


def test_keys_are_required_with_the_scope(api: Api) -> None:
    anonymous = httpx.get(f"{api.base}/v1/segments")
    assert anonymous.status_code == 401 and anonymous.json()["status"] == 401
    wrong = httpx.get(f"{api.base}/v1/segments", headers={"Authorization": f"Bearer {api.write_key}"})
    assert wrong.status_code == 403 and "read:profiles" in wrong.json()["error"]
    assert api.get("/v1/segments").status_code == 200


def test_lookup_by_identifier_normalized_like_dbt(api: Api) -> None:
    profile_id, email = query(api.env, "select profile_id, identifier_value from gold.profile_identifiers "
                                       "where identifier_type = 'email' order by 1 limit 1")[0]
    found = api.get("/v1/profiles", email=f"  {email.upper()} ")
    assert found.status_code == 200, found.text
    document = found.json()
    assert document["profile_id"] == profile_id
    assert {"type": "email", "value": email} in document["identifiers"]
    by_id = api.get(f"/v1/profiles/{profile_id}")
    assert by_id.status_code == 200 and by_id.content == found.content
    phones = query(api.env, "select profile_id, identifier_value from gold.profile_identifiers "
                            "where identifier_type = 'phone' and identifier_value like '+49%' order by 1 limit 1")
    if phones:  # a German mobile written nationally, as a person types it
        phone_profile, phone = phones[0]
        national = "0" + phone[3:6] + " " + phone[6:]
        assert api.get("/v1/profiles", phone=national).json()["profile_id"] == phone_profile
    device = query(api.env, "select profile_id, identifier_value from gold.profile_identifiers "
                            "where identifier_type = 'device_id' and not is_shared order by 1 limit 1")[0]
    assert api.get("/v1/profiles", device_id=device[1]).json()["profile_id"] == device[0]


def test_lookup_errors(api: Api) -> None:
    none_given = api.get("/v1/profiles")
    assert none_given.status_code == 400 and "exactly one" in none_given.json()["error"]
    two = api.get("/v1/profiles", email="a@example.org", phone="+491511234567")
    assert two.status_code == 400
    invalid = api.get("/v1/profiles", email="not an email")
    assert invalid.status_code == 400 and "not valid" in invalid.json()["error"]
    unknown = api.get("/v1/profiles", email="nobody-at-all@example.org")
    assert unknown.status_code == 404 and "nobody-at-all" not in unknown.text  # the value is not echoed
    assert api.get("/v1/profiles/prf_does_not_exist").status_code == 404


def test_documents_carry_traits_consent_engagement(api: Api) -> None:
    (profile_id, first_name, contact_source, stage), = query(
        api.env, "select profile_id, first_name, contact_source, application_stage from gold.profiles "
                 "where first_name is not null and application_stage is not null order by profile_id limit 1")
    document = api.get(f"/v1/profiles/{profile_id}").json()
    assert document["traits"]["first_name"]["value"] == first_name
    assert document["traits"]["first_name"]["source"] == contact_source
    assert document["traits"]["application_stage"] == {**document["traits"]["application_stage"],
                                                       "value": stage, "source": "salesforce"}
    assert document["traits"]["first_name"]["computed_at"].endswith("Z")
    consent = query(api.env, "select channel, status, can_contact, source from gold.consent_current "
                             "where profile_id = ?", [profile_id])
    assert {ch: (c["status"], c["can_contact"], c["source"]) for ch, c in document["consent"].items()} == {
        ch: (status, can, source) for ch, status, can, source in consent}
    assert document["engagement"]["score"] is not None
    segments = {r[0] for r in query(api.env, "select segment from gold.segment_results where profile_id = ?",
                                    [profile_id])}
    assert {s["name"] for s in document["segments"]} == segments


def test_segments_and_members_paging(api: Api) -> None:
    listed = api.get("/v1/segments").json()["segments"]
    expected = dict(query(api.env, "select segment, members from gold.segment_definitions"))
    assert {s["segment"]: s["members"] for s in listed} == expected
    for segment, count in expected.items():
        seen, cursor = [], None
        while True:
            params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
            page = api.get(f"/v1/segments/{segment}/members", **params)
            assert page.status_code == 200, page.text
            seen += [m["profile_id"] for m in page.json()["members"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        members = {r[0] for r in query(api.env, "select profile_id from gold.segment_results where segment = ?",
                                       [segment])}
        assert len(seen) == len(set(seen)) == count and set(seen) == members, segment
    assert api.get("/v1/segments/no_such_segment/members").status_code == 404
    assert api.get(f"/v1/segments/{next(iter(expected))}/members", cursor="@@").status_code == 400


def test_recent_events_paged(api: Api) -> None:
    (profile_id, events), = query(api.env, "select profile_id, count(*) from gold.profile_events "
                                           "where profile_id is not null group by 1 order by 2 desc, 1 limit 1")
    seen, cursor = [], None
    while True:
        page = api.get(f"/v1/profiles/{profile_id}/events", limit=4, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        seen += page.json()["events"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == min(events, 50) == len({e["event_id"] for e in seen})
    assert [e["occurred_at"] for e in seen] == sorted((e["occurred_at"] for e in seen), reverse=True)
    assert api.get(f"/v1/profiles/{profile_id}/events", limit=0).status_code == 400


def test_openapi_documents_the_read_endpoints(api: Api) -> None:
    spec = httpx.get(f"{api.base}/schema/openapi.json").json()
    assert {"/v1/profiles", "/v1/profiles/{profile_id}", "/v1/profiles/{profile_id}/events", "/v1/segments",
            "/v1/segments/{segment}/members"} <= set(spec["paths"])
    assert "ProfileDocument" in json.dumps(spec["components"]["schemas"])


def test_a_new_run_is_served_without_restart_and_merged_ids_answer(api: Api) -> None:
    """A web form links an anonymous visitor to a known email: the next run merges the two profiles."""
    anonymous_id, = query(api.env, """
        select any_value(identifier_value) from gold.profile_identifiers group by profile_id
        having bool_and(identifier_type = 'anonymous_id') order by 1 limit 1""")[0]
    email, = query(api.env, "select identifier_value from gold.profile_identifiers where identifier_type = 'email' "
                            "order by profile_id desc limit 1")[0]
    before = httpx.get(f"{api.base}/health").json()["snapshot"]["file"]
    record = {
        "event_id": "f0f0f0f0-0000-4000-8000-00000000abcd", "type": "track", "event": "form_submit",
        "anonymous_id": anonymous_id, "session_id": "sess_test_merge", "fingerprint": "fp_test",
        "timestamp": "2026-11-20T10:00:00.000Z", "sent_at": "2026-11-20T10:00:00.500Z",
        "page": {"url": "https://www.northbridge.edu/mba", "path": "/mba", "title": "MBA", "referrer": None},
        "utm": {"source": None, "medium": None, "campaign": None, "term": None, "content": None},
        "user_agent": "test", "properties": {"form_id": "request_info", "program": "mba"},
        "traits": {"email": email, "first_name": None, "last_name": None, "phone": None, "country": "DE"},
    }
    batch = api.home / "linking.ndjson"
    batch.write_text(json.dumps(record) + "\n")
    cdp("land", "web", str(batch), env=api.env)
    cdp("run", env=api.env)  # the server keeps running meanwhile
    retired, survivor = query(api.env, "select retired_profile_id, surviving_profile_id from gold.profile_merges "
                                       "order by retired_at desc limit 1")[0]
    deadline = time.monotonic() + 15
    while httpx.get(f"{api.base}/health").json()["snapshot"]["file"] == before:
        assert time.monotonic() < deadline, "the new snapshot was not loaded"
        time.sleep(0.2)
    answer = api.get(f"/v1/profiles/{retired}")
    assert answer.status_code == 200
    assert answer.json()["merged_into"] == survivor and answer.json()["profile_id"] == survivor
    assert answer.json()["requested_profile_id"] == retired
    assert api.get("/v1/profiles", anonymous_id=anonymous_id).json()["profile_id"] == survivor
