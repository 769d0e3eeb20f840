"""faceptor_hf.demo in a real browser: headless Chromium (Debian's ``chromium``, driven by playwright) opens the served
app, which loads with no request leaving 127.0.0.1 and shows the UNTRAINED banner; a shipped portrait uploaded in
the Analyze tab gives the per-face table the pipeline's result makes (read from the page) and an overlay; a
screenshot is saved under the test's tmp folder."""

import os
import socket
import urllib.parse

import pytest
import torch
from playwright import sync_api

from faceptor_hf import FaceAnalysisPipeline, FaceptorImageProcessor, FaceptorModel
from faceptor_hf.demo import build_demo, demo_theme, face_rows
from faceptor_hf.visualization import UNTRAINED_BANNER

from conftest import IMAGES, SIX_TASKS, tiny_config

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); playwright's bundled browser is not used
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PORTRAIT = str(IMAGES / "astronaut.png")
TIMEOUT_MS = 120_000  # generous: CI shares 2 cores between the browser, the server and the model

pytestmark = pytest.mark.slow  # a Gradio server and a browser


@pytest.fixture(scope="module")
def pipe():
    """An untrained tiny six-task model, as `faceptor-hf demo --random-weights` gives."""
    torch.manual_seed(0)
    return FaceAnalysisPipeline(model=FaceptorModel(tiny_config(tasks=SIX_TASKS)).eval(),
                                image_processor=FaceptorImageProcessor())


@pytest.fixture(scope="module")
def demo_url(pipe, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        demo = build_demo(pipe)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    theme=demo_theme())
        yield demo.local_url
        demo.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_analyze_tab_in_chromium(browser, demo_url, pipe, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(demo_url)
    assert page.locator("#untrained-banner").inner_text().strip() == UNTRAINED_BANNER

    page.locator("#analyze-input input[type=file]").set_input_files(PORTRAIT)
    page.locator("#analyze-input img").wait_for()  # the upload finished and is shown
    page.locator("#analyze-button").click()
    first_cell = page.locator("#analyze-table tbody tr td").first
    sync_api.expect(first_cell).to_have_text("1", timeout=TIMEOUT_MS)
    page.locator("#analyze-overlay img").wait_for()
    page.screenshot(path=tmp_path / "analyze.png", full_page=True, timeout=TIMEOUT_MS)

    headers = [cell.text_content().strip() for cell in page.locator("#analyze-table thead th span.header").all()]
    rows = [[cell.text_content().strip() for cell in row.locator("td").all()]
            for row in page.locator("#analyze-table tbody tr").all()]
    expected_headers, expected_rows = face_rows(pipe(PORTRAIT))
    assert headers == expected_headers and len(rows) == len(expected_rows) == 1
    number, score, box, quality, *summaries = rows[0]
    assert (number, box) == ("1", expected_rows[0][2])
    assert float(score) == pytest.approx(expected_rows[0][1]) and float(quality) == pytest.approx(expected_rows[0][3])
    assert summaries == expected_rows[0][4:] and summaries[0].startswith("age ")
    assert (tmp_path / "analyze.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the page works offline: every request went to the demo's own server
    demo_host = urllib.parse.urlparse(demo_url).netloc
    assert requests and all(urllib.parse.urlparse(url).netloc == demo_host for url in requests), requests
    page.close()
