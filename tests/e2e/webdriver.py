"""A tiny W3C WebDriver client on httpx: just what the browser tests need from chromedriver.

    with ChromeDriverService("/usr/bin/chromedriver", port, log_path) as service:
        with WebDriver.start(service.url, chrome_options("/usr/bin/chromium", profile_dir)) as driver:
            driver.get("http://127.0.0.1:3000/asset-groups")
            driver.find("button").click()
            png = driver.screenshot()

Spec: https://www.w3.org/TR/webdriver2/ (chromedriver speaks it over JSON/HTTP).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier
T = TypeVar("T")


class WebDriverError(Exception):
    """A WebDriver command failed: the W3C error code, its message and the command that failed."""

    def __init__(self, command: str, error: str, message: str) -> None:
        super().__init__(f"{command}: {error}: {message.splitlines()[0] if message else ''}")
        self.error = error


class NoSuchElement(WebDriverError):
    pass


def poll(check: Callable[[], T], timeout: float, describe: Callable[[], str], interval: float = 0.25) -> T:
    """Call `check` until it returns something truthy, or fail after `timeout` seconds with `describe()`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except WebDriverError as error:  # e.g. a stale element while the page re-renders
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s: {describe()}{detail}")
        time.sleep(min(interval, 0.5))


def chrome_options(binary: str, user_data_dir: Path, window: tuple[int, int] = (1600, 1000)) -> dict[str, Any]:
    """Capabilities for a headless Chromium with a fresh profile and no network of its own."""
    return {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-breakpad",
                "--disable-crash-reporter",
                f"--window-size={window[0]},{window[1]}",
                f"--user-data-dir={user_data_dir}",
            ],
        },
    }


class Element:
    """A web element of the current page (valid until the page replaces it)."""

    def __init__(self, driver: WebDriver, element_id: str) -> None:
        self.driver = driver
        self.id = element_id

    def _command(self, method: str, suffix: str, body: dict[str, Any] | None = None) -> Any:
        return self.driver.command(method, f"/element/{self.id}{suffix}", body)

    def click(self) -> None:
        self._command("POST", "/click", {})

    def send_keys(self, text: str) -> None:
        self._command("POST", "/value", {"text": text})

    @property
    def text(self) -> str:
        return str(self._command("GET", "/text"))

    def attribute(self, name: str) -> str | None:
        value = self._command("GET", f"/attribute/{name}")
        return None if value is None else str(value)

    def is_displayed(self) -> bool:
        return bool(self.driver.execute(
            "const r = arguments[0].getBoundingClientRect(); return r.width > 0 && r.height > 0;", self))

    def find(self, css: str) -> Element:
        return self.driver._element(self._command("POST", "/element", {"using": "css selector", "value": css}))

    def __repr__(self) -> str:
        return f"Element({self.id!r})"


class WebDriver:
    """One browser session on a WebDriver server (chromedriver)."""

    def __init__(self, server_url: str, session_id: str, timeout: float = 60.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.session_id = session_id
        self._http = httpx.Client(base_url=f"{self.server_url}/session/{session_id}", timeout=timeout)

    @classmethod
    def start(cls, server_url: str, capabilities: dict[str, Any], timeout: float = 60.0) -> WebDriver:
        """Open a new session (starts the browser) with these `alwaysMatch` capabilities."""
        response = httpx.post(
            f"{server_url.rstrip('/')}/session",
            json={"capabilities": {"alwaysMatch": capabilities}},
            timeout=timeout,
        )
        value = _value("new session", response)
        return cls(server_url, value["sessionId"], timeout)

    # --- protocol -------------------------------------------------------------------------------

    def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body if method == "POST" else None)
        return _value(f"{method} {path}", response)

    def _element(self, value: dict[str, str]) -> Element:
        return Element(self, value[ELEMENT_KEY])

    # --- navigation, elements, scripts --------------------------------------------------------

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    @property
    def current_url(self) -> str:
        return str(self.command("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self.command("GET", "/title"))

    def find(self, css: str) -> Element:
        return self._element(self.command("POST", "/element", {"using": "css selector", "value": css}))

    def find_all(self, css: str) -> list[Element]:
        values = self.command("POST", "/elements", {"using": "css selector", "value": css})
        return [self._element(value) for value in values]

    def find_xpath(self, xpath: str) -> Element:
        return self._element(self.command("POST", "/element", {"using": "xpath", "value": xpath}))

    def find_all_xpath(self, xpath: str) -> list[Element]:
        return [self._element(value) for value in self.command("POST", "/elements", {"using": "xpath", "value": xpath})]

    def execute(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body: use `return`) in the page; elements pass both ways."""
        wire = [{ELEMENT_KEY: arg.id} if isinstance(arg, Element) else arg for arg in args]
        result = self.command("POST", "/execute/sync", {"script": script, "args": wire})
        return self._unwrap(result)

    def _unwrap(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {ELEMENT_KEY}:
            return self._element(value)
        if isinstance(value, list):
            return [self._unwrap(item) for item in value]
        return value

    def page_text(self) -> str:
        return str(self.execute("return document.body ? document.body.innerText : '';") or "")

    def screenshot(self) -> bytes:
        """The viewport as PNG bytes."""
        return base64.b64decode(self.command("GET", "/screenshot"))

    def save_screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.screenshot())
        return path

    def quit(self) -> None:
        """End the session: chromedriver closes the browser."""
        try:
            httpx.delete(f"{self.server_url}/session/{self.session_id}", timeout=30)
        except httpx.HTTPError:
            pass  # the server is already gone (ChromeDriverService.stop ends its browsers too)
        finally:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()


def _value(command: str, response: httpx.Response) -> Any:
    try:
        payload = response.json()
    except ValueError:
        raise WebDriverError(command, f"HTTP {response.status_code}", response.text[:500]) from None
    value = payload.get("value") if isinstance(payload, dict) else None
    if response.status_code >= 400 or (isinstance(value, dict) and "error" in value and "message" in value):
        value = value if isinstance(value, dict) else {}
        error, message = str(value.get("error", f"HTTP {response.status_code}")), str(value.get("message", ""))
        raise (NoSuchElement if error == "no such element" else WebDriverError)(command, error, message)
    return value


class ChromeDriverService:
    """A chromedriver process on a loopback port, ready once its /status says so."""

    def __init__(self, executable: str, port: int, log_path: Path, args: Sequence[str] = ()) -> None:
        self.executable = executable
        self.port = port
        self.log_path = log_path
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # its own process group: the browsers it starts stay in it, so that stop() ends them all
            self.process = subprocess.Popen(
                [self.executable, f"--port={self.port}", "--allowed-ips=127.0.0.1", *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"chromedriver exited with {self.process.returncode}: {self.log_tail()}")
            try:
                return bool(httpx.get(f"{self.url}/status", timeout=2).json()["value"]["ready"])
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        poll(ready, timeout, lambda: f"chromedriver on port {self.port} not ready: {self.log_tail()}")
        return self

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stop_process_group(process: subprocess.Popen[Any] | None, grace: float = 10.0) -> None:
    """Terminate the process group led by `process` (started with start_new_session=True), then kill it."""
    if process is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(process.pid):
            break
        time.sleep(0.5)  # the leader is gone, give the rest of the group (browsers) a moment before SIGKILL
        if not _group_alive(process.pid):
            break
    process.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
