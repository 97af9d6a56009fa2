"""API keys with scopes, stored hashed, and the guards that check them on every request.

A key is `cdp_<id>_<secret>`, printed once by `cdp keys create`; the store keeps its id, the SHA-256 of the
whole key, its scopes and when it was made or revoked (SQLite, `var/serving/keys.sqlite`). Looking a key up
hashes it and reads an in-memory map, reloaded when the file changes, so a request costs no database read.
Read endpoints take `Authorization: Bearer <key>`; the tracking API takes the key as the HTTP Basic user (the
Segment "write key"), as Segment's SDKs send it.

401 without a key (or an unknown or revoked one), 403 without the scope, 429 over the key's rate (with
Retry-After), all in the app's error shape.

Why a plain SHA-256 and no slow KDF (bcrypt, scrypt, argon2): a slow hash protects low-entropy secrets (passwords)
from guessing once the hashes leak. These keys carry 256 random bits, so guessing one from its hash is as hard as
guessing the key itself; a fast hash keeps the lookup at a microsecond, which the 3,000 requests/s goal needs, and an
exact hash lets the lookup be a dict get rather than a scan of every key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

SCOPES = ("read:profiles", "write:events", "admin:privacy")
KEY_PREFIX = "cdp_"
RELOAD_INTERVAL = 1.0  # seconds between two checks of the key file: a revoked key stops working within a second

__all__ = ["SCOPES", "ApiKey", "KeyStore", "RateLimiter", "TooManyRequestsException", "authenticate", "requires"]


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit: float | None = None  # requests/s for this key; None: the server's default (CDP_API_RATE_LIMIT)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The API keys (hashed) in a SQLite file; lookups from memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10)
        con.execute(
            "create table if not exists api_keys (key_id text primary key, key_hash text not null unique, "
            "name text not null, scopes text not null, created_at text not null, revoked_at text, rate_limit real)"
        )
        columns = {row[1] for row in con.execute("pragma table_info(api_keys)")}
        if "rate_limit" not in columns:  # a key file written before per-key rates
            con.execute("alter table api_keys add column rate_limit real")
        return con

    def create(self, scopes: list[str], name: str = "", rate_limit: float | None = None) -> tuple[ApiKey, str]:
        """A new key with these scopes: (the key's record, the key itself, to be shown once)."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}: expected some of "
                             f"{', '.join(SCOPES)}")
        if rate_limit is not None and not rate_limit > 0:
            raise ValueError(f"a key's rate limit must be a positive number of requests/s, not {rate_limit:g}")
        key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"  # 256 random bits after the id
        con = self._connect()
        try:
            with con:
                con.execute(
                    "insert into api_keys (key_id, key_hash, name, scopes, created_at, revoked_at, rate_limit) "
                    "values (?, ?, ?, ?, ?, null, ?)",
                    [key_id, hash_key(key), name, ",".join(sorted(set(scopes))), datetime.now(UTC).isoformat(),
                     rate_limit],
                )
        finally:
            con.close()
        return ApiKey(key_id, name, frozenset(scopes), rate_limit), key

    def revoke(self, key_id: str) -> bool:
        """Revoke the key `key_id`; False when no active key has that id. Running servers drop it within
        RELOAD_INTERVAL."""
        con = self._connect()
        try:
            with con:
                changed = con.execute(
                    "update api_keys set revoked_at = ? where key_id = ? and revoked_at is null",
                    [datetime.now(UTC).isoformat(), key_id],
                ).rowcount
        finally:
            con.close()
        return bool(changed)

    def list(self) -> list[dict[str, Any]]:
        """Every key ever made (never the key or its hash): id, name, scopes, created_at, revoked_at, rate_limit."""
        con = self._connect()
        try:
            rows = con.execute("select key_id, name, scopes, created_at, revoked_at, rate_limit from api_keys "
                               "order by created_at").fetchall()
        finally:
            con.close()
        names = ("key_id", "name", "scopes", "created_at", "revoked_at", "rate_limit")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _reload_if_changed(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < RELOAD_INTERVAL:
            return
        self._checked_at = now
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._loaded_stamp:
            return
        with self._lock:
            by_hash: dict[str, ApiKey] = {}
            if stamp is not None:
                con = self._connect()
                try:
                    for key_id, key_hash, name, scopes, rate_limit in con.execute(
                        "select key_id, key_hash, name, scopes, rate_limit from api_keys where revoked_at is null"
                    ):
                        by_hash[key_hash] = ApiKey(key_id, name, frozenset(scopes.split(",")), rate_limit)
                finally:
                    con.close()
            self._by_hash, self._loaded_stamp = by_hash, stamp

    def lookup(self, key: str) -> ApiKey | None:
        """The active key `key` (None when unknown, revoked or malformed): a hash and a dict get. The file is
        checked at most every RELOAD_INTERVAL (revocations), and on every miss (a key created a moment ago works
        at once)."""
        if not key.startswith(KEY_PREFIX):
            return None
        self._reload_if_changed()
        digest = hash_key(key)
        found = self._by_hash.get(digest)
        if found is None:
            self._reload_if_changed(force=True)
            found = self._by_hash.get(digest)
        return found


class RateLimiter:
    """A token bucket per key: `rate` requests a second sustained, `burst` at once (a key with its own rate gets a
    burst of twice that rate). In memory, per process: with N workers a key gets N times the rate. The event loop
    runs one request at a time, so no lock is needed."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key_id: str, cost: float = 1.0, rate: float | None = None) -> float:
        """0 when the request may go (and takes its tokens), else the seconds until it could."""
        rate = rate or self.rate
        burst = self.burst if rate == self.rate else 2 * rate
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < cost:
            self._buckets[key_id] = (tokens, now)
            return (cost - tokens) / rate
        self._buckets[key_id] = (tokens - cost, now)
        return 0.0

    def allow(self, key_id: str, cost: float = 1.0, rate: float | None = None) -> bool:
        return self.retry_after(key_id, cost, rate) == 0.0


def _authorization(connection: ASGIConnection) -> tuple[str, str]:
    scheme, _, value = connection.headers.get("authorization", "").strip().partition(" ")
    return scheme.lower(), value.strip()


def bearer_key(connection: ASGIConnection) -> str | None:
    """The key of `Authorization: Bearer <key>` (None for any other scheme)."""
    scheme, value = _authorization(connection)
    return (value or None) if scheme == "bearer" else None


def basic_user(connection: ASGIConnection) -> str | None:
    """The HTTP Basic user (Segment's write key; the password is empty)."""
    scheme, value = _authorization(connection)
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def authenticate(connection: ASGIConnection, scope: str, *, basic: bool = False) -> ApiKey:
    """The key of the request, checked for `scope` and its rate; stored in the ASGI scope as `cdp_key`."""
    state = connection.app.state
    given = bearer_key(connection) or (basic_user(connection) if basic else None)
    challenge = {"WWW-Authenticate": 'Bearer realm="cdp"' + (', Basic realm="cdp"' if basic else "")}
    if not given:
        how = "Authorization: Bearer <key>" + (" or HTTP Basic with the write key as user" if basic else "")
        raise NotAuthorizedException(f"an API key is required: {how}", headers=challenge)
    key = state.key_store.lookup(given)  # not state.keys: State is a mapping, .keys is its method
    if key is None:
        raise NotAuthorizedException("unknown or revoked API key", headers=challenge)
    connection.scope["cdp_key"] = key  # type: ignore[typeddict-unknown-key]  # set now: 403s and 429s are logged with it
    if scope not in key.scopes:
        raise PermissionDeniedException(f"this API key lacks the scope {scope}")
    wait = state.limiter.retry_after(key.key_id, rate=key.rate_limit)
    if wait:
        rate = key.rate_limit or state.limiter.rate
        raise TooManyRequestsException(
            f"rate limit of {rate:g} requests/s for this key exceeded; retry after the Retry-After seconds",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key


def requires(scope: str, *, basic: bool = False) -> Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]:
    """A Litestar guard: the request's key must have `scope` (basic=True also accepts the HTTP Basic write key).
    Async on purpose: Litestar runs a sync guard in a worker thread, a hop that would cost more than the check."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        authenticate(connection, scope, basic=basic)

    guard.__name__ = f"requires_{scope.replace(':', '_')}"
    return guard
