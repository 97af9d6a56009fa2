"""Snapshot swaps under load and the right to be forgotten on the snapshot, against a real uvicorn.

The warehouse is a small handmade gold schema (tests/unit/test_serving_index.py make_gold_warehouse) so that the
file runs in seconds; the pipeline-built snapshot is covered by test_api_profiles.py.
- While client threads hammer lookups, three new snapshots are published, each with a profile that was not there
  before: no request fails, and each new profile becomes visible without a restart.
- `cdp forget --email X`: the erasure job rewrites the current snapshot without X and deletes the older ones; the
  running API no longer finds X, and the serving_snapshot sweep is clean.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from orchestration.privacy.subject import Subject
from serving.security import KeyStore
from serving.snapshot import SnapshotStore, current_snapshot, publish

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
sys.path.insert(0, str(Path(__file__).parent))
from test_api_profiles import start_server, stop_server  # noqa: E402 - a sibling test module's helpers

_spec = importlib.util.spec_from_file_location("serving_index_tests", ROOT / "tests/unit/test_serving_index.py")
assert _spec is not None and _spec.loader is not None
_unit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unit)
make_gold_warehouse = _unit.make_gold_warehouse

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str]]:
    env = {**os.environ, "CDP_HOME": str(tmp_path), "CDP_LANDING_PATH": str(tmp_path / "landing"),
           "CDP_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "CDP_API_RATE_LIMIT": "100000", "CDP_API_RATE_BURST": "100000"}
    env.pop("CDP_SERVING_PATH", None)
    env.pop("CDP_API_KEYS_PATH", None)
    make_gold_warehouse(Path(env["CDP_WAREHOUSE_PATH"]), people=200, events=3)
    serving = tmp_path / "var" / "serving"
    publish(Path(env["CDP_WAREHOUSE_PATH"]), serving)
    key = KeyStore(serving / "keys.sqlite").create(["read:profiles"])[1]
    process, base = start_server(env)
    yield env, base, key
    stop_server(process)


def add_profile(warehouse: str, n: int) -> str:
    """A new person in gold (what the next run would bring): a copy of prf_0001 with a new id and email."""
    profile_id, email = f"prf_new{n}", f"newcomer{n}@example.org"
    with duckdb.connect(warehouse) as con:
        con.execute("insert into gold.profiles select * replace (? as profile_id, ? as email) from gold.profiles "
                    "where profile_id = 'prf_0001'", [profile_id, email])
        con.execute("insert into gold.profile_identifiers values (?, 'email', ?, 'email:' || ?, false, 'web')",
                    [profile_id, email, email])
    return email


def test_swapping_snapshots_under_load_fails_no_request(served: tuple[dict[str, str], str, str]) -> None:
    env, base, key = served
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def hammer(worker: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            i = worker
            while not stop.is_set():
                i = i % 200 + 1
                try:
                    if i % 2:
                        response = client.get("/v1/profiles", params={"email": f"Person{i}@Example.org"})
                    else:
                        response = client.get(f"/v1/profiles/prf_{i:04d}")
                    statuses[response.status_code] += 1
                    if response.status_code != 200 or response.json()["profile_id"] != f"prf_{i:04d}":
                        errors.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as error:  # a dropped connection is a failed request too
                    errors.append(repr(error))
                i += 7

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    serving = Path(env["CDP_HOME"]) / "var" / "serving"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            for n in range(3):
                time.sleep(0.7)
                email = add_profile(env["CDP_WAREHOUSE_PATH"], n)
                assert client.get("/v1/profiles", params={"email": email}).status_code == 404
                published = publish(Path(env["CDP_WAREHOUSE_PATH"]), serving)
                deadline = time.monotonic() + 10
                while client.get("/health").json()["snapshot"]["file"] != published.name:
                    assert time.monotonic() < deadline, "the new snapshot was not picked up"
                    time.sleep(0.05)
                found = client.get("/v1/profiles", params={"email": email})
                assert found.status_code == 200 and found.json()["profile_id"] == f"prf_new{n}"
            time.sleep(0.7)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not errors, errors[:5]
    assert statuses[200] >= 500, statuses  # several hundred concurrent requests across the three swaps
    assert len(list((serving / "snapshots").glob("snapshot-*.duckdb"))) == 3  # current + previous two


def test_forget_removes_the_person_from_the_served_snapshot(served: tuple[dict[str, str], str, str]) -> None:
    env, base, key = served
    serving = Path(env["CDP_HOME"]) / "var" / "serving"
    publish(Path(env["CDP_WAREHOUSE_PATH"]), serving)  # two snapshot files: both must lose the person
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/health").json()["snapshot"]["file"] != current_snapshot(serving).name:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{base}/v1/profiles", params={"email": "person4@example.org"}, headers=headers).status_code \
        == 200
    result = subprocess.run([CDP, "forget", "--email", "Person4@example.org", "--reason", "test"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(li for li in result.stdout.splitlines() if li.strip().startswith("serving_snapshot"))
    assert "erased" in line and "not configured" not in line
    assert "sweep: clean" in result.stdout
    files = list((serving / "snapshots").glob("snapshot-*.duckdb"))
    assert files == [current_snapshot(serving)]  # older snapshots deleted, the rewritten one current
    deadline = time.monotonic() + 10
    while httpx.get(f"{base}/health").json()["snapshot"]["file"] != files[0].name:
        assert time.monotonic() < deadline, "the rewritten snapshot was not picked up"
        time.sleep(0.1)
    for params in ({"email": "person4@example.org"}, {"phone": "+4915100000004"}):
        assert httpx.get(f"{base}/v1/profiles", params=params, headers=headers).status_code == 404
    assert httpx.get(f"{base}/v1/profiles/prf_0004", headers=headers).status_code == 404
    assert httpx.get(f"{base}/v1/profiles/prf_0006", headers=headers).status_code == 200  # others stay
    # the store's own sweep, with the subject the erasure resolved
    subject = Subject("email", "person4@example.org", "person4@example.org", profile_ids={"prf_0004"},
                      identifiers={("email", "person4@example.org"), ("phone", "+4915100000004"),
                                   ("crm_id", "003CRM000000000004"), ("anonymous_id", "anon_prf_0004")})
    assert SnapshotStore(serving).sweep(subject, lambda message: None) == {}
    members = httpx.get(f"{base}/v1/segments/even_people/members", headers=headers).json()["members"]
    assert "prf_0004" not in {m["profile_id"] for m in members}
