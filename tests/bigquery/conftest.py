"""The BigQuery emulator for the tests: bqemulator in its own venv, started once per session on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_PYTHON = ROOT / ".venv-bqemulator" / "bin" / "python"
PROJECT = "cdp-test"


@dataclass(frozen=True)
class Emulator:
    endpoint: str
    project: str
    log: Path

    def client(self):
        from connectors.bigquery_load import BigQuerySettings

        return BigQuerySettings(self.project, location="US", api_endpoint=self.endpoint).client()

    def profile(self, dataset: str = "cdp") -> dict[str, object]:
        """A dbt-bigquery output for the emulator (oauth-secrets with a dummy token: nothing checks it)."""
        return {"type": "bigquery", "method": "oauth-secrets", "token": "dummy", "project": self.project,
                "dataset": dataset, "location": "US", "threads": 2, "api_endpoint": self.endpoint,
                "job_retries": 0, "job_execution_timeout_seconds": 300}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    if not EMULATOR_PYTHON.exists():
        pytest.fail(f"{EMULATOR_PYTHON} is missing: `make test` builds it (make bqemulator)")
    rest, grpc = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("bqemulator") / "emulator.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(EMULATOR_PYTHON), str(ROOT / "tests" / "bigquery" / "emulator.py"), "start", "--rest-port",
             str(rest), "--grpc-port", str(grpc), "--project", PROJECT, "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the BigQuery emulator did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Emulator(endpoint, PROJECT, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
