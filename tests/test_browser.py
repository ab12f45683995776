"""End to end in a real browser: `streamlit run app.py` on a free localhost port, Debian's Chromium driven by
Playwright (never a browser Playwright downloads). Launches a micro run from the Run page, waits for it, and checks
that every page shows its chart, table or probes. Marked ``browser``: `.ci/run` runs these (`make test-browser`).

Screenshots go to $QRU_SCREENSHOTS (default: the test's tmp folder). With $QRU_SCREENSHOT_SEED naming a store, its
runs are copied in after the micro run and the page screenshots show them (how docs/ is made, see README).
"""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
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


@pytest.fixture
def spy():
    """A local web server that records the path of every request it gets: (host:port, paths)."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{web.server_address[1]}", seen
    web.shutdown()
    web.server_close()


def _main_text(page, part: str = "stMain") -> str:
    return page.get_by_test_id(part).inner_text().replace("\u2060", "")  # the word joiners of qru.views.text


def test_an_import_labelled_with_markdown_and_html_shows_as_text_and_fetches_nothing(server, browser, spy, tmp_path):
    """Issue 18: Markdown and HTML in an import's label (pointing at a local server) are shown as text on every page
    that shows the label; nothing links to that server and the browser fetches nothing from it."""
    from test_interop import _ou_eval

    url, store = server
    host, seen = spy
    name = f"x ![t](http://{host}/x.png) [docs](http://{host}/y) <img src=http://{host}/z.png> **bold** http://{host}/b"
    evals = _ou_eval(tmp_path / "evals", 0.1, 0.3, 5.0)
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(f"{url}/bring_your_own")
    _settle(page)
    page.get_by_label("One evaluation per line").fill(f"unlearned@32={evals}")
    page.keyboard.press("Control+Enter")
    page.get_by_label("Label", exact=True).fill(name)
    page.keyboard.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Import", exact=True).click()  # a qru import job, followed by the job panel
    page.get_by_text("This import is already in the store").wait_for(timeout=120_000)
    _settle(page)
    label = f"imported open-unlearning: {name} (unlearned@32; muse prompts)"
    linked = ("() => [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => /href|src|action|"
              f"poster|data|style/.test(a.name) && a.value.includes('{host}'))).map(e => e.outerHTML.slice(0, 200))")
    bold = "() => [...document.querySelectorAll('strong, b')].filter(e => e.textContent.trim() === 'bold').length"
    for where in ("bring_your_own", "run", "metrics", "deltas", "probes", "findings"):
        if where != "bring_your_own":
            page.goto(f"{url}/{where}")
            _settle(page)
        part = "stApp" if where == "probes" else "stMain"  # probes: the label is the run picker's choice
        deadline = time.time() + 60
        while label not in _main_text(page, part) and time.time() < deadline:
            page.wait_for_timeout(500)
        # nothing fetched from the server, no link, image or anything else pointing at it, no bold text
        assert (seen, page.evaluate(linked), page.evaluate(bold)) == ([], [], 0), where
        assert label in _main_text(page, part), (where, _main_text(page, part)[:3000])
    page.close()
