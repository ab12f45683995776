"""End to end in a real browser: `streamlit run app.py` on a free localhost port, Debian's Chromium driven by
Playwright (never a browser Playwright downloads). Launches a micro run from the Run page, waits for it, and checks
that every page shows its chart, table or probes. Marked ``browser``: `.ci/run` runs these (`make test-browser`).

Screenshots go to $QRU_SCREENSHOTS (default: the test's tmp folder). With $QRU_SCREENSHOT_SEED naming a store, its
runs are copied in after the micro run and the page screenshots show them (how docs/ is made, see README).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(micro_cache, micro_models, store_copy):
    """A dashboard on a store that holds the micro models but no runs yet."""
    store = store_copy(micro_cache, ("corpus", "models"), name="browser-store")
    port = _free_port()
    log = open(store / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                            cwd=ROOT, env={**os.environ, "QRU_CACHE": str(store)}, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"streamlit did not start: {(store / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, store
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install chromium chromium-driver (done by .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _settle(page, timeout: float = 90) -> None:
    """Wait until the script run finished (streamlit's running indicator gone)."""
    page.wait_for_selector("[data-testid=stApp]", timeout=timeout * 1000)
    page.wait_for_timeout(1200)
    deadline = time.time() + timeout
    while page.get_by_test_id("stStatusWidget").count() and time.time() < deadline:
        page.wait_for_timeout(300)
    page.wait_for_timeout(500)
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").first.inner_text()


def _shot(page, name: str) -> None:
    """Screenshot of the whole page from the top into $QRU_SCREENSHOTS (default .pytest-screenshots/)."""
    folder = Path(os.environ.get("QRU_SCREENSHOTS") or ROOT / ".pytest-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    for box in page.locator("[data-testid=stMain], [data-testid=stAppViewContainer]").all():
        box.evaluate("e => e.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_teaching_page_works_without_any_run(server, browser):
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    page.goto(f"{url}/teaching")  # a fresh server, an empty store, no model
    _settle(page)
    # a cold server's first script run can start after _settle's first look: wait for the second chart itself
    page.locator("[data-testid=stPlotlyChart]").nth(1).wait_for(timeout=90_000)
    _settle(page)
    assert page.locator("[data-testid=stPlotlyChart]").count() == 2
    flips = page.get_by_test_id("stMetric").first.inner_text()
    assert page.get_by_text("Page not found").count() == 0 and page.url.endswith("/teaching")
    page.get_by_test_id("stSlider").first.get_by_role("slider").focus()
    for _ in range(5):  # 1e-5 -> 1e-3 on the 1-2-5 log scale
        page.keyboard.press("ArrowRight")
    _settle(page)
    assert page.get_by_test_id("stMetric").first.inner_text() != flips  # the counts follow the slider
    assert page.get_by_role("button", name="See this in a stored run").is_disabled()
    _shot(page, "teaching")
    page.close()


def test_launch_a_run_from_the_run_page_and_read_every_page(server, browser):
    url, store = server
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(f"{url}/metrics")  # a page's own URL first, on a fresh server: still inside the frame
    _settle(page)
    assert page.get_by_text("Page not found").count() == 0 and page.url.endswith("/metrics")
    sidebar = page.get_by_test_id("stSidebar").inner_text()
    assert "Run store" in sidebar and "Weight deltas" in sidebar and "app" not in sidebar.split()
    page.goto(url)
    _settle(page)
    assert page.get_by_role("button", name="Run the demo set").count() == 1  # empty store: the demo offer
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="embedded micro (seconds)").click()
    _settle(page)
    page.get_by_role("button", name="Run (").click()
    page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)  # live progress of the launched job
    _shot(page, "run-progress")
    page.get_by_text("finished: its runs are in the sidebar").wait_for(timeout=300_000)
    _settle(page)
    assert "GA+GDR full" in page.get_by_test_id("stSidebar").inner_text()

    seed = os.environ.get("QRU_SCREENSHOT_SEED")
    if seed:  # newer than the micro run, so the pages pick them by default
        shutil.copytree(Path(seed) / "runs", store / "runs", dirs_exist_ok=True, copy_function=shutil.copy)
    for name, check in (("deltas", "[data-testid=stPlotlyChart]"), ("metrics", "[data-testid=stDataFrame]"),
                        ("probes", "table.qru-probes")):
        page.goto(f"{url}/{name}")
        page.locator(check).first.wait_for(timeout=60_000)  # raises if the page never shows it
        _settle(page)
        _shot(page, name)
    page.goto(f"{url}/teaching")
    _settle(page)
    page.get_by_role("button", name="See this in a stored run").click()  # runs are picked now
    page.locator("[data-testid=stPlotlyChart]").first.wait_for(timeout=60_000)
    _settle(page)
    assert "Weight deltas against the quantization step" in page.get_by_test_id("stMain").inner_text()
    page.close()
