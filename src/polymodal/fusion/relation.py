"""Relation Network fusion (Santoro et al. 2017, "A simple neural network module for relational
reasoning"): every ordered pair of one modality's tokens, with a vector of the other modalities, goes
through one MLP ``g``; the pair outputs are summed and a second MLP ``f`` reads the sum:

    RN(O, q) = f( sum_{i,j} g(o_i, o_j, q) )

The objects ``o_i`` are the tokens of ``objects`` (an image's feature-map cells), each tagged with its
row and column in [-1, 1] (the paper's coordinate tags; ``coordinates=True`` needs a square grid of
tokens in row-major order); ``q`` is, per other modality (the question) in name order, either the masked
mean of its tokens or, with ``context_tokens=N``, its tokens concatenated position by position into ``N`` slots.
A question like "is the circle above the star?" can then be answered inside ``g`` from one pair of cells,
their coordinates and the question, the three-way product that pooled attention has to assemble in steps.
The mean cannot tell that question from "is the star above the circle?" (the same tokens; only what the
encoder mixes in from their positions differs), and a model trained with it answers both alike;
``context_tokens`` keeps which shape is named first (docs/fusion.md).

With ``match_dim=K`` (and ``context_tokens``) each object also carries its match scores with the
question's token slots, ``s_ik = (P o_i) . (Q t_k) / sqrt(K)`` (zero on empty slots), so "is ``o_i``
the shape named in slot ``k``" is one linear read of ``[o_i; s_i]`` in ``g`` instead of a product
``g``'s ReLU layers have to build from a sum; the pair ``(o_i, o_j)`` then sees which words each of its
objects answers to.

``g``'s first layer is linear in the concatenation ``[o_i, o_j, q]``, so it is computed as
``A o_i + B o_j + C q`` from per-token and per-example terms and broadcast over the ``N^2`` pairs
(the same function as the concatenation, without materialising it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.fusion.base import Fusion, masked_mean

__all__ = ["RelationFusion", "grid_coordinates"]


def grid_coordinates(num_tokens: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``(N, 2)``: (row, column) in [-1, 1] of ``N`` tokens of a square grid in row-major order."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ShapeError(f"RelationFusion: coordinates need a square grid of tokens, got {num_tokens}")
    axis = torch.linspace(-1.0, 1.0, side, device=device, dtype=dtype) if side > 1 else torch.zeros(1, device=device, dtype=dtype)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")  # (side, side) each
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)  # (N, 2)


def _mlp(widths: list[int], *, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RelationFusion(Fusion):
    """``f(sum_{i,j} g(o_i, o_j, q))`` over the ordered pairs of the ``objects`` modality's tokens.

    Args:
        dims: width of each modality's tokens.
        out_dim: width of the output.
        objects: the modality whose tokens are the objects (default: "image").
        model_dim: width of ``g``'s layers.
        g_depth: layers of ``g`` (ReLU after each; the paper's 4).
        f_depth: layers of ``f`` (ReLU between them; the last maps to ``out_dim``).
        coordinates: tag each object with its (row, column) in [-1, 1]; the objects' tokens must then
            form a square grid in row-major order (a ``ShapeError`` otherwise).
        context_tokens: ``None`` (``q`` holds the masked mean of each other modality's tokens) or ``N``
            (``q`` holds its tokens concatenated in order into ``N`` slots, padding and empty slots as zeros;
            a modality with more than ``N`` tokens is a ``ShapeError``). Order-aware, for questions whose
            answer depends on which word comes first.
        match_dim: ``None`` or ``K``: append to each object its scaled dot products with every context
            slot, through learned ``K``-wide projections of both (needs ``context_tokens``).
    """

    uses_tokens = True

    def __init__(
        self,
        dims: Mapping[str, int],
        out_dim: int,
        *,
        objects: str = "image",
        model_dim: int = 128,
        g_depth: int = 4,
        f_depth: int = 2,
        coordinates: bool = True,
        context_tokens: int | None = None,
        match_dim: int | None = None,
    ) -> None:
        super().__init__(dims, out_dim)
        if objects not in self.dims:
            raise ConfigError(f"RelationFusion: objects={objects!r} is not one of the modalities {list(self.dims)}")
        if len(self.dims) < 2:
            raise ConfigError("RelationFusion needs the objects' modality and at least one other")
        sizes = {"model_dim": model_dim, "g_depth": g_depth, "f_depth": f_depth}
        if context_tokens is not None:
            sizes["context_tokens"] = context_tokens
        if match_dim is not None:
            if context_tokens is None:
                raise ConfigError("RelationFusion match_dim needs context_tokens (the slots to match against)")
            sizes["match_dim"] = match_dim
        for name, v in sizes.items():
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"RelationFusion {name} must be a positive int, got {v!r}")
        self.objects = objects
        self.coordinates = bool(coordinates)
        self.context_modalities = tuple(m for m in self.modalities if m != objects)
        obj_dim = self.dims[objects] + (2 if self.coordinates else 0)
        self.context_tokens = context_tokens
        ctx_dim = sum(self.dims[m] for m in self.context_modalities) * (context_tokens or 1)
        self.match_dim = match_dim
        if match_dim is not None:
            self.match_objects = nn.Linear(obj_dim, match_dim)  # P
            self.match_context = nn.ModuleDict({m: nn.Linear(self.dims[m], match_dim) for m in self.context_modalities})  # Q
            obj_dim += len(self.context_modalities) * (context_tokens or 0)
        # g's first layer, split by input: W [o_i; o_j; q] + b = A o_i + B o_j + C q + b
        self.g_first = nn.Linear(obj_dim, model_dim)  # A, with g's bias
        self.g_second = nn.Linear(obj_dim, model_dim, bias=False)  # B
        self.g_context = nn.Linear(ctx_dim, model_dim, bias=False)  # C
        self.g_rest = _mlp([model_dim] * g_depth, last_activation=True)  # layers 2..g_depth
        self.f = _mlp([model_dim] * f_depth + [out_dim], last_activation=False)

    def object_tokens(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> tuple[Tensor, Tensor]:
        """The objects ``(B, N, D [+2])`` with coordinate tags, and their validity ``(B, N)``."""
        x, mask = self.tokens(features, present, masks, self.objects)
        if self.coordinates:
            coords = grid_coordinates(x.shape[1], device=x.device, dtype=x.dtype)
            x = torch.cat([x, coords.expand(x.shape[0], -1, -1)], dim=-1)
        return x, mask

    def context_slots(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Per other modality, its tokens in order in ``context_tokens`` slots, zero where empty ``(B, N, D)``,
        and which slots hold a valid token ``(B, N)``."""
        assert self.context_tokens is not None
        slots = {}
        for m in self.context_modalities:
            x, valid = self.tokens(features, present, masks, m)  # (B, n, D), (B, n)
            n = x.shape[1]
            if n > self.context_tokens:
                raise ShapeError(f"RelationFusion: {m} has {n} tokens, more than context_tokens={self.context_tokens}")
            x = x * valid[..., None].to(x.dtype)
            pad = self.context_tokens - n
            slots[m] = (nn.functional.pad(x, (0, 0, 0, pad)), nn.functional.pad(valid, (0, pad), value=False))
        return slots

    def match_scores(self, objs: Tensor, slots: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """``(B, N_obj, M * N)``: ``(P o_i) . (Q_m t_k) / sqrt(K)`` per context modality ``m`` in name order and
        slot ``k``; empty slots score 0."""
        assert self.match_dim is not None
        p = self.match_objects(objs)  # (B, N_obj, K)
        scores = []
        for m, (t, filled) in slots.items():
            s = p @ self.match_context[m](t).transpose(1, 2) / math.sqrt(self.match_dim)  # (B, N_obj, N)
            scores.append(s * filled[:, None, :].to(s.dtype))
        return torch.cat(scores, dim=-1)

    def context(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None) -> Tensor:
        """``q``: per other modality in name order, the masked mean of its tokens ``(B, D)`` or its tokens in
        order, zero-padded to ``context_tokens`` slots ``(B, context_tokens * D)``; concatenated."""
        if self.context_tokens is not None:
            return self.flat_context(self.context_slots(features, present, masks))
        parts = []
        for m in self.context_modalities:
            x, valid = self.tokens(features, present, masks, m)  # (B, N, D), (B, N)
            parts.append(masked_mean(x, valid))
        return torch.cat(parts, dim=-1)

    @staticmethod
    def flat_context(slots: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        """``q`` from the slots: each modality's ``(B, N, D)`` flattened in order, concatenated."""
        return torch.cat([t.flatten(1) for t, _ in slots.values()], dim=-1)

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse.

        Args:
            features: ``(B, N_m, D_m)`` tokens (or ``(B, D_m)``, one token) per modality.
            present: ``(B,)`` bool per modality.
            masks: optional ``(B, N_m)`` bool, true on valid tokens.

        Returns:
            ``(B, out_dim)``.
        """
        self.check(features, present)
        objs, valid = self.object_tokens(features, present, masks)  # (B, N, Do), (B, N)
        if self.match_dim is None:
            q = self.context(features, present, masks)  # (B, Dq)
        else:
            slots = self.context_slots(features, present, masks)
            q = self.flat_context(slots)
            objs = torch.cat([objs, self.match_scores(objs, slots)], dim=-1)  # (B, N, Do + M * slots)
        first = self.g_first(objs) + self.g_context(q)[:, None, :]  # (B, N, d): A o_i + C q + b
        second = self.g_second(objs)  # (B, N, d): B o_j
        h = self.g_rest(torch.relu(first[:, :, None, :] + second[:, None, :, :]))  # (B, N_i, N_j, d)
        pair = (valid[:, :, None] & valid[:, None, :]).to(h.dtype)  # (B, N, N)
        relations = (h * pair[..., None]).sum(dim=(1, 2))  # (B, d)
        return self.f(relations)
