"""The Dagster UI, checked in a real browser: on a warehouse built by `cdp run`, dagster-webserver serves the
global asset lineage with every group of the platform, each quality gate shows on its asset's checks tab as
passed, and the GraphQL API (what the UI renders from) agrees: groups per asset key, gates and dbt tests as
asset checks. Screenshots are kept in var/screenshots/ (see conftest.py for the set-up)."""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from connectors.landing import SOURCES
from reverse_etl.config import load_syncs

from .conftest import DagsterUI
from .webdriver import Element, NoSuchElement, WebDriver, poll

pytestmark = pytest.mark.e2e
T = TypeVar("T")

# --- what the UI must show: add a group once it exists (e.g. "ops"), a gate or a dbt test once defined ---------

SYNCS = tuple(load_syncs(check_models=False))  # reverse_etl/syncs.yml: one asset per sync, gated by gate 4
EXPECTED_GROUPS = ("landing", "reference", "bronze", "silver", "identity", "gold", "ops", "activation", "reverse_etl")

GATE_CHECKS: dict[str, tuple[str, ...]] = {  # asset key -> quality gates (blocking checks) that passed on it
    **{f"landing/{source}": ("gate_1_landing_to_bronze",) for source in SOURCES},
    "silver/events": ("gate_2_bronze_to_silver",),
    "gold/profiles": ("gate_3_silver_to_gold",),
    **{f"reverse_etl/{sync}": (f"gate_4_{sync}",) for sync in SYNCS},
}

DBT_TEST_CHECKS: dict[str, tuple[str, ...]] = {  # asset key -> dbt tests shown as asset checks (and passed)
    **{f"bronze/brz_{source}__records": (f"unique_brz_{source}__records_record_key",) for source in SOURCES},
    "reference/country_calling_codes": ("unique_country_calling_codes_iso2",),
    "silver/events": ("unique_events_event_id", "not_null_events_event_id", "assert_events_match_staging"),
    "identity/int_identity__profile_map": ("unique_int_identity__profile_map_component_id",),
    "gold/profiles": ("unique_profiles_profile_id", "not_null_profiles_profile_id"),
}
FRESHNESS_CHECKS: dict[str, tuple[str, ...]] = {  # asset key -> freshness checks (dbt source freshness, policy)
    **{f"landing/{source}": ("freshness_check",) for source in SOURCES},
    "gold/profiles": ("freshness_behind_landing",),
}

RENDER_TIMEOUT = 60.0
NUX_TIMEOUT = 20.0  # the community dialog opens 1 s after the app has asked the server whether to show it

ASSET_NODES = """{
  assetNodes {
    assetKey { path }
    groupName
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } }
    }
  }
}"""


# --- page helpers ------------------------------------------------------------------------------------------

COMMUNITY_DIALOG = "//div[@role='dialog'][contains(., 'Join the Dagster community')]"
SKIP_BUTTON = COMMUNITY_DIALOG + "//button[normalize-space(.)='Skip']"


def excerpt(text: str, chars: int = 1500) -> str:
    text = re.sub(r"\n\s*\n+", "\n", text).strip()
    return text if len(text) <= chars else text[:chars] + f"\n... ({len(text) - chars} more characters)"


def community_dialog_shown(browser: WebDriver) -> bool:
    return any(element.is_displayed() for element in browser.find_all_xpath(COMMUNITY_DIALOG))


def dismiss_community_dialog(browser: WebDriver) -> bool:
    """Click the dialog's Skip button if it is showing; True when it was."""
    for button in browser.find_all_xpath(SKIP_BUTTON):
        if button.is_displayed():
            button.click()
            return True
    return False


def open_page(browser: WebDriver, ui: DagsterUI, path: str) -> bool:
    """Go to `path` of the UI. On the first visit of this instance (the server still wants to show the "Join
    the Dagster community" dialog and this browser has not dismissed it), wait for the dialog and skip it.
    True when it did."""
    browser.get(ui.url + path)
    pending = ui.graphql("{ shouldShowNux }").get("shouldShowNux") and not browser.execute(
        "return window.localStorage.getItem('communityNux');")
    skipped = False
    if pending:
        # (a Dagster that no longer shows it is fine: settle() still dismisses it should it show late)
        with contextlib.suppress(TimeoutError):
            skipped = poll(lambda: dismiss_community_dialog(browser), NUX_TIMEOUT, lambda: "no community dialog")
        print(f"{path}: community dialog {'skipped' if skipped else 'expected but not shown'}")
    poll(lambda: not community_dialog_shown(browser), 10,
         lambda: f"the community dialog is still open after Skip:\n{excerpt(browser.page_text())}")
    return skipped


def settle(browser: WebDriver, ready: Callable[[], T], describe: Callable[[], str],
           timeout: float = RENDER_TIMEOUT) -> T:
    """Poll `ready` until it is truthy with no dialog over the page (skipped whenever it shows)."""

    def check() -> T | None:
        if dismiss_community_dialog(browser) or community_dialog_shown(browser):
            return None
        return ready()

    return poll(check, timeout, describe)


def graph_labels(browser: WebDriver) -> set[str]:
    """The text lines of the nodes drawn in the lineage graph (an SVG of HTML nodes, not the sidebar)."""
    lines = browser.execute(
        "return Array.from(document.querySelectorAll('svg foreignObject'))"
        ".flatMap(f => (f.innerText || f.textContent || '').split('\\n'));")
    return {line.strip() for line in lines or [] if line.strip()}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_screenshot(path: Path) -> None:
    width, height = png_size(path)
    size = path.stat().st_size
    assert width >= 1000 and height >= 600, f"{path}: {width}x{height} is too small a screenshot"
    assert size > 20_000, f"{path}: {size} bytes, a blank page? (a rendered graph is > 20 KB)"


def asset_nodes(ui: DagsterUI) -> dict[str, dict[str, Any]]:
    return {"/".join(node["assetKey"]["path"]): node for node in ui.graphql(ASSET_NODES)["assetNodes"]}


def checks_of(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = node["assetChecksOrError"]
    assert result["__typename"] == "AssetChecks", f"{node['assetKey']}: {result}"
    return {check["name"]: check for check in result["checks"]}


# --- the tests ---------------------------------------------------------------------------------------------

def test_the_global_lineage_shows_every_group(browser: WebDriver, dagster_ui: DagsterUI,
                                              screenshot: Callable[[str], Path]) -> None:
    open_page(browser, dagster_ui, "/asset-groups")
    settle(browser, lambda: set(EXPECTED_GROUPS) <= graph_labels(browser),
           lambda: f"groups {EXPECTED_GROUPS} not all drawn in the graph; nodes: {sorted(graph_labels(browser))}; "
                   f"page:\n{excerpt(browser.page_text())}\nwebserver:\n{dagster_ui.log_tail(1500)}")
    text = browser.page_text()
    assert "Global asset lineage" in text, excerpt(text)
    lines = {line.strip() for line in text.splitlines()}
    assert not set(EXPECTED_GROUPS) - lines, f"groups missing from the page: {excerpt(text)}"
    # every group the server knows is drawn, not only those this test expects
    served = {node["groupName"] for node in asset_nodes(dagster_ui).values()}
    assert served <= graph_labels(browser), f"served groups {sorted(served)}, drawn {sorted(graph_labels(browser))}"
    assert not community_dialog_shown(browser), "the community dialog is over the graph"

    path = screenshot("dagster-asset-graph")
    assert_screenshot(path)


def _check_row(browser: WebDriver, check: str) -> Element | None:
    rows = browser.find_all_xpath(f"//*[@title='{check}']/ancestor::div[contains(@class, 'checkRow')]")
    return rows[0] if rows else None


def assert_check_passed_in_ui(browser: WebDriver, ui: DagsterUI, asset: str, check: str) -> None:
    """The asset's checks tab, with `check` selected: its latest evaluation passed, it is blocking, and its row
    in the checks list says Succeeded."""
    key = {"path": asset.split("/")}
    nodes = ui.graphql("query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) { assetChecksOrError {"
                       " __typename ... on AssetChecks { checks { name } } } } }", {"k": [key]})["assetNodes"]
    assert nodes, f"no asset {asset} on the server"
    defined = sorted(checks_of(nodes[0] | {"assetKey": key}))
    assert check in defined, f"{asset}: no check {check} is defined (GraphQL); its checks: {defined}"
    open_page(browser, ui, f"/assets/{asset}?view=checks&checkDetail={check}")

    def evaluated() -> str | None:  # the check's panel, once it shows its latest evaluation
        text = browser.page_text()
        return text if check in text and re.search(r"Evaluation result\s*\n", text) else None

    text = settle(browser, evaluated, lambda: f"{asset}: no evaluation of {check} on the checks tab; page:\n"
                                              f"{excerpt(browser.page_text())}")
    assert re.search(r"Evaluation result\s*\n\s*Passed\b", text), (
        f"{asset}: {check} did not pass, the UI shows:\n{excerpt(text[text.find('Latest execution'):])}")
    assert "This is a blocking asset check." in text, f"{asset}: {check} is not blocking:\n{excerpt(text)}"

    if _check_row(browser, check) is None:  # a long, virtualized list: filter it down to the check
        try:
            browser.find("input[placeholder='Filter checks']").send_keys(check)
        except NoSuchElement:
            pytest.fail(f"{asset}: {check} is not in the checks list and there is no filter:\n{excerpt(text)}")

    def row_text() -> str | None:
        row = _check_row(browser, check)
        return row.text if row is not None else None  # a stale row (re-rendered) is polled again

    shown = settle(browser, row_text, lambda: f"{asset}: no row for {check}:\n{excerpt(browser.page_text())}")
    assert shown.strip().splitlines()[-1:] == ["Succeeded"], f"{asset}: the checks list shows {shown!r}"


@pytest.mark.parametrize("asset", list(GATE_CHECKS))
def test_each_gate_shows_passed_on_its_asset_checks_tab(asset: str, browser: WebDriver, dagster_ui: DagsterUI,
                                                         screenshot: Callable[[str], Path]) -> None:
    for check in GATE_CHECKS[asset]:
        assert_check_passed_in_ui(browser, dagster_ui, asset, check)
    path = screenshot(f"dagster-gate-checks-{asset.replace('/', '-')}")
    assert_screenshot(path)


def test_graphql_agrees_on_groups_gates_and_dbt_tests(dagster_ui: DagsterUI) -> None:
    nodes = asset_nodes(dagster_ui)
    groups = {node["groupName"] for node in nodes.values()}
    assert not set(EXPECTED_GROUPS) - groups, f"groups missing: served {sorted(groups)}"
    # an asset's key starts with its group: `silver/events` is in `silver` (defs/dbt.py, defs/ingest.py)
    misplaced = {key: node["groupName"] for key, node in nodes.items() if key.split("/")[0] != node["groupName"]}
    assert not misplaced, f"assets whose group is not their key prefix: {misplaced}"

    for table, blocking in ((GATE_CHECKS, True), (DBT_TEST_CHECKS, None), (FRESHNESS_CHECKS, False)):
        for asset, expected in table.items():
            assert asset in nodes, f"no asset {asset}; assets: {sorted(nodes)}"
            checks = checks_of(nodes[asset])
            missing = [name for name in expected if name not in checks]
            assert not missing, f"{asset}: checks {missing} missing; it has {sorted(checks)}"
            for name in expected:
                check = checks[name]
                status = (check["executionForLatestMaterialization"] or {}).get("status")
                assert status == "SUCCEEDED", f"{asset}: {name} is {status}, not SUCCEEDED"
                if blocking is not None:
                    assert check["blocking"] is blocking, f"{asset}: {name} blocking={check['blocking']}"
