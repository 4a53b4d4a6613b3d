"""The query path: micro-batched text queries answer as one-at-a-time ones, and lanes do not wait on each other."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from _search_helpers import make_images, model
from polymodal.errors import ConfigError
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher, TextBatcher

TEXTS = ["a red circle", "green", "a very long description of a small blue square on a white background",
         "star", "a yellow face with a big smile", "dog", "two cats", "a house by the sea at night",
         "red", "a", "blue square", "an emoji of a heart"]


class Held:
    """Wraps a model method: records each call's first argument and blocks the first call until released."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, arg, **kw):
        self.calls.append(arg)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(60), "never released"
        return self.fn(arg, **kw)


@pytest.fixture
def searcher(tmp_path):
    make_images(tmp_path / "imgs", 2)
    update_index(model(0), tmp_path / "idx", sources_from_images([tmp_path / "imgs"]), sync=True)
    s = Searcher(SearchIndex.open(tmp_path / "idx"), model(0), batch_wait=0.0)
    yield s
    s.close()


def alone(texts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return np.stack([model(0).encode_text([t], normalize=True).float().numpy()[0] for t in texts])


def test_concurrent_text_queries_share_one_pass_and_get_their_one_at_a_time_answers(searcher, monkeypatch):
    held = Held(searcher.model.encode_text)
    monkeypatch.setattr(searcher.model, "encode_text", held)
    results: dict[int, np.ndarray] = {}

    def query(i: int) -> None:
        results[i] = searcher.embed_text([TEXTS[i]])[0]

    first = threading.Thread(target=query, args=(0,))
    first.start()
    assert held.entered.wait(30)
    rest = [threading.Thread(target=query, args=(i,)) for i in range(1, len(TEXTS))]
    for t in rest:
        t.start()
    while len(searcher._texts_lane._queue) < len(rest):  # all queued behind the held pass
        threading.Event().wait(0.001)
    held.release.set()
    for t in [first, *rest]:
        t.join(60)
    # Two passes: the first query alone, then the other eleven together (padded to the longest text).
    assert [len(c) for c in held.calls] == [1, len(TEXTS) - 1]
    got = np.stack([results[i] for i in range(len(TEXTS))])
    np.testing.assert_allclose(got, alone(TEXTS), rtol=0, atol=1e-5)


def test_duplicate_texts_in_one_batch_are_embedded_once_and_results_keep_each_callers_order():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), i] for i, t in enumerate(texts)], np.float32)

    lane = TextBatcher(encode, max_batch=8, wait=0.0)
    out = lane.encode(["bb", "a", "bb"])
    assert calls == [["bb", "a"]]
    np.testing.assert_array_equal(out[:, 0], [2, 1, 2])
    lane.close()
    with pytest.raises(ConfigError):
        TextBatcher(encode, max_batch=0)


def test_a_lone_query_is_encoded_in_its_callers_thread_and_later_ones_batch_behind_it():
    threads, entered, release = [], threading.Event(), threading.Event()

    def encode(texts):
        threads.append((threading.current_thread(), list(texts)))
        if len(threads) == 1:
            entered.set()
            assert release.wait(30)
        return np.ones((len(texts), 2), np.float32)

    lane = TextBatcher(encode, max_batch=8, wait=0.0)
    first = threading.Thread(target=lane.encode, args=(["a"],))
    first.start()
    assert entered.wait(30)
    rest = [threading.Thread(target=lane.encode, args=([t],)) for t in ("b", "c", "d")]
    for t in rest:
        t.start()
    while len(lane._queue) < len(rest):  # queued behind the caller's own pass, not run beside it
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *rest]:
        t.join(30)
    assert threads[0] == (first, ["a"])  # no hand-over to the lane for a query that finds it idle
    assert len(threads) == 2 and sorted(threads[1][1]) == ["b", "c", "d"] and threads[1][0] not in (first, *rest)
    assert lane.encode(["e"]).shape == (1, 2) and threads[-1][0] is threading.current_thread()  # idle again
    lane.close()


def test_a_dedicated_lane_runs_every_pass_in_its_own_thread_after_its_setup():
    seen = []

    def encode(texts):
        seen.append((threading.current_thread(), list(texts)))
        return np.ones((len(texts), 2), np.float32)

    setups = []
    lane = TextBatcher(encode, wait=0.0)
    lane.dedicate(lambda: setups.append(threading.current_thread()))
    callers = [threading.Thread(target=lane.encode, args=([t],)) for t in ("a", "b")]
    for t in callers:
        t.start()
        t.join(30)
    lane.encode(["c"])
    threads = {th for th, _ in seen}
    assert len(threads) == 1 and not threads & {*callers, threading.current_thread()}  # never a caller's thread
    assert setups == [lane._thread]  # once, in the lane's thread, before its first pass
    assert [t for _, ts in seen for t in ts] == ["a", "b", "c"]
    lane.close()


def test_an_encoding_error_reaches_every_caller_of_the_pass_and_the_lane_goes_on():
    def encode(texts):
        if "bad" in texts:
            raise ValueError("bad text")
        return np.ones((len(texts), 2), np.float32)

    lane = TextBatcher(encode, wait=0.0)
    with pytest.raises(ValueError, match="bad text"):
        lane.encode(["bad"])
    assert lane.encode(["good"]).shape == (1, 2)
    lane.close()


def test_a_text_query_does_not_wait_behind_an_image_query(searcher, tmp_path, monkeypatch):
    held = Held(searcher.model.encode_image)
    monkeypatch.setattr(searcher.model, "encode_image", held)
    image = threading.Thread(target=searcher.by_image, args=(tmp_path / "imgs" / "red" / "000.png",))
    image.start()
    assert held.entered.wait(30)
    hits: list = []
    text = threading.Thread(target=lambda: hits.append(searcher.by_text("a red circle", k=3)))
    text.start()
    text.join(60)
    done_while_image_ran = not text.is_alive() and not held.release.is_set()
    held.release.set()
    image.join(60)
    text.join(60)
    assert done_while_image_ran, "the text query waited for the image query's forward pass"
    assert len(hits) == 1 and len(hits[0]) == 3
