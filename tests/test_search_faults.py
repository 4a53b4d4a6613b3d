"""Fault injection on the search index and server: emptied, damaged or stale index files must be refused
with a clear error and a repair command (never written to, never a traceback, never wrong results),
and ``polymodal index repair`` must bring the index back to a consistent state."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _search_helpers import COLOURS, draw, make_images, model, model_dir
from polymodal.cli.main import main
from polymodal.errors import DataError
from polymodal.search.index import SearchIndex
from polymodal.search.ingest import sources_from_images, update_index
from polymodal.search.query import Searcher


@pytest.fixture
def built(tmp_path):
    """An index of 9 images (3 per colour) at generation 1, and one more image that is not in it."""
    images = tmp_path / "imgs"
    paths = make_images(images, 3)
    update_index(model(0), tmp_path / "idx", sources_from_images([images]), sync=True, model_dir=model_dir(0))
    extra = tmp_path / "extra"
    extra.mkdir()
    draw(COLOURS["blue"], 41).save(extra / "new.png")
    return tmp_path / "idx", paths, extra


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """``polymodal ARGS`` in this process; returns (exit status, stderr)."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err and 'File "' not in err, err
    return code, err


def snapshot(index: Path) -> dict[str, bytes]:
    """The index's files (not the lock, nor SQLite's shared-memory file, which readers write too)."""
    return {p.name: p.read_bytes() for p in sorted(index.iterdir())
            if p.is_file() and p.name not in (".lock", "items.sqlite-shm")}


def empty_items(index: Path) -> None:
    con = sqlite3.connect(index / "items.sqlite", isolation_level=None)
    con.execute("DELETE FROM item_labels")
    con.execute("DELETE FROM items")
    con.close()


def truncate_db(index: Path) -> None:
    for name in ("items.sqlite-wal", "items.sqlite-shm"):
        (index / name).unlink(missing_ok=True)
    (index / "items.sqlite").write_bytes(b"")


def garble_db(index: Path) -> None:
    for name in ("items.sqlite-wal", "items.sqlite-shm"):
        (index / name).unlink(missing_ok=True)
    (index / "items.sqlite").write_bytes(b"this is not an SQLite database at all " * 200)


def delete_db(index: Path) -> None:
    for name in ("items.sqlite", "items.sqlite-wal", "items.sqlite-shm"):
        (index / name).unlink(missing_ok=True)


EMPTIED = {"items deleted": empty_items, "file truncated to 0 bytes": truncate_db, "file deleted": delete_db}


# --- emptied database ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(EMPTIED))
def test_add_to_an_emptied_database_is_refused_and_writes_nothing(built, fault, capsys):
    index, _, extra = built
    EMPTIED[fault](index)
    before = snapshot(index)
    with pytest.raises(DataError, match="polymodal index repair"):
        update_index(model(0), index, sources_from_images([extra]), sync=False)
    assert snapshot(index) == before and (index / "CURRENT").read_text().strip() == "1"
    code, err = run_cli(capsys, "index", "add", index, "--images", extra, "--model", model_dir(0))
    assert code == 2 and "items.sqlite" in err and "polymodal index repair" in err
    assert snapshot(index) == before


@pytest.mark.parametrize("fault", list(EMPTIED))
def test_opening_an_emptied_database_is_refused(built, fault, capsys):
    index = built[0]
    EMPTIED[fault](index)
    with pytest.raises(DataError, match="polymodal index repair"):
        SearchIndex.open(index)
    for args in (["search", index, "a red circle", "--model", model_dir(0)], ["index", "info", index],
                 ["serve", index, "--model", model_dir(0), "--port", "9"]):
        code, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and "polymodal index repair" in err, (args, err)


@pytest.mark.parametrize("fault", list(EMPTIED))
def test_repair_then_build_gives_right_answers(built, fault, capsys):
    index, paths, _ = built
    EMPTIED[fault](index)
    code, err = run_cli(capsys, "index", "repair", index)
    assert code == 0, err
    with SearchIndex.open(index) as idx:
        assert (idx.generation, len(idx)) == (2, 0)
    # The images come back with the next build; search finds each image itself, with its own path.
    update_index(model(0), index, sources_from_images([paths[0].parents[1]]), sync=True)
    with SearchIndex.open(index) as idx:
        hits = Searcher(idx, model(0)).by_image(paths[5], k=1)
        assert hits[0].path == str(paths[5]) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(idx) == 9


# --- damaged files ---------------------------------------------------------------------------------


def test_a_damaged_database_is_a_clear_error_and_repair_moves_it_aside(built, capsys):
    index, _, extra = built
    garble_db(index)
    with pytest.raises(DataError, match="not a readable SQLite database"):
        SearchIndex.open(index)
    with pytest.raises(DataError, match="polymodal index repair"):
        update_index(model(0), index, sources_from_images([extra]), sync=False)
    code, err = run_cli(capsys, "search", index, "x", "--model", model_dir(0))
    assert code == 2 and "items.sqlite" in err
    code, err = run_cli(capsys, "index", "repair", index)
    assert code == 0 and "moved" in err
    assert any(p.name.startswith("items.sqlite.damaged") for p in index.iterdir())
    with SearchIndex.open(index) as idx:
        assert len(idx) == 0


@pytest.mark.parametrize("damage", ["truncated", "another index's"])
def test_a_damaged_vector_index_is_refused_and_repaired_from_the_database(built, damage, tmp_path, capsys):
    index, paths, extra = built
    faiss_file = index / "gen-000001.faiss"
    if damage == "truncated":
        faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    else:  # a valid vector index with other vectors: 2 items instead of 9
        other = tmp_path / "other"
        update_index(model(0), other, sources_from_images(paths[:2]), sync=True)
        shutil.copy(other / "gen-000001.faiss", faiss_file)
    with pytest.raises(DataError, match="polymodal index repair"):
        SearchIndex.open(index)
    with pytest.raises(DataError, match="polymodal index repair"):
        update_index(model(0), index, sources_from_images([extra]), sync=False)
    code, err = run_cli(capsys, "index", "repair", index)
    assert code == 0, err
    with SearchIndex.open(index) as idx:
        assert len(idx) == 9
        hit = Searcher(idx, model(0)).by_image(paths[4], k=1)[0]
        assert hit.path == str(paths[4]) and hit.score == pytest.approx(1.0, abs=1e-4)


def test_a_database_older_than_current_is_refused(built):
    index, _, extra = built
    saved = index.parent / "saved.sqlite"
    con, out = sqlite3.connect(index / "items.sqlite"), sqlite3.connect(saved)
    con.backup(out)  # generation 1's database
    out.close()
    con.close()
    update_index(model(0), index, sources_from_images([extra]), sync=False)  # generation 2: 10 items
    update_index(model(0), index, sources_from_images([extra]), sync=True)  # generation 3: 1 item
    for name in ("items.sqlite-wal", "items.sqlite-shm"):
        (index / name).unlink(missing_ok=True)
    shutil.copy(saved, index / "items.sqlite")  # "restored from a backup"
    with pytest.raises(DataError, match="generation"):
        SearchIndex.open(index)


def test_a_missing_generation_description_is_repaired(built, capsys):
    index, paths, _ = built
    (index / "gen-000001.json").unlink()
    with pytest.raises(DataError, match="polymodal index repair"):
        SearchIndex.open(index)
    code, err = run_cli(capsys, "index", "repair", index)
    assert code == 0, err
    with SearchIndex.open(index) as idx:
        assert len(idx) == 9 and idx.model_id == model(0).model_id


def test_a_consistent_index_is_left_alone_by_repair(built, capsys):
    index, paths, _ = built
    code, err = run_cli(capsys, "index", "repair", index)
    assert code == 0 and "consistent" in err
    assert (index / "CURRENT").read_text().strip() == "1"


# --- concurrent large uploads ----------------------------------------------------------------------


def test_sixteen_concurrent_bomb_uploads_stay_within_the_decode_budget(tmp_path):
    """16 clients upload the same 2 KB PNG that decodes to 4 Mpx (the issue's 131 KB / 39.7 Mpx, scaled down).

    Unbounded, every decode runs at once: the server's peak memory grew by 330 MB at this size. With two
    decode slots it may grow by a few images' worth; the bound is 8 RGB copies (96 MB), measured as the
    peak RSS of a fresh server process.
    """
    images = tmp_path / "imgs"
    make_images(images, 1)
    update_index(model(0), tmp_path / "idx", sources_from_images([images]), sync=True, model_dir=model_dir(0))
    side = 2000
    helper = Path(__file__).with_name("_search_helpers.py")
    r = subprocess.run([sys.executable, str(helper), str(tmp_path / "idx"), str(model_dir(0)), str(side), "16",
                        str(side * side + 1)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["statuses"] == [200] and got["file_bytes"] < 10_000
    assert got["growth"] < 8 * side * side * 3, got


# --- DNS rebinding, against the real server on loopback ----------------------------------------------


def test_a_rebound_host_gets_nothing_from_the_real_server(built):
    import socket

    import httpx

    from _search_helpers import LocalServer
    from polymodal.search.server import create_app

    index, paths, _ = built
    searcher = Searcher(SearchIndex.open(index), model(0))
    with LocalServer(create_app(searcher)) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        item = searcher.index.items()[0].id
        assert client.get(f"/api/items/{item}").status_code == 200  # its own Host: 127.0.0.1:PORT
        for url in ("/", "/api/info", f"/api/items/{item}", f"/api/items/{item}/thumbnail", "/api/search?q=red"):
            r = client.get(url, headers={"host": f"attacker.example:{srv.port}"})
            assert r.status_code == 421 and str(paths[0].parent) not in r.text and "JFIF" not in r.text, url
        r = client.post("/api/zeroshot", headers={"origin": f"http://attacker.example:{srv.port}"},
                        files={"file": ("a.png", paths[0].read_bytes(), "image/png")})
        assert r.status_code == 403
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as raw:  # HTTP/1.0, no Host at all
            raw.sendall(b"GET /api/info HTTP/1.0\r\n\r\n")
            assert raw.recv(64).split(b" ")[1] == b"421"
    searcher.close()
