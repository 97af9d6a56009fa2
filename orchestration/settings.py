"""Where things live, read once from the environment. Every path is absolute once resolved, so dbt,
Dagster and the CLI agree whatever directory they are started from."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from connectors.landing import default_landing_root, project_home

PROJECT_DIR = Path(__file__).resolve().parents[1]
"""The repository root: dbt_project.yml, profiles.yml and the dbt_project/ folder."""


DAGSTER_YAML_MARKER = "# written by cdp"
DAGSTER_YAML = f"""{DAGSTER_YAML_MARKER} (orchestration/settings.py); remove this line to keep your own edits
# No telemetry: this machine (and many users') has no network beyond package registries.
telemetry:
  enabled: false
# One run at a time: DuckDB has one writer. Runs started by the sensor and the schedules queue here; `cdp run`
# (in process, not queued) waits on the warehouse lock instead (orchestration/runlock.py).
concurrency:
  runs:
    max_concurrent_runs: 1
# Look at the queue every second (default 5): a micro-batch starts sooner after its sensor tick.
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
# The daemon marks a run whose worker process died as failed, so the queue moves on.
run_monitoring:
  enabled: true
  poll_interval_seconds: 15
"""
_DAGSTER_YAML_BEFORE = "telemetry:\n  enabled: false\n"  # what earlier versions wrote


@dataclass(frozen=True)
class Settings:
    home: Path
    landing_root: Path
    inbox_root: Path
    warehouse_path: Path
    dagster_home: Path
    target: str

    @classmethod
    def from_env(cls) -> Settings:
        home = project_home()
        var = home / "var"
        return cls(
            home=home,
            landing_root=default_landing_root(),
            inbox_root=Path(os.environ.get("CDP_INBOX_PATH", var / "inbox")).resolve(),
            warehouse_path=Path(os.environ.get("CDP_WAREHOUSE_PATH", var / "warehouse.duckdb")).resolve(),
            dagster_home=Path(os.environ.get("DAGSTER_HOME", var / "dagster")).resolve(),
            target=os.environ.get("CDP_TARGET", "duckdb"),
        )

    def export(self) -> Settings:
        """Put the resolved paths into the environment that dbt (a subprocess) and Dagster read."""
        os.environ["CDP_LANDING_PATH"] = str(self.landing_root)
        os.environ["CDP_INBOX_PATH"] = str(self.inbox_root)
        os.environ["CDP_WAREHOUSE_PATH"] = str(self.warehouse_path)
        os.environ["CDP_TARGET"] = self.target
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        # dagster-dbt starts `dbt` from PATH: make it the one installed beside this interpreter.
        bin_dir = str(Path(sys.executable).parent)
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        self.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        dagster_yaml = self.dagster_home / "dagster.yaml"
        # Rewritten while it is ours (starts with the marker); a user who edits it removes the marker to keep it.
        current = dagster_yaml.read_text() if dagster_yaml.exists() else None
        ours = current is None or current.startswith(DAGSTER_YAML_MARKER) or current == _DAGSTER_YAML_BEFORE
        if ours and current != DAGSTER_YAML:
            dagster_yaml.write_text(DAGSTER_YAML)
        return self


def dbt_executable() -> str:
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"
