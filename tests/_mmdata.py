"""Build small multimodal datasets on disk for the sources, shards, inspect and fuzz tests.

Every record ``s0000``, ``s0001``, ... has a PNG image of its own size and colour and a text; most have
a WAV clip and some an MP4 clip (modalities are missing in a fixed pattern, so missing rates are known).
``corrupt`` picks, per modality, which records get a broken file (truncated PNG/WAV/MP4, text that is not
UTF-8); the set of good keys and the broken files are returned so tests can check exact accounting.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

LABELS = ("circle", "square", "star")
HAVE_VIDEO = importlib.util.find_spec("av") is not None  # PyAV writes and reads the MP4 clips
RATE = 8000


@dataclass
class Dataset:
    root: Path
    manifest: Path | None  # the CSV manifest (manifest layout) or None (folder layout)
    keys: list[str]  # every record's key, in order
    good: set[str]  # keys of the records that should load
    broken: dict[str, dict[str, Path | None]] = field(default_factory=dict)  # modality -> key -> file
    modalities: dict[str, dict[str, bool]] = field(default_factory=dict)  # key -> modality -> present


def has_audio(i: int) -> bool:
    return i % 5 != 4


def has_video(i: int) -> bool:
    return i % 2 == 0


def has_text(i: int) -> bool:
    return i % 7 != 3


def png_bytes(i: int) -> bytes:
    rng = np.random.default_rng(i)
    w, h = 8 + i % 5, 6 + i % 3
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(i: int, *, fmt: str = "WAV") -> bytes:
    rng = np.random.default_rng(10_000 + i)
    samples = (0.1 * rng.standard_normal(400 + 40 * (i % 4))).astype(np.float32)
    buf = io.BytesIO()
    soundfile.write(buf, samples, RATE, format=fmt, subtype="PCM_16" if fmt != "OGG" else "VORBIS")
    return buf.getvalue()


def mp4_bytes(i: int, *, frames: int = 3 + 0, size: int = 16) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for k in range(frames + i % 3):
            value = (i * 37 + k * 60) % 256
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), value, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def text_of(i: int) -> str:
    return f"a {LABELS[i % 3]} number {i}" + " again" * (i % 4)


def corrupt_picks(n: int, per_modality: int, *, video: bool = HAVE_VIDEO) -> dict[str, list[int]]:
    """Distinct record indices, per modality, among the records that carry it."""
    picks: dict[str, list[int]] = {}
    taken: set[int] = set()
    wanted = {"image": lambda i: True, "audio": has_audio, "text": has_text}
    if video:
        wanted["video"] = has_video
    slots = per_modality * len(wanted)
    for slot in range(slots):  # spread the broken records evenly over the dataset
        modality = list(wanted)[slot % len(wanted)]
        i = (slot * n) // slots + 1
        while i in taken or not wanted[modality](i % n):
            i += 1
        picks.setdefault(modality, []).append(i % n)
        taken.add(i % n)
    return picks


def make_manifest_dataset(root: Path, n: int, *, corrupt: int = 0, video: bool = HAVE_VIDEO) -> Dataset:
    """A CSV manifest ``root/data.csv`` with files under ``root/files``; ``corrupt`` broken files per modality."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    picks = corrupt_picks(n, corrupt, video=video) if corrupt else {}
    bad = {m: set(v) for m, v in picks.items()}
    keys, good = [], set()
    broken: dict[str, dict[str, Path | None]] = {m: {} for m in picks}
    present: dict[str, dict[str, bool]] = {}
    lines = [b"id,image,audio,video,text,label,speaker"]
    for i in range(n):
        key = f"s{i:04d}"
        keys.append(key)
        image = files / f"{key}.png"
        data = png_bytes(i)
        image.write_bytes(data[: len(data) // 2] if i in bad.get("image", ()) else data)
        audio = video_path = ""
        if has_audio(i):
            data = wav_bytes(i)
            (files / f"{key}.wav").write_bytes(data[: len(data) - 100] if i in bad.get("audio", ()) else data)
            audio = f"files/{key}.wav"
        if video and has_video(i):
            data = mp4_bytes(i)
            (files / f"{key}.mp4").write_bytes(data[: len(data) // 3] if i in bad.get("video", ()) else data)
            video_path = f"files/{key}.mp4"
        text = text_of(i).encode() if has_text(i) else b""
        if i in bad.get("text", ()):
            text = b"caf\xe9 \xff broken"
        lines.append(b",".join([key.encode(), f"files/{key}.png".encode(), audio.encode(), video_path.encode(),
                                text, LABELS[i % 3].encode(), f"sp{i % 4}".encode()]))
        for m, rows in bad.items():
            if i in rows:
                broken[m][key] = {"image": image, "audio": files / f"{key}.wav",
                                  "video": files / f"{key}.mp4", "text": None}[m]
        if not any(i in rows for rows in bad.values()):
            good.add(key)
        present[key] = {"image": True, "text": has_text(i), "audio": has_audio(i), "video": video and has_video(i)}
    manifest = root / "data.csv"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return Dataset(root=root, manifest=manifest, keys=keys, good=good, broken=broken, modalities=present)


def make_folder_dataset(root: Path, n: int, *, corrupt: int = 0, video: bool = HAVE_VIDEO) -> Dataset:
    """A ``label/file.ext`` folder: ``root/<label>/s0000.png`` (+ ``.wav``, ``.mp4``, ``.txt``)."""
    picks = corrupt_picks(n, corrupt, video=video) if corrupt else {}
    bad = {m: set(v) for m, v in picks.items()}
    keys, good = [], set()
    broken: dict[str, dict[str, Path | None]] = {m: {} for m in picks}
    present: dict[str, dict[str, bool]] = {}
    for i in range(n):
        folder = root / LABELS[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"s{i:04d}"
        key = f"{LABELS[i % 3]}/{stem}"
        keys.append(key)
        paths = {"image": folder / f"{stem}.png"}
        data = png_bytes(i)
        paths["image"].write_bytes(data[: len(data) // 2] if i in bad.get("image", ()) else data)
        if has_audio(i):
            paths["audio"] = folder / f"{stem}.wav"
            data = wav_bytes(i)
            paths["audio"].write_bytes(data[: len(data) - 100] if i in bad.get("audio", ()) else data)
        if video and has_video(i):
            paths["video"] = folder / f"{stem}.mp4"
            data = mp4_bytes(i)
            paths["video"].write_bytes(data[: len(data) // 3] if i in bad.get("video", ()) else data)
        if has_text(i):
            paths["text"] = folder / f"{stem}.txt"
            text = b"caf\xe9 \xff broken" if i in bad.get("text", ()) else text_of(i).encode()
            paths["text"].write_bytes(text)
        for m, rows in bad.items():
            if i in rows:
                broken[m][key] = paths[m]
        if not any(i in rows for rows in bad.values()):
            good.add(key)
        present[key] = {"image": True, "text": has_text(i), "audio": has_audio(i), "video": video and has_video(i)}
    return Dataset(root=root, manifest=None, keys=keys, good=good, broken=broken, modalities=present)
