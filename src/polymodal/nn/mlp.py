"""The transformer's position-wise feed-forward block and the activations it is built with.

``FFN(x) = W_2 act(W_1 x + b_1) + b_2`` (Vaswani et al. 2017, eq. 2), applied to every position alone.
Activations are injected as a zero-argument factory (``act_layer=nn.GELU``), as in timm;
:func:`activation_layer` maps the names used in configuration files to such factories.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError


class QuickGELU(nn.Module):
    """``x · sigmoid(1.702 x)``, the GELU approximation of the original CLIP checkpoints."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation elementwise.

        Args:
            x: Any tensor.
        """
        return x * torch.sigmoid(1.702 * x)


# The names configuration files may use; an explicit table rather than a registry filled at import.
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
    "silu": nn.SiLU,
}


def activation_layer(name: str) -> Callable[[], nn.Module]:
    """Return the activation factory for a configuration name.

    Args:
        name: One of ``relu``, ``gelu``, ``gelu_tanh``, ``quick_gelu``, ``silu``.
    """
    if name not in _ACTIVATIONS:
        raise ConfigError(
            f"activation_layer: unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[name]


class Mlp(nn.Module):
    """Two linear layers with an activation and dropout between them: ``fc2(drop(act(fc1(x))))``.

    The dropout after ``fc2`` belongs to the residual connection and lives in the transformer layer.

    Args:
        dim: Input and output width ``D``.
        hidden_dim: Width of the hidden layer; defaults to ``int(dim * mlp_ratio)``.
        mlp_ratio: Hidden width as a multiple of ``dim`` when ``hidden_dim`` is not given.
        act_layer: Zero-argument factory of the activation module.
        dropout: Dropout probability after the activation.
        bias: Learn biases in both linear layers.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int | None = None,
        *,
        mlp_ratio: float = 4.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio) if hidden_dim is None else hidden_dim
        if dim <= 0 or hidden <= 0:
            raise ConfigError(f"Mlp: dim and hidden width must be positive; got dim={dim}, hidden={hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"Mlp: dropout must be in [0, 1); got {dropout}")
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = act_layer()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to every position.

        Args:
            x: ``(..., D)``.
        """
        return self.fc2(self.drop(self.act(self.fc1(x))))
