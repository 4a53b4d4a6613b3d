"""The ingest pipeline: workers decode ahead of the tower, and the output is the sequential path's exactly."""

from __future__ import annotations

import ast
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _search_helpers import make_images, model
from polymodal.embed import embed_images, image_paths, ordered_map
from polymodal.errors import ConfigError, DataError
from polymodal.search.index import DB_NAME
from polymodal.search.ingest import BuildConfig, sources_from_images, update_index

SEARCH = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "search"


# --- ordered_map -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_ordered_map_keeps_input_order_whatever_finishes_first(workers):
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.004, 40)

    def slow_square(i: int) -> int:
        time.sleep(delays[i])  # later items often finish first
        return i * i

    assert list(ordered_map(slow_square, range(40), workers=workers, ahead=8)) == [i * i for i in range(40)]


def test_ordered_map_reads_its_input_lazily_and_holds_at_most_ahead_results():
    taken = 0
    made = 0
    consumed = 0
    most_waiting = 0
    lock = threading.Lock()

    def source():
        nonlocal taken
        for i in range(200):
            taken += 1
            yield i

    def work(i: int) -> int:
        nonlocal made, most_waiting
        with lock:
            made += 1
            most_waiting = max(most_waiting, made - consumed)
        return i

    for i in ordered_map(work, source(), workers=3, ahead=5):
        assert taken <= i + 1 + 5  # never more than `ahead` items beyond the one being consumed
        time.sleep(0.0005)
        with lock:
            consumed += 1
    assert consumed == 200 and most_waiting <= 5 + 1


def test_ordered_map_raises_a_workers_exception_at_its_turn():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for x in ordered_map(work, range(10), workers=2, ahead=4):
            got.append(x)
    assert got == [0, 1, 2]
    with pytest.raises(ConfigError):
        list(ordered_map(work, range(3), workers=-1))


# --- index build and embed: pipelined == sequential --------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Labelled images of mixed sizes and formats, a corrupt file and a truncated JPEG among them."""
    root = tmp_path_factory.mktemp("pipeline")
    make_images(root, per_label=7)
    rng = np.random.default_rng(1)
    for i in range(5):  # photo-like JPEGs of other sizes, so the batches hold more than one shape of input
        arr = rng.integers(0, 256, (40 + 13 * i, 70 + 9 * i, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "red" / f"photo{i}.jpg", quality=85)
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    data = (root / "red" / "photo1.jpg").read_bytes()
    (root / "blue" / "cut.jpg").write_bytes(data[: len(data) // 3])
    return root


def index_contents(index: Path) -> tuple[list[tuple], np.ndarray, list[tuple]]:
    """(items in id order, their vectors, thumbnails) straight from the index database."""
    con = sqlite3.connect(index / DB_NAME)
    try:
        items = con.execute("SELECT id, path, hash, labels, added_gen FROM items ORDER BY id").fetchall()
        vecs = {h: np.frombuffer(v, np.float32) for h, v in con.execute("SELECT hash, vector FROM vectors")}
        thumbs = con.execute("SELECT hash, mime, data FROM thumbs ORDER BY hash").fetchall()
    finally:
        con.close()
    return items, np.stack([vecs[row[2]] for row in items]), thumbs


@pytest.mark.parametrize("workers, processes", [(2, False), (3, True)])
def test_pipelined_build_equals_the_sequential_build(folder, tmp_path, workers, processes):
    m = model()
    sources = sources_from_images([folder])
    seq = update_index(m, tmp_path / "seq", sources, sync=True, config=BuildConfig(batch_size=4, workers=0))
    par = update_index(m, tmp_path / "par", sources, sync=True,
                       config=BuildConfig(batch_size=4, workers=workers, worker_processes=processes))
    assert seq.count == par.count == 3 * 7 + 5
    assert seq.embedded == par.embedded == seq.count
    assert len(seq.bad) == 2 and par.bad == seq.bad  # same files, same problems, same order
    assert any("broken.png" in b for b in par.bad) and any("cut.jpg" in b for b in par.bad)
    items_s, vecs_s, thumbs_s = index_contents(tmp_path / "seq")
    items_p, vecs_p, thumbs_p = index_contents(tmp_path / "par")
    assert items_p == items_s  # same ids, paths, hashes and labels, in the same order
    np.testing.assert_allclose(vecs_p, vecs_s, rtol=0, atol=1e-5)
    assert thumbs_p == thumbs_s


def test_pipelined_build_stops_at_the_first_bad_file_when_strict(folder, tmp_path):
    with pytest.raises(DataError, match="broken.png|cut.jpg"):
        update_index(model(), tmp_path / "idx", sources_from_images([folder]), sync=True,
                     config=BuildConfig(batch_size=4, workers=2, strict=True))


def test_pipelined_embed_equals_sequential_and_reports_bad_files(folder):
    m = model()
    paths = image_paths([folder])
    seq = embed_images(m, paths, batch_size=4, progress=False, workers=0)
    par = embed_images(m, paths, batch_size=4, progress=False, workers=2)
    assert par.rows == seq.rows and len(seq.rows) == len(paths) - 2
    assert [(b.source, b.problem) for b in par.bad] == [(b.source, b.problem) for b in seq.bad]
    assert {Path(b.source).name for b in par.bad} == {"broken.png", "cut.jpg"}
    np.testing.assert_allclose(par.vectors, seq.vectors, rtol=0, atol=1e-5)
    # And both are what the model gives for the decoded images one at a time.
    from polymodal.data.images import load_image

    one = m.encode_image([load_image(Path(seq.rows[5]))], normalize=True).detach().float().numpy()[0]
    np.testing.assert_allclose(par.vectors[5], one, rtol=0, atol=1e-5)
    with pytest.raises(DataError, match="broken.png|cut.jpg"):
        embed_images(m, paths, batch_size=4, progress=False, workers=2, strict=True)


# --- package structure -----------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Modules of polymodal.search that a file imports (anywhere in it), by full name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("polymodal.search"):
            found.add(node.module)
            if node.module == "polymodal.search":  # `from polymodal.search import ann` names a submodule
                found |= {f"polymodal.search.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("polymodal.search")}
    return found


def test_search_submodules_import_each_other_by_module_path_without_cycles():
    modules = {p.stem: p for p in SEARCH.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) for name, path in modules.items()}
    for name, deps in graph.items():
        assert "polymodal.search" not in deps, f"search/{name}.py imports the package itself"
    edges = {n: {d.rsplit(".", 1)[1] for d in deps} for n, deps in graph.items()}

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        for dep in edges.get(node, ()):
            visit(dep, (*stack, node))

    for name in edges:
        visit(name, ())
