"""Caption metrics against the reference implementations and hand-computed worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval.caption_metrics import bleu, bootstrap, cider_d, clip_score, coco_tokenize

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


def test_cider_d_gaussian_length_penalty_by_hand() -> None:
    # No word repeats, so clipping min(g_hyp, g_ref) changes nothing here; only the length differs. Every
    # gram occurs in one image's references out of two: idf = log 2 for all. Image 1: hypothesis "a b",
    # reference "a b c d e f g h". 1-grams: 2 shared of 2 and 8 -> cosine 2 / sqrt(2 * 8) = 1/2; 2-grams:
    # "a b" of 1 and 7 -> 1/sqrt(7); no 3- or 4-grams in the hypothesis -> 0. The COCO code measures length
    # in bigrams, 1 against 7: penalty exp(-(1 - 7)^2 / (2 * 6^2)) = exp(-1/2) (Vedantam et al. 2015, CIDEr-D).
    refs = [["a b c d e f g h"], ["x y"]]
    got = cider_d(["a b", "x y"], refs)
    assert got.per_image[0] == pytest.approx(10 * (1 / 2 + 1 / math.sqrt(7)) / 4 * math.exp(-0.5), rel=1e-12)
    # The penalty is the only length term: with a very wide Gaussian it goes to 1.
    wide = cider_d(["a b", "x y"], refs, sigma=1e9)
    assert wide.per_image[0] == pytest.approx(10 * (1 / 2 + 1 / math.sqrt(7)) / 4, rel=1e-12)


def test_cider_d_clips_repeated_grams_by_hand() -> None:
    # Same length (3 words, 2 bigrams each) so the penalty is exp(0) = 1; only clipping matters. Image 1:
    # hypothesis "a a a", reference "a b c", idf log 2 throughout. 1-grams: the hypothesis weight of "a" is
    # 3 log 2 but is clipped to the reference's log 2, so the numerator is (log 2)^2 over norms 3 log 2 and
    # sqrt(3) log 2: 1 / (3 sqrt 3). Unclipped it would be the plain cosine 1/sqrt(3), three times more.
    # "a a" and "a a a" are not in the reference -> 0.
    got = cider_d(["a a a", "x y z"], [["a b c"], ["x y z"]])
    assert got.per_image[0] == pytest.approx(10 * (1 / (3 * math.sqrt(3))) / 4, rel=1e-12)
    assert got.per_image[1] == pytest.approx(10 * 3 / 4, rel=1e-12)  # 1-, 2-, 3-gram cosines 1, no 4-gram


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


# --- COCO normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("flag: United States", "flag united states"),  # colon dropped, lower case
    ("A button (blood type)", "a button blood type"),  # brackets dropped (PTB's -LRB- / -RRB-)
    ("keycap: #", "keycap #"),  # symbols that are not punctuation stay
    ("Don’t worry, it’s fine.", "do n't worry it 's fine"),  # curly quotes, clitics, final period
    ("T-shirt at 3.5 o'clock", "t-shirt at 3.5 o'clock"),  # hyphenated words, decimals, inner apostrophe kept
    ("Japanese “here” button", "japanese here button"),  # quotes dropped
    ("flag: St. Kitts & Nevis", "flag st. kitts & nevis"),  # an inner abbreviation keeps its period
    ("hot beverage… -- hot!", "hot beverage hot"),  # ellipsis, dashes, ! dropped
])
def test_coco_tokenize_normalises_as_the_coco_evaluation(text: str, expected: str) -> None:
    assert coco_tokenize(text) == expected


def test_coco_tokenize_matches_the_treebank_tokenizer_on_every_openmoji_name() -> None:
    # NLTK's Treebank tokenizer is a reference implementation of the Penn Treebank rules the COCO evaluation
    # tokenizes with; the COCO normalisation is its tokens, lower-cased, without the punctuation tokens.
    from nltk.tokenize import TreebankWordTokenizer

    from polymodal.data.openmoji import load_openmoji
    from polymodal.eval.caption_metrics import _DROPPED, _QUOTES

    treebank = TreebankWordTokenizer()
    texts = sorted({r.text for s in ("train", "val", "test") for r in load_openmoji(s)})
    texts += ["A man's hat isn't red; it's blue!", "two dogs (big) and a cat?", 'she said "hi" -- then left.',
              "x/y = 3*4 @ 5% #tag", "they'll go, we'd stay, I'm here, you've won", "1,000 cats: 3.5 each"]
    differ = [t for t in texts
              if coco_tokenize(t) != " ".join(w for w in treebank.tokenize(t.translate(_QUOTES).lower()) if w not in _DROPPED)]
    assert len(texts) > 2000 and differ == []


# --- bootstrap intervals -----------------------------------------------------------------------------


def _cider(h, r) -> float:
    return cider_d(h, r).score


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_images() -> None:
    refs = [[r] for r in ("red heart", "grinning face", "cat face", "smiling face", "dog", "blue circle")] * 10
    hyps = ["red heart", "grinning cat", "cat", "face", "a dog", "circle"] * 10
    small = bootstrap(_cider, hyps[:12], refs[:12], samples=200, seed=1)
    large = bootstrap(_cider, hyps, refs, samples=200, seed=1)
    assert small.estimate == pytest.approx(_cider(hyps[:12], refs[:12]))
    assert small.low <= small.estimate <= small.high and large.low <= large.estimate <= large.high
    assert large.high - large.low < small.high - small.low
    assert bootstrap(_cider, hyps, refs, samples=200, seed=1) == large  # the seed fixes the resamples
    exact = bootstrap(lambda h, r: bleu(h, r).bleu[0], ["a b"] * 5, [["a b"]] * 5, samples=50)
    assert (exact.low, exact.estimate, exact.high) == (1.0, 1.0, 1.0)  # nothing varies: no width


def test_paired_bootstrap_of_a_difference() -> None:
    refs = [[f"word{i} thing"] for i in range(40)]
    good = [f"word{i} thing" for i in range(40)]
    bad = [f"word{i} other" if i % 2 else "nothing here" for i in range(40)]
    lead = bootstrap(_cider, good, refs, baseline=bad, samples=200)
    assert lead.estimate == pytest.approx(_cider(good, refs) - _cider(bad, refs))
    assert lead.low > 0 and lead.above_zero == 1.0  # a clear lead: every resample agrees
    tie = bootstrap(_cider, good, refs, baseline=good, samples=50)
    assert (tie.low, tie.estimate, tie.high, tie.above_zero) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ShapeError):
        bootstrap(_cider, good, refs, baseline=bad[:3])
    with pytest.raises(ConfigError):
        bootstrap(_cider, good, refs, level=1.0)
