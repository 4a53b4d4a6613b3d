"""End to end in headless Chromium: type a query and see results, drop an image and see similar items and labels,
stale answers, keyboard-only upload, phone width, thumbnail placeholders.

Drives Debian's ``chromium`` (``scripts/install_browser.sh`` installs it) through Playwright, against the
real server (uvicorn on 127.0.0.1, a free port). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from _search_helpers import LocalServer, make_images, model, model_dir
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher
from polymodal.search.server import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"chromium not found at {CHROMIUM}: run scripts/install_browser.sh (Debian: apt-get install chromium)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    paths = make_images(tmp / "imgs", 3)
    update_index(model(0), tmp / "idx", sources_from_images([tmp / "imgs"]), sync=True, model_dir=model_dir(0),
                 labels=["a red shape", "a green shape", "a blue shape"])
    searcher = Searcher(SearchIndex.open(tmp / "idx"), model(0))
    with LocalServer(create_app(searcher)) as srv:
        yield srv.url, paths, searcher
    searcher.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport=DESKTOP)
        yield ctx
        ctx.close()


@pytest.fixture
def page(browser_context):
    pg = browser_context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    pg.close()


def open_page(page, base: str, viewport: dict | None = None) -> None:
    if viewport:
        page.set_viewport_size(viewport)
    page.goto(base + "/")
    wait_js(page, "document.getElementById('info').textContent.includes('9 items')")


def pump_until(page, done, what: str) -> None:
    """Let Playwright deliver browser events until ``done()`` holds (a deadline only against hanging)."""
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        page.wait_for_timeout(50)


def wait_js(page, expression: str) -> None:
    """Wait until a JavaScript expression is true in the page.

    Not ``page.wait_for_function``: that polls with ``eval`` inside the page, which the page's own
    Content-Security-Policy (no 'unsafe-eval') rightly refuses; ``evaluate`` runs through the debugger.
    """
    pump_until(page, lambda: page.evaluate(f"() => Boolean({expression})"), expression)


def results_title(page) -> str:
    return page.text_content("#results-title") or ""


def test_type_a_query_see_results_upload_an_image_see_labels(server, page):
    base, paths, searcher = server
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    open_page(page, base)

    # Text search: results in the same order and with the same scores as the API.
    page.fill("#q", "a red circle")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    shown = page.eval_on_selector_all("#results .hit", "els => els.map(e => [+e.dataset.id, "
                                      "e.querySelector('.score').textContent])")
    api = httpx.get(base + "/api/search", params={"q": "a red circle"}).json()["hits"]
    assert [i for i, _ in shown] == [h["id"] for h in api]
    assert [s for _, s in shown] == [f"{h['score']:.3f}" for h in api]
    wait_js(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
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
    wait_js(page, "document.getElementById('results-title').textContent.startsWith('Similar')")
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


# --- stale answers (item 14) ------------------------------------------------------------------------


def test_a_slow_querys_results_never_overwrite_a_newer_querys(server, page, monkeypatch):
    base, _, searcher = server
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    real = searcher.by_text

    def by_text(text, **kwargs):
        if text == "slow query":  # the server holds this one until the test lets it go
            entered.set()
            assert release.wait(60)
            try:
                return real(text, **kwargs)
            finally:
                returned.set()
        return real(text, **kwargs)

    monkeypatch.setattr(searcher, "by_text", by_text)
    ended: list[str] = []
    page.on("requestfinished", lambda r: ended.append(r.url))
    page.on("requestfailed", lambda r: ended.append(r.url))
    open_page(page, base)
    try:
        page.fill("#q", "slow query")
        page.press("#q", "Enter")
        assert entered.wait(30)
        page.fill("#q", "a green square")
        page.press("#q", "Enter")
        wait_js(page, "document.getElementById('results-title').textContent.includes('a green square')")
    finally:
        release.set()
    assert returned.wait(30)
    # The slow answer has reached the browser (or its request was cancelled); then one more round trip,
    # so that a page which renders stale answers has had every chance to do so.
    pump_until(page, lambda: any("slow+query" in u for u in ended), "the slow request ended in the browser")
    page.evaluate("() => fetch('/api/info').then(r => r.json())")
    assert "a green square" in results_title(page)
    shown = page.eval_on_selector_all("#results .hit", "els => els.map(e => +e.dataset.id)")
    assert shown == [h["id"] for h in httpx.get(base + "/api/search", params={"q": "a green square"}).json()["hits"]]


# --- keyboard and labels (item 15) ------------------------------------------------------------------


ACCESSIBLE_NAME = """el => (el.getAttribute('aria-label') || (el.labels && el.labels.length && el.labels[0].textContent)
    || (el.getAttribute('aria-labelledby') && document.getElementById(el.getAttribute('aria-labelledby')).textContent)
    || el.textContent || '').trim()"""


def test_image_upload_works_with_the_keyboard_alone(server, page):
    base, paths, _ = server
    # Listening turns on file-chooser interception with a message that gets no reply; the round trips of
    # open_page come after it on the same channel, so it is in force before Enter is pressed.
    page.on("filechooser", lambda _chooser: None)
    open_page(page, base)
    target = paths[2]
    found = None
    for _ in range(15):  # Tab through the page until the upload control has the focus
        page.keyboard.press("Tab")
        focused = page.evaluate(f"() => {{ const el = document.activeElement; return [el.tagName, el.type || '', "
                                f"({ACCESSIBLE_NAME})(el)]; }}")
        if focused[0] in ("BUTTON", "INPUT") and focused[1] != "submit" and "image" in focused[2].lower():
            found = focused
            break
    assert found is not None, "no focusable, labelled control for the image upload"
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(target))
    wait_js(page, "document.getElementById('results-title').textContent.startsWith('Similar')")
    first = page.eval_on_selector("#results .hit .name", "e => e.title")
    assert first == str(target)
    page.wait_for_selector("#labels li.label")
    # Every form control has a name a screen reader can say.
    unnamed = page.eval_on_selector_all("input:not([type=hidden]):not([hidden]), select, button",
                                        f"els => els.filter(el => !({ACCESSIBLE_NAME})(el)).map(el => el.id)")
    assert unnamed == []


# --- phone width, placeholders, zero-shot failures (items 13, 16) -------------------------------------


LONG_LABELS = [{"label": name, "score": score} for name, score in [
    ("a very long zero-shot label that goes on and on about a red rounded shape", 0.41),
    ("Pneumonoultramicroscopicsilicovolcanoconiosis-as-one-unbreakable-word", 0.22),
    *[(f"label number {i} with several words", 0.37 / 8) for i in range(8)],
]]


def fulfil_json(status: int, body: dict):
    return lambda route: route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


def upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
def test_no_sideways_scrolling_with_long_labels(server, page, viewport):
    base, paths, _ = server
    page.route("**/api/zeroshot*", fulfil_json(200, {"labels": LONG_LABELS, "count": 600}))
    open_page(page, base, viewport)
    page.fill("#q", "a red circle with a very long query text that keeps going")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    upload(page, paths[0])
    page.wait_for_selector("#labels li.label")
    wait_js(page, "document.getElementById('results-title').textContent.startsWith('Similar')")
    wait_js(page, "[...document.querySelectorAll('#results img')].every(i => i.complete)")
    page.screenshot(path=str(ARTIFACTS / f"search-{viewport['width']}.png"), full_page=True)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways at {viewport['width']} px: {widths}"
    right = page.evaluate("() => Math.max(...[...document.querySelectorAll('body *')].map(e => "
                          "e.getBoundingClientRect().right))")
    assert right <= viewport["width"], right


def test_thumbnails_have_placeholders(server, page):
    base = server[0]
    page.route("**/thumbnail", lambda route: route.fulfill(status=404, content_type="application/json",
                                                           body='{"error": "gone", "status": 404}'))
    open_page(page, base)
    page.fill("#q", "a blue square")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit")
    hits = page.eval_on_selector_all("#results .hit", "els => els.length")
    wait_js(page, f"document.querySelectorAll('#results .hit .thumb.missing .placeholder').length === {hits}")
    boxes = page.eval_on_selector_all("#results .hit .thumb", "els => els.map(e => { const r = "
                                      "e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; })")
    assert boxes == [[128, 128]] * hits
    page.screenshot(path=str(ARTIFACTS / "search-placeholders.png"), full_page=True)
    assert page.eval_on_selector_all("#results img", "els => els.length") == 0  # no broken-image icons


def test_similar_items_show_when_zeroshot_fails(server, page):
    base, paths, _ = server
    message = "zero-shot labels are still being embedded: 10 of 600 ready; try again shortly"
    page.route("**/api/zeroshot*", fulfil_json(503, {"error": message, "status": 503}))
    open_page(page, base)
    upload(page, paths[6])
    wait_js(page, "document.getElementById('results-title').textContent.startsWith('Similar') || "
                           "document.getElementById('status').classList.contains('error')")
    assert results_title(page).startswith("Similar")
    assert page.eval_on_selector("#results .hit .name", "e => e.title") == str(paths[6])
    wait_js(page, "document.getElementById('labels-status').textContent.includes('still being embedded')")
