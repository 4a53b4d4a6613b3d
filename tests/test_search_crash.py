"""Crash safety of index builds: SIGKILL a build mid-way, the previous index still answers, a rerun finishes
without embedding again what the killed build had finished."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from _search_helpers import make_images, model, model_dir
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher

# The build process: the library's update_index, with a pause after each committed batch so the test can
# kill it at a known point. MODE "pointer" instead kills the process at the worst moment: after the new
# generation's rows and files are written, as it is about to replace CURRENT.
DRIVER = r"""
import os, signal, sys, time
import polymodal.search.writer as writer_mod
from polymodal.models.io import load
from polymodal.search.ingest import BuildConfig, sources_from_images, update_index

model_dir, images, out, mode = sys.argv[1:5]
if mode == "pointer":
    real = writer_mod.atomic_write_bytes
    def write(path, data):
        if path.name == "CURRENT":
            print("about to commit", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, data)
    writer_mod.atomic_write_bytes = write

def progress(msg):
    print(msg, flush=True)
    time.sleep(0.5 if mode == "slow" else 0.0)

update_index(load(model_dir), out, sources_from_images([images]), sync=True, model_dir=model_dir,
             config=BuildConfig(batch_size=2), progress=progress)
print("finished", flush=True)
"""


def run_driver(mode: str, images, out, *, kill_after: str | None = None) -> tuple[int, list[str]]:
    """Run the build in a child process; SIGKILL it once a line starting with ``kill_after`` appears."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(model_dir(0)), str(images), str(out), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if kill_after and line.startswith(kill_after):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr, stderr
    return proc.returncode, lines


def vectors_stored(index) -> int:
    with sqlite3.connect(index / "items.sqlite") as con:
        return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]


def cli_build(images, out) -> dict:
    r = subprocess.run([sys.executable, "-m", "polymodal", "index", "build", "--model", str(model_dir(0)),
                        "--images", str(images), "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_killed_build_leaves_previous_index_and_rerun_reuses_its_work(tmp_path):
    images, index = tmp_path / "imgs", tmp_path / "idx"
    make_images(images, 3)  # 9 images
    update_index(model(0), index, sources_from_images([images]), sync=True, model_dir=model_dir(0))
    make_images(images, 8, start=3)  # 24 more

    code, lines = run_driver("slow", images, index, kill_after="embedded 8/24")
    assert code == -signal.SIGKILL and "finished" not in lines

    # The previous generation still opens and answers, with its 9 items only.
    with SearchIndex.open(index) as idx:
        assert idx.generation == 1 and len(idx) == 9
        s = Searcher(idx, model(0))
        hits = s.by_text("a red circle", k=50)
        assert len(hits) == 9 and all(int(os.path.basename(h.path)[:3]) < 3 for h in hits)
    # What the killed build had finished is stored: 8 of its 24 vectors.
    assert vectors_stored(index) == 9 + 8

    t0 = time.perf_counter()
    report = cli_build(images, index)  # the rerun, through the CLI
    assert (report["generation"], report["count"], report["added"]) == (2, 33, 24)
    assert (report["embedded"], report["reused"]) == (16, 8), "finished items must not be embedded again"
    assert vectors_stored(index) == 33
    with SearchIndex.open(index) as idx:
        assert len(Searcher(idx, model(0)).by_text("a red circle", k=50)) == 33
    assert time.perf_counter() - t0 < 120


def test_kill_just_before_the_pointer_swap(tmp_path):
    images, index = tmp_path / "imgs", tmp_path / "idx"
    make_images(images, 2)
    update_index(model(0), index, sources_from_images([images]), sync=True, model_dir=model_dir(0))
    make_images(images, 2, start=2, labels=("red",))

    code, lines = run_driver("pointer", images, index, kill_after=None)
    assert code == -signal.SIGKILL and lines[-1] == "about to commit"
    # The new generation's files exist but CURRENT still names the old one, which opens whole.
    assert (index / "gen-000002.faiss").is_file() and (index / "CURRENT").read_text().strip() == "1"
    with SearchIndex.open(index) as idx:
        assert len(idx) == 6 and len(idx.items()) == 6

    # The next writer removes the leftovers and commits; the 2 new vectors are reused, not recomputed.
    rep = update_index(model(0), index, sources_from_images([images]), sync=True)
    assert (rep.generation, rep.count, rep.embedded, rep.reused) == (2, 8, 0, 2)
    with SearchIndex.open(index) as idx:
        assert len(idx.items()) == 8


def test_empty_folder_builds_an_empty_index(tmp_path):
    (tmp_path / "empty").mkdir()
    rep = update_index(model(0), tmp_path / "idx", sources_from_images([tmp_path / "empty"]), sync=True)
    assert rep.count == 0
    with SearchIndex.open(tmp_path / "idx") as idx:
        assert Searcher(idx, model(0)).by_text("anything") == []
