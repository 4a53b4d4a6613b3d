"""`polymodal data inspect|preview` and `polymodal shards`, end to end on tiny data."""

from __future__ import annotations

import json
from statistics import median

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _mmdata import (
    HAVE_VIDEO,
    LABELS,
    has_audio,
    has_text,
    has_video,
    make_folder_dataset,
    make_manifest_dataset,
)
from polymodal.cli.main import cli, main
from polymodal.data.inspect import Summary, contact_sheet, format_stats, inspect_source
from polymodal.data.record import Record
from polymodal.data.sources import open_source
from polymodal.errors import ConfigError

N = 60


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_manifest_dataset(tmp_path_factory.mktemp("m"), N, corrupt=1)


def _invoke(*args):
    result = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_inspect_json_counts_everything_exactly(data):
    stats = json.loads(_invoke("data", "inspect", data.manifest, "--json"))
    good = sorted(data.good)
    idx = [int(k[1:]) for k in good]
    assert stats["records"] == len(good) == N - (4 if HAVE_VIDEO else 3)
    assert len(stats["bad"]) == N - len(good)
    broken = {str(p) for per in data.broken.values() for p in per.values() if p is not None}
    assert broken <= {b["source"] for b in stats["bad"]}  # each broken file is named
    assert all(b["problem"] for b in stats["bad"])
    expected_present = {
        "image": len(good),
        "text": sum(has_text(i) for i in idx),
        "audio": sum(has_audio(i) for i in idx),
        "video": sum(has_video(i) for i in idx) if HAVE_VIDEO else 0,
    }
    assert stats["present"] == expected_present
    for m, n in expected_present.items():
        assert stats["missing_rate"][m] == pytest.approx(1 - n / len(good))
    # image sizes: (8 + i % 5) x (6 + i % 3), see _mmdata.png_bytes
    widths = [8 + i % 5 for i in idx]
    assert stats["image"]["width"] == {"count": len(good), "min": 8, "p50": median(widths),
                                       "mean": pytest.approx(np.mean(widths)), "max": 12}
    assert sum(stats["image"]["sizes"].values()) == len(good)
    seconds = [(400 + 40 * (i % 4)) / 8000 for i in idx if has_audio(i)]
    assert stats["audio"]["seconds"]["min"] == pytest.approx(min(seconds))
    assert stats["audio"]["seconds"]["max"] == pytest.approx(max(seconds))
    assert stats["audio"]["sample_rates"] == {"8000": len(seconds)}
    if HAVE_VIDEO:
        frames = [3 + i % 3 for i in idx if has_video(i)]
        assert stats["video"]["frames"]["min"] == 3 and stats["video"]["frames"]["max"] == 5
        assert stats["video"]["frames"]["mean"] == pytest.approx(np.mean(frames))
    words = [4 + i % 4 for i in idx if has_text(i)]  # "a circle number 7" + " again" * (i % 4)
    assert stats["text"]["words"]["mean"] == pytest.approx(np.mean(words))
    assert stats["labels"] == {lab: sum(LABELS[i % 3] == lab for i in idx) for lab in LABELS}
    assert stats["unlabelled"] == 0


def test_inspect_text_report(data):
    out = _invoke("data", "inspect", data.manifest)
    good = len(data.good)
    assert f"records: {good} good, {N - good} bad" in out
    assert "image width    min 8 px" in out and "audio rates    8000 Hz" in out
    for path in data.broken["image"].values():
        assert f"{path} (line " in out  # the manifest line that names the file


def test_inspect_folder_source(tmp_path):
    folder = make_folder_dataset(tmp_path, 12, video=False)
    stats = inspect_source(open_source(tmp_path))
    assert stats.records == 12 and stats.bad == []
    assert stats.labels == {"circle": 4, "square": 4, "star": 4}
    assert stats.present["text"] == sum(v["text"] for v in folder.modalities.values())


def test_inspect_lists_the_files_a_folder_source_ignores(tmp_path):
    # Files no modality reads were dropped without a word (#16 item 6): they are counted and listed.
    make_folder_dataset(tmp_path, 6, video=False)
    for name in ("circle/notes.docx", "square/scan.xyz", "README"):
        (tmp_path / name).write_text("not data")
    out = _invoke("data", "inspect", tmp_path)
    assert "records: 6 good, 0 bad" in out
    assert "ignored: 3 file(s) of a type no modality reads ((no suffix), .docx, .xyz)" in out
    assert f"  {tmp_path / 'circle' / 'notes.docx'}" in out
    stats = json.loads(_invoke("data", "inspect", tmp_path, "--json"))
    assert sorted(stats["ignored"]) == sorted(str(tmp_path / n) for n in ("README", "circle/notes.docx",
                                                                          "square/scan.xyz"))


def test_summary_and_empty_stats():
    assert Summary.of([]) is None
    s = Summary.of([1.0, 2.0, 6.0])
    assert (s.count, s.min, s.p50, s.mean, s.max) == (3, 1.0, 2.0, 3.0, 6.0)

    class Empty:
        spec, bad, ignored = "nothing", [], []

        def __iter__(self):
            return iter(())

    stats = inspect_source(Empty())  # type: ignore[arg-type]
    assert stats.records == 0 and stats.missing_rate["image"] == 0.0
    assert "records: 0 good, 0 bad" in format_stats(stats)


def test_preview_writes_a_contact_sheet(data, tmp_path):
    out = tmp_path / "sheet.png"
    _invoke("data", "preview", data.manifest, "--out", out, "--max-records", 5, "--cell", 32)
    sheet = Image.open(out)
    columns = 32 + 64 + (4 * 32 if HAVE_VIDEO else 0) + 128  # image, spectrogram, 4 frames, text
    n_cols = 4 if HAVE_VIDEO else 3
    assert sheet.size == (columns + 4 * (n_cols + 1), 5 * (32 + 4) + 4)


def test_contact_sheet_cells_show_the_records(tmp_path):
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    tone = np.sin(2 * np.pi * 440 * np.arange(4000) / 8000).astype(np.float32)
    from polymodal.data.audio import Audio

    records = [
        Record(image=red, text="a red square", key="r", label="red"),
        Record(audio=Audio(samples=tone, sample_rate=8000), key="t"),
    ]
    sheet = np.asarray(contact_sheet(records, cell=20))
    pad = 4
    assert sheet[pad + 10, pad + 10].tolist() == [255, 0, 0]  # row 0, image cell centre
    assert sheet[pad + 24 + 10, pad + 10].tolist() != [255, 0, 0]  # row 1 has no image
    spec = sheet[pad + 24: pad + 44, pad + 20 + pad: pad + 20 + pad + 40]  # row 1, spectrogram cell
    rows = spec.astype(float).mean(axis=(1, 2))
    assert rows.max() - rows.min() > 50  # a 440 Hz tone: one bright band, not a flat cell
    with pytest.raises(ConfigError):
        contact_sheet(records, cell=0)


def test_shards_command_then_inspect_the_shards(data, tmp_path):
    out = tmp_path / "sh"
    text = _invoke("shards", "--data", data.manifest, "--out", out, "--shard-size", 16)
    good = len(data.good)
    assert f"wrote {good} records in {-(-good // 16)} shard(s)" in text
    assert f"skipped {N - good} bad record(s)" in text
    index = json.loads((out / "index.json").read_text())
    assert index["records"] == good and [s["count"] for s in index["shards"]][0] == 16
    stats = json.loads(_invoke("data", "inspect", out, "--json"))
    assert stats["records"] == good and stats["bad"] == []
    again = json.loads(_invoke("shards", "--data", data.manifest, "--out", out, "--overwrite", "--json"))
    assert again["records"] == good and len(again["shards"]) == 1


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.csv: manifest not found" in err and err.count("\n") == 1
    assert main(["shards", "--data", "builtin:nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown builtin dataset" in capsys.readouterr().err
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "index.json").write_text("{}")
    assert main(["shards", "--data", "builtin:openmoji:test", "--out", str(tmp_path / "o2")]) == 2
    assert "already holds shards" in capsys.readouterr().err


def test_strict_shards_stop_at_the_first_bad_record(data, tmp_path, capsys):
    assert main(["shards", "--data", str(data.manifest), "--out", str(tmp_path / "s"), "--strict"]) == 2
    assert "error: " in capsys.readouterr().err


def test_inspect_builtin_openmoji():
    from polymodal.data.openmoji import load_openmoji

    stats = json.loads(_invoke("data", "inspect", "builtin:openmoji:val", "--json"))
    assert stats["records"] == len(load_openmoji("val")) and stats["image"]["sizes"] == {"72x72": stats["records"]}
