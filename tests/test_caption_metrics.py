"""Caption metrics against the reference implementations and hand-computed worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval.caption_metrics import bleu, cider_d, clip_score

# The worked example of docs/vision-language.md. Its CIDEr-D numbers come from the COCO caption
# evaluation code (pycocoevalcap 1.2, cider/cider_scorer.py, run once offline on these lists); the BLEU
# numbers from NLTK 3.9 corpus_bleu with weights (1/n,)*n.
HYPS = ["a red heart", "a grinning face with big eyes", "the cat cat cat", "smiling face"]
REFS = [
    ["red heart", "a red heart symbol"],
    ["grinning face with big eyes", "a grinning face"],
    ["cat face", "a cat"],
    ["smiling face with smiling eyes", "face"],
]
COCO_CIDER = 3.5018683682338803
COCO_CIDER_PER_IMAGE = (4.97972351, 6.39779679, 0.73224608, 1.89770709)
NLTK_BLEU = (0.8, 0.7627700713964739, 0.7137658555036082, 0.5900468726392808)


def test_cider_d_matches_coco_code_on_worked_example() -> None:
    got = cider_d(HYPS, REFS)
    assert got.score == pytest.approx(COCO_CIDER, abs=1e-9)
    assert got.per_image == pytest.approx(COCO_CIDER_PER_IMAGE, abs=1e-7)


def test_cider_d_by_hand() -> None:
    # Two images, each hypothesis equal to its only reference: idf = log 2 for every gram, so the 1- and
    # 2-gram cosines are 1, while 3- and 4-grams do not exist (norm 0 -> 0): 10 * (1 + 1 + 0 + 0) / 4.
    assert cider_d(["a b", "c d"], [["a b"], ["c d"]]).score == pytest.approx(5.0)
    # A gram in every image's references has idf log(2) - log(2) = 0 and counts for nothing.
    assert cider_d(["x", "x"], [["x"], ["x"]]).score == pytest.approx(0.0)


def test_cider_d_length_penalty_and_clipping() -> None:
    refs = [["a big red heart shape"], ["a small blue square box"]]
    base = cider_d(["a big red heart shape", "a small blue square box"], refs).per_image[0]
    repeated = cider_d(["a big red heart shape heart heart heart", "a small blue square box"], refs).per_image[0]
    assert repeated < base  # clipping and the Gaussian length penalty both punish padding


def test_bleu_matches_nltk_worked_example() -> None:
    got = bleu(HYPS, REFS)
    assert got.bleu == pytest.approx(NLTK_BLEU, abs=1e-12)


def test_bleu_by_hand() -> None:
    # p1 = 2/4 (the, cat clipped to 1 each), p2 = 1/3 ("the cat" clipped to 1), c = 4 > r = 3 -> BP = 1.
    got = bleu(["the cat the cat"], [["the cat sat"]])
    assert got.precisions[:2] == pytest.approx((0.5, 1 / 3))
    assert got.bleu[1] == pytest.approx(math.sqrt(0.5 / 3))
    # Brevity: c = 2 < r = 4 -> exp(1 - 4/2).
    assert bleu(["a b"], [["a b c d"]]).brevity_penalty == pytest.approx(math.exp(-1))


def test_bleu_matches_nltk_random_corpus() -> None:
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    rng = torch.Generator().manual_seed(0)
    words = "a b c d e f".split()

    def sentence(n: int) -> str:
        return " ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=rng))

    hyps = [sentence(int(torch.randint(3, 9, (1,), generator=rng))) for _ in range(30)]
    refs = [[sentence(int(torch.randint(2, 10, (1,), generator=rng))) for _ in range(3)] for _ in range(30)]
    got = bleu(hyps, refs)
    for n in range(1, 5):
        want = nltk_bleu.corpus_bleu(
            [[r.split() for r in rr] for rr in refs], [h.split() for h in hyps], weights=(1 / n,) * n
        )
        assert got.bleu[n - 1] == pytest.approx(want, abs=1e-12)


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ShapeError, match="differ"):
        bleu(["a"], [["a"], ["b"]])
    with pytest.raises(ConfigError, match="references"):
        cider_d(["a"], ["a"])  # a string, not a list of references


class _FakeAligner:
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]])[: len(texts)], dim=-1)


def test_clip_score_is_clamped_scaled_cosine() -> None:
    # cos = 1 for the first pair, -1 for the second (clamped to 0): mean 2.5 * (1 + 0) / 2.
    images = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    assert clip_score(_FakeAligner(), images, ["a", "b"]) == pytest.approx(1.25)
