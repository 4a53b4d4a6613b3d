"""Conditional flow matching with classifier-free guidance.

Flow matching with the straight (rectified-flow) path (Lipman et al. 2023; Liu et al. 2023): with noise
``x0 ~ N(0, I)`` and a data image ``x1``, ``x_t = (1 - t) x0 + t x1`` moves at constant velocity
``x1 - x0``; the network regresses it, ``L = E || v(x_t, t, c) - (x1 - x0) ||^2``, with ``t ~ U[0, 1]``.
Sampling integrates ``dx/dt = v`` from noise at ``t = 0`` to an image at ``t = 1`` (Euler steps).

Classifier-free guidance (Ho & Salimans 2022): in training the text condition is replaced by the learned
null condition with probability ``p_uncond``; at sampling ``v = v(x, t, null) + w (v(x, t, c) - v(x, t, null))``,
so ``w = 1`` is the plain conditional model and ``w > 1`` pushes samples further towards the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from polymodal.errors import ConfigError, ShapeError

if TYPE_CHECKING:  # (the model imports this module for its own generate method)
    from polymodal.generate.model import FlowUNet

__all__ = ["flow_matching_loss", "sample_images"]


def flow_matching_loss(
    model: FlowUNet,
    images: Tensor,
    cond: Tensor | None,
    *,
    p_uncond: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean squared velocity error on a batch.

    Args:
        model: The velocity field.
        images: ``(B, 3, S, S)`` in [-1, 1].
        cond: ``(B, cond_dim)`` text embeddings, or ``None`` (unconditional model).
        p_uncond: Probability of replacing a row's condition by the null condition (for guidance).
        generator: Random source for noise, times and condition dropping.
    """
    if not 0.0 <= p_uncond <= 1.0:
        raise ConfigError(f"p_uncond: must be in [0, 1], got {p_uncond}")
    if cond is not None and cond.shape[0] != images.shape[0]:
        raise ShapeError(f"cond has {cond.shape[0]} rows, images {images.shape[0]}")
    b = images.shape[0]
    x0 = torch.randn(images.shape, generator=generator)
    t = torch.rand(b, generator=generator)
    tt = t[:, None, None, None]
    xt = (1 - tt) * x0 + tt * images  # (B, 3, S, S)
    if cond is not None and p_uncond > 0:
        drop = torch.rand(b, generator=generator) < p_uncond
        cond = torch.where(drop[:, None], model.null_cond.expand(b, -1), cond)
    v = model(xt, t, cond)
    return ((v - (images - x0)) ** 2).mean()


@torch.no_grad()
def sample_images(
    model: FlowUNet,
    cond: Tensor | None,
    *,
    num: int | None = None,
    steps: int = 30,
    guidance: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Generate images by Euler integration of the guided velocity field.

    Args:
        model: The velocity field (eval mode).
        cond: ``(N, cond_dim)`` text embeddings, or ``None`` with ``num`` for unconditional samples.
        num: Number of images when ``cond`` is None.
        steps: Euler steps from t = 0 to 1.
        guidance: Classifier-free guidance weight ``w`` (1 = no guidance).
        generator: Random source of the starting noise.

    Returns:
        ``(N, 3, S, S)`` in [-1, 1].
    """
    if steps < 1:
        raise ConfigError(f"steps: must be >= 1, got {steps}")
    n = cond.shape[0] if cond is not None else num
    if n is None or n < 1:
        raise ConfigError("sample_images: give cond, or num >= 1 for unconditional samples")
    s = model.config.image_size
    x = torch.randn((n, 3, s, s), generator=generator)
    guided = cond is not None and model.config.conditional and guidance != 1.0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((n,), i * dt)
        if guided:
            assert cond is not None
            v_both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, model.null_cond.expand(n, -1)]))
            v_c, v_u = v_both.chunk(2)
            v = v_u + guidance * (v_c - v_u)
        else:
            v = model(x, t, cond)
        x = x + dt * v
    return x.clamp(-1, 1)
