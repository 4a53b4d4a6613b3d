"""What every fusion module shares: modality names and widths, a learned "missing" embedding per
modality, and the checks on the inputs.

A fusion module takes ``features``, a dict from modality name to ``(B, D_m)`` vectors or ``(B, N_m, D_m)``
token sequences, and ``present``, a dict of ``(B,)`` bool masks. Rows whose modality is absent get the
modality's learned missing embedding instead of whatever the encoder produced for the zero placeholder
(as in the "missing modality token" of Ma et al. 2022, "Are Multimodal Transformers Robust to Missing
Modality?"), so the fusion never sees an encoder's output on empty input.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError

__all__ = ["Fusion", "masked_mean"]


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over valid tokens: ``(B, N, D)`` with ``(B, N)`` bool (true = valid) -> ``(B, D)``."""
    if mask is None:
        return tokens.mean(dim=1)
    w = mask.to(tokens.dtype)[..., None]  # (B, N, 1)
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class Fusion(nn.Module):
    """Base of the fusion modules: input checks and missing-modality embeddings.

    Args:
        dims: width of each modality's features; modalities are taken in name order.
        out_dim: width of the fused output.
    """

    uses_tokens: bool = False  # True: wants (B, N, D) token sequences; False: (B, D) vectors

    def __init__(self, dims: Mapping[str, int], out_dim: int) -> None:
        super().__init__()
        if not dims:
            raise ConfigError(f"{type(self).__name__}: needs at least one modality")
        for name, d in dims.items():
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise ConfigError(f"{type(self).__name__}: width of {name!r} must be a positive int, got {d!r}")
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim <= 0:
            raise ConfigError(f"{type(self).__name__}: out_dim must be a positive int, got {out_dim!r}")
        # Sorted by name, so concatenation order and per-modality parameters (``factors.0``) do not depend
        # on dict order, which a JSON round trip with sorted keys would change.
        self.dims: dict[str, int] = {m: dims[m] for m in sorted(dims)}
        self.modalities: tuple[str, ...] = tuple(self.dims)
        self.out_dim = out_dim
        # Small random init (not zeros) so two missing modalities are distinguishable from the start.
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m, d in dims.items()})

    def check(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> int:
        """Validate the inputs; returns the batch size."""
        owner = type(self).__name__
        if set(features) != set(self.modalities):
            raise ShapeError(f"{owner}: features must have modalities {list(self.modalities)}, got {list(features)}")
        if set(present) != set(self.modalities):
            raise ShapeError(f"{owner}: present must have modalities {list(self.modalities)}, got {list(present)}")
        batch = None
        for m in self.modalities:
            x, p = features[m], present[m]
            if x.ndim not in (2, 3) or x.shape[-1] != self.dims[m]:
                raise ShapeError(f"{owner}: features[{m!r}] must be (B, {self.dims[m]}) or (B, N, {self.dims[m]}), got {tuple(x.shape)}")
            if batch is None:
                batch = x.shape[0]
            if x.shape[0] != batch:
                raise ShapeError(f"{owner}: features[{m!r}] has batch {x.shape[0]}, expected {batch}")
            if p.dtype != torch.bool or p.shape != (batch,):
                raise ShapeError(f"{owner}: present[{m!r}] must be a bool ({batch},) tensor, got {p.dtype} {tuple(p.shape)}")
        assert batch is not None
        return batch

    def fill_missing(self, x: Tensor, present: Tensor, modality: str) -> Tensor:
        """Replace the rows of absent examples by the modality's missing embedding (every token of them)."""
        keep = present.view(-1, *([1] * (x.ndim - 1)))  # (B, 1) or (B, 1, 1)
        return torch.where(keep, x, self.missing[modality].to(x.dtype))

    def tokens(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None,
               modality: str) -> tuple[Tensor, Tensor]:
        """One modality's missing-filled ``(B, N, D)`` tokens (a ``(B, D)`` vector is one token) and their
        ``(B, N)`` validity. An absent row's first (filled) token alone is valid: every filled token is the
        same missing embedding, so for a mean or as attention memory this equals keeping them all, while a
        query token or a sum over tokens would otherwise weigh it by the batch's padded length."""
        x = features[modality]
        x = x[:, None, :] if x.ndim == 2 else x  # (B, N, D)
        mask = None if masks is None else masks.get(modality)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ShapeError(f"{type(self).__name__}: masks[{modality!r}] must be bool {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        first = torch.zeros_like(mask)
        first[:, 0] = True
        mask = torch.where(present[modality][:, None], mask, first)  # (B, N)
        return self.fill_missing(x, present[modality], modality), mask

    def vectors(
        self,
        features: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Checked, missing-filled ``(B, D_m)`` vectors; token sequences are mean-pooled over valid tokens."""
        self.check(features, present)
        out = {}
        for m in self.modalities:
            x = features[m]
            if x.ndim == 3:
                x = masked_mean(x, None if masks is None else masks.get(m))  # (B, N, D) -> (B, D)
            out[m] = self.fill_missing(x, present[m], m)
        return out
