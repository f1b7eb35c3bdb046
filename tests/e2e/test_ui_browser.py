"""The Dagster UI in a real browser: what a user clicks to rebuild the curation group.

Starts dagster-webserver + dagster-daemon on a free port against a temp DAGSTER_HOME, drives
Debian's Chromium through Playwright, and saves screenshots under test-artifacts/ui/.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from dagster_project.cli import selection_for
from dagster_project.refresh import DEFAULT_TARGET, refresh
from tests.e2e.helpers import (
    copy_catalogue,
    free_port,
    pipeline_env,
    unavailable,
    write_dagster_home,
)
from tests.e2e.ui_server import REPO_ROOT, dagster_ui

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCATION = "catalogue_vlm"  # [tool.dagster] code_location_name
UI_TIMEOUT_MS = 30_000


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", "chromium"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    unavailable("no Chromium found (apt-get install chromium; .ci/run does this)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def ui_env(tmp_path_factory, demo_catalogue) -> dict[str, str]:
    """ingest + images already built (by `make refresh`), so the UI run is the curation group."""
    root = tmp_path_factory.mktemp("ui")
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, root / "catalogue.csv", 300)
    home = write_dagster_home(root / "home")
    env = pipeline_env(str(root / "data"), catalogue, home)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        # The setup's steps run in its run worker (one process instead of one per step, ~20 s
        # less); the UI's run, what is under test, keeps the default executor: `env` lacks this.
        mp.setenv("DAGSTER_EXECUTOR", "in_process")
        instance = dg.DagsterInstance.from_config(str(home))
        assert refresh(instance, DEFAULT_TARGET, selection_for(["ingest", "images"])).success
        instance.dispose()
    return env


def wait_for_run(home: str, n_before: int, timeout_s: float = 240) -> dg.DagsterRun:
    instance = dg.DagsterInstance.from_config(home)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = instance.get_run_records(order_by="create_timestamp", ascending=True)
            if len(records) > n_before and records[-1].dagster_run.is_finished:
                return records[-1].dagster_run
            time.sleep(1)
        raise TimeoutError("the run launched from the UI did not finish")
    finally:
        instance.dispose()


def dismiss_welcome(page) -> None:
    """A fresh browser profile gets the one-time "Join the Dagster community" dialog."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except Exception:  # noqa: BLE001 - no dialog this time: nothing to dismiss
        pass


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("networkidle")  # icons and live data settle before the picture
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_materialize_curation_group_from_the_asset_graph(ui_env) -> None:
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    home = ui_env["DAGSTER_HOME"]
    with dg.DagsterInstance.from_config(home) as instance:
        n_before = len(instance.get_run_records())
    with (
        dagster_ui(ui_env, free_port(), Path(home) / "logs") as base,
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)

        page.goto(f"{base}/locations/{LOCATION}/asset-groups/curation")
        dismiss_welcome(page)
        page.get_by_text("data_quality_report").first.wait_for()
        page.get_by_text("Never materialized").first.wait_for()
        shot(page, "1-curation-group-before")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_text("Launched run").wait_for()
        shot(page, "2-run-launched")

        run = wait_for_run(home, n_before)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        assert {k.to_user_string() for k in run.asset_selection or []} == {
            "curated_products",
            "curation_ledger",
            "data_quality_report",
        }
        page.goto(f"{base}/runs/{run.run_id}")
        page.get_by_text("Success").first.wait_for()
        shot(page, "3-run-succeeded")

        page.goto(f"{base}/assets/data_quality_report")
        page.get_by_text("[Show Markdown]").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("catalogue rows →").wait_for()
        text = dialog.inner_text()
        assert "Outcomes" in text and "curated" in text and "300 catalogue rows" in text
        shot(page, "4-data-quality-report-markdown")

        page.goto(f"{base}/assets/curation_ledger?view=checks")
        # Long names are middle-truncated; a hidden copy measures them, so ask for visible text.
        page.locator("text=ledger_accounts_for_every_raw_row >> visible=true").first.wait_for()
        page.get_by_text("Passed", exact=True).first.wait_for()
        shot(page, "5-ledger-check-passed")

        page.goto(f"{base}/locations/{LOCATION}/asset-groups/curation")
        page.get_by_text("data_quality_report").first.wait_for()
        assert page.get_by_text("Never materialized").count() == 0
        shot(page, "6-curation-group-after")
        browser.close()
