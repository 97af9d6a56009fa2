"""The ingestion endpoints on a real uvicorn server: a real Segment SDK (gzip, async mode) delivers into the landing
zone; Twilio and SendGrid webhooks are accepted only with valid signatures; limits and bad payloads get a 400 with a
message, and the payload is kept in `_rejected/`; a repeated messageId is acknowledged and landed once."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from connectors.landing import SOURCES

ROOT = Path(__file__).resolve().parents[2]
TWILIO_TOKEN = "twilio-test-auth-token"

pytestmark = pytest.mark.integration


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen
    write_key: str
    read_key: str

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    def basic(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{key or self.write_key}:".encode()).decode()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, extra_env: dict[str, str]) -> Server:
    """uvicorn with the app factory, one worker, in its own process group, on a free loopback port."""
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_SERVING_PATH": str(home / "serving"), **extra_env}
    for name in ("TWILIO_AUTH_TOKEN", "SENDGRID_WEBHOOK_PUBLIC_KEY", "CDP_API_PUBLIC_URL"):
        if name not in extra_env:
            env.pop(name, None)
    keys = subprocess.run(
        [sys.executable, "-c", "from serving.security import KeyStore; from serving.settings import ServingSettings; "
         "s = KeyStore(ServingSettings.from_env().keys_path); "
         "print(s.create(['write:events'])[1]); print(s.create(['read:profiles'])[1])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.split()
    port = free_port()
    with open(home / "server.log", "ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(url, home, process, keys[0], keys[1])
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {(home / 'server.log').read_text()[-2000:]}")


def stop_server(server: Server) -> None:
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=30)


def landed(landing: Path) -> dict[str, list[dict]]:
    """Source -> landed payloads (parsed)."""
    out: dict[str, list[dict]] = {}
    for source in SOURCES:
        for path in sorted((landing / source).glob("batch-*.parquet")):
            out.setdefault(source, []).extend(json.loads(p) for p in pq.read_table(path).column("payload").to_pylist())
    return out


def wait_landed(landing: Path, predicate, timeout: float = 10.0) -> dict[str, list[dict]]:
    """The landing zone once `predicate(landed)` holds (sealing runs every ~2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        records = landed(landing)
        if predicate(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def rejected(landing: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((landing / "_rejected").glob("*.ndjson"))
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sendgrid_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, sendgrid_private_key: ec.EllipticCurvePrivateKey
) -> Iterator[Server]:
    public = base64.b64encode(sendgrid_private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    started = start_server(tmp_path_factory.mktemp("ingest"),
                           {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "SENDGRID_WEBHOOK_PUBLIC_KEY": public})
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with neither TWILIO_AUTH_TOKEN nor SENDGRID_WEBHOOK_PUBLIC_KEY."""
    started = start_server(tmp_path_factory.mktemp("ingest-unconfigured"), {})
    yield started
    stop_server(started)


def ids_of(records: dict[str, list[dict]], source: str) -> set[str]:
    return {r.get("messageId") for r in records.get(source, [])}


# --- Segment ------------------------------------------------------------------------------------------------------

def test_segment_sdk_delivers_into_the_landing_zone(server: Server) -> None:
    from segment.analytics import Client

    errors: list[object] = []
    client = Client(server.write_key, host=server.url, sync_mode=False, gzip=True,
                    on_error=lambda error, batch: errors.append(error))
    _, track = client.track(user_id="usr_0000123", event="lesson_completed", properties={"course": "mba"})
    _, identify = client.identify(user_id="usr_0000123", traits={"email": "sdk.student@example.com"})
    _, page = client.page(anonymous_id="anon_sdk_1", name="MBA", properties={"path": "/mba"})
    _, screen = client.screen(user_id="usr_0000123", name="Lessons")
    _, device = client.track(anonymous_id="anon_sdk_2", event="app_open", context={"device": {"id": "dev_sdk"}})
    client.flush()
    client.join()
    assert errors == []
    web_ids = {track["messageId"], identify["messageId"], page["messageId"]}
    app_ids = {screen["messageId"], device["messageId"]}
    records = wait_landed(server.landing, lambda r: web_ids <= ids_of(r, "web") and app_ids <= ids_of(r, "app"))
    assert web_ids <= ids_of(records, "web") and app_ids <= ids_of(records, "app")
    landed_track = next(r for r in records["web"] if r["messageId"] == track["messageId"])
    assert landed_track["event"] == "lesson_completed" and landed_track["properties"] == {"course": "mba"}
    assert landed_track["context"]["library"]["name"] == "analytics-python"
    assert landed_track["receivedAt"].endswith("Z") and landed_track["sentAt"]  # batch sentAt merged in
    assert not any("writeKey" in r for r in records["web"])


def test_single_call_endpoints_and_auth(server: Server) -> None:
    message_id = f"single-{uuid.uuid4()}"
    with httpx.Client(base_url=server.url) as http:
        ok = http.post("/v1/identify", json={"userId": "u-single", "messageId": message_id, "traits": {"a": 1}},
                       headers=server.basic())
        assert (ok.status_code, ok.json()) == (200, {"success": True})
        bearer = http.post("/v1/page", json={"anonymousId": "a-single"},
                           headers={"Authorization": f"Bearer {server.write_key}"})
        assert bearer.status_code == 200
        assert http.post("/v1/track", json={"userId": "u", "event": "e"}).status_code == 401
        assert http.post("/v1/track", json={"userId": "u", "event": "e"},
                         headers=server.basic("cdp_00000000_wrong")).status_code == 401
        wrong_scope = http.post("/v1/track", json={"userId": "u", "event": "e"}, headers=server.basic(server.read_key))
        assert wrong_scope.status_code == 403 and "write:events" in wrong_scope.json()["error"]
    records = wait_landed(server.landing, lambda r: message_id in ids_of(r, "web"))
    landed_identify = next(r for r in records["web"] if r.get("messageId") == message_id)
    assert landed_identify["type"] == "identify"  # given by the path


def test_a_repeated_message_id_is_acknowledged_and_landed_once(server: Server) -> None:
    message_id = f"dup-{uuid.uuid4()}"
    body = {"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": message_id}] * 2}
    with httpx.Client(base_url=server.url, headers=server.basic()) as http:
        assert http.post("/v1/batch", json=body).status_code == 200
        assert http.post("/v1/batch", json=body).status_code == 200
        marker = f"after-{uuid.uuid4()}"
        assert http.post("/v1/track", json={"userId": "u", "event": "e", "messageId": marker}).status_code == 200
    records = wait_landed(server.landing, lambda r: marker in ids_of(r, "web"))
    assert [r["messageId"] for r in records["web"]].count(message_id) == 1


# --- limits and bad payloads ----------------------------------------------------------------------------------------

def post_raw(server: Server, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content,
                      headers={**server.basic(), "Content-Type": "application/json", **headers}, timeout=30)


def test_limits_and_bad_payloads_get_400_and_are_quarantined(server: Server) -> None:
    good_id = f"good-in-bad-batch-{uuid.uuid4()}"
    big_event = {"type": "track", "event": "e", "userId": "u", "properties": {"blob": "x" * 33 * 1024}}
    cases = {
        "33 KB event": (b"/v1/track", json.dumps(big_event).encode(), {}, "over the 32 KB limit per event"),
        "33 KB event in a batch": (b"/v1/batch", json.dumps({"batch": [big_event]}).encode(), {},
                                   "[0] message of"),
        "501 KB batch": (b"/v1/batch", json.dumps({"batch": [
            {"type": "track", "event": "e", "userId": "u", "properties": {"blob": "y" * 30_000}}] * 18}).encode(),
            {}, "over the 500 KB limit per request"),
        "gzip bomb": (b"/v1/batch", gzip.compress(b'{"batch": [' + b" " * 20_000_000 + b"]}"),
                      {"Content-Encoding": "gzip"}, "over the 500 KB limit once decompressed"),
        "broken gzip": (b"/v1/batch", b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}, "not valid gzip"),
        "not JSON": (b"/v1/batch", b"{batch: [", {}, "not valid JSON"),
        "not an object": (b"/v1/batch", b"[1, 2]", {}, "Expected `object`, got `array`"),
        "bad messages": (b"/v1/batch", json.dumps({"batch": [
            {"type": "track", "event": "e", "userId": "u", "messageId": good_id},
            {"type": "track", "userId": "u"},
            {"type": "identify", "traits": {"email": "nobody@example.com"}},
            {"type": "refund", "userId": "u"},
        ]}).encode(), {}, "3 of 4 messages invalid, none accepted: [1] track without event; [2] neither userId"),
    }
    for name, (path, body, headers, reason) in cases.items():
        response = post_raw(server, path.decode(), body, **headers)
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        assert reason in response.json()["error"], (name, response.json())
        assert response.json()["status"] == 400
    quarantined = rejected(server.landing)
    for name, (path, _, _, reason) in cases.items():
        entry = next((e for e in quarantined if reason in e["reason"]), None)
        assert entry is not None, name
        assert entry["endpoint"] == path.decode() and entry["remote_ip"] == "127.0.0.1" and entry["key_id"]
        assert "payload" in entry or "payload_base64" in entry, name
    bad = next(e for e in quarantined if e["reason"].startswith("3 of 4"))
    assert [e["index"] for e in bad["errors"]] == [1, 2, 3]
    assert good_id in bad["payload"]  # the whole refused request is kept...
    assert server.write_key not in json.dumps(quarantined)
    time.sleep(2.5)  # ...and none of it landed
    assert good_id not in ids_of(landed(server.landing), "web")


# --- Twilio ---------------------------------------------------------------------------------------------------------

TWILIO_PARAMS = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef", "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "whatsapp:+4915112345678", "To": "whatsapp:+4930901820", "WaId": "4915112345678",
    "ProfileName": "Max", "Body": "Hi, when is the deadline for MBA?", "NumMedia": "0", "NumSegments": "1",
    "MessageType": "text", "SmsStatus": "received", "ApiVersion": "2010-04-01",
}


def test_twilio_signed_request_is_accepted_and_landed(server: Server) -> None:
    url = f"{server.url}/webhooks/twilio"
    params = {**TWILIO_PARAMS, "MessageSid": f"SM{uuid.uuid4().hex}"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml") and "<Response/>" in response.text
    records = wait_landed(server.landing, lambda r: any(x.get("MessageSid") == params["MessageSid"]
                                                        for x in r.get("whatsapp", [])))
    record = next(x for x in records["whatsapp"] if x.get("MessageSid") == params["MessageSid"])
    assert {k: record[k] for k in params} == params
    assert record["ReceivedAt"].endswith("Z") and len(record["ReceivedAt"]) == 20  # 2026-03-01T10:15:30Z


def test_twilio_wrong_or_missing_signature_is_refused(server: Server) -> None:
    url = f"{server.url}/webhooks/twilio"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, TWILIO_PARAMS)
    tampered = {**TWILIO_PARAMS, "Body": "STOP"}
    assert httpx.post(url, data=tampered, headers={"X-Twilio-Signature": signature}).status_code == 403
    other_token = RequestValidator("another-token").compute_signature(url, TWILIO_PARAMS)
    assert httpx.post(url, data=TWILIO_PARAMS, headers={"X-Twilio-Signature": other_token}).status_code == 403
    assert httpx.post(url, data=TWILIO_PARAMS).status_code == 403


def test_twilio_behind_a_proxy_signs_the_public_url(tmp_path: Path) -> None:
    """With CDP_API_PUBLIC_URL, Twilio's signature is over the public URL it called, not the one uvicorn sees."""
    public = "https://cdp.example.edu"
    proxied = start_server(tmp_path, {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "CDP_API_PUBLIC_URL": public})
    try:
        validator = RequestValidator(TWILIO_TOKEN)
        local = f"{proxied.url}/webhooks/twilio"
        signed_public = validator.compute_signature(f"{public}/webhooks/twilio", TWILIO_PARAMS)
        signed_local = validator.compute_signature(local, TWILIO_PARAMS)
        assert httpx.post(local, data=TWILIO_PARAMS, headers={"X-Twilio-Signature": signed_public}).status_code == 200
        assert httpx.post(local, data=TWILIO_PARAMS, headers={"X-Twilio-Signature": signed_local}).status_code == 403
    finally:
        stop_server(proxied)
    assert [r["MessageSid"] for r in landed(proxied.landing)["whatsapp"]] == [TWILIO_PARAMS["MessageSid"]]


def test_twilio_without_auth_token_refuses_everything(unconfigured: Server) -> None:
    url = f"{unconfigured.url}/webhooks/twilio"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, TWILIO_PARAMS)
    response = httpx.post(url, data=TWILIO_PARAMS, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403 and "TWILIO_AUTH_TOKEN" in response.json()["error"]


# --- SendGrid -------------------------------------------------------------------------------------------------------

def sendgrid_events(n: int = 2) -> list[dict]:
    return [{"email": "student@example.com", "timestamp": 1709288130, "event": "open",
             "sg_event_id": f"sg-{uuid.uuid4()}", "sg_message_id": "msg.filterdrecv-1"} for _ in range(n)]


def sign(private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: str) -> dict[str, str]:
    signature = private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


def test_sendgrid_signed_events_are_landed_and_tampering_is_refused(
    server: Server, sendgrid_private_key: ec.EllipticCurvePrivateKey
) -> None:
    events = sendgrid_events()
    body = json.dumps(events).encode()
    headers = sign(sendgrid_private_key, body, str(int(time.time())))
    url = f"{server.url}/webhooks/sendgrid"
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    tampered = body.replace(b'"open"', b'"click"')
    assert httpx.post(url, content=tampered, headers=headers).status_code == 403
    assert httpx.post(url, content=body, headers={"Content-Type": "application/json"}).status_code == 403
    wanted = {e["sg_event_id"] for e in events}
    records = wait_landed(server.landing, lambda r: wanted <= {x.get("sg_event_id") for x in r.get("email", [])})
    email = [x for x in records["email"] if x.get("sg_event_id") in wanted]
    assert sorted(email, key=lambda x: x["sg_event_id"]) == sorted(events, key=lambda x: x["sg_event_id"])
    assert not any(x["event"] == "click" for x in records["email"])


def test_sendgrid_without_key_accepts_and_refuses_non_arrays(unconfigured: Server) -> None:
    url = f"{unconfigured.url}/webhooks/sendgrid"
    events = sendgrid_events(1)
    assert httpx.post(url, json=events).status_code == 200
    bad = httpx.post(url, json={"event": "open"})
    assert bad.status_code == 400 and "JSON array" in bad.json()["error"]
    records = wait_landed(unconfigured.landing,
                          lambda r: events[0]["sg_event_id"] in {x.get("sg_event_id") for x in r.get("email", [])})
    assert events[0]["sg_event_id"] in {x.get("sg_event_id") for x in records["email"]}
    assert any("JSON array" in e["reason"] for e in rejected(unconfigured.landing))
