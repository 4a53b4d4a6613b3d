"""Fast CPU inference for the EfficientNet-Lite0 tower (feature caching, embedding whole datasets).

Eager PyTorch runs the tower as 49 convolutions, 49 BatchNorms, 33 clamps and 9 adds, each a separate
pass over activations that do not fit in cache, and each a parallel region whose two threads must meet
at a barrier (which costs whole scheduler slices when other processes share the cores). This runner
removes both costs without changing the numbers beyond float rounding:

1. BatchNorm is folded into the convolutions (``EfficientNetLite0.inference_optimized``).
2. Each conv runs as one oneDNN primitive with ReLU6 (``hardtanh`` post-op) or the residual add fused
   in, on weights reordered once into oneDNN's blocked layout, with channels-last activations. These
   are the ``torch.ops.mkldnn`` kernels that TorchInductor itself emits for frozen CPU graphs.
3. The batch is cut into chunks of a few images that are spread over ``threads`` worker threads, each
   running single-threaded: no barriers between ops, and a chunk's activations stay in cache.

Without oneDNN (``torch.backends.mkldnn.is_available()`` is False) step 2 falls back to ``F.conv2d``
plus in-place clamp/add. The runner holds a snapshot: later changes to the model are not seen.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from polymodal.errors import ConfigError, ShapeError
from polymodal.towers.efficientnet import EfficientNetLite0, MBConvBlock, SamePadConv2d


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow SAME padding for a strided conv (bottom/right get the extra pixel), channels-last.

    ``F.pad`` zero-fills the whole output and then copies the input in; writing the input once and
    zeroing only the border strips moves about half the bytes.
    """
    b, c, ih, iw = x.shape
    pad_h = max((-(-ih // stride) - 1) * stride + kernel - ih, 0)
    pad_w = max((-(-iw // stride) - 1) * stride + kernel - iw, 0)
    top, left = pad_h // 2, pad_w // 2
    out = torch.empty(b, c, ih + pad_h, iw + pad_w, dtype=x.dtype, memory_format=torch.channels_last)
    out[:, :, top : top + ih, left : left + iw].copy_(x)
    out[:, :, :top].zero_()
    out[:, :, top + ih :].zero_()
    out[:, :, :, :left].zero_()
    out[:, :, :, left + iw :].zero_()
    return out


@dataclass
class _FusedConv:
    """One BN-folded conv with its activation (ReLU6 or none) and optional fused residual add."""

    weight: torch.Tensor  # (O, I/groups, k, k), channels-last; replaced by a oneDNN-packed copy
    bias: torch.Tensor
    kernel: int
    stride: int
    padding: int  # symmetric native padding; stride-2 convs pad explicitly (TF SAME is lopsided)
    groups: int
    relu6: bool
    onednn: bool

    @classmethod
    def of(cls, conv: SamePadConv2d, *, relu6: bool, onednn: bool) -> _FusedConv:
        assert conv.bias is not None  # set by BN folding
        return cls(
            weight=conv.weight.detach().contiguous(memory_format=torch.channels_last),
            bias=conv.bias.detach(),
            kernel=conv.kernel_size[0],
            stride=conv.stride[0],
            padding=int(conv.padding[0]),  # type: ignore[index]
            groups=conv.groups,
            relu6=relu6,
            onednn=onednn,
        )

    def pack(self, input_shape: list[int]) -> None:
        """Reorder the weight once into the blocked layout oneDNN picks for this input shape."""
        if self.onednn:
            self.weight = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, [self.padding] * 2, [self.stride] * 2, [1, 1], self.groups, input_shape
            )

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.stride != 1:
            x = _same_pad(x, self.kernel, self.stride)
        pad, stride = [self.padding] * 2, [self.stride] * 2
        if self.onednn:
            if residual is not None:  # projection convs: linear bottleneck, so add but no activation
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    x, residual, self.weight, self.bias, pad, stride, [1, 1], self.groups,
                    "add", 1.0, None, [], None,
                )  # fmt: skip
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, pad, stride, [1, 1], self.groups,
                "hardtanh" if self.relu6 else "none", [0.0, 6.0] if self.relu6 else [], None,
            )  # fmt: skip
        y = F.conv2d(x, self.weight, self.bias, stride, pad, 1, self.groups)
        if self.relu6:
            y = y.clamp_(0.0, 6.0)
        return y if residual is None else y.add_(residual)


@dataclass
class _Block:
    expand: _FusedConv | None
    depthwise: _FusedConv
    project: _FusedConv
    skip: bool


def _init_worker() -> None:
    # get_num_threads() first runs ATen's per-thread lazy init, which would otherwise later reset the
    # thread to the process-wide count; then this worker alone is pinned to one intra-op thread.
    torch.get_num_threads()
    torch.set_num_threads(1)


class EfficientNetLite0Runner:
    """Inference-only, multi-threaded execution of an ``EfficientNetLite0`` on CPU.

    Outputs equal the model's eval-mode outputs within float rounding (about 1e-5) and are ordinary
    tensors without gradient history.

    Args:
        model: The tower to run (any mode; the runner always behaves as eval mode).
        threads: Worker threads, each running single-threaded; default ``torch.get_num_threads()``.
        chunk_size: Images per work item; 2-4 keeps a chunk's activations in cache.
        image_size: Side length used to choose oneDNN weight layouts (other sizes still work).
    """

    def __init__(
        self,
        model: EfficientNetLite0,
        *,
        threads: int | None = None,
        chunk_size: int = 4,
        image_size: int = 224,
    ) -> None:
        threads = torch.get_num_threads() if threads is None else threads
        if threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {threads}")
        if chunk_size < 1:
            raise ConfigError(f"chunk_size: must be >= 1, got {chunk_size}")
        if image_size < 32:
            raise ConfigError(f"image_size: must be >= 32, got {image_size}")
        self.chunk_size = chunk_size
        self.onednn = torch.backends.mkldnn.is_available()
        net = model.inference_optimized()

        def fc(conv: SamePadConv2d, relu6: bool) -> _FusedConv:
            return _FusedConv.of(conv, relu6=relu6, onednn=self.onednn)

        self._stem = fc(net._conv_stem, True)
        self._blocks = [
            _Block(
                expand=fc(b._expand_conv, True) if b.has_expand else None,
                depthwise=fc(b._depthwise_conv, True),
                project=fc(b._project_conv, False),
                skip=b.has_skip,
            )
            for b in cast(list[MBConvBlock], list(net._blocks))
        ]
        self._head = fc(net._conv_head, True)
        self._fc_weight = net._fc.weight.detach()
        self._fc_bias = net._fc.bias.detach()
        self.num_classes = self._fc_weight.shape[0]
        self._pack(chunk_size, image_size)

        previous = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="effnet-runner", initializer=_init_worker)
        # Start every worker now, then undo the process-wide side effects of their set_num_threads(1)
        # (ATen's default for new threads, MKL's global count) so the caller's setting is unchanged.
        barrier = threading.Barrier(threads)
        list(self._pool.map(lambda _: barrier.wait(), range(threads)))
        torch.set_num_threads(previous)
        self.threads = threads

    def _pack(self, batch: int, size: int) -> None:
        """Pack every weight for the activation shapes of a (batch, 3, size, size) input."""
        convs: list[_FusedConv] = [self._stem]
        for b in self._blocks:
            convs += [c for c in (b.expand, b.depthwise, b.project) if c is not None]
        convs.append(self._head)
        c, h = 3, size
        for conv in convs:
            if conv.stride != 1:  # padded to stride * ceil(h / stride) + (kernel - stride)
                h = -(-h // conv.stride) * conv.stride + conv.kernel - conv.stride
            conv.pack([batch, c, h, h])
            c = conv.bias.shape[0]
            h = (h + 2 * conv.padding - conv.kernel) // conv.stride + 1

    # -- execution ----------------------------------------------------------------------------------

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem(x.contiguous(memory_format=torch.channels_last))  # (b, 32, H/2, W/2)
        for blk in self._blocks:
            inputs = x
            if blk.expand is not None:
                x = blk.expand(x)
            x = blk.depthwise(x)
            x = blk.project(x, inputs if blk.skip else None)
        return self._head(x)  # (b, 1280, H/32, W/32)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x).mean(dim=(2, 3))  # (b, 1280)

    def _trunk(self, x: torch.Tensor, end: int) -> torch.Tensor:
        x = self._stem(x.contiguous(memory_format=torch.channels_last))
        for blk in self._blocks[:end]:
            inputs = x
            if blk.expand is not None:
                x = blk.expand(x)
            x = blk.depthwise(x)
            x = blk.project(x, inputs if blk.skip else None)
        return x.contiguous()  # (b, C, h, w), standard layout for callers that cache it

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._embed(x), self._fc_weight, self._fc_bias)  # (b, num_classes)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ShapeError(f"x: expected images (B, 3, H, W), got {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise ShapeError(f"x: expected float32, got {x.dtype}")

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def run(chunk: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # no_grad, not inference_mode: callers may train heads on the outputs
                return fn(chunk).contiguous()

        return torch.cat(list(self._pool.map(run, x.detach().split(self.chunk_size))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature grid (B, 1280, H/32, W/32) of images (B, 3, H, W) scaled to (x - 127) / 128."""
        self._check(x)
        if x.shape[0] == 0:
            return x.new_empty(0, EfficientNetLite0.feature_dim, -(-x.shape[2] // 32), -(-x.shape[3] // 32))
        return self._map(self._features, x)

    def stem_and_blocks(self, x: torch.Tensor, *, end: int) -> torch.Tensor:
        """Activations after the stem and blocks[0:end], as ``EfficientNetLite0.stem_and_blocks``."""
        self._check(x)
        if not 0 <= end <= len(self._blocks):
            raise ConfigError(f"end: must be in 0..{len(self._blocks)}, got {end}")
        return self._map(lambda chunk: self._trunk(chunk, end), x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features (B, 1280)."""
        self._check(x)
        if x.shape[0] == 0:
            return x.new_empty(0, EfficientNetLite0.feature_dim)
        return self._map(self._embed, x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier logits (B, num_classes)."""
        self._check(x)
        if x.shape[0] == 0:
            return x.new_empty(0, self.num_classes)
        return self._map(self._logits, x)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> EfficientNetLite0Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
