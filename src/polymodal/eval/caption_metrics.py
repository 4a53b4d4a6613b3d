"""Caption metrics: corpus BLEU-1..4, CIDEr-D, and a CLIP-score through a polymodal aligner.

All text metrics take captions that are already tokenised as whitespace-separated words, so both metrics
see exactly the same tokens. :func:`coco_tokenize` is the COCO caption evaluation's normalisation (its
``PTBTokenizer``: Penn Treebank tokens, lower case, punctuation removed); apply it to hypotheses and
references alike before scoring.

* **BLEU** (Papineni et al. 2002) is the corpus-level definition of NLTK's ``corpus_bleu`` with its
  default (no) smoothing: clipped n-gram counts summed over the corpus, geometric mean of the modified
  precisions with uniform weights, brevity penalty ``exp(1 - r/c)`` with ``r`` the sum over sentences
  of the reference length closest to the hypothesis length (ties to the shorter one).
* **CIDEr-D** (Vedantam et al. 2015) is the variant of the COCO caption evaluation code
  (``pycocoevalcap/cider/cider_scorer.py``): TF-IDF n-gram vectors (n = 1..4) with document frequency
  counted over each image's reference set, clipped hypothesis weights, a Gaussian length penalty with
  sigma = 6, mean over n and over references, times 10. The code's quirk is kept on purpose so numbers
  match: its "length" of a caption is its number of bigrams (words - 1).
* **CLIP-score** (Hessel et al. 2021): ``w * max(cos(image, text), 0)`` with ``w = 2.5``, averaged.

:func:`bootstrap` gives a percentile interval of a corpus metric by resampling images with replacement
(the corpus statistics, such as CIDEr-D's document frequencies, are recomputed on every resample), and of
the difference between two systems on the same resamples (paired), to tell a real lead from noise.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from polymodal.errors import ConfigError, ShapeError

__all__ = ["BleuScore", "CiderScore", "Interval", "bleu", "bootstrap", "cider_d", "clip_score", "coco_tokenize", "ngrams"]

Ngram = tuple[str, ...]


# ---------------------------------------------------------------------------------------------------
# COCO text normalisation
# ---------------------------------------------------------------------------------------------------

# What pycocoevalcap's PTBTokenizer drops after Stanford's PTB tokenizer (run with -lowerCase): punctuation,
# quotes and brackets (which PTB writes as ``, '', -LRB-, ...).
_DROPPED = frozenset(["''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-",
                      "--", "...", ";", '"', "(", ")", "{", "}"])
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"',
                         "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2026": "..."})
_SPLIT = [
    (re.compile(r"(^|\s)'|'(?=\s|$)"), r"\1 ' "),  # a quote mark, not an apostrophe inside a word (o'clock)
    (re.compile(r"(\w)(n't)\b"), r"\1 \2"),  # contractions as PTB splits them: do n't, it 's, we 're
    (re.compile(r"(\w)('(?:s|re|ve|ll|d|m))\b"), r"\1 \2"),
    (re.compile(r"\.\.+|\.(?=[\s'\")\]}]*$)"), r" \g<0> "),  # "..." and the final period; "st." and "3.5" stay
    (re.compile(r"(?<!\d),|,(?!\d)"), r" , "),  # commas, except inside numbers (1,000)
    (re.compile(r"(?<!\w)-+|-+(?!\w)"), r" \g<0> "),  # dashes that are not inside a hyphenated word
    (re.compile(r"[;@#$%&?!:()\[\]{}<>\"]"), r" \g<0> "),  # the symbols PTB splits off (not / * + = inside words)
]


def coco_tokenize(text: str) -> str:
    """``text`` normalised as the COCO caption evaluation does before BLEU and CIDEr-D.

    pycocoevalcap's ``PTBTokenizer`` runs Stanford's Penn Treebank tokenizer with lower-casing and drops the
    punctuation tokens; this reimplements that without Java: curly quotes read as straight ones, clitics
    split off (``don't`` -> ``do n't``, ``woman's`` -> ``woman 's``), hyphenated words, decimals and
    ``o'clock``, ``st.`` and ``x/y`` kept whole, ``; @ # $ % & ? ! :``, brackets and quotes split off, then
    ``. , : ; ? ! - -- ...``, quotes and brackets removed (``flag: United States`` -> ``flag united states``,
    ``A button (blood type)`` -> ``a button blood type``); ``#``, ``&``, ``$``, ``%`` and ``@`` stay, as in
    PTB. On every OpenMoji name and on sentences with clitics it gives NLTK's Treebank tokenizer's tokens
    less the dropped ones (tests/test_caption_metrics.py).
    """
    t = text.translate(_QUOTES).lower()
    for pattern, repl in _SPLIT:
        t = pattern.sub(repl, t)
    return " ".join(w for w in t.split() if w not in _DROPPED)


def ngrams(words: Sequence[str], n: int) -> Counter[Ngram]:
    """Counts of the ``n``-grams of ``words``.

    Args:
        words: Tokens.
        n: Gram length, at least 1.
    """
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise ShapeError(f"hypotheses ({len(hypotheses)}) and references ({len(references)}) differ in length")
    if not hypotheses:
        raise ConfigError("caption metrics: need at least one hypothesis")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ConfigError(f"references[{i}]: must be a non-empty list of strings")


# ---------------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BleuScore:
    """Corpus BLEU with uniform weights over 1..n grams, in [0, 1].

    Args:
        bleu: ``bleu[n-1]`` is BLEU-n (n = 1..4).
        precisions: Modified n-gram precisions p_n (corpus level).
        brevity_penalty: ``BP = exp(1 - r/c)`` if ``c < r`` else 1.
        hyp_length: ``c``, total hypothesis words.
        ref_length: ``r``, total closest reference words.
    """

    bleu: tuple[float, float, float, float]
    precisions: tuple[float, float, float, float]
    brevity_penalty: float
    hyp_length: int
    ref_length: int


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> BleuScore:
    """Corpus BLEU-1..4 (NLTK ``corpus_bleu`` without smoothing, weights ``(1/n,) * n``).

    Args:
        hypotheses: One whitespace-tokenised caption per image.
        references: Per image, one or more whitespace-tokenised reference captions.
    """
    _check_corpus(hypotheses, references)
    matched = [0, 0, 0, 0]
    total = [0, 0, 0, 0]
    c = r = 0
    for hyp_text, ref_texts in zip(hypotheses, references, strict=True):
        hyp = hyp_text.split()
        refs = [ref.split() for ref in ref_texts]
        for n in range(1, 5):
            counts = ngrams(hyp, n)
            # Clip each n-gram's count by its largest count in any one reference (eq. 1 of the paper).
            max_ref: Counter[Ngram] = Counter()
            for ref in refs:
                max_ref |= ngrams(ref, n)
            matched[n - 1] += sum(min(k, max_ref[g]) for g, k in counts.items())
            # NLTK counts at least 1 per sentence in the denominator (a too-short hypothesis scores 0/1).
            total[n - 1] += max(1, len(hyp) - n + 1)
        c += len(hyp)
        # Closest reference length, ties to the shorter (NLTK's closest_ref_length).
        r += min((len(ref) for ref in refs), key=lambda m: (abs(m - len(hyp)), m))
    precisions = tuple(m / t if t > 0 else 0.0 for m, t in zip(matched, total, strict=True))
    bp = 0.0 if c == 0 else (1.0 if c > r else math.exp(1 - r / c))
    scores = []
    for n in range(1, 5):
        ps = precisions[:n]
        # NLTK returns 0 when any order has no match (no smoothing): log 0 = -inf.
        scores.append(bp * math.exp(sum(math.log(p) for p in ps) / n) if min(ps) > 0 else 0.0)
    return BleuScore(
        bleu=(scores[0], scores[1], scores[2], scores[3]),
        precisions=(precisions[0], precisions[1], precisions[2], precisions[3]),
        brevity_penalty=bp,
        hyp_length=c,
        ref_length=r,
    )


# ---------------------------------------------------------------------------------------------------
# CIDEr-D
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CiderScore:
    """CIDEr-D of a corpus.

    Args:
        score: Mean over images (the number COCO reports; about 0-10, usually below 3).
        per_image: Score of each image.
    """

    score: float
    per_image: tuple[float, ...]


def _all_grams(words: list[str], n_max: int) -> Counter[Ngram]:
    counts: Counter[Ngram] = Counter()
    for n in range(1, n_max + 1):
        counts.update(ngrams(words, n))
    return counts


def cider_d(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    n_max: int = 4,
    sigma: float = 6.0,
) -> CiderScore:
    """CIDEr-D exactly as the COCO caption evaluation code computes it.

    Args:
        hypotheses: One whitespace-tokenised caption per image.
        references: Per image, one or more whitespace-tokenised reference captions.
        n_max: Longest n-gram.
        sigma: Width of the Gaussian length penalty.
    """
    _check_corpus(hypotheses, references)
    if n_max < 1 or sigma <= 0:
        raise ConfigError(f"cider_d: need n_max >= 1 and sigma > 0, got {n_max}, {sigma}")
    hyp_counts = [_all_grams(h.split(), n_max) for h in hypotheses]
    ref_counts = [[_all_grams(r.split(), n_max) for r in refs] for refs in references]
    # Document frequency: in how many images' reference sets each n-gram occurs.
    df: Counter[Ngram] = Counter()
    for refs in ref_counts:
        df.update({g for ref in refs for g in ref})
    log_n = math.log(float(len(references)))

    def tfidf(counts: Counter[Ngram]) -> tuple[list[dict[Ngram, float]], list[float], int]:
        vec: list[dict[Ngram, float]] = [{} for _ in range(n_max)]
        norm = [0.0] * n_max
        length = 0
        for g, tf in counts.items():
            n = len(g) - 1
            vec[n][g] = tf * (log_n - math.log(max(1.0, df[g])))  # raw tf, as the reference code
            norm[n] += vec[n][g] ** 2
            if n == 1:  # the reference code's length: number of bigrams
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    per_image = []
    for hyp, refs in zip(hyp_counts, ref_counts, strict=True):
        vh, nh, lh = tfidf(hyp)
        total = [0.0] * n_max
        for ref in refs:
            vr, nr, lr = tfidf(ref)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for n in range(n_max):
                # "-D": hypothesis weights clipped by the reference's, so repeating a word cannot help.
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total[n] += val * penalty
        per_image.append(10.0 * (sum(total) / n_max) / len(refs))
    return CiderScore(score=sum(per_image) / len(per_image), per_image=tuple(per_image))


# ---------------------------------------------------------------------------------------------------
# Bootstrap intervals
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A corpus score and its bootstrap percentile interval.

    Args:
        estimate: The score on the corpus as given.
        low: Lower end of the interval.
        high: Upper end.
        level: Coverage of the interval (0.95: the 2.5th to 97.5th percentile of the resampled scores).
        above_zero: Fraction of resamples whose score is above 0 (for a difference of two systems: how
            often the first one wins).
    """

    estimate: float
    low: float
    high: float
    level: float
    above_zero: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    metric: Callable[[Sequence[str], Sequence[Sequence[str]]], float],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    baseline: Sequence[str] | None = None,
    samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of a corpus metric, resampling images with replacement.

    Args:
        metric: ``(hypotheses, references) -> score`` of a whole corpus, e.g.
            ``lambda h, r: cider_d(h, r).score``.
        hypotheses: One caption per image.
        references: Per image, its reference captions.
        baseline: Another system's captions of the same images: the interval is then of
            ``metric(hypotheses) - metric(baseline)``, both scored on each same resample (paired).
        samples: Resamples.
        level: Coverage, in (0, 1).
        seed: Seed of the resampling (the same seed gives the same resamples for every system).

    Raises:
        ConfigError: fewer than 2 images or samples, or ``level`` outside (0, 1).
        ShapeError: the lists differ in length.
    """
    _check_corpus(hypotheses, references)
    if baseline is not None and len(baseline) != len(hypotheses):
        raise ShapeError(f"baseline ({len(baseline)}) and hypotheses ({len(hypotheses)}) differ in length")
    n = len(hypotheses)
    if n < 2 or samples < 2 or not 0 < level < 1:
        raise ConfigError(f"bootstrap: need >= 2 images and samples and 0 < level < 1, got {n}, {samples}, {level}")

    def score(idx: Sequence[int]) -> float:
        refs = [references[i] for i in idx]
        value = metric([hypotheses[i] for i in idx], refs)
        return value if baseline is None else value - metric([baseline[i] for i in idx], refs)

    rng = np.random.default_rng(seed)
    values = np.array([score(rng.integers(0, n, n).tolist()) for _ in range(samples)])
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate=score(range(n)), low=float(low), high=float(high), level=level,
                    above_zero=float((values > 0).mean()))


# ---------------------------------------------------------------------------------------------------
# CLIP-score
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def clip_score(aligner: Any, images: Any, texts: Sequence[str], *, w: float = 2.5) -> float:
    """Mean CLIP-score ``w * max(cos(image_i, text_i), 0)`` of matching pairs (Hessel et al. 2021).

    Args:
        aligner: Anything with ``encode_image(images)`` and ``encode_text(texts)`` returning
            L2-normalised features (a polymodal aligner or CLIP).
        images: PIL images or a preprocessed batch, one per text.
        texts: One caption (or prompt) per image.
        w: Rescaling weight of the paper.
    """
    img = aligner.encode_image(images)
    txt = aligner.encode_text(list(texts))
    if img.shape[0] != txt.shape[0]:
        raise ShapeError(f"clip_score: {img.shape[0]} images but {txt.shape[0]} texts")
    cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)  # (N,)
    return float((w * cos.clamp(min=0)).mean())
