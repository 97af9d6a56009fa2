"""One run at a time on the DuckDB warehouse, and recovery of a run that died holding it.

DuckDB lets one process write a database file, so two pipeline runs must never overlap: not two runs the Dagster
daemon launched (its run queue allows one at a time, see Settings.export), and not a `cdp run` started by hand
while the sensor's run is building. Every run therefore holds an exclusive lock on `var/warehouse.lock` from its
first warehouse step to its end (the `warehouse_lock` resource; the job runs in one process, so the resource lives
for the whole run). The kernel releases a lock whose process died, so a crash never leaves the warehouse locked.

Beside the lock, `var/warehouse.lock.json` names the run holding it. A run that ends normally removes it; finding
it when taking the lock means its run died half-way. The new run then marks that run failed in Dagster (its steps
stay visible) and goes on: every model is incremental from watermarks or rebuilt, so the half-done work is picked
up again rather than lost or counted twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


class WarehouseBusyError(Exception):
    """The warehouse stayed locked by another run for longer than the timeout."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"run {self.run_id[:8]} (pid {self.pid} on {self.host}, since {self.since})"


class WarehouseLock:
    """An exclusive, process-wide lock on the warehouse, with the holder recorded for recovery."""

    def __init__(self, warehouse_path: Path) -> None:
        self.warehouse_path = Path(warehouse_path)
        self.lock_path = self.warehouse_path.with_name(self.warehouse_path.name + ".lock")
        self.holder_path = self.warehouse_path.with_name(self.warehouse_path.name + ".lock.json")
        self._handle: IO[str] | None = None

    def read_holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.holder_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def acquire(
        self,
        run_id: str,
        *,
        timeout: float = 3600.0,
        on_wait: Callable[[str], None] = lambda message: None,
    ) -> Holder | None:
        """Take the lock for `run_id`, waiting up to `timeout` seconds; returns the holder of a run that died
        holding it (None when the last run released it normally)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held until release()
        started = time.monotonic()
        next_message = 0.0
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > timeout:
                    handle.close()
                    holder = self.read_holder()
                    raise WarehouseBusyError(
                        f"the warehouse is still in use by {holder.describe() if holder else 'another run'} after "
                        f"{timeout:.0f} s; runs never overlap on DuckDB"
                    ) from None
                if waited >= next_message:
                    holder = self.read_holder()
                    on_wait(f"waiting for {holder.describe() if holder else 'another run'} to finish with the "
                            f"warehouse ({waited:.0f} s so far)")
                    next_message = waited + 30
                time.sleep(0.2)
        self._handle = handle
        dead = self.read_holder()
        if dead is not None and dead.run_id == run_id:
            dead = None  # our own record (a resource re-entered in the same run)
        self._write_holder(Holder(run_id, os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat()))
        self._wait_for_file(timeout - (time.monotonic() - started), on_wait)
        return dead

    def release(self) -> None:
        if self._handle is None:
            return
        self.holder_path.unlink(missing_ok=True)
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def _write_holder(self, holder: Holder) -> None:
        tmp = self.holder_path.with_name(f".{self.holder_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(holder.__dict__))
        os.replace(tmp, self.holder_path)

    def _wait_for_file(self, timeout: float, on_wait: Callable[[str], None]) -> None:
        """A run killed with its process group gone is over; but if only the run worker died, its dbt child may
        still be writing the file. Wait until DuckDB can open it for writing."""
        if not self.warehouse_path.exists():
            return
        import duckdb

        started = time.monotonic()
        next_message = 0.0
        while True:
            try:
                duckdb.connect(str(self.warehouse_path)).close()
                return
            except duckdb.IOException as error:
                waited = time.monotonic() - started
                if "lock" not in str(error).lower() or waited > timeout:
                    raise
                if waited >= next_message:
                    on_wait(f"the warehouse file is still open in another process (a dbt left by a dead run?); "
                            f"waiting ({waited:.0f} s so far): {str(error).splitlines()[0][:160]}")
                    next_message = waited + 30
                time.sleep(0.5)


def recover_dead_run(instance: Any, dead: Holder, by_run_id: str, log: Callable[[str], None]) -> None:
    """Mark the Dagster run of `dead` failed if it is still recorded as in progress."""
    from dagster import DagsterRunStatus

    run = instance.get_run_by_id(dead.run_id)
    message = (f"recovered: {dead.describe()} died half-way while holding the warehouse; run {by_run_id[:8]} "
               "takes over (incremental models pick up the unfinished work)")
    log(message)
    if run is not None and run.status in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING,
                                          DagsterRunStatus.CANCELING):
        instance.report_run_failed(run, message=message)
