"""Vendor OpenMoji's emoji drawn in two other styles, Twemoji and Noto, for ``builtin:twemoji`` / ``builtin:noto``.

Run once by a maintainer, not at run time; the output is committed under
``src/polymodal/data/assets/emoji_styles/``::

    npm install emoji-datasource-twitter@16 emoji-datasource-google@16   # in a scratch folder
    python scripts/vendor_emoji_styles.py SCRATCH/node_modules src/polymodal/data/assets/emoji_styles

For every emoji of the vendored OpenMoji set (same hexcode, ignoring the FE0F variation selector) that
the package draws, the 64x64 PNG is stored unchanged in ``twemoji64.zip`` / ``noto64.zip`` as
``<OpenMoji hexcode>.png``. Captions, groups, subgroups and splits are OpenMoji's, so an emoji is in the
same split in every style.
"""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from pathlib import Path

STYLES = {"twemoji": ("emoji-datasource-twitter", "twitter"), "noto": ("emoji-datasource-google", "google")}


def _key(code: str) -> str:
    return "-".join(p for p in code.upper().split("-") if p != "FE0F")


def main(node_modules: str, dst: str) -> None:
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    openmoji = Path(__file__).resolve().parents[1] / "src/polymodal/data/assets/openmoji/openmoji.csv"
    hexcodes = [r["hexcode"] for r in csv.DictReader(openmoji.open(encoding="utf-8"))]
    for style, (package, folder) in STYLES.items():
        root = Path(node_modules) / package
        images = {}
        for e in json.loads((root / "emoji.json").read_text(encoding="utf-8")):
            if e.get(f"has_img_{folder}"):
                images[_key(e["unified"])] = root / "img" / folder / "64" / e["image"]
        n = 0
        with zipfile.ZipFile(out / f"{style}64.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            for code in hexcodes:
                path = images.get(_key(code))
                if path is not None and path.is_file():
                    zf.write(path, f"{code}.png")
                    n += 1
        print(f"{style}: {n} of {len(hexcodes)} OpenMoji emoji")


if __name__ == "__main__":
    main(*sys.argv[1:3])
