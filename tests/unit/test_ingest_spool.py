"""The ingestion spool and the pieces the endpoints are built from: group commit, sealing and landing, crash
leftovers with a torn line, seal_all racing a writer, Segment message validation and routing, gzip limits,
messageId memory, the quarantine's redaction and the SendGrid signature."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.landing import SOURCES
from serving.ingest.segment import MessageError, decode_envelope, prepare_message
from serving.ingest.service import BodyError, IngestService, RejectedLog, SeenIds, decode_body
from serving.ingest.spool import OPEN_SUFFIX, SpoolWriter, land_sealed, seal_all, spool_root
from serving.ingest.webhooks import load_sendgrid_key, sendgrid_signature_valid

STAMP = "2026-03-01T10:15:30.123Z"


def landed(root: Path, source: str | None = None) -> list[dict]:
    """Every landed record (file name and payload), in landing order."""
    rows = []
    for name in [source] if source else SOURCES:
        for path in sorted((root / name).glob("batch-*.parquet")):
            rows += pq.read_table(path, columns=["file_name", "position", "payload"]).to_pylist()
    return rows


def spool_files(root: Path) -> list[Path]:
    return sorted(p for p in spool_root(root).glob("*/*") if not p.name.startswith("."))


def line(i: int) -> bytes:
    return json.dumps({"type": "track", "event": "e", "userId": "u", "messageId": f"m{i}"}).encode() + b"\n"


# --- spool ------------------------------------------------------------------------------------------------------

def test_lines_are_sealed_landed_in_order_and_removed(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, seal_seconds=0.0)
    writer.write({"web": [line(1), line(2)], "app": [line(3)]})
    writer.write({"web": [line(4)]})
    assert {p.name.endswith(OPEN_SUFFIX) for p in spool_files(tmp_path)} == {True}
    assert sorted(writer.seal_due()) == ["app", "web"]
    for source in ("web", "app"):
        land_sealed(tmp_path, source)
    web = landed(tmp_path, "web")
    assert [json.loads(r["payload"])["messageId"] for r in web] == ["m1", "m2", "m4"]
    assert web[0]["file_name"].startswith("web-") and web[0]["file_name"].endswith(".ndjson")
    assert [json.loads(r["payload"])["messageId"] for r in landed(tmp_path, "app")] == ["m3"]
    assert spool_files(tmp_path) == []


def test_a_file_grows_past_the_size_limit_and_is_sealed(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, seal_seconds=3600, seal_bytes=150)
    assert writer.write({"web": [line(1)]}) == []
    assert writer.write({"web": [line(2), line(3)]}) == ["web"]
    assert [p.name.endswith(".ndjson") for p in spool_files(tmp_path)] == [True]
    writer.write({"web": [line(4)]})  # a new open file
    assert len(spool_files(tmp_path)) == 2


def test_crash_leftovers_are_landed_and_a_torn_line_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = SpoolWriter(tmp_path)
    writer.write({"web": [line(1), line(2)]})
    (open_file,) = spool_files(tmp_path)
    with open(open_file, "ab") as handle:  # a crash in the middle of a write: never acknowledged
        handle.write(line(3)[:20])
    with caplog.at_level(logging.WARNING, logger="cdp.serving.ingest"):
        (result,) = seal_all(tmp_path)
    assert (result.records, result.torn_bytes) == (2, 20)
    assert "torn last line of 20 bytes" in caplog.text
    assert [json.loads(r["payload"])["messageId"] for r in landed(tmp_path)] == ["m1", "m2"]
    assert spool_files(tmp_path) == []


def test_landing_a_file_twice_is_a_no_op(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    writer.write({"email": [b'{"sg_event_id":"e1"}\n']})
    writer.seal_every()
    (sealed,) = spool_files(tmp_path)
    copy = sealed.read_bytes()
    land_sealed(tmp_path, "email")
    sealed.write_bytes(copy)  # a crash after landing, before the delete
    (again,) = land_sealed(tmp_path, "email")
    assert again.already_landed
    assert len(landed(tmp_path, "email")) == 1


def test_seal_all_while_a_writer_appends_loses_nothing(tmp_path: Path) -> None:
    """The erasure job (another process, here a thread) seals and lands while the API keeps appending: every line
    whose append returned is landed exactly once."""
    writer = SpoolWriter(tmp_path, seal_seconds=3600)
    acknowledged: list[int] = []
    stop = threading.Event()

    def append() -> None:
        i = 0
        while not stop.is_set():
            writer.write({"web": [line(i), line(i + 1)]})
            acknowledged.extend((i, i + 1))
            i += 2

    thread = threading.Thread(target=append)
    thread.start()
    rounds = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        rounds += bool(seal_all(tmp_path))
    stop.set()
    thread.join()
    seal_all(tmp_path)
    ids = [json.loads(r["payload"])["messageId"] for r in landed(tmp_path, "web")]
    assert rounds > 3 and len(acknowledged) > 100
    assert sorted(ids, key=lambda m: int(m[1:])) == [f"m{i}" for i in acknowledged]


def test_group_commit_shares_fsyncs_and_stop_lands_everything(tmp_path: Path) -> None:
    service = IngestService(tmp_path)
    rounds: list[int] = []
    write = service.writer.write

    def counting_write(pending: dict[str, list[bytes]]) -> list[str]:
        rounds.append(sum(len(lines) for lines in pending.values()))
        return write(pending)

    service.writer.write = counting_write  # type: ignore[method-assign]

    async def scenario() -> None:
        await service.start()
        await asyncio.gather(*(service.commit({"web": [line(i)]}) for i in range(200)))
        await service.stop()

    asyncio.run(scenario())
    assert sum(rounds) == 200
    assert len(rounds) < 20, rounds  # 200 requests, a handful of fsyncs
    assert len(landed(tmp_path, "web")) == 200
    assert spool_files(tmp_path) == []


# --- Segment messages -------------------------------------------------------------------------------------------

def prepare(message: dict | bytes, **kwargs) -> object:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    return prepare_message(raw, received_at=STAMP, max_event_bytes=kwargs.pop("max_event_bytes", 32 * 1024), **kwargs)


def test_a_message_keeps_its_bytes_and_gets_received_at() -> None:
    raw = b'{"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m-1", "properties": {"a": 1.50}}'
    prepared = prepare(raw)
    assert prepared.line == raw[:-1] + b',"receivedAt":"2026-03-01T10:15:30.123Z"}\n'
    assert (prepared.source, prepared.message_id) == ("web", "m-1")


def test_routing_to_app_by_screen_or_device_id() -> None:
    assert prepare({"type": "screen", "userId": "u", "name": "Home"}).source == "app"
    assert prepare({"type": "track", "event": "e", "userId": "u", "context": {"device": {"id": "d1"}}}).source == "app"
    assert prepare({"type": "page", "anonymousId": "a", "context": {"page": {"path": "/"}}}).source == "web"


def test_batch_defaults_fill_what_messages_lack() -> None:
    body = json.dumps({
        "batch": [
            {"type": "identify", "userId": "u", "traits": {"email": "x@example.com"}},
            {"type": "track", "event": "e", "anonymousId": "a", "context": {"ip": "1.2.3.4"}, "messageId": None},
        ],
        "context": {"device": {"id": "dev-1"}}, "integrations": {"All": True}, "sentAt": "2026-03-01T10:15:31Z",
    }).encode()
    messages, defaults = decode_envelope(body)
    first, second = (prepare(bytes(m), defaults=defaults) for m in messages)
    one, two = json.loads(first.line), json.loads(second.line)
    assert one["context"] == {"device": {"id": "dev-1"}} and first.source == "app"
    assert one["integrations"] == {"All": True} and one["sentAt"] == "2026-03-01T10:15:31Z"
    assert two["context"] == {"ip": "1.2.3.4"} and second.source == "web"  # its own context wins
    assert two["messageId"] == second.message_id and len(second.message_id) == 36  # null messageId: generated
    assert one["messageId"] == first.message_id
    assert list(two)[:3] == ["type", "event", "anonymousId"]  # key order kept when re-encoded


def test_write_key_never_lands_and_pretty_printed_messages_stay_one_line() -> None:
    prepared = prepare(b'{"type": "track",\n "event": "e",\r\n "userId": "u", "writeKey": "secret"}')
    assert b"secret" not in prepared.line and "writeKey" not in json.loads(prepared.line)
    pretty = prepare(b'{\n  "type": "track",\n  "event": "line\\nbreak",\n  "userId": "u"\n}')
    assert pretty.line.count(b"\n") == 1 and json.loads(pretty.line)["event"] == "line\nbreak"


@pytest.mark.parametrize(("message", "reason"), [
    ({"type": "track", "userId": "u"}, "track without event"),
    ({"type": "track", "event": "e"}, "neither userId nor anonymousId"),
    ({"type": "purchase", "userId": "u"}, "unknown type 'purchase'"),
    ({"userId": "u"}, "type is missing"),
    ({"type": "alias", "userId": "u"}, "alias needs previousId"),
    ({"type": "group", "userId": "u"}, "group without groupId"),
    ({"type": "page", "userId": "u", "timestamp": "yesterday"}, "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
    ({"type": "page", "userId": "u", "properties": [1]}, "got `array` - at `$.properties`"),
    ({"type": "track", "userId": {"id": 1}, "event": "e"}, "at `$.userId`"),
    ({"type": "track", "userId": "u", "event": "e", "messageId": ""}, "messageId is empty"),
    ({"type": "page", "userId": "u", "context": "web"}, "at `$.context`"),
    ([{"type": "page"}], "Expected `object`, got `array`"),
])
def test_bad_messages_are_refused_with_a_reason(message: object, reason: str) -> None:
    with pytest.raises(MessageError, match=re.escape(reason)):
        prepare(json.dumps(message).encode())


def test_the_endpoint_gives_the_type_and_limits_the_size() -> None:
    assert json.loads(prepare({"userId": "u", "event": "e"}, endpoint_type="track").line)["type"] == "track"
    with pytest.raises(MessageError, match="sent to the track endpoint"):
        prepare({"type": "page", "userId": "u"}, endpoint_type="track")
    big = {"type": "track", "event": "e", "userId": "u", "properties": {"blob": "x" * 33_000}}
    with pytest.raises(MessageError, match="over the 32 KB limit per event"):
        prepare(big)


# --- bodies, dedup, quarantine, signatures ------------------------------------------------------------------------

def test_gzip_bodies_within_limits() -> None:
    body = b'{"batch": []}'
    assert decode_body(gzip.compress(body), "gzip", 1000) == body
    assert decode_body(gzip.compress(body) + gzip.compress(body), "gzip", 1000) == body + body  # two members
    with pytest.raises(BodyError, match="over the 9 KB limit once decompressed"):
        decode_body(gzip.compress(b"0" * 50_000_000), "gzip", 9 * 1024)  # a bomb: ~50 KB in, stopped at 9 KB
    with pytest.raises(BodyError, match="not valid gzip"):
        decode_body(b"not gzip", "gzip", 1000)
    with pytest.raises(BodyError, match="truncated"):
        decode_body(gzip.compress(body)[:-6], "gzip", 1000)
    with pytest.raises(BodyError, match="unsupported Content-Encoding"):
        decode_body(body, "br", 1000)


def test_seen_ids_are_per_key_and_bounded() -> None:
    seen = SeenIds(capacity=4)
    seen.add_all("k1", ["a", "b"])
    assert ("k1", "a") in seen and ("k2", "a") not in seen
    seen.add_all("k1", ["c", "d", "e", "f"])
    assert ("k1", "a") not in seen and ("k1", "f") in seen


def test_rejected_payloads_are_kept_without_secrets(tmp_path: Path) -> None:
    log = RejectedLog(tmp_path)
    payload = b'{"writeKey": "cdp_0123abcd_s3cr3t-Value", "batch": [{"type": "track"}]}'
    path = log.write({"reason": "track without event", "key_id": "0123abcd"}, payload)
    log.write({"reason": "bad gzip"}, b"\x1f\x8b\xff")
    first, second = (json.loads(x) for x in path.read_text().splitlines())
    assert first["reason"] == "track without event" and "s3cr3t" not in path.read_text()
    assert json.loads(first["payload"])["batch"] == [{"type": "track"}]
    assert base64.b64decode(second["payload_base64"]) == b"\x1f\x8b\xff"
    assert path.parent.name == "_rejected" and path.suffix == ".ndjson"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_sendgrid_signature() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    key = load_sendgrid_key(public)
    body, timestamp = b'[{"event":"open"}]', "1709288130"
    signature = base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    assert sendgrid_signature_valid(key, body, signature, timestamp)
    assert not sendgrid_signature_valid(key, body + b" ", signature, timestamp)
    assert not sendgrid_signature_valid(key, body, signature, "1709288131")
    assert not sendgrid_signature_valid(key, body, None, timestamp)
    assert not sendgrid_signature_valid(key, body, "not base64!", timestamp)
    with pytest.raises(ValueError, match="not a public key"):
        load_sendgrid_key("bm90IGEga2V5")


def test_msgspec_struct_docs_match_what_is_accepted() -> None:
    """The documented batch shape decodes an SDK-like body (the OpenAPI is generated from these Structs)."""
    from serving.ingest.schemas import SegmentBatch

    body = {"batch": [{"type": "track", "event": "e", "userId": "u", "timestamp": STAMP}], "sentAt": STAMP}
    decoded = msgspec.json.decode(json.dumps(body), type=SegmentBatch)
    assert decoded.batch[0].type == "track"


def test_erasure_covers_events_still_in_the_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LandingStore (cdp forget) lands the spool before it scans, so a just-accepted event is erased too."""
    from orchestration.privacy.stores import LandingStore
    from orchestration.privacy.subject import Subject
    from orchestration.settings import Settings

    monkeypatch.setenv("CDP_HOME", str(tmp_path))
    monkeypatch.setenv("CDP_LANDING_PATH", str(tmp_path / "landing"))
    writer = SpoolWriter(tmp_path / "landing")
    mine = b'{"type":"identify","userId":"u9","traits":{"email":"forget.me@example.com"},"messageId":"m-9"}\n'
    writer.write({"web": [mine, line(1)]})  # accepted a moment ago: not sealed yet
    subject = Subject(kind="email", given="forget.me@example.com", normalized="forget.me@example.com",
                      identifiers={("email", "forget.me@example.com")})
    store = LandingStore(Settings.from_env())
    assert store.sweep(subject, lambda _: None) == {"web": 1}
    assert store.erase(subject, lambda _: None).rows == 1
    assert store.sweep(subject, lambda _: None) == {}
    assert [json.loads(r["payload"])["messageId"] for r in landed(tmp_path / "landing")] == ["m1"]
    writer.write({"web": [line(2)]})  # the API's next write finds its file sealed and starts a new one
    seal_all(tmp_path / "landing")
    assert sorted(json.loads(r["payload"])["messageId"] for r in landed(tmp_path / "landing")) == ["m1", "m2"]
