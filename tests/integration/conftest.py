"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")
BUILT_PEOPLE = 120
BUILT_SEED = 11


def _home_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CDP_HOME": str(home), "CDP_LANDING_PATH": str(home / "landing"),
           "CDP_WAREHOUSE_PATH": str(home / "warehouse.duckdb"), "DAGSTER_HOME": str(home / "dagster")}
    for inherited in ("CDP_PRIVACY_PATH", "CDP_SERVING_PATH", "CDP_API_KEYS_PATH", "CDP_API_ACCESS_LOG",
                      "CDP_API_RATE_LIMIT", "CDP_API_RATE_BURST", "CDP_PRIVACY_AUTORUN"):
        env.pop(inherited, None)
    return env


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`built_home(name)`: a fresh copy of one small home built once per session (120 generated people, seed 11,
    landed and through `cdp run`, so with a warehouse, gold, segments and a published serving snapshot).

    Copies are cheap and independent: a test may land, run, erase or serve on its own without affecting others.
    """
    template = tmp_path_factory.getbasetemp() / "built_home"

    def copy(name: str) -> Path:
        if not (template / "warehouse.duckdb").exists():
            building = tmp_path_factory.getbasetemp() / "built_home.partial"
            shutil.rmtree(building, ignore_errors=True)
            env = _home_env(building)
            for args in (["generate", "--people", str(BUILT_PEOPLE), "--seed", str(BUILT_SEED), "--out",
                          str(building / "generated")], ["land", str(building / "generated")], ["run"]):
                result = subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
                assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            building.rename(template)
        home = tmp_path_factory.mktemp(name)
        shutil.copytree(template, home, dirs_exist_ok=True, ignore=shutil.ignore_patterns("generated", "dagster"))
        return home

    return copy
