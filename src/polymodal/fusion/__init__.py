"""Fusion modules: each takes per-modality features and presence masks and returns one fused vector.

``FUSIONS`` maps a preset's ``fusion.kind`` to its class (an explicit table, no registry).
"""

from __future__ import annotations

from polymodal.fusion.base import Fusion, masked_mean
from polymodal.fusion.cross_modal import CrossModalFusion
from polymodal.fusion.early import EarlyFusion
from polymodal.fusion.gated import GatedFusion
from polymodal.fusion.late import LateFusion
from polymodal.fusion.low_rank import LowRankFusion
from polymodal.fusion.relation import RelationFusion
from polymodal.fusion.tensor import TensorFusion

FUSIONS: dict[str, type[Fusion]] = {
    "early": EarlyFusion,
    "late": LateFusion,
    "tensor": TensorFusion,
    "low_rank": LowRankFusion,
    "gated": GatedFusion,
    "cross_modal": CrossModalFusion,
    "relation": RelationFusion,
}

__all__ = [
    "FUSIONS",
    "CrossModalFusion",
    "EarlyFusion",
    "Fusion",
    "GatedFusion",
    "LateFusion",
    "LowRankFusion",
    "RelationFusion",
    "TensorFusion",
    "masked_mean",
]
