"""The monitor in a real browser: headless Chromium (Playwright) on a monitor served by
``pocoflow.ui.server.start_monitor`` over a database of real runs, one of them live in
another process. Also takes the screenshots the README shows: into a temporary
folder, or into ``$POCOFLOW_SCREENSHOTS`` when set
(``POCOFLOW_SCREENSHOTS=docs pytest tests/test_monitor_browser.py`` refreshes
docs/monitor*.png), so a test run leaves the checkout as it was.

Locally it skips without Playwright or Chromium (``apt-get install chromium``,
``pip install playwright``; no ``playwright install``); under CI=true a missing
browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocoflow import WorkflowDB
from pocoflow.ui.server import free_port, start_monitor
from tests.test_monitor import (
    IN_CI,
    WAIT,
    XSS_ERROR,
    Recorded,
    record_runs,
    start_waiting,
    stop,
    write_flows,
)

ROW_PX = 35  # the height of a header or row of st.dataframe
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def chromium() -> str:
    """The Chromium executable, or a skip (a failure in CI) saying what to install."""
    def missing(what: str) -> None:
        message = f"the browser test needs {what}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: .ci/run installs it)")
        pytest.skip(message)

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("Playwright: pip install playwright")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        missing("Chromium: apt-get install -y --no-install-recommends chromium")
    return found  # type: ignore[return-value]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    folder = tmp_path_factory.mktemp("browser")
    found = Recorded(folder / "browser.db", write_flows(folder / "flows"))
    record_runs(found)
    yield found
    sys.path.remove(str(found.flows_dir))


@pytest.fixture
def served(recorded: Recorded, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The monitor's URL (127.0.0.1, a free port) while a run waits in another process."""
    live = start_waiting(recorded, "mon-browser-live")
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:
        server = start_monitor(recorded.db, port=port, log=log, wait=60)
    try:
        assert "127.0.0.1" == server.args[server.args.index("--server.address") + 1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/", live
    finally:
        server.terminate()
        server.wait(WAIT)
        stop(live)
        if server.returncode not in (0, -15):
            print((tmp_path / "server.log").read_text(errors="replace"))


def settle(page: Any) -> None:
    """Wait until the script run is over and the page has drawn (the app's own run
    state: the status widget shows only for runs slower than its delay)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached")
    page.wait_for_timeout(400)


def cells(scope: Any, showing: str) -> list[str]:
    """The text of a dataframe's cells (drawn on a canvas; read from its accessible grid),
    once a cell shows *showing* (the grid fills in after the canvas is drawn)."""
    grid = scope.locator('[data-testid="stDataFrame"]').first.locator('[role="gridcell"]')
    grid.filter(has_text=showing).first.wait_for(state="attached")
    return [text.strip() for text in grid.all_text_contents()]


def open_run(page: Any, run_id: str) -> None:
    page.get_by_label("Run to inspect").click()
    page.keyboard.type(run_id)
    page.keyboard.press("Enter")
    page.get_by_text(f"{run_id}   ·   flow").wait_for()
    settle(page)


def click_row(page: Any, run_id: str) -> None:
    """Select a run in the runs table by its row's checkbox (the grid is a canvas: the
    row is found in its accessible cells, then clicked where it is drawn)."""
    table = page.locator('[data-testid="stDataFrame"]').first
    shown = cells(page, run_id)
    columns = 8  # status, run id, flow, started, duration, steps, node, error
    row = shown.index(run_id) // columns
    box = table.bounding_box()
    page.mouse.click(box["x"] + 15, box["y"] + ROW_PX * (row + 1) + ROW_PX / 2)
    page.get_by_text(f"{run_id}   ·   flow").wait_for()
    settle(page)


def shoot(page: Any, folder: Path, name: str) -> None:
    """A screenshot of the whole page (its height measured: Streamlit scrolls inside)."""
    height = page.evaluate(
        "Math.ceil(document.querySelector('[data-testid=\"stMainBlockContainer\"]')"
        ".getBoundingClientRect().bottom)")
    page.set_viewport_size({"width": 1400, "height": max(900, int(height) + 40)})
    page.wait_for_timeout(600)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)
    assert (folder / name).read_bytes().startswith(b"\x89PNG")


def shown_after(page: Any, text: str, what: str) -> None:
    """Wait for *text*; if it never shows, fail with what the page says instead (the
    app's answer, a lost click and a slow rerun look alike from outside)."""
    from playwright.sync_api import TimeoutError as PageTimeout

    try:
        page.get_by_text(text).first.wait_for()
    except PageTimeout:
        body = page.inner_text("body")
        pytest.fail(f"no {text!r} after {what}; the page shows:\n{body[:4000]}")


def test_the_monitor_works_in_a_real_browser(
        recorded: Recorded, served: tuple[str, subprocess.Popen[str]], tmp_path: Path) -> None:
    """The runs table shows every run with its status; the live run's timeline says
    what runs now; Cancel (confirmed) stops the run in the other process and the page
    shows it cancelled; a failed run's timeline and error show, stored HTML as text,
    and no script of the database runs. Screenshots go to $POCOFLOW_SCREENSHOTS, else a
    temporary folder."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    pictures = Path(os.environ.get("POCOFLOW_SCREENSHOTS") or tmp_path / "screenshots")
    url, live = served
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(WAIT * 1000)
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url)
            page.wait_for_selector('[data-testid="stApp"]')
            page.get_by_text("PocoFlow Monitor").first.wait_for()
            page.wait_for_selector('[data-testid="stDataFrame"]')
            settle(page)

            # the runs table: every top-level run, each with its status
            shown = cells(page, "mon-done")
            statuses = {shown[i]: shown[i - 1] for i, text in enumerate(shown)
                        if text.startswith("mon-") and i > 0}
            assert {"mon-browser-live": "🔄 running", "mon-done": "✅ completed",
                    "mon-failed": "❌ failed", "mon-paused": "⏸️ paused",
                    "mon-cancelled": "🚫 cancelled", "mon-killed": "⚠️ interrupted",
                    "mon-nested": "✅ completed"} == statuses

            # the newest run, the live one, is open: its timeline says what runs now
            page.get_by_text("🔄 running   mon-browser-live   ·   flow waiting").wait_for()
            page.get_by_text("Now running: step 1, node Wait").wait_for()
            timeline = page.get_by_role("tabpanel").filter(has=page.locator(
                '[data-testid="stDataFrame"]')).first
            assert "✔ node_end" in cells(timeline, "node_end")

            # cancel it, confirmed: the other process stops, the run shows cancelled
            page.get_by_role("button", name="Cancel run…").click()
            confirm = page.get_by_role("button", name="Yes, cancel it")
            confirm.wait_for()
            settle(page)  # the run that drew the question is over: a click now is heard
            confirm.click()
            shown_after(page, "Cancel requested", "confirming the cancel")
            live.wait(WAIT)
            assert 0 == live.returncode
            assert "cancelled" == WorkflowDB(recorded.db).get_run("mon-browser-live")["status"]  # type: ignore[index]
            deadline = time.monotonic() + WAIT
            while not page.get_by_text("🚫 cancelled   mon-browser-live").count():
                assert time.monotonic() < deadline, "the page never showed the cancel"
                page.get_by_role("button", name="Refresh now").click()
                settle(page)

            # a failed run, picked by its row's checkbox: its timeline, its error as text;
            # nothing stored ran
            click_row(page, "mon-failed")
            page.get_by_text("❌ failed   mon-failed").wait_for()
            assert "✖ node_error" in cells(page.get_by_role("tabpanel").filter(
                has=page.locator('[data-testid="stDataFrame"]')).first, "node_error")
            assert page.locator('[data-testid="stCode"]').filter(has_text=XSS_ERROR).count()
            assert 0 == page.locator("b", has_text="boom").count()
            assert 0 == page.locator('img[src="x"]').count()
            shoot(page, pictures, "monitor.png")

            open_run(page, "mon-done")
            page.get_by_role("tab", name="Gantt").click()
            page.wait_for_selector('[data-testid="stVegaLiteChart"]')
            settle(page)
            shoot(page, pictures, "monitor-gantt.png")
            page.get_by_role("tab", name="Store Inspector").click()
            settle(page)
            assert 0 == page.locator("script", has_text="alert(1)").count()
            shoot(page, pictures, "monitor-store.png")

            open_run(page, "mon-nested")
            page.get_by_role("tab", name="Graph").click()
            page.wait_for_selector('[data-testid="stGraphVizChart"] svg')
            settle(page)
            shoot(page, pictures, "monitor-graph.png")
        finally:
            browser.close()
    assert [] == dialogs
