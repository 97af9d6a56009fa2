"""Property-based run over the whole API (a "done when" of the profile API issue): schemathesis reads the OpenAPI
of a real server (`cdp serve` on a free port, serving a snapshot published from a small warehouse) and sends
generated requests to every operation it documents, with a key holding every scope: no answer may be a 5xx.

The operations come from the schema at run time, so routes added later are covered without touching this file.
Erasure requests are recorded but not run (CDP_PRIVACY_AUTORUN=0): generated valid emails would otherwise start
one erasure job each.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
MAX_EXAMPLES = 25

pytestmark = pytest.mark.integration


def _cdp(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _publish_if_possible(env: dict[str, str]) -> bool:
    """A serving snapshot, when the snapshot code exists: `cdp run` publishes one; else publish here."""
    try:
        snapshot = importlib.import_module("serving.snapshot")
    except ImportError:
        return False
    serving_dir = Path(env["CDP_HOME"]) / "var" / "serving"
    if getattr(snapshot, "current_snapshot", lambda _: None)(serving_dir) is None:
        snapshot.publish(Path(env["CDP_WAREHOUSE_PATH"]), serving_dir)
    return True


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster"),
           "CDP_PRIVACY_AUTORUN": "0"}
    for inherited in ("CDP_PRIVACY_PATH", "CDP_SERVING_PATH", "CDP_API_KEYS_PATH", "CDP_API_ACCESS_LOG",
                      "CDP_API_RATE_LIMIT", "CDP_API_RATE_BURST"):
        env.pop(inherited, None)
    return env


@pytest.fixture(scope="module")
def served_api(built_home: Callable[[str], Path]) -> Iterator[dict]:
    env = _env(built_home("api_schemathesis"))
    has_snapshot = _publish_if_possible({**env})
    key = _cdp("keys", "create", "--scopes", "read:profiles,write:events,admin:privacy", "--rate", "100000",
               env=env).strip()
    port = _free_port()
    server = subprocess.Popen([CDP, "serve", "--port", str(port)], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                # wait for the snapshot to be loaded too: the run is about answers on real data, not 503s
                if health.status_code == 200 and (not has_snapshot or _loaded(health.json())):
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the API exited"
            assert time.monotonic() < deadline, "the API (or its snapshot) did not come up in 60 s"
            time.sleep(0.3)
        yield {"url": url, "key": key, "has_snapshot": has_snapshot}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _loaded(health: dict) -> bool:
    snapshot = health.get("snapshot") or {}
    return bool(snapshot.get("file")) and not snapshot.get("loading")


@pytest.fixture(scope="module")
def api_schema(served_api: dict) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{served_api['url']}/schema/openapi.json")


def test_the_schema_documents_every_domain(api_schema: schemathesis.BaseSchema, served_api: dict) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/health", "/metrics", "/v1/consent", "/v1/privacy/deletions",
            "/v1/privacy/deletions/{request_id}"} <= paths
    if served_api["has_snapshot"]:
        assert any(p.startswith("/v1/profiles") for p in paths)


def test_no_server_errors(api_schema: schemathesis.BaseSchema, served_api: dict) -> None:
    """Every operation of the schema, MAX_EXAMPLES generated cases each (schemathesis' strategies driven by
    Hypothesis here: its pytest `from_fixture` loader does not run under pytest 9)."""
    headers = {"Authorization": f"Bearer {served_api['key']}"}
    failures: dict[str, str] = {}
    tried = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        tried.append(label)

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=served_api["url"], headers=headers, checks=[not_a_server_error],
                                   timeout=30)

        try:
            check()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # schemathesis' FailureGroup included: collect each operation's, fail once
            failures[label] = f"{type(error).__name__}: {str(error)[:800]}"
    assert not failures, "\n\n".join(f"{label}: {why}" for label, why in failures.items())
    assert len(tried) >= 5, tried
