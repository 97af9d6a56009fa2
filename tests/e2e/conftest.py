"""Fixtures of the browser tests: Chromium and chromedriver (installed with apt when missing), a small warehouse
built by the real pipeline (`cdp generate/land/run` in a temp home), the Dagster webserver on loopback, and one
headless browser session driven through tests/e2e/webdriver.py.

Screenshots go to var/screenshots/ under the repository root (var/ is ignored by git); their paths are listed
at the end of the pytest output and recorded as the `screenshot` property of each test (junit XML).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .webdriver import ChromeDriverService, WebDriver, chrome_options, poll, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "var" / "screenshots"
SAVED_SCREENSHOTS = pytest.StashKey[list[Path]]()
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()

WEBSERVER_TIMEOUT = 120.0
APT_PACKAGES = ("chromium", "chromium-driver")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: drives the Dagster UI in headless Chromium (starts dagster-webserver and chromedriver)"
    )
    config.stash[SAVED_SCREENSHOTS] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    saved = config.stash.get(SAVED_SCREENSHOTS, [])
    if saved:
        terminalreporter.section("e2e screenshots")
        for path in saved:
            terminalreporter.write_line(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))


def _say(config: pytest.Config, message: str) -> None:
    """Print now, even while pytest captures output (a long apt-get install should not look hung)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(message, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(message, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file, without its terminal colours."""
    try:
        return re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace"))[-chars:]
    except OSError:
        return "(no output)"


# --- the browser -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BrowserBinaries:
    chromium: str
    chromedriver: str


def _find_browser() -> BrowserBinaries | None:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    return BrowserBinaries(chromium, chromedriver) if chromium and chromedriver else None


@pytest.fixture(scope="session")
def browser_binaries(pytestconfig: pytest.Config) -> BrowserBinaries:
    """Chromium and chromedriver from PATH; installed from Debian (apt-get) when one is missing."""
    found = _find_browser()
    if found:
        return found
    what = f"Debian packages {' and '.join(APT_PACKAGES)} (apt-get install -y {' '.join(APT_PACKAGES)})"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail(f"the browser tests need chromium and chromedriver on PATH: install the {what} as root",
                    pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", *APT_PACKAGES]):
        _say(pytestconfig, f"\ne2e: chromium or chromedriver missing: {' '.join(command)}")
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            completed = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, timeout=900)
        if completed.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed (exit {completed.returncode}): install the {what}",
                        pytrace=False)
    found = _find_browser()
    if found is None:
        pytest.fail(f"chromium or chromedriver still not on PATH after apt-get: install the {what}",
                    pytrace=False)
    return found


# --- the warehouse -----------------------------------------------------------------------------------

@pytest.fixture(scope="package")
def cdp_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A temp CDP home with a 200-person population generated, landed and run through Dagster, so that the
    assets are materialized and every check (dbt tests, quality gates) has a result."""
    root = tmp_path_factory.mktemp("e2e-home")
    env = {
        **os.environ,
        "CDP_HOME": str(root),
        "CDP_LANDING_PATH": str(root / "landing"),
        "CDP_INBOX_PATH": str(root / "inbox"),
        "CDP_WAREHOUSE_PATH": str(root / "warehouse.duckdb"),
        "DAGSTER_HOME": str(root / "dagster"),
    }
    for args in (
        ("generate", "--people", "200", "--seed", "7", "--out", str(root / "generated")),
        ("land", str(root / "generated")),
        ("run",),
    ):
        result = subprocess.run([str(BIN / "cdp"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            pytest.fail(f"cdp {args[0]} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n"
                        f"{result.stderr[-3000:]}", pytrace=False)
    return env


# --- the Dagster webserver -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DagsterUI:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, chars: int = 3000) -> str:
        return tail(self.log_path, chars)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                              timeout=60)
        assert response.status_code == 200, f"POST /graphql: HTTP {response.status_code}: {response.text[:2000]}"
        payload = response.json()
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]


@pytest.fixture(scope="package")
def dagster_ui(cdp_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    """`dagster-webserver -m orchestration.definitions` on a free loopback port, on the temp home's instance.
    (The webserver alone, not `dagster dev`: no daemon, so no sensor or schedule starts runs under the test.)"""
    port = free_port()
    log_path = tmp_path_factory.mktemp("e2e-webserver") / "webserver.log"
    webserver = BIN / "dagster-webserver"
    command = [str(webserver if webserver.exists() else "dagster-webserver"), "-m", "orchestration.definitions",
               "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=cdp_env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    ui = DagsterUI(f"http://127.0.0.1:{port}", log_path, process)
    try:
        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{ui.log_tail()}",
                            pytrace=False)
            try:
                return httpx.get(f"{ui.url}/server_info", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        poll(answers, WEBSERVER_TIMEOUT, lambda: f"dagster-webserver did not answer on {ui.url}:\n{ui.log_tail()}",
             interval=0.5)
        yield ui
    finally:
        stop_process_group(process, grace=15)  # the webserver and its code server


# --- chromedriver and the browser session ------------------------------------------------------------

@pytest.fixture(scope="package")
def chromedriver(browser_binaries: BrowserBinaries, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ChromeDriverService]:
    log_path = tmp_path_factory.mktemp("e2e-chromedriver") / "chromedriver.log"
    service = ChromeDriverService(browser_binaries.chromedriver, free_port(), log_path)
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture(scope="package")
def browser(chromedriver: ChromeDriverService, browser_binaries: BrowserBinaries,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium with a fresh profile for the e2e package (the community dialog shows once)."""
    profile = tmp_path_factory.mktemp("e2e-chromium-profile")
    try:
        driver = WebDriver.start(chromedriver.url, chrome_options(browser_binaries.chromium, profile))
    except Exception as error:
        pytest.fail(f"could not start headless Chromium through chromedriver: {error}\n{chromedriver.log_tail()}",
                    pytrace=False)
    driver.command("POST", "/timeouts", {"pageLoad": 60_000, "script": 30_000, "implicit": 0})
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: WebDriver, request: pytest.FixtureRequest,
               record_property: Callable[[str, object], None]) -> Iterator[Callable[[str], Path]]:
    """`screenshot("name")` saves var/screenshots/name.png and reports its path; a failed test leaves
    var/screenshots/failed-<test>.png of what the browser showed."""

    def save(name: str) -> Path:
        path = browser.save_screenshot(SCREENSHOTS / f"{name}.png")
        record_property("screenshot", str(path))
        request.config.stash[SAVED_SCREENSHOTS].append(path)
        print(f"screenshot: {path}")
        return path

    yield save
    call = request.node.stash.get(_REPORTS, {}).get("call")
    if call is not None and call.failed:
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in request.node.name)
        try:
            save(f"failed-{safe}")
        except Exception as error:  # the browser may be what failed
            print(f"no failure screenshot: {error}")
