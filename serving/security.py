"""API keys with scopes, stored hashed, and the guards that check them on every request.

A key is `cdp_<id>_<secret>`, printed once by `cdp keys create`; the store keeps its id, the SHA-256 of the
whole key, its scopes and when it was made or revoked (SQLite, `var/serving/keys.sqlite`). Looking a key up
hashes it and reads an in-memory map, reloaded when the file changes, so a request costs no database read.
Read endpoints take `Authorization: Bearer <key>`; the tracking API takes the key as the HTTP Basic user (the
Segment "write key"), as Segment's SDKs send it.

401 without a key (or an unknown or revoked one), 403 without the scope, 429 over the key's rate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

SCOPES = ("read:profiles", "write:events", "admin:privacy")
KEY_PREFIX = "cdp_"


class TooManyRequestsException(HTTPException):
    status_code = 429


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The API keys (hashed) in a SQLite file; lookups from memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._loaded_stamp: tuple[float, int] | None = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10)
        con.execute(
            "create table if not exists api_keys (key_id text primary key, key_hash text not null unique, "
            "name text not null, scopes text not null, created_at text not null, revoked_at text)"
        )
        return con

    def create(self, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key with these scopes: (the key's record, the key itself, to be shown once)."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}: expected some of "
                             f"{', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self._connect() as con:
            con.execute(
                "insert into api_keys values (?, ?, ?, ?, ?, null)",
                [key_id, hash_key(key), name, ",".join(sorted(set(scopes))), datetime.now(UTC).isoformat()],
            )
        con.close()
        return ApiKey(key_id, name, frozenset(scopes)), key

    def revoke(self, key_id: str) -> bool:
        with self._connect() as con:
            changed = con.execute(
                "update api_keys set revoked_at = ? where key_id = ? and revoked_at is null",
                [datetime.now(UTC).isoformat(), key_id],
            ).rowcount
        con.close()
        return bool(changed)

    def list(self) -> list[dict[str, Any]]:
        with self._connect() as con:
            rows = con.execute(
                "select key_id, name, scopes, created_at, revoked_at from api_keys order by created_at").fetchall()
        con.close()
        return [dict(zip(("key_id", "name", "scopes", "created_at", "revoked_at"), row, strict=True)) for row in rows]

    def _reload_if_changed(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._loaded_stamp and (stamp is not None or not self._by_hash):
            return
        with self._lock:
            by_hash: dict[str, ApiKey] = {}
            if stamp is not None:
                con = self._connect()
                try:
                    for key_id, key_hash, name, scopes in con.execute(
                        "select key_id, key_hash, name, scopes from api_keys where revoked_at is null"
                    ):
                        by_hash[key_hash] = ApiKey(key_id, name, frozenset(scopes.split(",")))
                finally:
                    con.close()
            self._by_hash, self._loaded_stamp = by_hash, stamp

    def lookup(self, key: str) -> ApiKey | None:
        if not key.startswith(KEY_PREFIX):
            return None
        self._reload_if_changed()
        return self._by_hash.get(hash_key(key))


class RateLimiter:
    """A token bucket per key: `rate` requests a second sustained, `burst` at once. In memory, per process."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key_id: str, cost: float = 1.0) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key_id] = (tokens, now)
            return False
        self._buckets[key_id] = (tokens - cost, now)
        return True


def bearer_key(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def basic_user(connection: ASGIConnection) -> str | None:
    """The HTTP Basic user (Segment's write key; the password is empty)."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def authenticate(connection: ASGIConnection, scope: str, *, basic: bool = False) -> ApiKey:
    """The key of the request, checked for `scope` and its rate; stored in the ASGI scope as `cdp_key`."""
    state = connection.app.state
    given = bearer_key(connection) or (basic_user(connection) if basic else None)
    if not given:
        how = "Authorization: Bearer <key>" + (" or HTTP Basic with the write key as user" if basic else "")
        raise NotAuthorizedException(f"an API key is required: {how}")
    key = state.keys.lookup(given)
    if key is None:
        raise NotAuthorizedException("unknown or revoked API key")
    if scope not in key.scopes:
        raise PermissionDeniedException(f"this API key lacks the scope {scope}")
    if not state.limiter.allow(key.key_id):
        raise TooManyRequestsException(
            f"rate limit of {state.settings.rate_limit_per_second:g} requests/s for this key exceeded",
            headers={"Retry-After": "1"},
        )
    connection.scope["cdp_key"] = key  # type: ignore[typeddict-unknown-key]
    return key


def requires(scope: str, *, basic: bool = False) -> Callable[[ASGIConnection, BaseRouteHandler], None]:
    """A Litestar guard: the request's key must have `scope` (basic=True also accepts the HTTP Basic write key)."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        authenticate(connection, scope, basic=basic)

    guard.__name__ = f"requires_{scope.replace(':', '_')}"
    return guard
