"""The search index: ANN choice and recall, incremental updates by content hash, filters, model checks, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from _search_helpers import COLOURS, draw, make_images, model, model_dir
from polymodal.cli.main import cli
from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.search import ann
from polymodal.search.ann import AnnConfig
from polymodal.search.index import ItemFilter, SearchIndex
from polymodal.search.ingest import (
    BuildConfig,
    compact_index,
    remove_items,
    sources_from_images,
    sources_from_manifest,
    update_index,
)
from polymodal.search.query import Searcher
from polymodal.search.writer import IndexWriter


def clustered(n: int, d: int, seed: int = 0, centers: int = 50) -> np.ndarray:
    """Unit vectors around random centres: structured like real embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d))
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- ann.py ----------------------------------------------------------------------------------------


def test_choose_kind_by_size():
    cfg = AnnConfig(exact_max=100, hnsw_max=1000)
    assert [ann.choose_kind(n, cfg) for n in (0, 99, 100, 999, 1000, 10**7)] == [
        "flat", "flat", "hnsw", "hnsw", "ivf", "ivf"]
    with pytest.raises(ConfigError):
        AnnConfig(exact_max=10, hnsw_max=5)


def test_exact_search_is_brute_force_argsort():
    x = clustered(500, 16, seed=1)
    ids = np.arange(1000, 1500, dtype=np.int64)
    q = clustered(7, 16, seed=2)
    scores, found = ann.exact_search(x, ids, q, 10)
    ref = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(found, ids[ref])
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ref, axis=1), rtol=1e-6)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_ann_kinds_reach_target_recall_and_record_it(kind):
    data = clustered(4200, 32, seed=3)
    x, q = data[:4000], data[4000:]  # q: held-out queries from the same distribution
    ids = np.arange(4000, dtype=np.int64) * 3 + 7  # ids are not positions
    cfg = AnnConfig(target_recall=0.9, recall_queries=100)
    built = ann.build_ann(x, ids, cfg, kind=kind)
    info = built.info
    assert info.kind == kind and info.ntotal == 4000 and info.dim == 32
    # Independent check on held-out queries: recall@10 vs exact is what the index claims (within noise).
    _, truth = ann.exact_search(x, ids, q, 10)
    _, found = ann.ann_search(built.index, info, q, 10)
    measured = ann.recall_at_k(truth, found)
    if kind == "flat":
        assert info.recall_at_10 == 1.0 and measured == 1.0
    else:
        assert info.recall_at_10 >= 0.9 and info.recall_queries == 100 and info.recall_measured_on == 4000
        assert measured >= 0.85
        assert abs(measured - info.recall_at_10) < 0.06  # the recorded recall is what new queries get
        assert ("efSearch" if kind == "hnsw" else "nprobe") in info.params
    # An id selector restricts results, for every kind.
    allowed = ids[::5]
    _, sel = ann.ann_search(built.index, info, q[:5], 10, allowed=allowed)
    assert set(sel[sel >= 0].tolist()) <= set(allowed.tolist())


def test_ann_incremental_add_and_remove():
    x = clustered(300, 8, seed=5)
    ids = np.arange(300, dtype=np.int64)
    built = ann.build_ann(x[:200], ids[:200], AnnConfig(), kind="flat")
    ann.ann_add(built.index, x[200:], ids[200:])
    assert ann.ann_remove(built.index, "flat", ids[:10])
    assert sorted(ann.index_ids(built.index, "flat").tolist()) == list(range(10, 300))
    _, found = ann.ann_search(built.index, built.info, x[:10], 1)
    assert not set(found.ravel().tolist()) & set(range(10))
    hnsw = ann.build_ann(x, ids, AnnConfig(), kind="hnsw")
    assert not ann.ann_remove(hnsw.index, "hnsw", ids[:3])  # HNSW cannot remove: caller keeps tombstones
    with pytest.raises(ShapeError):
        ann.ann_add(built.index, x[:3], ids[:2])


# --- index + ingest with a real model -------------------------------------------------------------


@pytest.fixture(scope="module")
def m():
    return model(0)


@pytest.fixture()
def images(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    return tmp_path / "imgs", paths


def build(m, index, sources, **kw):
    return update_index(m, index, sources, sync=kw.pop("sync", True), model_dir=model_dir(0), **kw)


def test_build_search_scores_are_the_models_cosines(m, images, tmp_path):
    root, paths = images
    rep = build(m, tmp_path / "idx", sources_from_images([root]), config=BuildConfig(batch_size=5))
    assert (rep.count, rep.added, rep.embedded, rep.generation, rep.ann["kind"]) == (12, 12, 12, 1, "flat")
    s = Searcher.open(tmp_path / "idx")
    hits = s.by_text("a red circle", k=5)
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Parity: every score is the cosine of the model's own text and image embeddings.
    with torch.no_grad():
        t = m.encode_text(["a red circle"]).numpy()[0]
        imgs = m.encode_image([Image.open(p).convert("RGB") for p in paths]).numpy()
    by_path = {str(p): float(v @ t) for p, v in zip(paths, imgs)}
    for h in hits:
        assert h.score == pytest.approx(by_path[h.path], abs=1e-5)
    assert max(by_path.values()) == pytest.approx(hits[0].score, abs=1e-5)
    # Image -> image: an indexed image finds itself first.
    top = s.by_image(paths[5], k=3)[0]
    assert top.path == str(paths[5]) and top.score == pytest.approx(1.0, abs=1e-4)
    # Image -> text over candidates.
    texts = s.texts_for_image(paths[0], ["one", "two", "three"], k=3)
    cos = m.encode_text(["one", "two", "three"]).detach().numpy() @ imgs[0]
    assert [h.id for h in texts] == list(np.argsort(-cos))
    # The text cache returns what the model returns, in order, duplicates included.
    got = s.embed_text(["two", "a red circle", "two"])
    np.testing.assert_allclose(got, m.encode_text(["two", "a red circle", "two"]).detach().numpy(), atol=1e-5)
    s.close()


def test_metadata_is_stored(m, tmp_path):
    paths = make_images(tmp_path / "imgs", 2, labels=("red",))
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,text,label\n" + "".join(f"imgs/red/{p.name},caption {i},{'a' if i else 'b'}\n"
                                                      for i, p in enumerate(paths)))
    sources, bad = sources_from_manifest(manifest)
    assert bad == []
    build(m, tmp_path / "idx", sources, labels=["cat", "dog"])
    with SearchIndex.open(tmp_path / "idx") as idx:
        items = idx.items()
        assert [(it.path, it.caption, it.labels) for it in items] == [
            (str(paths[0]), "caption 0", ["b"]), (str(paths[1]), "caption 1", ["a"])]
        assert items[0].hash == hashlib.sha256(paths[0].read_bytes()).hexdigest()
        assert {it.model_id for it in items} == {m.model_id} == {idx.model_id}
        assert idx.default_labels() == ["cat", "dog"] and idx.labels() == ["a", "b"]
        thumb, mime = idx.thumbnail(items[0].id)
        assert mime == "image/jpeg" and Image.open(__import__("io").BytesIO(thumb)).size == (48, 48)


def test_rebuild_embeds_only_what_changed(m, images, tmp_path):
    root, paths = images
    idx = tmp_path / "idx"
    build(m, idx, sources_from_images([root]))
    again = build(m, idx, sources_from_images([root]))
    assert (again.embedded, again.unchanged, again.added, again.updated, again.removed) == (0, 12, 0, 0, 0)
    os.utime(paths[0], ns=(1, 1))  # touched, same bytes: still not embedded
    assert build(m, idx, sources_from_images([root])).embedded == 0
    draw(COLOURS["blue"], 99).save(paths[0])  # new content under an old path
    paths[1].unlink()  # gone
    draw(COLOURS["green"], 50).save(root / "green" / "new.png")
    rep = build(m, idx, sources_from_images([root]))
    assert (rep.embedded, rep.updated, rep.removed, rep.added, rep.count) == (2, 1, 1, 1, 12)
    # A file whose content was seen before (a copy) reuses the stored vector.
    (root / "red" / "copy.png").write_bytes(paths[2].read_bytes())
    rep = update_index(m, idx, sources_from_images([root / "red" / "copy.png"]), sync=False)
    assert (rep.embedded, rep.reused, rep.added, rep.count) == (0, 1, 1, 13)
    with SearchIndex.open(idx) as s:
        assert str(paths[1]) not in {it.path for it in s.items()}
        assert s.generation == 5
    assert sorted(p.name for p in idx.glob("gen-*")) == [
        "gen-000004.faiss", "gen-000004.json", "gen-000005.faiss", "gen-000005.json"]


def test_add_and_remove_without_rebuild(m, images, tmp_path):
    root, paths = images
    idx = tmp_path / "idx"
    build(m, idx, sources_from_images([root / "red"]))
    rep = update_index(m, idx, sources_from_images([root / "blue"]), sync=False)
    assert (rep.added, rep.embedded, rep.count) == (4, 4, 8)
    with SearchIndex.open(idx) as s:
        ids = {it.path: it.id for it in s.items()}
    rep = remove_items(idx, paths=[root / "red"])
    assert (rep.removed, rep.count) == (4, 4)
    rep = remove_items(idx, ids=[ids[str(paths[8])]])
    assert rep.count == 3
    with pytest.raises(DataError, match="no item with id"):
        remove_items(idx, ids=[10**6])
    s = Searcher.open(idx)
    got = {h.path for h in s.by_image(paths[0], k=50)}
    assert got == {str(p) for p in paths[9:12]}
    s.close()


def test_hnsw_removals_are_tombstones_until_compaction(m, images, tmp_path):
    root, paths = images
    idx = tmp_path / "idx"
    # Tiny thresholds force HNSW, so this covers the kind that cannot remove vectors.
    build(m, idx, sources_from_images([root]), ann_config=AnnConfig(exact_max=4, hnsw_max=1000, recall_queries=12))
    remove_items(idx, paths=[paths[0]])  # 1 of 12: below the compaction threshold
    with SearchIndex.open(idx) as s:
        assert s.info.ann.kind == "hnsw" and s.info.tombstones == 1 and s.info.count == 11
        q = m.encode_image([Image.open(paths[0]).convert("RGB")]).detach().numpy()
        hits = s.search(q, k=20)[0]
        assert len(hits) == 11 and str(paths[0]) not in {h.path for h in hits}
    rep = compact_index(idx)
    with SearchIndex.open(idx) as s:
        assert s.info.tombstones == 0 and rep.count == 11 and s.info.ann.recall_measured_on == 11
        assert len(s.search(q, k=20)[0]) == 11
    with sqlite3.connect(idx / "items.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 11


def test_filters_by_label_and_path_prefix(m, images, tmp_path):
    root, paths = images
    build(m, tmp_path / "idx", sources_from_images([root]))
    s = Searcher.open(tmp_path / "idx")
    everything = {h.id: h.score for h in s.by_text("a shape", k=50)}
    green = s.by_text("a shape", k=50, where=ItemFilter(label="green"))
    assert len(green) == 4 and all(h.labels == ["green"] for h in green)
    for h in green:  # filtering does not change scores
        assert h.score == pytest.approx(everything[h.id], abs=1e-5)
    blue = s.by_text("a shape", k=2, where=ItemFilter(path_prefix=str(root / "blue") + os.sep))
    assert len(blue) == 2 and all(h.path.startswith(str(root / "blue")) for h in blue)
    assert s.by_text("x", where=ItemFilter(label="purple")) == []
    assert s.by_text("x", where=ItemFilter(label="red", path_prefix=str(root / "blue"))) == []
    s.close()


def test_other_model_is_refused_with_both_ids(m, images, tmp_path):
    root, _ = images
    build(m, tmp_path / "idx", sources_from_images([root / "red"]))
    other = model(1)
    assert other.model_id != m.model_id
    with SearchIndex.open(tmp_path / "idx") as idx, pytest.raises(ConfigError) as e:
        Searcher(idx, other)
    assert m.model_id in str(e.value) and other.model_id in str(e.value)
    with pytest.raises(ConfigError, match="cannot mix models"):
        update_index(other, tmp_path / "idx", sources_from_images([root / "blue"]), sync=False)
    with pytest.raises(ShapeError):
        SearchIndex.open(tmp_path / "idx").search(np.zeros((1, 7), np.float32))
    # `build` with a new model re-embeds everything into a new generation.
    rep = update_index(other, tmp_path / "idx", sources_from_images([root / "red"]), sync=True)
    assert (rep.embedded, rep.count) == (4, 4)
    with SearchIndex.open(tmp_path / "idx") as idx:
        assert idx.model_id == other.model_id


def test_bad_files_are_skipped_or_strict(m, images, tmp_path):
    root, _ = images
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rep = build(m, tmp_path / "idx", sources_from_images([root]))
    assert rep.count == 12 and len(rep.bad) == 1 and "broken.png" in rep.bad[0]
    with pytest.raises(DataError, match="broken.png"):
        build(m, tmp_path / "idx2", sources_from_images([root]), config=BuildConfig(strict=True))


def test_uncommitted_writer_is_invisible_and_cleaned_up(m, images, tmp_path):
    root, _ = images
    idx = tmp_path / "idx"
    build(m, idx, sources_from_images([root / "red"]))
    with pytest.raises(RuntimeError, match="boom"):
        with IndexWriter(idx, model_id=m.model_id, dim=m.config.embed_dim) as w:
            w.retire([it.id for it in w.visible()])
            raise RuntimeError("boom")
    with SearchIndex.open(idx) as s:
        assert len(s) == 4 and len(s.items()) == 4
    with IndexWriter(idx) as w, pytest.raises(ConfigError, match="another process"):
        with IndexWriter(idx):
            pass
    with pytest.raises(DataError, match="not a search index"):
        SearchIndex.open(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        IndexWriter(tmp_path / "junk", model_id="a", dim=4).__enter__()


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_build_search_info_remove(m, images, tmp_path):
    root, paths = images
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    r = runner.invoke(cli, ["index", "build", "--model", str(model_dir(0)), "--images", str(root), "--out", idx,
                            "--labels", "red,green,blue", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["count"] == 12
    r = runner.invoke(cli, ["search", idx, "a red heart", "--json", "-k", "3"])
    hits = json.loads(r.output)
    assert r.exit_code == 0 and len(hits) == 3 and {"id", "path", "score"} <= set(hits[0])
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    r = runner.invoke(cli, ["search", idx, "--image", str(paths[3]), "--json", "--label", "red"])
    hits = json.loads(r.output)
    assert hits[0]["path"] == str(paths[3]) and all(h["labels"] == ["red"] for h in hits)
    texts = tmp_path / "texts.txt"
    texts.write_text("a red thing\na green thing\n")
    r = runner.invoke(cli, ["search", idx, "--image", str(paths[0]), "--texts", str(texts), "--json"])
    assert [h["text"] for h in json.loads(r.output)] in (["a red thing", "a green thing"],
                                                          ["a green thing", "a red thing"])
    r = runner.invoke(cli, ["index", "info", idx, "--json"])
    assert json.loads(r.output)["labels"] == ["blue", "green", "red"]
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text(json.dumps({"image": str(paths[0]), "text": "a red blob", "label": "blob"}) + "\n")
    r = runner.invoke(cli, ["index", "add", idx, "--data", str(manifest), "--json"])  # model: the recorded one
    rep = json.loads(r.output)
    assert r.exit_code == 0 and (rep["updated"], rep["embedded"], rep["count"]) == (1, 0, 12)
    r = runner.invoke(cli, ["search", idx, "anything", "--label", "blob", "--json"])
    assert [(h["path"], h["caption"]) for h in json.loads(r.output)] == [(str(paths[0]), "a red blob")]
    r = runner.invoke(cli, ["index", "remove", idx, str(root / "green")])
    assert r.exit_code == 0 and "8 items" in r.output
    r = runner.invoke(cli, ["search", idx, "x", "--image", str(paths[0])])
    assert r.exit_code != 0
