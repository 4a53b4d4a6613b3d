"""End to end in headless Chromium: type a query and see results, drop an image and see similar items and labels.

Drives Debian's ``chromium`` (``scripts/install_browser.sh`` installs it) through Playwright, against the
real server (uvicorn on 127.0.0.1, a free port). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from _search_helpers import make_images, model, model_dir
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher
from polymodal.search.server import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"chromium not found at {CHROMIUM}: run scripts/install_browser.sh (Debian: apt-get install chromium)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    paths = make_images(tmp / "imgs", 3)
    update_index(model(0), tmp / "idx", sources_from_images([tmp / "imgs"]), sync=True, model_dir=model_dir(0),
                 labels=["a red shape", "a green shape", "a blue shape"])
    searcher = Searcher(SearchIndex.open(tmp / "idx"), model(0))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", paths, searcher
    srv.should_exit = True
    thread.join(10)
    searcher.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={"width": 1100, "height": 800})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        yield pg
        ctx.close()


def test_type_a_query_see_results_upload_an_image_see_labels(server, page):
    base, paths, searcher = server
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    page.goto(base + "/")
    page.wait_for_function("document.getElementById('info').textContent.includes('9 items')")

    # Text search: results in the same order and with the same scores as the API.
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    shown = page.eval_on_selector_all("#results .hit", "els => els.map(e => [+e.dataset.id, "
                                      "e.querySelector('.score').textContent])")
    api = httpx.get(base + "/api/search", params={"q": "a red circle"}).json()["hits"]
    assert [i for i, _ in shown] == [h["id"] for h in api]
    assert [s for _, s in shown] == [f"{h['score']:.3f}" for h in api]
    page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "search-text.png"), full_page=True)

    # Drag and drop an image: similar items (itself first) and zero-shot labels.
    target = paths[7]
    b64 = base64.b64encode(target.read_bytes()).decode()
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: "image/png"}));
            const drop = document.getElementById("drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                drop.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
            }
        }""",
        [b64, target.name],
    )
    page.wait_for_selector("#labels li.label")
    page.wait_for_function("document.getElementById('results-title').textContent.startsWith('Similar')")
    labels = page.eval_on_selector_all("#labels li.label .label-name", "els => els.map(e => e.textContent)")
    assert sorted(labels) == ["a blue shape", "a green shape", "a red shape"]
    want = [r.label for r in searcher.zeroshot(target)]
    assert labels == want
    first = page.eval_on_selector("#results .hit", "e => [e.querySelector('.name').title, "
                                  "e.querySelector('.score').textContent]")
    assert first == [str(target), "1.000"]
    assert page.is_visible("#upload-preview")
    page.screenshot(path=str(ARTIFACTS / "search-image.png"), full_page=True)

    # The file picker path, with a file that is not an image: the server's message is shown.
    bad = target.parent / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "not an accepted image type" in page.text_content("#status")
    page.screenshot(path=str(ARTIFACTS / "search-error.png"), full_page=True)

    assert not errors or all("415" in e for e in errors), errors  # the refused upload logs one 415
    outside = [u for u in requests if not u.startswith((base, "blob:", "data:"))]
    assert outside == [], f"the page fetched something outside the server: {outside}"
