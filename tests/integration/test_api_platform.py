"""The API platform against a real server (`cdp serve` on a free loopback port): keys from the CLI, 401 / 403 / 429
and 413 bodies, /health and /metrics (Prometheus text), an access log without PII, the consent endpoint landing a
Segment-spec message, and a deletion request erasing a person end to end on a small warehouse."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")

pytestmark = pytest.mark.integration


def home_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster")}
    for inherited in ("CDP_PRIVACY_PATH", "CDP_SERVING_PATH", "CDP_API_KEYS_PATH", "CDP_API_ACCESS_LOG",
                      "CDP_API_RATE_LIMIT", "CDP_API_RATE_BURST", "CDP_PRIVACY_AUTORUN"):
        env.pop(inherited, None)
    return env


def cdp(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def create_key(env: dict[str, str], scopes: str, *extra: str) -> str:
    return cdp("keys", "create", "--scopes", scopes, *extra, env=env).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([CDP, "serve", "--port", str(port)], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else "server exited"
            assert time.monotonic() < deadline, "the API did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def access_log(env: dict[str, str]) -> list[dict]:
    time.sleep(1.5)  # lines are written at most a second late
    path = Path(env["CDP_HOME"]) / "var" / "logs" / "api.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A server on an empty home (no warehouse, no snapshot): the platform alone."""
    home = tmp_path_factory.mktemp("api_platform")
    env = home_env(home)
    keys = {
        "all": create_key(env, "read:profiles,write:events,admin:privacy", "--name", "tests"),
        "read": create_key(env, "read:profiles"),
        "slow": create_key(env, "admin:privacy", "--rate", "2"),
    }
    with serve(env) as url:
        yield {"url": url, "env": env, "home": home, "keys": keys}


def test_keys_cli_prints_the_key_once_and_revokes(api: dict) -> None:
    env = api["env"]
    created = cdp("keys", "create", "--scopes", "read:profiles", "--name", "revoke-me", env=env)
    key = created.stdout.strip()
    key_id = key.split("_")[1]
    assert re.fullmatch(r"cdp_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key)
    assert key_id in created.stderr and "read:profiles" in created.stderr and "only this once" in created.stderr
    listed = cdp("keys", "list", env=env).stdout
    assert key_id in listed and "revoke-me" in listed and key.split("_", 2)[2] not in listed
    url = api["url"]
    assert httpx.get(f"{url}/v1/privacy/deletions/fgt_0000000000000000", headers=bearer(key)).status_code == 403
    cdp("keys", "revoke", key_id, env=env)
    time.sleep(1.2)  # a running server re-reads the key file at most every second
    refused = httpx.get(f"{url}/v1/privacy/deletions/fgt_0000000000000000", headers=bearer(key))
    assert refused.status_code == 401 and refused.json() == {"error": "unknown or revoked API key", "status": 401}
    again = cdp("keys", "revoke", key_id, env=env, check=False)
    assert again.returncode == 1 and again.stderr.startswith("cdp: error: keys revoke: no active key")
    bad = cdp("keys", "create", "--scopes", "read:everything", env=env, check=False)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert "unknown scope(s) read:everything" in bad.stderr


def test_401_403_bodies(api: dict) -> None:
    url = api["url"]
    body = {"email": "someone@example.org", "channel": "email", "status": "opted_out"}
    missing = httpx.post(f"{url}/v1/consent", json=body)
    assert missing.status_code == 401
    assert missing.json() == {"error": "an API key is required: Authorization: Bearer <key>", "status": 401}
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{url}/v1/consent", json=body, headers=bearer("cdp_deadbeef_" + "x" * 43))
    assert wrong.status_code == 401 and wrong.json()["error"] == "unknown or revoked API key"
    forbidden = httpx.post(f"{url}/v1/consent", json=body, headers=bearer(api["keys"]["read"]))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "this API key lacks the scope write:events", "status": 403}
    forbidden = httpx.post(f"{url}/v1/privacy/deletions", json={"email": "a@b.org"},
                           headers=bearer(api["keys"]["read"]))
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "this API key lacks the scope admin:privacy"


def test_429_with_retry_after(api: dict) -> None:
    headers = bearer(api["keys"]["slow"])  # 2 requests/s, a burst of 4
    with httpx.Client(base_url=api["url"], headers=headers) as client:
        answers = [client.get("/v1/privacy/deletions/fgt_0000000000000000") for _ in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses[:4] == [404] * 4 and 429 in statuses[4:], statuses
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.json()["status"] == 429 and "rate limit of 2 requests/s" in limited.json()["error"]
    assert int(limited.headers["retry-after"]) >= 1
    time.sleep(1.0)
    with httpx.Client(base_url=api["url"], headers=headers) as client:
        assert client.get("/v1/privacy/deletions/fgt_0000000000000000").status_code == 404  # refilled


def test_oversize_body_gets_a_clear_error(api: dict) -> None:
    big = {"email": "a@b.org", "channel": "email", "status": "opted_in", "pad": "x" * 600_000}
    answer = httpx.post(f"{api['url']}/v1/consent", json=big, headers=bearer(api["keys"]["all"]))
    assert answer.status_code == 413
    assert answer.json() == {"error": "request body larger than the limit of 512,000 bytes", "status": 413}


def test_health_and_metrics(api: dict) -> None:
    url = api["url"]
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["uptime_seconds"] > 0
    httpx.get(f"{url}/no/such/route")
    httpx.get(f"{url}/v1/privacy/deletions/fgt_0000000000000001", headers=bearer(api["keys"]["all"]))
    before = httpx.get(f"{url}/metrics").text
    basic = httpx.BasicAuth(api["keys"]["all"], "")
    batch = {"batch": [{"type": "track", "event": "metric_probe", "anonymousId": f"anon_m{i}"} for i in range(3)]}
    assert httpx.post(f"{url}/v1/batch", json=batch, auth=basic).status_code == 200
    assert httpx.post(f"{url}/v1/track", json={"type": "track"}, auth=basic).status_code == 400
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+)$')
    series: dict[str, float] = {}
    for line in answer.text.splitlines():
        if line.startswith("# "):
            assert re.match(r"# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        match = sample.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        series[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    route = "/v1/privacy/deletions/{request_id}"
    assert series[f'cdp_api_requests_total{{method="GET",route="{route}",status="404"}}'] >= 1
    assert series['cdp_api_requests_total{method="GET",route="unmatched",status="404"}'] >= 1
    assert series['cdp_api_requests_total{method="GET",route="/health",status="200"}'] >= 1
    count = series[f'cdp_api_request_duration_seconds_count{{method="GET",route="{route}"}}']
    assert series[f'cdp_api_request_duration_seconds_bucket{{method="GET",route="{route}",le="+Inf"}}'] == count
    buckets = [v for k, v in series.items() if k.startswith(f'cdp_api_request_duration_seconds_bucket{{method="GET",'
                                                             f'route="{route}"')]
    assert buckets == sorted(buckets) and len(buckets) == 15
    assert series["cdp_api_requests_in_flight"] == 1  # the scrape itself
    assert series["cdp_api_uptime_seconds"] > 0
    # ingestion counters: events counted once durably spooled, invalid payloads once quarantined
    previous = dict(line.rsplit(" ", 1) for line in before.splitlines() if not line.startswith("#"))
    assert series['cdp_api_events_accepted_total{source="web"}'] == float(
        previous.get('cdp_api_events_accepted_total{source="web"}', 0)) + 3
    assert series["cdp_api_payloads_rejected_total"] == float(previous.get("cdp_api_payloads_rejected_total", 0)) + 1


def test_access_log_holds_no_pii(api: dict) -> None:
    url, key = api["url"], api["keys"]["all"]
    email, phone = "Secret.Person@Example.org", "+4915112345678"
    httpx.get(f"{url}/v1/profiles", params={"email": email}, headers=bearer(key))
    httpx.get(f"{url}/v1/profiles/{email}", headers=bearer(key))  # a path parameter that is PII
    httpx.post(f"{url}/v1/consent", json={"phone": phone, "channel": "sms", "status": "opted_out"}, headers=bearer(key))
    httpx.post(f"{url}/v1/privacy/deletions", json={"email": "not-an-email"}, headers=bearer(key))
    path = Path(api["env"]["CDP_HOME"]) / "var" / "logs" / "api.jsonl"
    lines = access_log(api["env"])
    text = path.read_text().lower()
    for needle in ("secret.person", "example.org", "4915112345678", "not-an-email", "email="):
        assert needle not in text
    key_id = key.split("_")[1]
    lookup = [r for r in lines if r["method"] == "GET" and r["route"] in ("/v1/profiles", "unmatched")]
    assert lookup and all(set(r) <= {"ts", "method", "route", "status", "ms", "key"} for r in lines)
    assert any(r["route"] == "/v1/consent" and r["status"] == 202 and r["key"] == key_id for r in lines)
    assert any(r["route"] == "/v1/privacy/deletions" and r["status"] == 400 for r in lines)
    assert all(isinstance(r["ms"], float | int) and r["ms"] >= 0 for r in lines)


def landed_payloads(home: Path, source: str) -> list[str]:
    payloads: list[str] = []
    for path in sorted((home / "landing" / source).glob("batch-*.parquet")):
        payloads += pq.read_table(path, columns=["payload"]).column("payload").to_pylist()
    return payloads


def test_consent_lands_a_segment_track(api: dict) -> None:
    url, key = api["url"], api["keys"]["all"]
    answer = httpx.post(f"{url}/v1/consent", headers=bearer(key), json={
        "email": "  Max.Muster@Example.ORG ", "channel": "whatsapp", "status": "opted_out",
        "timestamp": "2026-03-01T10:00:00+01:00"})
    assert answer.status_code == 202, answer.text
    message_id = answer.json()["message_id"]
    by_user = httpx.post(f"{url}/v1/consent", headers=bearer(key),
                         json={"user_id": "u-123", "channel": "analytics", "status": "opted_in"})
    assert by_user.status_code == 202
    deadline, found = time.monotonic() + 15, {}
    while time.monotonic() < deadline and len(found) < 2:  # through the spool: landed within a few seconds
        messages = [json.loads(p) for p in landed_payloads(api["home"], "web")]
        wanted = (message_id, by_user.json()["message_id"])
        found = {m["messageId"]: m for m in messages if m.get("messageId") in wanted}
        time.sleep(0.5)
    message = found[message_id]
    assert message["type"] == "track" and message["event"] == "consent_updated"
    assert message["context"]["traits"] == {"email": "max.muster@example.org"}
    assert message["anonymousId"].startswith("api:") and message["userId"] is None
    assert message["properties"] == {"channel": "whatsapp", "status": "opted_out", "source": "api"}
    assert message["timestamp"] == "2026-03-01T09:00:00+00:00" and message["receivedAt"]
    other = found[by_user.json()["message_id"]]
    assert other["userId"] == "u-123" and other["properties"]["channel"] == "analytics"

    for bad, why in [
        ({"email": "x@y.org", "channel": "fax", "status": "opted_in"}, "channel"),
        ({"email": "x@y.org", "phone": "+4915112345678", "channel": "sms", "status": "opted_in"}, "exactly one"),
        ({"channel": "sms", "status": "opted_in"}, "exactly one"),
        ({"email": "nobody", "channel": "email", "status": "opted_in"}, "'nobody' is not a valid email"),
        ({"phone": "12", "channel": "sms", "status": "opted_in"}, "'12' is not a valid phone"),
        ({"email": "x@y.org", "channel": "email", "status": "maybe"}, "status"),
    ]:
        refused = httpx.post(f"{url}/v1/consent", headers=bearer(key), json=bad)
        assert refused.status_code == 400 and why in refused.json()["error"], (bad, refused.text)


# --- the right to be forgotten through the API, on a small warehouse -------------------------------------------------

@pytest.fixture(scope="module")
def built(built_home: Callable[[str], Path]) -> dict:
    home = built_home("api_privacy")
    env = home_env(home)
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        email = con.execute("select identifier_value from gold.profile_identifiers where identifier_type = 'email' "
                            "order by identifier_value limit 1 offset 3").fetchone()[0]
    return {"home": home, "env": env, "email": email}


def test_deletion_request_erases_the_person(built: dict) -> None:
    env, email = built["env"], built["email"]
    key = create_key(env, "admin:privacy", "--name", "dpo-tool")
    with serve(env) as url, httpx.Client(base_url=url, headers=bearer(key), timeout=10) as client:
        invalid = client.post("/v1/privacy/deletions", json={"email": "max at example"})
        assert invalid.status_code == 400 and invalid.json()["error"] == "'max at example' is not a valid email"
        assert client.post("/v1/privacy/deletions", json={"email": email, "phone": "+4915112345678"}).status_code == 400

        accepted = client.post("/v1/privacy/deletions", json={"email": f" {email.upper()} ", "reason": "DSAR 7"})
        assert accepted.status_code == 202, accepted.text
        request_id = accepted.json()["id"]
        assert accepted.json()["status"] == "pending"
        assert accepted.headers["location"] == accepted.json()["status_url"] == f"/v1/privacy/deletions/{request_id}"

        deadline, status = time.monotonic() + 240, {}
        while time.monotonic() < deadline:
            status = client.get(accepted.json()["status_url"]).json()
            if status["status"] in ("erased", "failed"):
                break
            time.sleep(1)
        assert status["status"] == "erased", status
        assert status["sweep"]["clean"] is True and status["profile_ids"]
        assert status["rows_per_store"]["warehouse"]["rows"] > 0 and status["rows_per_store"]["landing"]["rows"] > 0
        assert status["requested_by"] == f"api key {key.split('_')[1]} (dpo-tool)" and status["reason"] == "DSAR 7"
        assert email.split("@")[0] not in json.dumps(status).lower()
        missing = client.get("/v1/privacy/deletions/fgt_ffffffffffffffff")
        assert missing.status_code == 404 and missing.json()["status"] == 404
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        assert con.execute("select count(*) from gold.profile_identifiers where identifier_value = ?",
                           [email]).fetchone()[0] == 0
    for source in ("web", "app", "salesforce", "email", "whatsapp"):
        assert not any(email in payload.lower() for payload in landed_payloads(built["home"], source))
    log_text = (built["home"] / "var" / "logs" / "api.jsonl").read_text().lower()
    assert email not in log_text and "max at example" not in log_text


# --- a real Segment SDK -> the running API -> the next pipeline run -> silver and gold ------------------------------

def test_segment_sdk_events_reach_silver_and_gold_after_the_next_run(built_home: Callable[[str], Path]) -> None:
    from segment.analytics import Client

    home = built_home("api_sdk_to_silver")
    env = home_env(home)
    write_key = create_key(env, "write:events", "--name", "website")
    errors: list[object] = []
    with serve(env) as url:
        client = Client(write_key, host=url, sync_mode=False, gzip=True,
                        on_error=lambda error, batch: errors.append(error))
        _, identify = client.identify("usr_sdk_e2e", {"email": " Sdk.E2E@Example.ORG ", "firstName": "Sam"},
                                      anonymous_id="anon_sdk_e2e")
        _, page = client.page(anonymous_id="anon_sdk_e2e", name="MBA", properties={"path": "/mba"})
        _, track = client.track("usr_sdk_e2e", "Brochure Downloaded", {"program": "mba"})
        _, screen = client.screen("usr_sdk_e2e", name="Lessons", context={"device": {"id": "dev_sdk_e2e"}})
        client.flush()
        client.join()
        assert errors == []
        sent = {m["messageId"] for m in (identify, page, track, screen)}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # acknowledged at once, sealed into landing batches within ~2 s
            # (the generated landing also holds deliberately malformed records: match the ids as text)
            payloads = "\n".join(p for s in ("web", "app") for p in landed_payloads(home, s))
            missing = {m for m in sent if f'"{m}"' not in payloads}
            if not missing:
                break
            time.sleep(0.3)
        assert not missing

    cdp("run", env=env)
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        events = dict(con.execute(
            "select event_id, source || ':' || event_type from silver.events where event_id in (?, ?, ?, ?)",
            [identify["messageId"], page["messageId"], track["messageId"], screen["messageId"]]).fetchall())
        profiles = con.execute("""
            select distinct i.profile_id from gold.profile_identifiers as i
            where (i.identifier_type, i.identifier_value) in (
                ('email', 'sdk.e2e@example.org'), ('user_id', 'usr_sdk_e2e'), ('anonymous_id', 'anon_sdk_e2e'),
                ('device_id', 'dev_sdk_e2e'))""").fetchall()
    assert events == {identify["messageId"]: "web:identify", page["messageId"]: "web:page_view",
                      track["messageId"]: "web:brochure_download", screen["messageId"]: "app:screen_view"}
    assert len(profiles) == 1  # the SDK's ids stitched into one person, the email normalized like every source
