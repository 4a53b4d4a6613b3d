"""collate_records: presence masks, zeros where missing, padding of audio and video, labels, tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.audio import Audio
from polymodal.data.collate import Batch, collate_records
from polymodal.data.record import BadRecord, Record
from polymodal.data.video import Video
from polymodal.errors import ConfigError, ShapeError
from polymodal.text import Tokenize, WordTokenizer


def video(t: int, value: int) -> Video:
    frames = np.full((t, 4, 6, 3), value, np.uint8)
    return Video(frames, 10.0, np.arange(t) / 10.0, np.arange(t), t)


def records() -> list[Record]:
    img = Image.fromarray(np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3))
    return [
        Record(image=img, text="a red circle", audio=Audio(np.ones(5, np.float32), 8000), label=2, key="a"),
        Record(text="no image here", video=video(3, 7), key="b"),
        Record(
            image=img, audio=Audio(np.full(3, 0.5, np.float32), 8000), video=video(5, 9), label=0, key="c"
        ),
    ]


def test_masks_zeros_and_padding() -> None:
    batch = collate_records(records())
    assert isinstance(batch, Batch) and len(batch) == 3 and batch.keys == ["a", "b", "c"]
    assert batch.present["image"].tolist() == [True, False, True]
    assert batch.present["text"].tolist() == [True, True, False]
    assert batch.present["audio"].tolist() == [True, False, True]
    assert batch.present["video"].tolist() == [False, True, True]
    assert batch.labels.tolist() == [2, -1, 0]

    assert batch.image is not None and batch.image.shape == (3, 3, 4, 5) and batch.image.dtype == torch.uint8
    expected = torch.arange(60, dtype=torch.uint8).reshape(4, 5, 3).permute(2, 0, 1)
    assert torch.equal(batch.image[0], expected) and torch.equal(batch.image[2], expected)
    assert torch.all(batch.image[1] == 0)

    assert batch.audio is not None and batch.audio.shape == (3, 5)
    assert batch.audio_lengths is not None and batch.audio_lengths.tolist() == [5, 0, 3]
    assert batch.audio[2].tolist() == [0.5, 0.5, 0.5, 0.0, 0.0] and torch.all(batch.audio[1] == 0)

    assert batch.video is not None and batch.video.shape == (3, 5, 3, 4, 6)
    assert batch.video_mask is not None and batch.video_mask.tolist() == [
        [False] * 5,
        [True] * 3 + [False] * 2,
        [True] * 5,
    ]
    assert (
        torch.all(batch.video[1, :3] == 7)
        and torch.all(batch.video[1, 3:] == 0)
        and torch.all(batch.video[0] == 0)
    )
    assert batch.texts == ["a red circle", "no image here", ""] and batch.text is None


def test_tokenized_text_rows_follow_presence() -> None:
    tok = WordTokenizer.build(["a red circle", "no image here"])
    batch = collate_records(records(), text_fn=Tokenize(tok, max_length=8))
    assert batch.text is not None
    alone = tok.encode(["a red circle", "no image here"], max_length=8)
    assert torch.equal(batch.text.input_ids[:2], alone.input_ids)
    assert torch.equal(batch.text.attention_mask[:2], alone.attention_mask)
    assert torch.all(batch.text.input_ids[2] == tok.pad_id) and torch.all(batch.text.attention_mask[2] == 0)
    # no text at all: the tokenizer is not called and text stays None
    calls = []
    none = collate_records(
        [Record(image=np.zeros((2, 2), np.float32), key="x")], text_fn=lambda t: calls.append(t)
    )
    assert none.text is None and calls == [] and none.present["text"].tolist() == [False]
    assert none.image is not None and none.audio is None and none.video is None and none.video_mask is None


def test_functions_labels_and_errors() -> None:
    recs = [
        Record(image=Image.new("RGB", (4, 4)), label="cat", key="a"),
        Record(image=Image.new("RGB", (8, 8)), label="dog", key="b"),
    ]
    batch = collate_records(
        recs, image_fn=lambda im: torch.tensor(im.size, dtype=torch.float32), label_fn={"cat": 0, "dog": 1}
    )
    assert batch.image is not None and batch.image.tolist() == [[4.0, 4.0], [8.0, 8.0]]
    assert batch.labels.tolist() == [0, 1]
    assert collate_records(recs, image_fn=lambda im: torch.zeros(1), label_fn=len).labels.tolist() == [3, 3]
    with pytest.raises(ShapeError, match=r"image of 'b' is torch.uint8 \(3, 8, 8\)"):
        collate_records(recs)
    with pytest.raises(ConfigError, match="label 'cat' of 'a' is not an int"):
        collate_records(recs, image_fn=lambda im: torch.zeros(1))
    with pytest.raises(ConfigError, match="not in label_fn"):
        collate_records(recs, image_fn=lambda im: torch.zeros(1), label_fn={"cat": 0})
    with pytest.raises(ShapeError, match="audio of 'y'"):
        collate_records(
            [
                Record(audio=np.zeros((2, 5), np.float32), key="x"),
                Record(audio=np.zeros((3, 5), np.float32), key="y"),
            ]
        )
    with pytest.raises(ShapeError, match="no default conversion"):
        collate_records([Record(video="clip.mp4", key="v")])


def test_bad_records_travel_and_to_moves_every_tensor() -> None:
    bad = [BadRecord("x.png", "truncated")]
    batch = collate_records(records(), bad=bad, text_fn=Tokenize(WordTokenizer.build(["a"]), max_length=4))
    assert batch.bad == bad
    moved = batch.to("meta")
    assert moved.image is not None and moved.image.device.type == "meta"
    assert moved.text.input_ids.device.type == "meta" and moved.present["video"].device.type == "meta"
    assert batch.image is not None and batch.image.device.type == "cpu"  # a copy, not in place
    empty = collate_records([])
    assert len(empty) == 0 and empty.labels.shape == (0,) and empty.image is None
