"""API keys (stored hashed, scopes, revocation), the per-key rate limiter, Bearer / Basic parsing, and the
Prometheus rendering of the ops metrics."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving import ops, security
from serving.security import KeyStore, RateLimiter, basic_user, bearer_key


def connection(authorization: str | None) -> SimpleNamespace:
    return SimpleNamespace(headers={"authorization": authorization} if authorization is not None else {})


def test_the_store_keeps_the_hash_never_the_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    record, key = store.create(["read:profiles", "write:events"], "website")
    assert key.startswith(f"cdp_{record.key_id}_") and len(key.split("_", 2)[2]) >= 43  # 256 random bits
    secret = key.split("_", 2)[2]
    with sqlite3.connect(tmp_path / "keys.sqlite") as con:
        rows = con.execute("select * from api_keys").fetchall()
        stored_hash = con.execute("select key_hash from api_keys").fetchone()[0]
    assert stored_hash == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in str(value) or secret in str(value) for row in rows for value in row)
    assert secret.encode() not in (tmp_path / "keys.sqlite").read_bytes()
    listed = store.list()
    assert [k["key_id"] for k in listed] == [record.key_id] and "key_hash" not in listed[0]
    found = store.lookup(key)
    assert found is not None and found.scopes == {"read:profiles", "write:events"} and found.name == "website"


def test_unknown_malformed_and_revoked_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    record, key = store.create(["admin:privacy"])
    assert store.lookup(key) is not None
    assert store.lookup(key + "x") is None
    assert store.lookup("not-a-cdp-key") is None
    monkeypatch.setattr(security, "RELOAD_INTERVAL", 0.0)
    assert store.revoke(record.key_id) is True
    assert store.lookup(key) is None
    assert store.revoke(record.key_id) is False  # already revoked
    assert store.list()[0]["revoked_at"] is not None


def test_a_key_made_while_serving_works_at_once(tmp_path: Path) -> None:
    """The running server's store is not the one that created the key (cdp keys create is another process)."""
    server_side = KeyStore(tmp_path / "keys.sqlite")
    _, first = KeyStore(tmp_path / "keys.sqlite").create(["read:profiles"])
    assert server_side.lookup(first) is not None
    _, second = KeyStore(tmp_path / "keys.sqlite").create(["read:profiles"])
    assert server_side.lookup(second) is not None  # a miss re-reads the file, without waiting RELOAD_INTERVAL


def test_scopes_are_checked(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.sqlite")
    with pytest.raises(ValueError, match="unknown scope"):
        store.create(["read:everything"])
    with pytest.raises(ValueError, match="none given"):
        store.create([])
    with pytest.raises(ValueError, match="rate limit"):
        store.create(["read:profiles"], rate_limit=0)
    record, _ = store.create(["read:profiles"], rate_limit=50)
    assert record.rate_limit == 50 and store.list()[0]["rate_limit"] == 50


def test_an_old_key_file_gets_the_rate_limit_column(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("create table api_keys (key_id text primary key, key_hash text not null unique, "
                    "name text not null, scopes text not null, created_at text not null, revoked_at text)")
        con.execute("insert into api_keys values ('old1', ?, 'old', 'read:profiles', '2026-01-01', null)",
                    [hashlib.sha256(b"cdp_old1_secret").hexdigest()])
    store = KeyStore(path)
    old = store.lookup("cdp_old1_secret")
    assert old is not None and old.rate_limit is None
    assert store.create(["write:events"])[0].key_id


def test_rate_limiter_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")  # per key
    wait = limiter.retry_after("a")
    assert wait == pytest.approx(0.1)  # one token at 10/s
    clock[0] += 0.11
    assert limiter.allow("a") and not limiter.allow("a")
    clock[0] += 60
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]  # refilled to the burst, not beyond
    # a key with its own rate: burst of twice that rate
    assert sum(limiter.allow("fast", rate=100) for _ in range(250)) == 200


def test_bearer_and_basic_parsing() -> None:
    assert bearer_key(connection("Bearer cdp_ab_cd")) == "cdp_ab_cd"
    assert bearer_key(connection("bearer   cdp_ab_cd  ")) == "cdp_ab_cd"
    assert bearer_key(connection("Bearer ")) is None
    assert bearer_key(connection(None)) is None
    basic = "Basic " + base64.b64encode(b"cdp_ab_cd:").decode()
    # a Basic header is not a bearer key (the skeleton returned its base64 text, which hid the write key)
    assert bearer_key(connection(basic)) is None
    assert basic_user(connection(basic)) == "cdp_ab_cd"
    assert basic_user(connection("Basic " + base64.b64encode(b"cdp_ab_cd:ignored").decode())) == "cdp_ab_cd"
    assert basic_user(connection("Basic !!notbase64")) is None
    assert basic_user(connection("Basic " + base64.b64encode(b":password").decode())) is None
    assert basic_user(connection("Bearer cdp_ab_cd")) is None


def test_metrics_render_prometheus_text() -> None:
    metrics = ops.Metrics()
    metrics.observe("GET", "/v1/profiles", 200, 0.0004)
    metrics.observe("GET", "/v1/profiles", 200, 0.003)
    metrics.observe("GET", "/v1/profiles", 404, 0.2)
    metrics.observe("GET", 'we"ird\\route', 200, 9.0)
    state = SimpleNamespace(
        snapshot=SimpleNamespace(describe=lambda: {"published_at": "2026-01-01T00:00:00+00:00", "profiles": 42}),
        ingest=SimpleNamespace(accepted={"web": 7, "app": 3}),
    )
    text = metrics.render(state)
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    assert 'cdp_api_requests_total{method="GET",route="/v1/profiles",status="200"} 2' in text
    assert 'cdp_api_request_duration_seconds_bucket{method="GET",route="/v1/profiles",le="0.0005"} 1' in text
    assert 'cdp_api_request_duration_seconds_bucket{method="GET",route="/v1/profiles",le="0.005"} 2' in text
    assert 'cdp_api_request_duration_seconds_bucket{method="GET",route="/v1/profiles",le="+Inf"} 3' in text
    assert 'cdp_api_request_duration_seconds_count{method="GET",route="/v1/profiles"} 3' in text
    assert 'route="we\\"ird\\\\route"' in text
    assert "cdp_api_snapshot_profiles 42" in text
    assert re.search(r"^cdp_api_snapshot_age_seconds \d+", text, re.M)
    assert 'cdp_api_events_accepted_total{source="web"} 7' in text
    # absent or broken providers give no series, never an error
    broken = SimpleNamespace(snapshot=SimpleNamespace(describe=lambda: 1 / 0), ingest=object())
    assert "snapshot" not in metrics.render(broken) and "events_accepted" not in metrics.render(broken)


def test_access_log_writes_whole_lines_and_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "api.jsonl"
    log = ops.AccessLog(str(path))
    record = ops.AccessRecord(ts="2026-01-01T00:00:00.000000+00:00", method="GET", route="/v1/profiles", status=200,
                              ms=0.5, key="ab12cd34")
    log.write(record)
    assert not path.read_bytes()  # buffered: no system call per request
    log.flush()
    assert path.read_bytes() == (b'{"ts":"2026-01-01T00:00:00.000000+00:00","method":"GET","route":"/v1/profiles",'
                                 b'"status":200,"ms":0.5,"key":"ab12cd34"}\n')
    path.rename(tmp_path / "api.jsonl.1")  # logrotate
    log.write(record)
    log.close()
    assert path.read_text().count("\n") == 1 and (tmp_path / "api.jsonl.1").read_text().count("\n") == 1
