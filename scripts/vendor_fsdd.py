"""Vendor the Free Spoken Digit Dataset into the package: one lossless FLAC per clip, in one zip.

    python scripts/vendor_fsdd.py --raw /path/to/free-spoken-digit-dataset

reads ``recordings/*.wav`` (3,000 clips, 8 kHz, 16-bit mono) and ``SOURCE.txt`` (the upstream commit)
from the raw checkout and writes ``src/polymodal/data/assets/fsdd/``:

- ``fsdd.zip``: ``{digit}_{speaker}_{index}.flac`` per clip (FLAC level 8, stored uncompressed in the
  zip since FLAC is already compressed) and ``manifest.csv`` (name, digit, speaker, index, frames),
  deflated. Entries are sorted and time-stamped 1980-01-01, so the same
  input gives the same bytes.
- ``README.md``: attribution, upstream commit, what changed.
- ``LICENSE.txt``: copied from ``--license`` when given (the CC BY-SA 4.0 legal code); kept otherwise.

FLAC is lossless: every decoded clip equals the original WAV sample for sample (checked here).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import soundfile

NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[a-z]+)_(?P<index>[0-9]+)$")
EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip time stamps make the archive reproducible
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "data" / "assets" / "fsdd"

README = """# Free Spoken Digit Dataset (vendored)

3,000 recordings of spoken digits 0-9: 6 speakers x 10 digits x 50 repetitions, English, mono, 8 kHz,
16-bit. Loaded by `polymodal.data.fsdd.load_fsdd`.

## Attribution

Jakobovski et al., Free Spoken Digit Dataset (FSDD),
<https://github.com/Jakobovski/free-spoken-digit-dataset>. Vendored from commit `{commit}`.

Licence: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0), as stated in the
dataset's README; the legal code is in `LICENSE.txt`. This vendored copy is under the same licence.

Speakers (from the dataset's `metadata.py`; all male, English): george (GRC/Greek accent), jackson
(USA/neutral), lucas (DEU/German), nicolas (BEL/French), theo (USA/neutral), yweweler (DEU/German).

## What changed

- Format only: each `recordings/{{digit}}_{{speaker}}_{{index}}.wav` (PCM 16-bit WAV) was re-encoded
  losslessly as `{{digit}}_{{speaker}}_{{index}}.flac` and all {count} clips were put in `fsdd.zip` (stored,
  not deflated). Decoded samples are identical to the WAV files (checked when vendoring);
  `manifest.csv` inside the zip lists each clip's digit, speaker, index and frame count.
- Nothing was trimmed, resampled, normalised, added or removed.
- Size: {wav_mb:.1f} MB of WAV data became a {zip_mb:.1f} MB zip.

Regenerate with `python scripts/vendor_fsdd.py --raw PATH_TO_FSDD_CHECKOUT`.

## Splits used by polymodal

The dataset's README gives the official test split as recordings numbered 0-4 of every digit and
speaker (300 clips, "the first 10%"); the rest is train. `load_fsdd` carves a validation split from
that train part, deterministically: recordings 5-9 (300 clips); train is then 10-49 (2,400 clips).
"""


def _commit(raw: Path) -> str:
    """The upstream commit recorded in the raw checkout's SOURCE.txt (``... commit=HEX``)."""
    source = raw / "SOURCE.txt"
    if not source.is_file():
        sys.exit(f"{source}: missing (it records the upstream commit)")
    match = re.search(r"commit=([0-9a-f]{7,40})", source.read_text())
    if match is None:
        sys.exit(f"{source}: no 'commit=...' in it")
    return match.group(1)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def vendor(raw: Path, out: Path, license_path: Path | None) -> None:
    """Write ``fsdd.zip`` and ``README.md`` (and ``LICENSE.txt`` when given) into ``out``."""
    wavs = sorted((raw / "recordings").glob("*.wav"))
    if not wavs:
        sys.exit(f"{raw / 'recordings'}: no .wav files")
    commit = _commit(raw)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    wav_bytes = 0
    target = out / "fsdd.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for wav in wavs:
            match = NAME.match(wav.stem)
            if match is None:
                sys.exit(f"{wav}: name is not {{digit}}_{{speaker}}_{{index}}.wav")
            info = soundfile.info(str(wav))
            if (info.samplerate, info.channels, info.subtype) != (8000, 1, "PCM_16"):
                got = f"{info.samplerate} Hz, {info.channels} channels, {info.subtype}"
                sys.exit(f"{wav}: expected 8 kHz mono PCM_16, got {got}")
            samples, _ = soundfile.read(str(wav), dtype="int16")
            buffer = io.BytesIO()
            soundfile.write(buffer, samples, 8000, format="FLAC", subtype="PCM_16", compression_level=1.0)
            flac = buffer.getvalue()
            decoded, _ = soundfile.read(io.BytesIO(flac), dtype="int16")
            if not np.array_equal(decoded, samples):
                sys.exit(f"{wav}: FLAC round trip changed the samples")
            archive.writestr(_entry(f"{wav.stem}.flac"), flac)
            wav_bytes += wav.stat().st_size
            rows.append([wav.stem, match["digit"], match["speaker"], match["index"], len(samples)])
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["name", "digit", "speaker", "index", "frames"])
        writer.writerows(rows)
        manifest = _entry("manifest.csv")
        manifest.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(manifest, table.getvalue())
    zip_bytes = target.stat().st_size
    (out / "README.md").write_text(
        README.format(commit=commit, count=len(rows), wav_mb=wav_bytes / 1e6, zip_mb=zip_bytes / 1e6)
    )
    if license_path is not None:
        shutil.copyfile(license_path, out / "LICENSE.txt")
    elif not (out / "LICENSE.txt").is_file():
        sys.exit(f"{out / 'LICENSE.txt'} is missing: pass --license with the CC BY-SA 4.0 legal code")
    print(f"{len(rows)} clips, {wav_bytes / 1e6:.1f} MB WAV -> {target} {zip_bytes / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="checkout of free-spoken-digit-dataset")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="asset folder to write")
    parser.add_argument("--license", type=Path, default=None, help="CC BY-SA 4.0 legal code to copy")
    args = parser.parse_args()
    vendor(args.raw, args.out, args.license)


if __name__ == "__main__":
    main()
