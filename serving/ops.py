"""What operators see: Prometheus metrics (`/metrics`), the process uptime (`/health`) and a JSON access log.

`OpsMiddleware` wraps the whole ASGI handler (outside Litestar's router, so 404s and 405s are counted too) and, per
request, counts it by method, route template and status, adds its duration to a latency histogram per route, keeps
the number in flight, and writes one access-log line:

    {"ts":"2026-12-04T05:01:02.123456+00:00","method":"GET","route":"/v1/profiles","status":200,"ms":0.41,"key":"3f2a9c1b"}

The route is the template (`/v1/profiles/{profile_id:str}`), never the raw path, and the query string is never
read, so `/v1/profiles?email=max@example.com` cannot leave the email in the log; `key` is the API key's id (never
the key). Lines go to `var/logs/api.jsonl` (CDP_API_ACCESS_LOG: a path, `-` for stderr, `off`), buffered and written
by whole lines at most a second late, so a request pays for no system call; several workers append to the same file
without tearing lines (O_APPEND, one write of whole lines). Rotation: a file renamed or removed (logrotate) is noticed
at the next write, which reopens the configured path; `copytruncate` works too (O_APPEND writes at the new end).

Metrics read at scrape time what other parts expose on `app.state`, defensively (absent or failing: no series):
`snapshot.describe()` (the serving snapshot: its age and profile count) and `ingest.accepted` (a mapping, or a
callable returning one: events accepted per source by the ingestion endpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets (seconds): dense under 10 ms, where the lookup goal (p99 < 10 ms) is.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED = "unmatched"  # the route label of requests no route matched (their raw paths would be unbounded labels)
FLUSH_SECONDS = 1.0
FLUSH_BYTES = 64 * 1024
PROCESS_STARTED = time.time()


class AccessRecord(msgspec.Struct, omit_defaults=True):
    ts: str
    method: str
    route: str
    status: int
    ms: float
    key: str | None = None


_encode = msgspec.json.Encoder().encode
_second: list[Any] = [None, ""]  # the last whole second seen and its ISO text: one strftime a second, not a request


def _utc_now_iso() -> str:
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((now - second) * 1e6):06d}+00:00"


class AccessLog:
    """Whole lines, buffered in memory and appended with one write (O_APPEND) when a second has passed or 64 KB
    wait; `flush()` on shutdown and from a once-a-second task when idle."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._fd: int | None = None
        self._inode: int | None = None
        if target == "-":
            self._fd = sys.stderr.fileno()
        elif target != "off":
            self._open()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flushed_at = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def write(self, record: AccessRecord) -> None:
        if self._fd is None:
            return
        line = _encode(record) + b"\n"
        self._pending.append(line)
        self._pending_bytes += len(line)
        if self._pending_bytes >= FLUSH_BYTES or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def _open(self) -> None:
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._inode = os.fstat(self._fd).st_ino

    def _reopen_if_rotated(self) -> None:
        """logrotate renamed (or removed) the file: continue in a new one at the configured path."""
        try:
            rotated = os.stat(self.target).st_ino != self._inode
        except FileNotFoundError:
            rotated = True
        if rotated and self._fd is not None:
            os.close(self._fd)
            self._open()

    def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._pending or self._fd is None:
            return
        data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
        with contextlib.suppress(OSError):  # a full disk must not fail requests; the lines are lost, not the API
            if self._inode is not None:
                self._reopen_if_rotated()
            os.write(self._fd, data)  # type: ignore[arg-type]

    def close(self) -> None:
        self.flush()
        if self._fd is not None and self.target != "-":
            os.close(self._fd)
        self._fd = None


def access_log_target(home: Path) -> str:
    """CDP_API_ACCESS_LOG: a file path, `-` (stderr) or `off`; default `<home>/var/logs/api.jsonl`."""
    configured = os.environ.get("CDP_API_ACCESS_LOG", "").strip()
    if configured in ("-", "off"):
        return configured
    return str(Path(configured).expanduser().resolve()) if configured else str(home / "var" / "logs" / "api.jsonl")


class Metrics:
    """Counters and histograms in plain dicts (one event loop per process: no locks)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        # (method, route) -> [count per bucket (+Inf last), sum of seconds]
        self.latency: dict[tuple[str, str], list[Any]] = {}
        self.in_flight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.latency.get((method, route))
        if series is None:
            series = self.latency[(method, route)] = [[0] * (len(BUCKETS) + 1), 0.0]
        series[0][bisect_left(BUCKETS, seconds)] += 1
        series[1] += seconds

    def render(self, state: Any) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, Mapping[str, Any], Any]]) -> None:
            rendered = [f"{name}{suffix}{_labels(labels)} {_number(value)}" for suffix, labels, value in samples]
            if rendered:
                lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rendered))

        family("cdp_api_requests_total", "counter", "HTTP requests by method, route template and status.",
               (("", {"method": m, "route": r, "status": s}, n) for (m, r, s), n in sorted(self.requests.items())))
        family("cdp_api_request_duration_seconds", "histogram", "Request latency by method and route template.",
               _histogram_samples(self.latency))
        family("cdp_api_requests_in_flight", "gauge", "Requests being handled now.", [("", {}, self.in_flight)])
        family("cdp_api_uptime_seconds", "gauge", "Seconds since the API process loaded its code (about its start).",
               [("", {}, round(time.time() - PROCESS_STARTED, 3))])
        snapshot = _snapshot_facts(state)
        if snapshot:
            family("cdp_api_snapshot_age_seconds", "gauge", "Seconds since the served snapshot was published.",
                   [("", {}, snapshot["age"])] if "age" in snapshot else [])
            family("cdp_api_snapshot_profiles", "gauge", "Profiles in the served snapshot.",
                   [("", {}, snapshot["profiles"])] if "profiles" in snapshot else [])
        family("cdp_api_events_accepted_total", "counter", "Events accepted (durably spooled) by source.",
               (("", {"source": source}, n) for source, n in sorted(_accepted_events(state).items())))
        rejected = getattr(getattr(state, "ingest", None), "rejected_payloads", None)
        if isinstance(rejected, int):
            family("cdp_api_payloads_rejected_total", "counter",
                   "Invalid payloads answered 400 and kept in quarantine.", [("", {}, rejected)])
        return "\n".join(lines) + "\n"


def _histogram_samples(latency: Mapping[tuple[str, str], list[Any]]) -> Iterable[tuple[str, dict[str, Any], Any]]:
    for (method, route), (counts, total) in sorted(latency.items()):
        cumulative = 0
        for bound, count in zip((*BUCKETS, "+Inf"), counts, strict=True):
            cumulative += count
            yield "_bucket", {"method": method, "route": route, "le": bound}, cumulative
        yield "_sum", {"method": method, "route": route}, round(total, 6)
        yield "_count", {"method": method, "route": route}, cumulative


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _snapshot_facts(state: Any) -> dict[str, float]:
    """Age and profile count of the served snapshot from `state.snapshot.describe()`, whatever of it is there."""
    holder = getattr(state, "snapshot", None)
    if holder is None:
        return {}
    try:
        described = holder.describe() or {}
    except Exception:  # a holder loading its first snapshot must not break the scrape
        return {}
    facts: dict[str, float] = {}
    published = described.get("published_at")
    if isinstance(published, str):
        with contextlib.suppress(ValueError):
            published = datetime.fromisoformat(published.replace("Z", "+00:00"))
    if isinstance(published, datetime):
        if published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        facts["age"] = round((datetime.now(UTC) - published).total_seconds(), 3)
    profiles = described.get("profiles")
    if isinstance(profiles, int | float):
        facts["profiles"] = profiles
    return facts


def _accepted_events(state: Any) -> dict[str, int]:
    ingest = getattr(state, "ingest", None) or getattr(state, "spool", None)
    accepted = getattr(ingest, "accepted", None)
    if callable(accepted):
        with contextlib.suppress(Exception):
            accepted = accepted()
    if not isinstance(accepted, Mapping):
        return {}
    return {str(source): int(n) for source, n in accepted.items() if isinstance(n, int | float)}


class OpsMiddleware:
    """Counts, times and logs every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: AccessLog) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before starting a response

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_and_see)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_flight -= 1
            method = scope["method"]
            route = scope.get("path_template") or UNMATCHED  # set by Litestar's router once a route matched
            self.metrics.observe(method, route, status, seconds)
            if self.access_log.enabled:
                key = scope.get("cdp_key")  # set by the guard (serving/security.py)
                self.access_log.write(AccessRecord(
                    ts=_utc_now_iso(), method=method, route=route, status=status,
                    ms=round(seconds * 1000, 3), key=key.key_id if key is not None else None,
                ))


def install(app: Litestar, home: Path) -> None:
    """Wrap `app`'s ASGI handler in the ops middleware; `app.state.metrics` and `app.state.access_log` hold them;
    the access log is flushed every second by a task started with the app and closed at shutdown."""
    metrics, access_log = Metrics(), AccessLog(access_log_target(home))
    app.state.metrics, app.state.access_log = metrics, access_log
    app.asgi_handler = OpsMiddleware(app.asgi_handler, metrics, access_log)

    async def flush_every_second() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            access_log.flush()

    tasks: list[asyncio.Task[None]] = []

    def start(_: Litestar) -> None:
        if access_log.enabled:
            tasks.append(asyncio.get_running_loop().create_task(flush_every_second()))

    def stop(_: Litestar) -> None:
        for task in tasks:
            task.cancel()
        access_log.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
