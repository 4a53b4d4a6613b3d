"""Vendor WordNet 3.0 hypernyms and glosses of the 1,000 ImageNet-1k classes (towers/assets/imagenet_wordnet.tsv).

Run once by a maintainer, not at run time. WordNet 3.0 (Princeton University, the WordNet 3.0 licence:
free use with the copyright notice kept; see towers/assets/IMAGENET_CLASSES_NOTICE.md) comes from
Debian's ``wordnet-base`` package::

    apt-get download wordnet-base && dpkg -x wordnet-base_*.deb /tmp/wn
    python scripts/vendor_imagenet_wordnet.py /tmp/wn/usr/share/wordnet/data.noun src/polymodal/towers/assets

Each row: synset id, its hypernym chain (the first lemma of each ancestor, nearest first, up to the root;
the first hypernym where WordNet gives several), and its gloss. ImageNet's synset ids are WordNet 3.0
noun offsets, so ``n01440764`` is line ``01440764`` of ``data.noun``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def parse(data_noun: Path) -> dict[str, tuple[str, list[str], str]]:
    """offset -> (first lemma, hypernym offsets, gloss)."""
    out = {}
    for line in data_noun.read_text(encoding="latin-1").splitlines():
        if line.startswith(" "):  # the licence header
            continue
        head, _, gloss = line.partition(" | ")
        f = head.split()
        offset, n_words = f[0], int(f[3], 16)
        lemma = f[4].replace("_", " ")
        p = 4 + 2 * n_words
        n_ptr = int(f[p])
        hypers = [f[p + 1 + 4 * i + 1] for i in range(n_ptr) if f[p + 1 + 4 * i] in ("@", "@i")]
        out[offset] = (lemma, hypers, gloss.strip())
    return out


def main(data_noun: str, dst: str) -> None:
    wn = parse(Path(data_noun))
    classes = (Path(dst) / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    rows = []
    for line in classes:
        synset = line.split("\t", 1)[0]
        offset = synset[1:]
        chain, seen = [], set()
        node = wn[offset][1][0] if wn[offset][1] else None
        while node is not None and node not in seen:
            seen.add(node)
            chain.append(wn[node][0])
            node = wn[node][1][0] if wn[node][1] else None
        rows.append(f"{synset}\t{'; '.join(chain)}\t{wn[offset][2]}")
    (Path(dst) / "imagenet_wordnet.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(rows)} classes -> {dst}/imagenet_wordnet.tsv")


if __name__ == "__main__":
    main(*sys.argv[1:3])
