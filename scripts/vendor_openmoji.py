"""Rebuild the vendored OpenMoji subset in src/polymodal/data/assets/openmoji/ from the raw npm package.

Usage:
    python scripts/vendor_openmoji.py --raw /path/to/openmoji [--out src/polymodal/data/assets/openmoji]

The raw folder is the unpacked npm package openmoji@17.0.0 (color/png72/*.png, data/openmoji.csv,
LICENSE.txt). What it writes:

- ``openmoji72.zip``: the 72x72 colour PNGs of every emoji without a skin tone (empty ``skintone``
  column), byte-for-byte as published, stored uncompressed (the PNGs are already deflated; deflating
  again saved nothing when measured), entries named ``<hexcode>.png`` in catalogue order, with fixed
  timestamps so the zip is byte-identical on every run.
- ``openmoji.csv``: hexcode, emoji, annotation, tags, group, subgroup of the same emoji. ``tags`` joins
  the Unicode CLDR ``tags`` and the ``openmoji_tags`` columns (", "-separated, duplicates dropped).
- ``LICENSE.txt``: the CC BY-SA 4.0 text, copied.

Rows whose PNG is missing from the raw copy are skipped and printed. README.md is written by hand.
"""

from __future__ import annotations

import argparse
import csv
import sys
import zipfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "data" / "assets" / "openmoji"
FIELDS = ("hexcode", "emoji", "annotation", "tags", "group", "subgroup")
ZIP_NAME = "openmoji72.zip"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp; keeps the archive reproducible


def split_tags(*columns: str) -> list[str]:
    """Comma-separated tag columns -> one list, in order, without duplicates or blanks."""
    tags: dict[str, None] = {}
    for col in columns:
        tags.update(dict.fromkeys(t.strip() for t in col.split(",") if t.strip()))
    return list(tags)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True, help="unpacked openmoji@17.0.0 npm package")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    raw: Path = args.raw
    out: Path = args.out

    with open(raw / "data" / "openmoji.csv", encoding="utf-8", newline="") as f:
        catalogue = list(csv.DictReader(f))
    plain = [r for r in catalogue if r["skintone"] == ""]

    kept: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for r in plain:
        (kept if (raw / "color" / "png72" / f"{r['hexcode']}.png").is_file() else skipped).append(r)
    for r in skipped:
        print(f"skipped {r['hexcode']} ({r['annotation']}): no color/png72/{r['hexcode']}.png", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out / ZIP_NAME, "w", compression=zipfile.ZIP_STORED) as z:
        for r in kept:
            info = zipfile.ZipInfo(f"{r['hexcode']}.png", date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, (raw / "color" / "png72" / f"{r['hexcode']}.png").read_bytes())

    with open(out / "openmoji.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FIELDS)
        for r in kept:
            tags = ", ".join(split_tags(r["tags"], r["openmoji_tags"]))
            writer.writerow([r["hexcode"], r["emoji"], r["annotation"], tags, r["group"], r["subgroups"]])

    (out / "LICENSE.txt").write_bytes((raw / "LICENSE.txt").read_bytes())

    size = (out / ZIP_NAME).stat().st_size + (out / "openmoji.csv").stat().st_size
    print(
        f"{len(catalogue)} catalogue rows, {len(plain)} without skin tone, {len(kept)} written, "
        f"{len(skipped)} skipped; zip + csv = {size / 1e6:.2f} MB in {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
