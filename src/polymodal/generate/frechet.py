"""Fréchet distance between two sets of image features (FID-style, Heusel et al. 2017).

``FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` between Gaussians fitted to the features.
Here the features are the pretrained EfficientNet-Lite0's pooled 1280-d embedding instead of
Inception-v3's, so numbers are comparable only with each other, not with published FIDs. The trace of
the matrix square root is computed as ``sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`` (a symmetric PSD
matrix with the same eigenvalues as ``S_a S_b``), in float64, which stays real where ``scipy.linalg.sqrtm``
returns small imaginary parts for rank-deficient covariances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from polymodal.errors import ShapeError
from polymodal.towers.efficientnet import EfficientNetLite0
from polymodal.towers.efficientnet_runner import EfficientNetLite0Runner
from polymodal.towers.preprocess import effnet_preprocess

__all__ = ["frechet_distance", "tower_features"]


def _sqrt_psd(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance of Gaussians fitted to ``(N, D)`` and ``(M, D)`` features.

    Args:
        features_a: First set, at least 2 rows.
        features_b: Second set, at least 2 rows, same D.
    """
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ShapeError(f"features: need (N, D) and (M, D), got {tuple(features_a.shape)}, {tuple(features_b.shape)}")
    if min(features_a.shape[0], features_b.shape[0]) < 2:
        raise ShapeError("features: need at least 2 rows in each set for a covariance")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D), unbiased as numpy.cov
    root_a = _sqrt_psd(cov_a)
    tr_sqrt = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


@torch.no_grad()
def tower_features(
    images: Sequence[Image.Image], *, image_size: int = 224, tower: EfficientNetLite0 | None = None
) -> Tensor:
    """Pooled EfficientNet-Lite0 features ``(N, 1280)`` of PIL images (for :func:`frechet_distance`).

    Args:
        images: PIL images (small images are upsampled by the tower's preprocessing).
        image_size: Tower input side.
        tower: Defaults to the pretrained tower.
    """
    tower = EfficientNetLite0.pretrained() if tower is None else tower
    runner = EfficientNetLite0Runner(tower, image_size=image_size)
    prep = effnet_preprocess(image_size)
    try:
        return torch.cat(
            [runner.embed(prep(images[i : i + 64])) for i in range(0, len(images), 64)]
        )
    finally:
        runner.close()
