"""Orchestration: a run killed half-way is recovered by the next one (same warehouse as one clean run), runs never
overlap (the warehouse lock), and the landing sensor asks for a run exactly when something new landed."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.runlock import WarehouseBusyError, WarehouseLock

ROOT = Path(__file__).resolve().parents[2]
CDP = str(Path(sys.executable).parent / "cdp")


def environment(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CDP_HOME": str(root),
        "CDP_LANDING_PATH": str(root / "landing"),
        "CDP_WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
        "DAGSTER_HOME": str(root / "dagster"),
    }


def cdp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDP, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("orchestration") / "generated"
    result = cdp("generate", "--people", "300", "--seed", "11", "--out", str(out),
                 env=environment(out.parent / "unused"))
    assert result.returncode == 0, result.stderr
    return out


def profile_partition(warehouse: str) -> tuple[int, set[frozenset[tuple[str, str]]]]:
    """Events in silver and the profiles as sets of identifiers (ids aside: the landing times differ by home)."""
    with duckdb.connect(warehouse, read_only=True) as con:
        events = con.execute("select count(*) from silver.events").fetchone()[0]
        rows = con.execute(
            "select profile_id, identifier_type, identifier_value from gold.profile_identifiers"
        ).fetchall()
    groups: dict[str, set[tuple[str, str]]] = {}
    for profile_id, kind, value in rows:
        groups.setdefault(profile_id, set()).add((kind, value))
    return events, {frozenset(group) for group in groups.values()}


def wait_for_step(env: dict[str, str], step_key: str, timeout: float = 300) -> str:
    """The run id of the latest run once it has started `step_key`."""
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(limit=1)
            if runs:
                started = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
                if any(event.step_key == step_key for event in started):
                    return runs[0].run_id
            time.sleep(0.3)
    raise AssertionError(f"no run reached {step_key} within {timeout} s")


def test_a_run_killed_half_way_is_recovered_by_the_next(generated: Path, tmp_path: Path) -> None:
    env = environment(tmp_path / "crashed")
    assert cdp("land", str(generated), env=env).returncode == 0
    # the run worker and its dbt die together, as when a machine or container goes down, in the middle of
    # identity and gold (bronze and silver are done, the identity models partly written)
    process = subprocess.Popen([CDP, "run"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        dead_run = wait_for_step(env, "cdp_dbt_identity_gold")
        time.sleep(3)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED  # nobody said it died

    result = cdp("run", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"recovered: run {dead_run[:8]}" in result.stderr
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.FAILURE

    # the recovered warehouse holds what one clean run of the same landing builds
    clean = environment(tmp_path / "clean")
    assert cdp("land", str(generated), env=clean).returncode == 0
    assert cdp("run", env=clean).returncode == 0
    assert profile_partition(env["CDP_WAREHOUSE_PATH"]) == profile_partition(clean["CDP_WAREHOUSE_PATH"])
    assert not WarehouseLock(Path(env["CDP_WAREHOUSE_PATH"])).holder_path.exists()  # released at the end

    # the nightly reconciliation rebuilds identity and gold from silver, and finds the same people
    started = datetime.now(UTC).replace(tzinfo=None)
    result = cdp("run", "--job", "cdp_nightly_reconciliation", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with duckdb.connect(env["CDP_WAREHOUSE_PATH"], read_only=True) as con:
        oldest = con.execute("select min(loaded_at) from identity.int_identity__edges").fetchone()[0]
    assert oldest > started  # every edge rewritten: a full refresh, not an incremental no-op
    assert profile_partition(env["CDP_WAREHOUSE_PATH"]) == profile_partition(clean["CDP_WAREHOUSE_PATH"])


def test_runs_never_overlap_on_the_warehouse(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    first = WarehouseLock(warehouse)
    assert first.acquire("run-one") is None
    # another process (a `cdp run` by hand while the sensor's run builds) waits, and gives up after its timeout
    code = (
        "import sys; from pathlib import Path; from orchestration.runlock import WarehouseLock, WarehouseBusyError\n"
        f"lock = WarehouseLock(Path({str(warehouse)!r}))\n"
        "try:\n    lock.acquire('run-two', timeout=1.5, on_wait=print)\nexcept WarehouseBusyError as e:\n"
        "    print('BUSY', e); sys.exit(3)\n"
    )
    blocked = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    assert "waiting for run run-one" in blocked.stdout and "BUSY" in blocked.stdout
    first.release()
    # released normally: the next holder finds no dead run ...
    took = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert took.returncode == 0, took.stdout + took.stderr
    # ... but that process exited holding the lock without releasing it, as a crash does: the next holder is told
    second = WarehouseLock(warehouse)
    dead = second.acquire("run-three")
    assert dead is not None and dead.run_id == "run-two"
    with pytest.raises(WarehouseBusyError):
        WarehouseLock(warehouse).acquire("run-four", timeout=0.5)
    second.release()
    last = WarehouseLock(warehouse)
    assert last.acquire("run-five") is None
    last.release()


def test_the_landing_sensor_requests_a_run_only_for_new_files(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(tmp_path / "sensor")
    # every variable Settings.export() sets, so that they are restored after the test
    for key in ("CDP_HOME", "CDP_LANDING_PATH", "CDP_WAREHOUSE_PATH", "DAGSTER_HOME"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("CDP_INBOX_PATH", str(tmp_path / "sensor" / "var" / "inbox"))
    from orchestration.defs.automation import landing_sensor

    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        def tick() -> dg.SensorResult | dg.SkipReason:
            return landing_sensor(dg.build_sensor_context(instance=instance))

        assert isinstance(tick(), dg.SkipReason)  # an empty zone
        web = sorted((generated / "web").glob("part-*"))[0]
        assert cdp("land", "web", str(web), env=env).returncode == 0
        first = tick()
        assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
        assert first.run_requests[0].tags["cdp/pending"] == "web 1"
        assert tick().run_requests[0].run_key == first.run_requests[0].run_key  # same files, same run key

        # a run lands and records what it saw of the zone: nothing is pending any more
        result = cdp("run", env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert isinstance(tick(), dg.SkipReason)

        # a file waiting in an inbox is work too, and new work makes a new run key
        inbox = tmp_path / "sensor" / "var" / "inbox" / "app"
        inbox.mkdir(parents=True)
        (inbox / "events.ndjson").write_bytes(sorted((generated / "app").glob("part-*"))[0].read_bytes())
        second = tick()
        assert isinstance(second, dg.SensorResult)
        assert second.run_requests[0].tags["cdp/pending"] == "app 1"
        assert second.run_requests[0].run_key != first.run_requests[0].run_key
