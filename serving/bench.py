"""`cdp bench api`: load on the API from a separate process (wrk, on loopback), per scenario:

- lookups: `GET /v1/profiles?email=...`, each request a random email of the served snapshot (a Lua script picks
  from a file of emails, URL-encoded beforehand);
- ingest: `POST /v1/batch` with 100 Segment `track` messages, each with a messageId unique to the run (so that the
  deduplication of repeated messageIds does not turn the bench into a bench of the dedup), the key as Basic user.

wrk measures every request; its Lua `done()` writes one JSON line with the counts and the p50/p75/p90/p95/p99 of
the latency (wrk's `--latency` text has no p95). A 2 s warm-up is run and discarded first. Without --url a
`cdp serve` is started on a free port for the run (and stopped); without --key a key with both scopes and no
practical rate limit is created for the run and revoked after.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from serving.security import KeyStore
from serving.settings import ServingSettings

WRK_INSTALL = "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"
EVENTS_PER_BATCH = 100
WARMUP_SECONDS = 2
MAX_EMAILS = 100_000


class BenchError(Exception):
    """The bench cannot run (no wrk, no snapshot, the server did not start...)."""


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    seconds: float
    requests: int
    non_2xx: int
    socket_errors: int
    requests_per_second: float
    events_per_second: float | None  # ingest: events accepted (2xx requests x messages per request) per second
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    connections: int


@dataclass(frozen=True)
class BenchReport:
    url: str
    results: list[ScenarioResult]
    started_server: bool
    server_peak_rss_mb: float | None = None  # the server this bench started (VmHWM), snapshot index included

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "started_server": self.started_server, "tool": "wrk",
                "server_peak_rss_mb": self.server_peak_rss_mb, "results": [asdict(r) for r in self.results]}

    def table(self) -> str:
        head = (f"{'scenario':<10}{'requests':>10}{'req/s':>10}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
                f"{'p99 ms':>9}{'max ms':>9}{'non-2xx':>9}{'errors':>8}")
        rows = [
            f"{r.scenario:<10}{r.requests:>10,}{r.requests_per_second:>10,.0f}"
            f"{'' if r.events_per_second is None else format(r.events_per_second, ',.0f'):>11}"
            f"{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.1f}{r.non_2xx:>9,}{r.socket_errors:>8,}"
            for r in self.results
        ]
        footer = [f"server peak memory: {self.server_peak_rss_mb:,.0f} MB"] if self.server_peak_rss_mb else []
        return "\n".join([head, *rows, *footer])


# wrk's Lua: a JSON summary line from done() (latency in microseconds), the request builders per scenario.
_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
end
"""

_LOOKUPS = r"""
local paths = {}
local headers = {}
init = function(args)
  headers["Authorization"] = "Bearer " .. args[2]
  for line in io.lines(args[1]) do paths[#paths + 1] = "/v1/profiles?email=" .. line end
  math.randomseed(os.time() + (id or 0) * 7919)
end
request = function()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""

_INGEST = r"""
local headers = {}
local token = ""
local counter = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
init = function(args)
  headers["Authorization"] = "Basic " .. args[1]
  headers["Content-Type"] = "application/json"
  token = args[2] .. "-" .. tostring(thread_id)  -- thread_id: a global set by setup()
end
request = function()
  counter = counter + 1
  local prefix = token .. "-" .. counter .. "-"
  local parts = {}
  for i = 1, {events} do
    parts[i] = '{"type":"track","event":"Course Page Viewed","messageId":"bench-' .. prefix .. i ..
      '","anonymousId":"bench-anon-' .. (i * 7 + counter) % 5000 ..
      '","timestamp":"2026-01-05T10:00:00Z","properties":{"path":"/programs/mba","program":"mba"},' ..
      '"context":{"library":{"name":"cdp-bench","version":"1"}}}'
  end
  return wrk.format("POST", "/v1/batch", headers, '{"batch":[' .. table.concat(parts, ",") .. ']}')
end
""".replace("{events}", str(EVENTS_PER_BATCH))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def snapshot_emails(settings: ServingSettings, limit: int = MAX_EMAILS) -> list[str]:
    """Emails of the served snapshot (serving_dir/CURRENT), read-only: the identifiers table, whatever its name."""
    import duckdb

    current = settings.serving_dir / "CURRENT"
    if not current.exists():
        raise BenchError(f"no serving snapshot in {settings.serving_dir} (no CURRENT): run the pipeline (cdp run) "
                         "first, or give --emails")
    name = current.read_text().strip()
    candidates = [settings.serving_dir / name, settings.serving_dir / "snapshots" / name, Path(name)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise BenchError(f"CURRENT names {name!r}, which is not a file under {settings.serving_dir}")
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            "select table_schema, table_name, list(column_name) from information_schema.columns "
            "where table_name like '%identifier%' group by all order by table_name").fetchall()
        for schema, table, names in columns:
            relation = f'"{schema}"."{table}"'
            if {"identifier_type", "identifier_value"} <= set(names):
                sql = f"select identifier_value from {relation} where identifier_type = 'email'"
            elif "identifier_key" in names:
                sql = f"select substr(identifier_key, 7) from {relation} where identifier_key like 'email:%'"
            else:
                continue
            rows = con.execute(f"select * from ({sql}) using sample reservoir({limit} rows) repeatable (7)").fetchall()
            if rows:
                return [r[0] for r in rows]
    raise BenchError(f"no email identifiers found in the snapshot {path}")


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident memory of process `pid` (Linux /proc), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


@contextmanager
def served(settings: ServingSettings, progress: Callable[[str], None]) -> Iterator[tuple[str, int]]:
    """`cdp serve` on a free loopback port for the duration of the block: (its URL, its pid)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"cdp-bench-serve-{port}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # up, and (when a snapshot is published) serving it: at 1M profiles the index takes seconds to load, and
        # lookups answer 503 until then, which the bench would count as failures of the API under load
        current = settings.serving_dir / "CURRENT"
        deadline = time.monotonic() + 180
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                snapshot = (health.json().get("snapshot") or {}) if health.status_code == 200 else None
                if snapshot is not None and (snapshot.get("file") or not current.exists()):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the API did not start (see {log_path})")
            time.sleep(0.2)
        progress(f"bench api: started cdp serve at {url} (pid {server.pid})")
        yield url, server.pid
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@contextmanager
def _given(url: str) -> Iterator[tuple[str, int | None]]:
    yield url.rstrip("/"), None


def _wrk(url: str, script: Path, args: list[str], duration: float, connections: int, threads: int) -> dict[str, Any]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
               "-s", str(script), url, "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}")
    return json.loads(line.removeprefix("BENCH_JSON "))


def run_scenario(name: str, url: str, key: str, duration: float, connections: int, threads: int,
                 workdir: Path, emails: list[str] | None) -> ScenarioResult:
    """One scenario: a 2 s warm-up (discarded), then `duration` seconds measured."""
    if name == "lookups":
        if not emails:
            raise BenchError("lookups need emails")
        emails_file = workdir / "emails.txt"
        emails_file.write_text("\n".join(urllib.parse.quote(e, safe="@") for e in emails) + "\n")
        script, args = workdir / "lookups.lua", [str(emails_file), key]
        script.write_text(_LOOKUPS + _DONE)
    else:
        script = workdir / "ingest.lua"
        script.write_text(_INGEST + _DONE)
        basic = base64.b64encode(f"{key}:".encode()).decode()
        args = [basic, uuid.uuid4().hex[:12]]
    _wrk(url, script, args, WARMUP_SECONDS, connections, threads)
    if name == "ingest":
        args[1] = uuid.uuid4().hex[:12]  # fresh messageIds: the warm-up's were accepted already
    raw = _wrk(url, script, args, duration, connections, threads)
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["non_2xx"]
    return ScenarioResult(
        scenario=name, seconds=round(seconds, 2), requests=raw["requests"], non_2xx=raw["non_2xx"],
        socket_errors=raw["socket_errors"], requests_per_second=round(raw["requests"] / seconds, 1),
        events_per_second=round(ok * EVENTS_PER_BATCH / seconds, 1) if name == "ingest" else None,
        p50_ms=raw["p50"] / 1000, p75_ms=raw["p75"] / 1000, p90_ms=raw["p90"] / 1000, p95_ms=raw["p95"] / 1000,
        p99_ms=raw["p99"] / 1000, max_ms=raw["max"] / 1000, connections=connections,
    )


def run_bench(*, url: str | None, key: str | None, duration: float, connections: int, scenario: str,
              threads: int = 1, emails_path: str | None = None,
              progress: Callable[[str], None] = lambda _: None) -> BenchReport:
    """Run the scenarios (`lookups`, `ingest` or `both`) and return what wrk measured."""
    if shutil.which("wrk") is None:
        raise BenchError(WRK_INSTALL)
    if duration < 1 or connections < 1 or threads < 1 or threads > connections:
        raise BenchError("--duration >= 1, --connections >= 1 and 1 <= --threads <= --connections")
    settings = ServingSettings.from_env()
    scenarios = ["lookups", "ingest"] if scenario == "both" else [scenario]
    emails = None
    if "lookups" in scenarios:
        if emails_path:
            emails = [line.strip() for line in Path(emails_path).read_text().splitlines() if line.strip()]
        else:
            emails = snapshot_emails(settings)
        if not emails:
            raise BenchError("no emails to look up")
    store, created = KeyStore(settings.keys_path), None
    if key is None:
        record, key = store.create(["read:profiles", "write:events"], "cdp bench api", rate_limit=1e9)
        created = record.key_id
    try:
        with tempfile.TemporaryDirectory(prefix="cdp-bench-") as workdir, \
                (served(settings, progress) if url is None else _given(url)) as (base, pid):
            results = []
            for name in scenarios:
                progress(f"bench api: {name} for {duration:g} s, {connections} connections, against {base}")
                results.append(run_scenario(name, base, key, duration, connections, threads, Path(workdir), emails))
            return BenchReport(url=base, results=results, started_server=url is None,
                               server_peak_rss_mb=peak_rss_mb(pid) if pid else None)
    finally:
        if created:
            store.revoke(created)
