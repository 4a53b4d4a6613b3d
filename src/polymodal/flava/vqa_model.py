"""The FLAVA-style VQA model: a :class:`~polymodal.flava.model.FlavaModel` with an answer classifier on
[CLS_M] (the model, not its training, which is :mod:`polymodal.flava.vqa`).

FLAVA (Singh et al. 2022, sec. 4) evaluates multimodal tasks by putting a classifier on the multimodal
encoder's [CLS_M]; VQA is classification over a fixed answer set. The head is an MLP (LayerNorm,
``D -> 2D``, GELU, ``2D -> A``) as in FLAVA's and ViLT's VQA heads. The answer texts travel with the model,
so a loaded VQA model can say its answers in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.flava.config import FlavaConfig
from polymodal.flava.model import FlavaModel
from polymodal.text import WordTokenizer

__all__ = ["FlavaForVqa", "build_vqa"]


class FlavaForVqa(nn.Module):
    """A :class:`FlavaModel` with an answer classifier on [CLS_M].

    Args:
        flava: the (pretrained or freshly initialised) model.
        num_answers: size of the answer vocabulary (``len(answers)`` when ``answers`` is given).
        answers: the answer texts in label order; optional while training, needed by ``polymodal.save``.
    """

    kind = "flava-vqa"

    def __init__(self, flava: FlavaModel, *, num_answers: int | None = None, answers: Sequence[str] = ()) -> None:
        super().__init__()
        answers = [str(a) for a in answers]
        if num_answers is None:
            num_answers = len(answers)
        if answers and len(answers) != num_answers:
            raise ConfigError(f"FlavaForVqa: {len(answers)} answers given for a head of {num_answers}")
        if num_answers < 2:
            raise ConfigError(f"FlavaForVqa: num_answers must be >= 2, got {num_answers}")
        self.flava = flava
        self.config = flava.config
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.num_answers = num_answers
        self.answers = answers
        d = flava.config.width
        self.head = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, num_answers)
        )

    @property
    def tokenizer(self) -> WordTokenizer | None:
        """The question vocabulary: the wrapped model's."""
        return self.flava.tokenizer

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Answer logits ``(B, A)``.

        Args:
            images: ``(B, C, S, S)`` normalised pixels.
            input_ids: ``(B, T)`` question ids.
            attention_mask: ``(B, T)``.
        """
        return self.head(self.flava.multimodal_cls(images, input_ids, attention_mask))

    @torch.no_grad()
    def answer(self, images: Sequence[object], questions: Sequence[str]) -> list[str]:
        """The top answer text to each (image, question) pair.

        Args:
            images: PIL images.
            questions: one question per image.
        """
        if not self.answers:
            raise ConfigError("FlavaForVqa: the model has no answer texts (pass answers=...)")
        tokens = self.flava.tokenize(questions)
        logits = self(self.flava.preprocess(images), tokens.input_ids, tokens.attention_mask)  # type: ignore[arg-type]
        return [self.answers[i] for i in logits.argmax(dim=1).tolist()]


def build_vqa(
    config: FlavaConfig, *, answers: Sequence[str], tokenizer: WordTokenizer | None = None
) -> FlavaForVqa:
    """A freshly initialised VQA model of ``config`` over ``answers`` (how ``polymodal.create`` builds one).

    Args:
        config: the FLAVA sizes.
        answers: the answer texts in label order.
        tokenizer: the question vocabulary.
    """
    return FlavaForVqa(FlavaModel(config, tokenizer=tokenizer), answers=answers)
