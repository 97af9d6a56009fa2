"""SIGKILL during ingestion: several clients post /v1/batch continuously, every messageId that got a 2xx is
recorded, the server's process group is killed mid-stream, and after a restart (whose start-up lands the spool)
every acknowledged messageId is in the landing zone, exactly once."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from connectors.landing import SOURCES

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 4
PER_BATCH = 50

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(home / "server.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--log-level", "info"],
            cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError((home / "server.log").read_text()[-2000:])


def landed_ids(landing: Path) -> list[str]:
    ids = []
    for source in SOURCES:
        for path in (landing / source).glob("batch-*.parquet"):
            ids += [json.loads(p)["messageId"] for p in pq.read_table(path).column("payload").to_pylist()]
    return ids


def test_sigkill_during_ingestion_loses_no_acknowledged_event(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    env = {**os.environ, "CDP_HOME": str(tmp_path), "CDP_LANDING_PATH": str(landing),
           "CDP_SERVING_PATH": str(tmp_path / "serving"), "CDP_API_RATE_LIMIT": "100000",
           "CDP_API_RATE_BURST": "100000"}
    key = subprocess.run(
        [sys.executable, "-c", "from serving.security import KeyStore; from serving.settings import ServingSettings; "
         "print(KeyStore(ServingSettings.from_env().keys_path).create(['write:events'])[1])"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    process, url = start(tmp_path, env)

    acknowledged: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def post_continuously(client_no: int) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=10) as http:
            n = 0
            while not stop.is_set():
                ids = [f"c{client_no}-{n}-{i}-{uuid.uuid4().hex[:8]}" for i in range(PER_BATCH)]
                n += 1
                batch = [{"type": "screen" if i % 5 == 0 else "track", "event": "lesson_completed", "name": "Lesson",
                          "userId": f"usr_{client_no}", "messageId": mid, "properties": {"n": n}}
                         for i, mid in enumerate(ids)]
                try:
                    response = http.post("/v1/batch", json={"batch": batch})
                except httpx.HTTPError as error:  # the server is gone: these were never acknowledged
                    failures.append(type(error).__name__)
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(ids)
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    return

    threads = [threading.Thread(target=post_continuously, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(3.2)  # long enough for some files to be sealed and landed, and some lines to be in the spool
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert not [f for f in failures if f[:1].isdigit()], failures  # no error answers before the kill
    assert len(acknowledged) > 1000
    spooled = list((landing / "_spool").glob("*/*.ndjson*"))
    before_restart = set(landed_ids(landing))
    missing_before = set(acknowledged) - before_restart

    process, url = start(tmp_path, env)  # its start-up lands what the killed process left in the spool
    try:
        ids = landed_ids(landing)
        assert set(acknowledged) <= set(ids), f"{len(set(acknowledged) - set(ids))} acknowledged events lost"
        assert len(ids) == len(set(ids)), "an event landed twice"
        assert not list((landing / "_spool").glob("*/*.ndjson*"))
        # the restart really had work to do: acknowledged events were only in the spool at the kill
        print(f"acknowledged {len(acknowledged):,}; {len(spooled)} spool files and {len(missing_before):,} "
              f"acknowledged events were waiting in the spool at the kill; landed {len(ids):,}")
        assert spooled and missing_before
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
