"""Build the vendored photo evaluation set (``builtin:photos``) from Tux Paint's stamp photographs.

Run once by a maintainer, not at run time: the output is committed under
``src/polymodal/data/assets/photos/``. The source is Debian's ``tuxpaint-stamps-default`` package
(GPL-2, Bill Kendrick and the Tux Paint contributors)::

    apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb /tmp/tux
    python scripts/build_photo_set.py /tmp/tux/usr/share/tuxpaint/stamps src/polymodal/data/assets/photos

Each chosen stamp is a real photograph with its background cut away (the transparent part becomes white);
stamps that are drawings (clip art, signs, symbols, the ``cartoon/`` folders, and the few drawn stamps
among the photographs: a bluebird, a butterfly, a jack-o'-lantern, a pizza slice, a skull, a tooth, a tennis
racket, a cross) are left out, checked by eye on a contact sheet. Each photo
gets one everyday, basic-level label, written by hand below from the stamp's own description.
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from pathlib import Path

from PIL import Image

# label -> stamp file stems (the PNG's name without .png); each stem is looked up once in the tree.
LABELS: dict[str, list[str]] = {
    "bird": ["blackbird", "crow", "cuckoo", "lark", "magpie", "pigeon", "seagull", "silver-gull", "vulture",
             "owl", "pelican", "tucan", "quetzal", "adelaide-rosella", "rainbow-lorikeet", "crowned_crane",
             "heron_greatblue", "pink_flamingo", "peacock"],
    "chicken": ["chicken_profile", "hen", "rooster"],
    "duck": ["drake", "duck"],
    "penguin": ["little-penguin", "magellanic_penguin", "penguin"],
    "fish": ["bluegroper", "butterflyfish", "clownfish", "coraltrout", "dolphinfish", "lionfish",
             "moonwrasse", "stripedfish"],
    "insect": ["bee", "fly", "grasshopper", "hornet", "hoverfly", "mantis", "xanthia"],
    "cow": ["bull", "cow", "cow_white", "zebu"],
    "sheep": ["sheep", "sheep_lamb", "ram"],
    "goat": ["goat", "mountaingoat"],
    "deer": ["caribou", "deer", "doe", "wapiti"],
    "pig": ["pig", "pig_golden", "pig_golden2"],
    "rabbit": ["rabbit_little", "rabbit-2", "rabbit"],
    "mouse": ["mouse", "rat"],
    "monkey": ["chimp", "gorilla", "tamarin_emperor"],
    "bear": ["bear", "european-bear"],
    "lion": ["lion", "lion-2"],
    "tiger": ["tiger", "tiger_sumatran"],
    "horse": ["horse"],
    "donkey": ["donkey", "donkey_eating"],
    "zebra": ["zebra"],
    "elephant": ["elephant"],
    "giraffe": ["giraffe"],
    "camel": ["camel", "dromedary"],
    "kangaroo": ["kangaroo"],
    "koala": ["koala"],
    "dolphin": ["dolphin"],
    "whale": ["whale", "orca"],
    "squirrel": ["squirrel"],
    "frog": ["frog", "frog-1"],
    "flower": ["anemone_red", "anthoorium", "bolsom", "chemparathi", "plants/flowers/daffodil", "flower1", "flower10",
               "flower2", "flower3", "flower5", "flower6", "flower8", "flower9", "iris", "marigold", "rose",
               "red-gazania", "whitestar-petunia", "yellow-flower", "pigface"],
    "tree": ["birch", "holm_oak", "liberia-palm", "tree336"],
    "mushroom": ["cep-1", "cep", "mushroom"],
    "apple": ["apple_fuji", "apple_granny_smith", "apple_green", "apple_red", "apple_sierra_beauty"],
    "orange": ["orange", "mandarine", "orange_seville"],
    "lemon": ["lemon"],
    "banana": ["banana"],
    "grapes": ["grapes"],
    "pineapple": ["pineapple"],
    "strawberry": ["strawberry", "Strawberry2"],
    "pear": ["pear"],
    "carrot": ["carrot"],
    "broccoli": ["broccoli"],
    "corn": ["corn"],
    "lettuce": ["lettuce", "redlettuce"],
    "garlic": ["garlic", "garlics"],
    "pepper": ["pepper", "yellowpepper", "chilepepper"],
    "tomato": ["tomato"],
    "potato": ["potato"],
    "pumpkin": ["pumpkin_small"],
    "walnut": ["walnut", "walnut_shelled"],
    "guitar": ["guitar2", "guitar_classical", "guitar_electric", "guitar_electric_bass"],
    "violin": ["violin"],
    "trumpet": ["trumpet"],
    "drum": ["drum_tomtom_floor", "drumkit"],
    "hat": ["blue_fedora", "feathered_hat", "green_fedora", "sombrero", "tophat"],
    "car": ["beetle", "sedan", "sportscar2", "indycar"],
    "truck": ["truck", "firetruck", "garbagetruck"],
    "bus": ["green_korean_bus"],
    "airplane": ["747", "f22_raptor"],
    "ship": ["chineseJunk"],
    "hot air balloon": ["balloon360"],
    "ball": ["basketball", "cricketball", "soccer", "tennis_ball", "football"],
    "coin": ["symbols/money/us/coins/001penny", "symbols/money/us/coins/025quarter", "symbols/money/canadian/coins/005nickel", "symbols/money/canadian/coins/010dime"],
    "key": ["key"],
    "hammer": ["hammer", "mallet_metal"],
    "wrench": ["wrench", "wrench_adjustable", "wrench_plumbers"],
    "saw": ["saw"],
    "scissors": ["scissors_small_closed", "scissors_small_open"],
    "teapot": ["teapot"],
    "mug": ["mug"],
    "kettle": ["kettle"],
    "light bulb": ["Lightbulb"],
    "camera": ["camera_35mm"],
    "binoculars": ["binoculars"],
    "toilet": ["toilet"],
    "candle": ["candle", "holiday_candle"],
    "moon": ["moon_3qt", "moon_crescent", "moon_full"],
    "planet": ["1_mercury", "2_venus", "3_earth", "4_mars", "5_jupiter", "6_saturn", "7_uranus", "8_neptune"],
    "gravestone": ["grave-a", "grave-b", "grave-d", "grave-e", "grave-f", "grave-h", "grave-i"],
    "syringe": ["syringe"],
    "trophy": ["trophy_cup"],
    "teddy bear": ["edward_bear"],
    "mailbox": ["uk_post_box", "usps_mailbox"],
    "garbage can": ["garbagecan", "wheelie_bin"],
}

MAX_SIDE = 256  # the towers read 224 px; keep a little more for the report's thumbnails


def find(root: Path, stem: str) -> Path:
    if "/" in stem:  # a stem that names two stamps is given with its folder
        return root / f"{stem}.png"
    hits = [p for p in root.rglob(f"{stem}.png") if "cartoon" not in p.parts]
    if len(hits) != 1:
        raise SystemExit(f"stamp {stem!r}: expected one photo PNG, found {[str(h) for h in hits]}")
    return hits[0]


def flatten(path: Path) -> bytes:
    im = Image.open(path).convert("RGBA")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    bg = Image.new("RGBA", im.size, "white")
    bg.alpha_composite(im)
    buf = io.BytesIO()
    bg.convert("RGB").save(buf, "JPEG", quality=90, optimize=True)
    return buf.getvalue()


def main(src: str, dst: str) -> None:
    root, out = Path(src), Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with zipfile.ZipFile(out / "photos.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for label, stems in LABELS.items():
            for stem in stems:
                path = find(root, stem)
                name = f"{label.replace(' ', '_')}/{Path(stem).name}.jpg"
                zf.writestr(name, flatten(path))
                desc = (path.with_suffix(".txt").read_text(encoding="utf-8").splitlines() or [""])[0].strip()
                rows.append({"image": name, "label": label, "source": str(path.relative_to(root)),
                             "description": desc})
    with open(out / "photos.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label", "source", "description"])
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} photos, {len(LABELS)} labels -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
