"""Decoding a caption from a :class:`~polymodal.caption.model.Captioner`: greedy, beam search, sampling.

All three recompute the decoder over the whole prefix at each step (captions are at most ``max_length``
tokens, so the quadratic cost is small) and never emit ``<pad>`` or ``<bos>``.

* **Greedy**: the most probable next word each step.
* **Beam search** keeps the ``beam_size`` best prefixes by summed log-probability; a finished hypothesis
  is ranked by ``log P(Y) / lp(Y)`` with the GNMT length penalty ``lp(Y) = ((5 + |Y|) / 6) ** alpha``
  (Wu et al. 2016, eq. 14), since raw log-probabilities favour short captions. As in Hugging Face's
  ``BeamSearchScorer``, ``<eos>`` is accepted only from the top ``beam_size`` candidates, and the search
  stops once ``beam_size`` hypotheses have finished; so ``beam_size=1`` is exactly greedy decoding.
* **n-gram blocking** (Paulus et al. 2018): a word that would repeat an n-gram already in the prefix gets
  probability 0 (``no_repeat_ngram_size``).
* **Sampling** with a temperature and nucleus (top-p) truncation (Holtzman et al. 2020): keep the smallest
  set of words whose probability sums to at least ``top_p``, renormalise, draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polymodal.errors import ConfigError

if TYPE_CHECKING:  # (the model imports this module for its own caption method)
    from polymodal.caption.model import Captioner

__all__ = ["Decoded", "beam_search", "greedy_decode", "length_penalty", "sample_decode"]


@dataclass(frozen=True)
class Decoded:
    """Generated captions.

    Args:
        ids: Per image, the generated ids after ``<bos>``, up to and without ``<eos>``.
        scores: Per image, the summed log-probability (greedy, sampling) or the length-normalised beam
            score ``log P / lp``.
        texts: The captions as words.
    """

    ids: list[list[int]]
    scores: list[float]
    texts: list[str]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ``((5 + length) / 6) ** alpha``.

    Args:
        length: Generated tokens, ``<eos>`` included.
        alpha: 0 disables the penalty; larger values favour longer captions.
    """
    return ((5.0 + length) / 6.0) ** alpha


def _max_len(model: Captioner, max_length: int | None) -> int:
    limit = model.config.max_length if max_length is None else max_length
    if not 2 <= limit <= model.config.max_length:
        raise ConfigError(f"max_length: must be in [2, {model.config.max_length}], got {max_length}")
    return limit


def _blocked(prefix: list[int], n: int) -> list[int]:
    """Words that would complete an n-gram already present in ``prefix`` (``<bos>`` included)."""
    if n <= 0 or len(prefix) < n:
        return []
    tail = tuple(prefix[len(prefix) - n + 1 :])
    return [prefix[i + n - 1] for i in range(len(prefix) - n + 1) if tuple(prefix[i : i + n - 1]) == tail]


def _next_logprobs(model: Captioner, memory: Tensor, prefixes: list[list[int]], no_repeat: int) -> Tensor:
    """Log-probabilities ``(N, V)`` of the next word for each prefix, forbidden words at -inf."""
    ids = torch.tensor(prefixes, dtype=torch.long, device=memory.device)  # (N, T)
    logits = model.decode(memory, ids)[:, -1].float()  # (N, V)
    tok = model.tokenizer
    logits[:, [tok.PAD, tok.BOS]] = -math.inf
    for row, prefix in enumerate(prefixes):
        banned = _blocked(prefix, no_repeat)
        if banned:
            logits[row, banned] = -math.inf
    return torch.log_softmax(logits, dim=-1)


def _finish(model: Captioner, ids: list[list[int]], scores: list[float]) -> Decoded:
    return Decoded(ids=ids, scores=scores, texts=[model.tokenizer.decode(seq) for seq in ids])


@torch.no_grad()
def greedy_decode(
    model: Captioner, grid: Tensor, *, max_length: int | None = None, no_repeat_ngram_size: int = 0
) -> Decoded:
    """Most probable word at every step, for a batch of grids.

    Args:
        model: The captioner (use eval mode).
        grid: ``(B, C, h, w)`` feature grids.
        max_length: Longest caption, ``<bos>``/``<eos>`` included; defaults to the model's.
        no_repeat_ngram_size: Forbid repeating n-grams of this size (0 = off).
    """
    limit = _max_len(model, max_length)
    memory = model.memory(grid)
    eos = model.tokenizer.EOS
    prefixes = [[model.tokenizer.BOS] for _ in range(memory.shape[0])]
    scores = [0.0] * len(prefixes)
    done = [False] * len(prefixes)
    while not all(done) and len(prefixes[0]) < limit:
        logp = _next_logprobs(model, memory, prefixes, no_repeat_ngram_size)
        best = logp.argmax(-1)
        for i, prefix in enumerate(prefixes):
            # Finished rows keep decoding padding-free copies of eos so all prefixes stay one length.
            token = eos if done[i] else int(best[i])
            if not done[i]:
                scores[i] += float(logp[i, token])
            prefix.append(token)
            done[i] = done[i] or token == eos
    ids = [[t for t in p[1:]][: p[1:].index(eos)] if eos in p[1:] else p[1:] for p in prefixes]
    return _finish(model, ids, scores)


@torch.no_grad()
def beam_search(
    model: Captioner,
    grid: Tensor,
    *,
    beam_size: int = 3,
    alpha: float = 0.6,
    no_repeat_ngram_size: int = 0,
    max_length: int | None = None,
) -> Decoded:
    """Beam search with the GNMT length penalty, one image at a time.

    Args:
        model: The captioner (use eval mode).
        grid: ``(B, C, h, w)`` feature grids.
        beam_size: Prefixes kept per step; 1 equals :func:`greedy_decode`.
        alpha: Length-penalty exponent (0 = rank by raw log-probability).
        no_repeat_ngram_size: Forbid repeating n-grams of this size (0 = off).
        max_length: Longest caption, ``<bos>``/``<eos>`` included; defaults to the model's.
    """
    if beam_size < 1:
        raise ConfigError(f"beam_size: must be >= 1, got {beam_size}")
    limit = _max_len(model, max_length)
    eos = model.tokenizer.EOS
    all_ids: list[list[int]] = []
    all_scores: list[float] = []
    for b in range(grid.shape[0]):
        memory1 = model.memory(grid[b : b + 1])  # (1, S, D)
        alive: list[tuple[list[int], float]] = [([model.tokenizer.BOS], 0.0)]
        finished: list[tuple[list[int], float]] = []
        while alive and len(finished) < beam_size:
            prefixes = [p for p, _ in alive]
            memory = memory1.expand(len(prefixes), -1, -1)
            logp = _next_logprobs(model, memory, prefixes, no_repeat_ngram_size)
            total = torch.tensor([s for _, s in alive]).unsqueeze(1) + logp  # (N, V)
            k = min(2 * beam_size, total.numel())
            values, flat = total.flatten().topk(k)
            last_step = len(prefixes[0]) + 1 >= limit
            next_alive: list[tuple[list[int], float]] = []
            for rank, (value, index) in enumerate(zip(values.tolist(), flat.tolist(), strict=True)):
                if value == -math.inf:
                    break
                row, token = divmod(index, total.shape[1])
                seq = [*prefixes[row], token]
                if token == eos or last_step:
                    # eos only from the top beam_size candidates (HF's rule), so beam 1 stays greedy.
                    if rank < beam_size and len(finished) < beam_size:
                        finished.append((seq, value / length_penalty(len(seq) - 1, alpha)))
                elif len(next_alive) < beam_size:
                    next_alive.append((seq, value))
            alive = [] if last_step else next_alive
        if not finished:  # every continuation was forbidden: return what there is
            finished = [(p, s / length_penalty(len(p) - 1, alpha)) for p, s in alive] or [([model.tokenizer.BOS], 0.0)]
        seq, score = max(finished, key=lambda f: f[1])
        body = seq[1:]
        all_ids.append(body[: body.index(eos)] if eos in body else body)
        all_scores.append(score)
    return _finish(model, all_ids, all_scores)


@torch.no_grad()
def sample_decode(
    model: Captioner,
    grid: Tensor,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
) -> Decoded:
    """Ancestral sampling with temperature and nucleus (top-p) truncation.

    Args:
        model: The captioner (use eval mode).
        grid: ``(B, C, h, w)`` feature grids.
        temperature: Divides the logits; below 1 sharpens, above 1 flattens.
        top_p: Nucleus mass in (0, 1]; 1 keeps every word.
        max_length: Longest caption, ``<bos>``/``<eos>`` included; defaults to the model's.
        generator: Random source, for reproducible samples.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature: must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p: must be in (0, 1], got {top_p}")
    limit = _max_len(model, max_length)
    memory = model.memory(grid)
    eos = model.tokenizer.EOS
    prefixes = [[model.tokenizer.BOS] for _ in range(memory.shape[0])]
    scores = [0.0] * len(prefixes)
    done = [False] * len(prefixes)
    while not all(done) and len(prefixes[0]) < limit:
        logp = _next_logprobs(model, memory, prefixes, 0)
        probs = torch.softmax(logp / temperature, dim=-1)  # (B, V)
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Drop a word when the mass before it already reaches top_p (the first word is always kept).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_p, 1, generator=generator).squeeze(1)  # renormalises implicitly
        tokens = order.gather(1, pick.unsqueeze(1)).squeeze(1)
        for i, prefix in enumerate(prefixes):
            token = eos if done[i] else int(tokens[i])
            if not done[i]:
                scores[i] += float(logp[i, token])
            prefix.append(token)
            done[i] = done[i] or token == eos
    ids = [p[1:][: p[1:].index(eos)] if eos in p[1:] else p[1:] for p in prefixes]
    return _finish(model, ids, scores)
