"""The search server's HTTP API: every endpoint, parity with the library, and hostile requests."""

from __future__ import annotations

import io
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _search_helpers import COLOURS, draw, make_images, model, model_dir
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher
from polymodal.search.server import ServerConfig, create_app
from polymodal.search.uploads import UploadLimits, sniff_format

LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)
BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    paths = make_images(tmp / "imgs", 3)
    update_index(model(0), tmp / "idx", sources_from_images([tmp / "imgs"]), sync=True, model_dir=model_dir(0),
                 labels=["red", "green", "blue"])
    searcher = Searcher(SearchIndex.open(tmp / "idx"), model(0))
    app = create_app(searcher, ServerConfig(uploads=LIMITS, max_k=50, reload_every=0.0))
    # The Host a browser sends for http://127.0.0.1:8000/: the server answers only its own names.
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield client, searcher, paths, tmp
    searcher.close()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def assert_json_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str)
    assert "Traceback" not in r.text and 'File "' not in r.text
    for w in words:
        assert w in body["error"]


# --- page and spec ---------------------------------------------------------------------------------


def test_page_and_static_files_have_no_external_resources(setup):
    client = setup[0]
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and s.text
    for text in (r.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_openapi_spec_lists_every_endpoint(setup):
    spec = setup[0].get("/openapi.json").json()
    assert {"/api/info", "/api/search", "/api/search/image", "/api/zeroshot", "/api/items/{item_id}",
            "/api/items/{item_id}/thumbnail"} <= set(spec["paths"])
    assert "post" in spec["paths"]["/api/zeroshot"]


def test_info(setup):
    body = setup[0].get("/api/info").json()
    assert body["count"] == 9 and body["model_id"] == model(0).model_id and body["ann"]["kind"] == "flat"
    assert body["default_labels"] == ["red", "green", "blue"] and body["labels"] == ["blue", "green", "red"]


# --- search ----------------------------------------------------------------------------------------


def test_text_search_matches_the_library(setup):
    client, searcher = setup[:2]
    body = client.get("/api/search", params={"q": "a red heart", "k": 5}).json()
    want = searcher.by_text("a red heart", k=5)
    assert [h["id"] for h in body["hits"]] == [h.id for h in want]
    np.testing.assert_allclose([h["score"] for h in body["hits"]], [h.score for h in want], rtol=1e-6)
    assert body["hits"][0]["thumbnail"] == f"/api/items/{want[0].id}/thumbnail"
    green = client.get("/api/search", params={"q": "x", "label": "green"}).json()["hits"]
    assert len(green) == 3 and all(h["labels"] == ["green"] for h in green)


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "x", "k": 0}, {"q": "x", "k": 51}, {"q": "x", "k": "many"}])
def test_text_search_bad_parameters(setup, params):
    assert_json_error(setup[0].get("/api/search", params=params), 422, "invalid request")


def test_image_search_finds_the_uploaded_image(setup):
    client, _, paths = setup[:3]
    r = client.post("/api/search/image", files={"file": ("q.png", paths[4].read_bytes(), "image/png")},
                    params={"k": 3})
    hits = r.json()["hits"]
    assert r.status_code == 200 and hits[0]["path"] == str(paths[4]) and hits[0]["score"] == pytest.approx(1, abs=1e-4)


def test_zeroshot_matches_the_model(setup):
    client, _, paths = setup[:3]
    data = paths[0].read_bytes()
    r = client.post("/api/zeroshot", files={"file": ("q.png", data, "image/png")}, params={"labels": "cat,dog,red"})
    got = r.json()["labels"]
    want = model(0).zeroshot([Image.open(io.BytesIO(data)).convert("RGB")], ["cat", "dog", "red"])[0]
    assert [g["label"] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w[1] for w in want], rtol=1e-5)
    assert sum(g["score"] for g in got) == pytest.approx(1.0)
    default = client.post("/api/zeroshot", files={"file": ("q.png", data, "image/png")}).json()["labels"]
    assert sorted(d["label"] for d in default) == ["blue", "green", "red"]


# --- zero-shot under load: cached label embeddings, bounded passes, no blocking (items 8 and 13) -----------


class LabelSpy:
    """Stands in for the text tower on prompts of labels named ``zz...``: records each pass, can hold it at
    an event, and answers with fixed random unit vectors (the real tower would take minutes for 512 labels);
    every other text goes to the real tower."""

    def __init__(self, m, *, hold: bool = False) -> None:
        self.real = m.encode_text
        self.dim = m.config.embed_dim
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, texts, *, normalize: bool = True, **kwargs):
        texts = list(texts)
        if not any("zz" in t for t in texts):
            return self.real(texts, normalize=normalize, **kwargs)
        self.calls.append(texts)
        self.entered.set()
        assert self.release.wait(120), "the test never released the label pass"
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def prompts(self) -> list[str]:
        return [t for call in self.calls for t in call]


def in_thread(fn) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("result", fn()), daemon=True)
    t.start()
    return t, out


def test_a_512_label_zeroshot_does_not_block_a_text_query(setup, monkeypatch):
    client, searcher, paths = setup[:3]
    spy = LabelSpy(searcher.model, hold=True)
    monkeypatch.setattr(searcher.model, "encode_text", spy)
    labels = ",".join(f"zz{i}" for i in range(512))
    data = paths[0].read_bytes()
    zs, zs_out = in_thread(lambda: client.post("/api/zeroshot", params={"labels": labels},
                                               files={"file": ("q.png", data, "image/png")}))
    try:
        assert spy.entered.wait(60), "the zero-shot request never reached the text tower"
        # A text query never seen before needs the text tower too; it must not wait for the 512 labels.
        q, q_out = in_thread(lambda: client.get("/api/search", params={"q": "a never seen query 8"}))
        q.join(60)
        assert not q.is_alive(), "the text query waited behind the zero-shot label pass"
        assert q_out["result"].status_code == 200 and q_out["result"].json()["hits"]
        assert client.get("/api/info").status_code == 200
        assert zs.is_alive(), "the zero-shot request finished early: the test proves nothing"
    finally:
        spy.release.set()
        zs.join(120)
    got = zs_out["result"].json()["labels"]
    assert zs_out["result"].status_code == 200 and len(got) == 512
    assert sorted(spy.prompts()) == sorted({t for t in spy.prompts()})  # each prompt embedded once
    # Work per text-tower pass is bounded: 512 labels go through in small passes, not one 3,584-prompt pass.
    assert len(spy.calls) > 1 and max(len(c) for c in spy.calls) <= 256


def test_the_text_tower_runs_in_one_thread_with_the_cores_and_request_threads_use_one(setup, monkeypatch):
    # Two OpenMP teams on two cores make every text-tower pass 2-3x slower (polymodal.core.threads).
    import faiss

    searcher = setup[1]
    passes, searches = [], []
    encode, search = searcher.model.encode_text, searcher.index.search

    def spy_encode(texts, **kwargs):
        if any(t.startswith("thread probe") for t in texts):
            passes.append((threading.current_thread(), torch.get_num_threads()))
        return encode(texts, **kwargs)

    def spy_search(*args, **kwargs):
        searches.append((threading.current_thread(), torch.get_num_threads(), faiss.omp_get_max_threads()))
        return search(*args, **kwargs)

    monkeypatch.setattr(searcher.model, "encode_text", spy_encode)
    monkeypatch.setattr(searcher.index, "search", spy_search)
    app = create_app(searcher, ServerConfig(uploads=LIMITS, model_threads=2))
    with TestClient(app, base_url=BASE) as client:
        for i in range(4):
            assert client.get("/api/search", params={"q": f"thread probe {i}"}).status_code == 200
    assert len(passes) == 4 and len({th for th, _ in passes}) == 1
    assert passes[0][0].name == "polymodal-text-lane" and {n for _, n in passes} == {2}
    assert len(searches) == 4 and {(n, m) for _, n, m in searches} == {(1, 1)}
    assert passes[0][0] not in {th for th, *_ in searches}


def test_open_searcher_loads_the_model_single_threaded_and_keeps_the_cores_for_the_text_lane(setup, monkeypatch):
    from polymodal.search import server

    tmp = setup[3]
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(server.Searcher, "open", classmethod(lambda cls, *a: seen.append(torch.get_num_threads()) or "S"))
    try:
        searcher, config = server.open_searcher(tmp / "idx", config=ServerConfig(uploads=LIMITS))
    finally:
        torch.set_num_threads(before)
    assert searcher == "S" and seen == [1] and config.model_threads == before and config.uploads is LIMITS


def test_label_embeddings_are_cached_per_label(setup, monkeypatch):
    client, searcher, paths = setup[:3]
    spy = LabelSpy(searcher.model)
    monkeypatch.setattr(searcher.model, "encode_text", spy)
    data = paths[0].read_bytes()

    def zeroshot(labels: str) -> list[str]:
        r = client.post("/api/zeroshot", params={"labels": labels}, files={"file": ("q.png", data, "image/png")})
        assert r.status_code == 200, r.text
        return [x["label"] for x in r.json()["labels"]]

    zeroshot("zzcat,zzdog,zzcow")
    per_label = len(spy.prompts()) // 3
    assert per_label == len(searcher.templates)
    spy.calls.clear()
    zeroshot("zzdog,zzcow,zzhen")  # another list sharing two labels: only the new label is embedded
    assert {t for t in spy.prompts()} == {t.replace("{c}", "zzhen") for t in searcher.templates}
    spy.calls.clear()
    assert sorted(zeroshot("zzhen,zzcow,zzdog,zzcat")) == ["zzcat", "zzcow", "zzdog", "zzhen"]
    assert spy.calls == []


def test_more_than_512_index_labels_still_give_zeroshot_and_uploads(tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.mktemp("many-labels")
    make_images(tmp / "imgs", 1)
    many = [f"zz label {i}" for i in range(600)]
    update_index(model(0), tmp / "idx", sources_from_images([tmp / "imgs"]), sync=True, labels=many)
    searcher = Searcher(SearchIndex.open(tmp / "idx"), model(0))
    spy = LabelSpy(searcher.model, hold=True)
    monkeypatch.setattr(searcher.model, "encode_text", spy)
    app = create_app(searcher, ServerConfig(uploads=LIMITS))
    data = (tmp / "imgs" / "red" / "000.png").read_bytes()
    try:
        with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
            assert spy.entered.wait(60), "the server did not start embedding its 600 default labels"
            # While they are being embedded: a clear 503 for zero-shot, and image search still works.
            r = client.post("/api/zeroshot", files={"file": ("q.png", data, "image/png")})
            assert_json_error(r, 503, "600")
            assert int(r.headers["retry-after"]) > 0
            r = client.post("/api/search/image", files={"file": ("q.png", data, "image/png")})
            assert r.status_code == 200 and r.json()["hits"]
            spy.release.set()
            deadline = time.monotonic() + 120
            while client.get("/api/info").json()["zeroshot_labels_ready"] < 600:
                assert time.monotonic() < deadline, "the default labels were never embedded"
                time.sleep(0.05)
            r = client.post("/api/zeroshot", params={"top": 5}, files={"file": ("q.png", data, "image/png")})
            assert r.status_code == 200, r.text
            body = r.json()
            assert len(body["labels"]) == 5 and body["count"] == 600
            assert {x["label"] for x in body["labels"]} <= set(many)
    finally:
        spy.release.set()
        searcher.close()


# --- items -----------------------------------------------------------------------------------------


def test_item_and_thumbnail_by_id(setup):
    client, searcher = setup[:2]
    item = searcher.index.items()[0]
    meta = client.get(f"/api/items/{item.id}").json()
    assert meta["path"] == item.path and meta["labels"] == item.labels
    r = client.get(f"/api/items/{item.id}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (48, 48)
    assert_json_error(client.get("/api/items/999999/thumbnail"), 404, "no item")
    assert_json_error(client.get("/api/items/-1"), 404)


@pytest.mark.parametrize("url", [
    "/api/items/../../../../etc/passwd",
    "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
    "/api/items/%2e%2e%2fitems.sqlite/thumbnail",
    "/api/items/1%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
    "/api/items/etc/passwd/thumbnail",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e%2fserver.py",
    "/static/index.html/../../server.py",
    "/static/server.py",
    "/items.sqlite",
    "/CURRENT",
])
def test_path_traversal_never_reaches_files(setup, url):
    r = setup[0].get(url)
    assert r.status_code in (404, 422), (url, r.status_code)
    assert r.headers["content-type"].startswith("application/json")
    assert "root:" not in r.text and "import" not in r.text and "SQLite" not in r.text


@pytest.mark.parametrize("raw", [
    "9223372036854775808",  # 2**63: one past SQLite's INTEGER, was a 500 (OverflowError binding it)
    "18446744073709551616", "-9223372036854775809", "1" + "0" * 40, "-1", "0", "1e3", "0x10", "1.5", "%20",
])
@pytest.mark.parametrize("suffix", ["", "/thumbnail"])
def test_every_bad_item_id_is_a_4xx(setup, raw, suffix):
    r = setup[0].get(f"/api/items/{raw}{suffix}")
    assert 400 <= r.status_code < 500, (raw, r.status_code, r.text)
    assert_json_error(r, r.status_code)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers() | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30))
def test_no_item_id_makes_a_500(setup, raw):
    from urllib.parse import quote

    r = setup[0].get(f"/api/items/{quote(str(raw), safe='')}")
    assert r.status_code < 500, (raw, r.status_code, r.text)


def test_library_get_of_an_out_of_range_id_is_none(setup):
    index = setup[1].index
    assert index.get(2**63) is None and index.thumbnail(-(2**63) - 1) is None and index.get(10**30) is None


# --- uploads ---------------------------------------------------------------------------------------


def test_oversized_upload_is_refused(setup):
    client = setup[0]
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000
    assert_json_error(client.post("/api/search/image", files={"file": ("big.png", big, "image/png")}), 413, "limit")

    def chunks():  # a valid multipart body without Content-Length: the limit must hold while it streams in
        yield (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n")
        for _ in range(100):
            yield b"\0" * 10_000
        yield b"\r\n--zz--\r\n"

    r = client.post("/api/zeroshot", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert_json_error(r, 413, "limit")


def test_too_many_pixels_is_refused_before_decoding(setup):
    # 4000 x 4000 one-bit PNG: a few KB on the wire, 16 Mpx (over the 1 Mpx limit) once decoded.
    data = png(Image.new("1", (4000, 4000)))
    assert len(data) < LIMITS.max_bytes
    r = setup[0].post("/api/search/image", files={"file": ("bomb.png", data, "image/png")})
    assert_json_error(r, 413, "4000x4000")


def test_concurrent_uploads_are_decoded_at_most_max_decodes_at_a_time(setup, monkeypatch):
    import polymodal.search.server as server_mod

    searcher, paths = setup[1], setup[2]
    uploads = 6
    state = {"active": 0, "most": 0}
    cond = threading.Condition()
    real = server_mod.check_upload

    def counting_decode(*args, **kwargs):
        with cond:
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
            cond.notify_all()
            # Hold this decode until a third one runs beside it (unbounded: at once) or a while has passed
            # (bounded: it never comes). The wait decides only how long the test takes, never its outcome.
            cond.wait_for(lambda: state["active"] > 2, timeout=1.5)
        try:
            return real(*args, **kwargs)
        finally:
            with cond:
                state["active"] -= 1

    monkeypatch.setattr(server_mod, "check_upload", counting_decode)
    app = create_app(searcher, ServerConfig(uploads=UploadLimits(max_bytes=200_000, max_pixels=1_000_000,
                                                                 max_decodes=2)))
    data = paths[0].read_bytes()
    with TestClient(app, base_url=BASE) as client:
        threads = [in_thread(lambda: client.post("/api/search/image", files={"file": ("q.png", data, "image/png")}))
                   for _ in range(uploads)]
        for t, _ in threads:
            t.join(120)
    assert [out["result"].status_code for _, out in threads] == [200] * uploads
    assert state["most"] == 2


@pytest.mark.parametrize("data,status", [
    (b"hello, I am text", 415),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415),
    (b"%PDF-1.4 ...", 415),
    (b"", 400),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400),  # PNG magic, corrupt header
    (None, 400),  # a real PNG cut in half
])
def test_non_image_or_corrupt_uploads(setup, data, status):
    if data is None:
        whole = png(draw(COLOURS["red"], 3, size=200))
        data = whole[: len(whole) // 2]
    for url in ("/api/search/image", "/api/zeroshot"):
        r = setup[0].post(url, files={"file": ("x.png", data, "image/png")})
        assert_json_error(r, status)


def test_missing_file_field(setup):
    assert_json_error(setup[0].post("/api/search/image"), 422)


def test_sniff_format():
    assert sniff_format(png(Image.new("RGB", (2, 2)))) == "png"
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "WEBP")
    assert sniff_format(buf.getvalue()) == "webp"
    assert sniff_format(b"GIF89a....") == "gif" and sniff_format(zlib.compress(b"x")) is None


# --- hosts and origins (DNS rebinding, cross-site uploads) --------------------------------------------


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:8000", "127.0.0.1.evil.example:8000", "localhost.evil.example",
    "127.0.0.1:8000@evil.example", "0x7f.0.0.1", "",
])
@pytest.mark.parametrize("url", ["/", "/api/info", "/api/search?q=red", "/api/items/1", "/api/items/1/thumbnail",
                                 "/static/app.js", "/openapi.json"])
def test_a_rebinding_host_is_refused(setup, host, url):
    # After DNS rebinding, the attacker's page talks to 127.0.0.1 with its own name in Host.
    r = setup[0].get(url, headers={"host": host})
    assert_json_error(r, 421, "host")
    assert "red" not in r.text and "/imgs/" not in r.text


def test_a_rebinding_upload_is_refused_before_reading_it(setup):
    r = setup[0].post("/api/zeroshot", headers={"host": "evil.example:8000"},
                      files={"file": ("q.png", setup[2][0].read_bytes(), "image/png")})
    assert_json_error(r, 421, "evil.example")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "localhost.:8000", "[::1]:8000",
                                  "127.0.0.1"])
def test_the_bound_hosts_are_served(setup, host):
    assert setup[0].get("/api/info", headers={"host": host}).status_code == 200


def test_allowed_hosts_are_configurable(setup):
    searcher = setup[1]
    app = create_app(searcher, ServerConfig(allowed_hosts=("search.lan", "10.0.0.5")))
    with TestClient(app, base_url="http://search.lan:8000", raise_server_exceptions=False) as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"host": "10.0.0.5:8000"}).status_code == 200
        assert_json_error(client.get("/api/info", headers={"host": "127.0.0.1:8000"}), 421, "--allow-host")


@pytest.mark.parametrize("origin", ["http://evil.example:8000", "http://127.0.0.1.evil.example:8000", "null",
                                    "http://localhost:8000", "http://127.0.0.1:9999", "file://"])
@pytest.mark.parametrize("url", ["/api/search/image", "/api/zeroshot"])
def test_a_cross_origin_upload_is_refused(setup, origin, url):
    client, _, paths = setup[:3]
    r = client.post(url, headers={"origin": origin}, files={"file": ("q.png", paths[0].read_bytes(), "image/png")})
    assert_json_error(r, 403, "origin")


def test_same_origin_and_originless_uploads_are_served(setup):
    client, _, paths = setup[:3]
    data = paths[0].read_bytes()
    assert client.post("/api/zeroshot", headers={"origin": BASE},
                       files={"file": ("q.png", data, "image/png")}).status_code == 200
    assert client.post("/api/zeroshot", files={"file": ("q.png", data, "image/png")}).status_code == 200  # curl
    # A cross-origin GET is harmless once Host is checked (the browser keeps the answer from the page).
    assert client.get("/api/info", headers={"origin": "http://evil.example"}).status_code == 200


def test_responses_cannot_be_embedded_by_other_sites(setup):
    r = setup[0].get(f"/api/items/{setup[1].index.items()[0].id}/thumbnail")
    assert r.headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/info", "/api/search?q=a+red+circle&k=2",
                                  "/api/search?q=", "/api/items/999999/thumbnail", "/no/such/page"])
def test_every_response_carries_the_security_headers(setup, path):
    # Pages, JSON, validation errors (422) and not-found answers alike: the headers are added around the
    # whole app, not per endpoint.
    r = setup[0].get(path)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cross-origin-resource-policy"] == "same-origin"
    assert len(r.headers.get_list("content-security-policy")) == 1


# --- robustness ------------------------------------------------------------------------------------


def test_unknown_route_and_method(setup):
    assert_json_error(setup[0].get("/api/nothing"), 404)
    assert_json_error(setup[0].delete("/api/search"), 405)


def test_internal_error_is_a_bare_500(setup, monkeypatch):
    client, searcher = setup[:2]

    def explode(*a, **k):
        raise RuntimeError("secret detail /home/user/x.py")

    monkeypatch.setattr(searcher, "by_text", explode)
    r = client.get("/api/search", params={"q": "x"})
    assert_json_error(r, 500, "internal server error")
    assert "secret" not in r.text


def test_server_picks_up_a_new_generation(setup):
    client, _, _, tmp = setup
    before = client.get("/api/info").json()["count"]
    extra = tmp / "extra"
    extra.mkdir()
    draw(COLOURS["blue"], 77).save(extra / "new.png")
    update_index(model(0), tmp / "idx", sources_from_images([extra]), sync=False)
    after = client.get("/api/info").json()
    assert after["count"] == before + 1 and after["generation"] == 2
