"""Training objectives for joint embeddings, one ``nn.Module`` per loss.

Sections, in build order:

1. Input checks shared by the losses.
2. Margin (hinge) contrastive loss: VSE (Kiros et al. 2014) and VSE++ hardest negatives (Faghri et al.
   2018).
3. Softmax contrastive loss: InfoNCE (van den Oord et al. 2018) in its symmetric CLIP form (Radford et
   al. 2021), with OpenCLIP's distributed all-gather and "local loss" (Ilharco et al. 2021).
4. Sigmoid contrastive loss: SigLIP (Zhai et al. 2023).
5. FLAVA-style objectives (Singh et al. 2022): masked language / image / multimodal modelling, image-text
   matching with hard negatives; their inputs are token logits, patch predictions and match logits.

Every loss of sections 2-4 takes two ``(N, D)`` feature batches whose row ``i`` form a positive pair; every other row of
the other batch is a negative. Temperatures are passed as ``logit_scale = log(1 / tau)`` and applied as
``exp(logit_scale)``, as in OpenCLIP, so an unconstrained parameter keeps the scale positive.

Under ``torch.distributed`` the softmax and sigmoid losses gather features from every process (see
:mod:`polymodal.core.distributed`); on one process they are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.core import distributed
from polymodal.errors import ConfigError, ShapeError

# ---------------------------------------------------------------------------------------------------------
# 1. Input checks
# ---------------------------------------------------------------------------------------------------------


def _check_pair(a: Tensor, b: Tensor, *, names: tuple[str, str]) -> None:
    """Raise ``ShapeError`` unless ``a`` and ``b`` are floating ``(N, D)`` tensors of one shape and dtype."""
    for t, name in ((a, names[0]), (b, names[1])):
        if not isinstance(t, Tensor):
            raise ShapeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ShapeError(f"{name}: expected shape (N, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ShapeError(f"{name}: expected a floating dtype, got {t.dtype}")
        if t.shape[0] == 0:
            raise ShapeError(f"{name}: the batch is empty")
    if a.shape != b.shape:
        raise ShapeError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)}: row i of one pairs with row i "
            "of the other, so the shapes must be equal"
        )
    if a.dtype != b.dtype:
        raise ShapeError(f"{names[0]} is {a.dtype} but {names[1]} is {b.dtype}")


def _scalar(value: Tensor | float, *, name: str, like: Tensor) -> Tensor:
    """Return ``value`` as a 0-d tensor on ``like``'s device and dtype, keeping its autograd graph."""
    if not isinstance(value, Tensor):
        # Build it directly in the target dtype: a float32 detour would round e.g. 1.7 for float64 inputs.
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if value.numel() != 1:
        raise ShapeError(f"{name}: expected a scalar tensor, got shape {tuple(value.shape)}")
    return value.reshape(()).to(device=like.device, dtype=like.dtype)


def _gather(features: Tensor, *, with_grad: bool, keep_local_grad: bool, name: str) -> Tensor:
    """All ranks' ``(n, D)`` features stacked in rank order: ``(W * n, D)``.

    Args:
        features: this rank's ``(n, D)`` features.
        with_grad: gather through autograd, so gradients reach the rank that sent each chunk.
        keep_local_grad: without ``with_grad``, put the local tensor back in its slot so at least the
            local chunk keeps its gradient (OpenCLIP does this for the global loss).
        name: argument name for error messages.
    """
    if with_grad:
        return distributed.all_gather_with_grad(features, name=name)
    chunks = distributed.all_gather_chunks(features, name=name)
    if keep_local_grad:
        chunks[distributed.rank()] = features
    return torch.cat(chunks, dim=0)


# ---------------------------------------------------------------------------------------------------------
# 2. Margin contrastive loss (VSE, VSE++)
# ---------------------------------------------------------------------------------------------------------


class MarginContrastiveLoss(nn.Module):
    r"""Hinge contrastive loss on cosine similarity: VSE (Kiros et al. 2014) and VSE++ (Faghri et al. 2018).

    With :math:`s_{ij} = \cos(a_i, b_j)` and margin :math:`\alpha`, the loss of anchor :math:`a_i` is

    .. math::
        \ell_{A \to B}(i) = \sum_{j \ne i} \max\{0,\; \alpha - s_{ii} + s_{ij}\}

    (``hardest=True``, VSE++: :math:`\max_{j \ne i}` instead of the sum, so only the hardest negative
    counts). With ``symmetric=True`` the text-side term :math:`\ell_{B \to A}(i) = \sum_{j \ne i}
    \max\{0, \alpha - s_{ii} + s_{ji}\}` is added, as in both papers. The result is averaged over the
    ``N`` anchors (the papers sum; the mean keeps the scale independent of the batch size).

    The lecture's slide writes :math:`\max\{0, \alpha + sim(z_A, z_B^+) - sim(z_A, z_B^-)\}`; minimising
    that would *lower* the positive similarity and push positive pairs apart. This module implements the
    form above, which is zero only once every positive beats every negative by at least ``alpha``.

    Args:
        margin: the margin :math:`\alpha >= 0`.
        hardest: use only the hardest negative per anchor (VSE++) instead of summing over negatives.
        symmetric: add the loss with ``B`` as anchors and ``A`` as candidates.
        normalized: the inputs are already L2-normalised; skip the normalisation.
    """

    def __init__(
        self, *, margin: float = 0.2, hardest: bool = False, symmetric: bool = True, normalized: bool = False
    ) -> None:
        super().__init__()
        if not margin >= 0.0:
            raise ConfigError(f"margin: must be >= 0, got {margin}")
        self.margin = float(margin)
        self.hardest = hardest
        self.symmetric = symmetric
        self.normalized = normalized

    def forward(self, features_a: Tensor, features_b: Tensor) -> Tensor:
        """Return the scalar loss.

        Args:
            features_a: ``(N, D)`` anchors, e.g. image embeddings.
            features_b: ``(N, D)`` candidates, e.g. caption embeddings; row ``i`` pairs with row ``i`` of A.
        """
        _check_pair(features_a, features_b, names=("features_a", "features_b"))
        if not self.normalized:
            features_a = F.normalize(features_a, dim=-1)
            features_b = F.normalize(features_b, dim=-1)
        sim = features_a @ features_b.T  # (N, N), sim[i, j] = cos(a_i, b_j)
        positive = sim.diagonal()  # (N,)
        is_positive = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)

        # cost[i, j] = [alpha - s_ii + s_ij]_+ for anchor a_i against negative b_j
        cost_a = (self.margin - positive[:, None] + sim).clamp(min=0).masked_fill(is_positive, 0.0)
        loss = self._reduce(cost_a)
        if self.symmetric:
            # cost[i, j] = [alpha - s_jj + s_ij]_+ for anchor b_j against negative a_i; reduce over i
            cost_b = (self.margin - positive[None, :] + sim).clamp(min=0).masked_fill(is_positive, 0.0)
            loss = loss + self._reduce(cost_b.T)
        return loss

    def _reduce(self, cost: Tensor) -> Tensor:
        """Reduce an ``(anchors, negatives)`` cost matrix over negatives, then average over anchors."""
        per_anchor = cost.max(dim=1).values if self.hardest else cost.sum(dim=1)  # (N,)
        return per_anchor.mean()


# ---------------------------------------------------------------------------------------------------------
# 3. Softmax contrastive loss (InfoNCE / CLIP)
# ---------------------------------------------------------------------------------------------------------


def symmetric_cross_entropy(
    logits_per_image: Tensor, logits_per_text: Tensor, labels: Tensor, *, total: int | None = None
) -> Tensor:
    """The CLIP loss from its logits: the mean of the image-to-text and text-to-image cross-entropies.

    The one implementation of the symmetric InfoNCE reduction: :class:`ClipLoss` and the exact global-batch
    loss of the torchrun trainer (:func:`polymodal.train.global_batch.global_clip_loss`) both build their
    logits and call this.

    Args:
        logits_per_image: ``(n, M)`` each image's logits over ``M`` candidate texts.
        logits_per_text: ``(n, M)`` each text's logits over ``M`` candidate images.
        labels: ``(n,)`` the column of each row's positive.
        total: ``None``: the rows are the whole batch, and the result is
            ``(CE_mean(image) + CE_mean(text)) / 2``. Otherwise the rows are this process's share of a batch
            of ``total`` rows, and the result is ``(CE_sum(image) + CE_sum(text)) / (2 * total)``: the
            shares of all processes add up to the loss of the batch.

    Returns:
        The scalar loss.
    """
    if total is None:
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return (
        F.cross_entropy(logits_per_image, labels, reduction="sum")
        + F.cross_entropy(logits_per_text, labels, reduction="sum")
    ) / (2 * total)


class ClipLoss(nn.Module):
    r"""Symmetric InfoNCE as in CLIP (Radford et al. 2021), with OpenCLIP's distributed gather.

    With features :math:`x_i` (images), :math:`y_i` (texts), usually L2-normalised, and
    :math:`t = \exp(\text{logit\_scale}) = 1/\tau`:

    .. math::
        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{N} \Big[
            -\log \frac{\exp(t\, x_i \cdot y_i)}{\sum_{j} \exp(t\, x_i \cdot y_j)}
            -\log \frac{\exp(t\, x_i \cdot y_i)}{\sum_{j} \exp(t\, x_j \cdot y_i)} \Big]

    i.e. the mean of the cross-entropies of the logit matrix over its rows (image to text) and its
    columns (text to image), with the diagonal as the labels. Each term is InfoNCE (van den Oord et al.
    2018, eq. 4). The lecture's slide puts the bare similarity in the fraction; the standard form
    exponentiates ``sim / tau`` (a softmax over candidates), which is what is implemented: a ratio of raw
    cosines can be negative and is not a probability.

    Distributed (``torch.distributed`` initialised, ``W`` processes of ``n`` rows each), features are
    all-gathered to the global batch of ``W * n``:

    * ``local_loss=False``: every rank computes the full ``(Wn, Wn)`` loss above, so every rank's value
      equals the single-process loss of the global batch.
    * ``local_loss=True``: each rank scores only its own ``n`` rows against the ``W * n`` global columns,
      with labels ``arange(n) + rank * n``: an ``(n, Wn)`` matrix instead of ``(Wn, Wn)``. The mean over
      ranks of the per-rank losses equals the global loss.

    With ``gather_with_grad=True`` gradients flow back through the gather to the rank that owns each
    row, so after DDP averages the parameter gradients over ranks, training matches one process with the
    global batch in both modes. With ``gather_with_grad=False`` (OpenCLIP's cheaper default) the gathered
    copies carry no gradient: with ``local_loss=False`` each rank keeps only its own rows' gradient, and
    DDP's averaging then scales the true gradient by ``1/W``; with ``local_loss=True`` the gradient through
    the gathered columns is dropped, an approximation.

    ``InfoNCELoss`` is the same module under the name the lecture uses.

    Args:
        local_loss: under ``torch.distributed``, compute the loss of the local rows only.
        gather_with_grad: gather features through autograd so every rank's loss reaches every rank's
            features.
    """

    def __init__(self, *, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
        """Return the scalar loss.

        Args:
            image_features: ``(n, D)`` features of this process's images, usually L2-normalised.
            text_features: ``(n, D)`` features of the paired texts (row ``i`` pairs with image ``i``).
            logit_scale: scalar, ``log(1 / tau)``; the logits are ``exp(logit_scale) * x @ y.T``. CLIP
                initialises it to ``log(1 / 0.07)`` and clamps it at ``log(100)`` in the training loop.
        """
        _check_pair(image_features, text_features, names=("image_features", "text_features"))
        scale = _scalar(logit_scale, name="logit_scale", like=image_features).exp()
        rows = image_features.shape[0]

        if distributed.world_size() == 1:
            logits_per_image = scale * image_features @ text_features.T  # (n, n)
            logits_per_text = logits_per_image.T
            labels = torch.arange(rows, device=image_features.device)
        else:
            keep_local = not self.local_loss
            all_images = _gather(
                image_features,
                with_grad=self.gather_with_grad,
                keep_local_grad=keep_local,
                name="image_features",
            )  # (W * n, D)
            all_texts = _gather(
                text_features,
                with_grad=self.gather_with_grad,
                keep_local_grad=keep_local,
                name="text_features",
            )  # (W * n, D)
            if self.local_loss:
                logits_per_image = scale * image_features @ all_texts.T  # (n, W * n)
                logits_per_text = scale * text_features @ all_images.T  # (n, W * n)
                # Local row i pairs with global column rank * n + i.
                labels = torch.arange(rows, device=image_features.device) + distributed.rank() * rows
            else:
                logits_per_image = scale * all_images @ all_texts.T  # (W * n, W * n)
                logits_per_text = logits_per_image.T
                labels = torch.arange(all_images.shape[0], device=image_features.device)

        return symmetric_cross_entropy(logits_per_image, logits_per_text, labels)


InfoNCELoss = ClipLoss


# ---------------------------------------------------------------------------------------------------------
# 4. Sigmoid contrastive loss (SigLIP)
# ---------------------------------------------------------------------------------------------------------


class SigLipLoss(nn.Module):
    r"""Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, eq. 1 and Algorithm 1).

    Every image-text pair is an independent binary classification, positive on the diagonal:

    .. math::
        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N} \sum_{j=1}^{N}
            \log \sigma\big(z_{ij}\,(t\, x_i \cdot y_j + b)\big),
        \qquad z_{ij} = \begin{cases} 1 & i = j \\ -1 & i \ne j \end{cases}

    with :math:`t = \exp(\text{logit\_scale})` and bias :math:`b = \text{logit\_bias}`. The paper
    initialises :math:`\log t = \log 10` and :math:`b = -10`, so that the many negatives do not dominate
    the first steps. Unlike the softmax loss there is no normalisation over the batch.

    Distributed, each rank scores its ``n`` local images against the all-gathered ``W * n`` texts (the
    simple all-gather form, not the paper's ring of neighbour exchanges) and divides by ``n``. Every
    global pair is scored on exactly one rank, so the mean over ranks of the per-rank losses equals the
    single-process loss of the global batch; texts are gathered with gradients.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        logit_bias: Tensor | float,
    ) -> Tensor:
        """Return the scalar loss.

        Args:
            image_features: ``(n, D)`` features of this process's images, usually L2-normalised.
            text_features: ``(n, D)`` features of the paired texts.
            logit_scale: scalar, ``log t``; the logits are ``exp(logit_scale) * x @ y.T + logit_bias``.
            logit_bias: scalar bias ``b`` added to every logit.
        """
        _check_pair(image_features, text_features, names=("image_features", "text_features"))
        scale = _scalar(logit_scale, name="logit_scale", like=image_features).exp()
        bias = _scalar(logit_bias, name="logit_bias", like=image_features)
        rows = image_features.shape[0]

        all_texts = _gather(text_features, with_grad=True, keep_local_grad=True, name="text_features")
        logits = scale * image_features @ all_texts.T + bias  # (n, W * n)
        # z_ij = +1 where local image i meets its own text, at global column rank * n + i; -1 elsewhere.
        signs = -torch.ones_like(logits)
        columns = torch.arange(rows, device=logits.device) + distributed.rank() * rows
        signs[torch.arange(rows, device=logits.device), columns] = 1.0
        return -F.logsigmoid(signs * logits).sum() / rows


# ---------------------------------------------------------------------------------------------------------
# 5. FLAVA-style objectives (masked modelling, image-text matching)
# ---------------------------------------------------------------------------------------------------------
#
# FLAVA (Singh et al. 2022, sec. 3.2) pretrains one image encoder, one text encoder and a multimodal encoder
# over both with a weighted sum of:
#
# * global contrastive loss (GC) on the unimodal [CLS] embeddings: :class:`ClipLoss` above. FLAVA calls it
#   "global" because the softmax runs over the features gathered from every GPU, which is ClipLoss with
#   ``gather_with_grad=True`` (the default); ``GlobalContrastiveLoss`` is that name for it.
# * masked language modelling (MLM, BERT: Devlin et al. 2019) on the text encoder;
# * masked image modelling (MIM) on the image encoder. FLAVA predicts discrete dVAE codes of the masked
#   patches (BEiT: Bao et al. 2022); this implementation predicts their PIXELS, each patch normalised by its
#   own mean and variance (MAE: He et al. 2022, "normalized pixels as targets"), so no image tokenizer is
#   needed;
# * masked multimodal modelling (MMM): both streams masked, MLM and MIM read off the multimodal encoder;
# * image-text matching (ITM) on the multimodal [CLS], with hard negatives mined from the contrastive
#   similarities (ALBEF: Li et al. 2021, sec. 3.2; FLAVA's ITM follows it).
#
# The modules below take the outputs of whatever heads the caller has (logits, patch predictions), so they
# work over any encoders; the masking helpers draw from a caller's ``torch.Generator`` for reproducibility.

IGNORE_INDEX = -100  # label of a position that contributes nothing (torch's cross_entropy default)

GlobalContrastiveLoss = ClipLoss


@dataclass
class MaskedTokens:
    """The output of :func:`mask_tokens`.

    Attributes:
        input_ids: ``(B, T)`` ids with the BERT corruption applied (what the encoder reads).
        labels: ``(B, T)`` original id at the selected positions, ``ignore_index`` everywhere else.
        mask: ``(B, T)`` bool, ``True`` at the selected (predicted) positions.
    """

    input_ids: Tensor
    labels: Tensor
    mask: Tensor


def mask_tokens(
    input_ids: Tensor,
    *,
    attention_mask: Tensor,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> MaskedTokens:
    """BERT's masking (Devlin et al. 2019, sec. 3.1 and appendix A.1): select, then corrupt 80/10/10.

    Every real token (``attention_mask == 1``) that is not in ``special_ids`` is selected independently with
    probability ``mask_prob``. A selected token becomes ``mask_token_id`` with probability 0.8, a token drawn
    uniformly from the non-special vocabulary with probability 0.1, and stays itself with probability 0.1;
    the loss predicts the original id at every selected position (so the model cannot tell which visible
    tokens are targets). Padding and special tokens are never selected nor replaced.

    Args:
        input_ids: ``(B, T)`` integer token ids.
        attention_mask: ``(B, T)``, 1 (or ``True``) on real tokens, 0 on padding.
        mask_token_id: id of the [MASK] token (may lie outside ``[0, vocab_size)``, e.g. an extra embedding).
        vocab_size: ids ``0 .. vocab_size - 1`` are the vocabulary random replacements come from.
        special_ids: ids never selected and never drawn as replacements (pad, bos, eos, unk...).
        mask_prob: selection probability, BERT's 0.15.
        generator: random source; the same seed gives the same masks.
        ignore_index: label of unselected positions.
    """
    if input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ShapeError(
            f"input_ids: expected integer (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}"
        )
    if attention_mask.shape != input_ids.shape:
        raise ShapeError(
            f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}"
        )
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"mask_prob: must be in (0, 1), got {mask_prob}")
    special = torch.as_tensor(sorted(set(special_ids)), dtype=torch.long, device=input_ids.device)
    candidates = torch.arange(vocab_size, device=input_ids.device)
    candidates = candidates[~torch.isin(candidates, special)]  # ids a random replacement may take
    if candidates.numel() == 0:
        raise ConfigError(
            f"vocab_size={vocab_size} leaves no non-special id to draw random replacements from"
        )

    def uniform() -> Tensor:  # (B, T) in [0, 1), on the CPU generator, then moved
        return torch.rand(input_ids.shape, generator=generator).to(input_ids.device)

    eligible = attention_mask.bool() & ~torch.isin(input_ids, special)  # (B, T)
    selected = eligible & (uniform() < mask_prob)
    action = uniform()  # one draw decides between [MASK] / random / keep
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_ids = candidates[
        torch.randint(candidates.numel(), input_ids.shape, generator=generator).to(input_ids.device)
    ]
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, ignore_index))
    return MaskedTokens(input_ids=corrupted, labels=labels, mask=selected)


def _zero_like_graph(t: Tensor) -> Tensor:
    """A 0 that keeps ``t`` in the autograd graph (a batch with nothing to predict still backpropagates)."""
    return t.sum() * 0.0


class MaskedLanguageModelingLoss(nn.Module):
    """Cross-entropy of the original tokens at the masked positions only (BERT's MLM; FLAVA's MLM/MMM text).

    Positions whose label is ``ignore_index`` contribute nothing: neither their logits nor their labels
    can change the loss. The mean runs over the predicted positions of the whole batch. A batch with no
    predicted position gives 0 (with a zero gradient) rather than NaN.

    Args:
        ignore_index: label of unpredicted positions.
        label_smoothing: optional smoothing of the targets (0 = plain cross-entropy, as BERT).
    """

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Return the scalar loss.

        Args:
            logits: ``(..., V)`` scores over the vocabulary, e.g. ``(B, T, V)``, or ``(M, V)`` for the masked
                positions only.
            labels: ``(...)`` integer targets matching ``logits.shape[:-1]``, ``ignore_index`` where
                nothing is predicted.
        """
        if not logits.is_floating_point() or logits.dim() < 2:
            raise ShapeError(
                f"logits: expected a floating (..., V) tensor, got {logits.dtype} {tuple(logits.shape)}"
            )
        if labels.shape != logits.shape[:-1] or labels.is_floating_point():
            raise ShapeError(
                f"labels: expected integer shape {tuple(logits.shape[:-1])} to match logits "
                f"{tuple(logits.shape)}, got {labels.dtype} {tuple(labels.shape)}"
            )
        keep = labels != self.ignore_index
        if not bool(keep.any()):
            return _zero_like_graph(logits)
        # Select before the softmax: unpredicted rows then cannot reach the value or the gradient.
        return F.cross_entropy(logits[keep], labels[keep], label_smoothing=self.label_smoothing)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut ``(B, C, H, W)`` images into ``(B, N, P * P * C)`` patch vectors, patches in row-major order.

    The order of the values inside a patch is ``(p_row, p_col, channel)`` as in MAE's ``patchify``; the patch
    order matches a ViT's ``Conv2d(stride=P)`` embedding flattened row-major, so patch ``n`` here is token
    ``n`` of such an encoder.

    Args:
        images: ``(B, C, H, W)`` with ``H`` and ``W`` multiples of ``patch_size``.
        patch_size: side ``P`` of a square patch.
    """
    if images.dim() != 4:
        raise ShapeError(f"images: expected (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ShapeError(f"images of {h}x{w} pixels do not split into {patch_size}x{patch_size} patches")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(b, c, gh, patch_size, gw, patch_size)  # (B, C, gh, P, gw, P)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, P, P, C)
    return x.reshape(b, gh * gw, patch_size * patch_size * c)  # (B, N, P*P*C)


def mask_patches(
    batch: int,
    num_patches: int,
    *,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A random ``(B, N)`` bool mask with exactly ``round(mask_ratio * N)`` patches masked per image.

    MAE's per-sample random shuffling (He et al. 2022, sec. 3): rank ``N`` uniform noises and mask the
    first ``k`` ranks, so every image has the same number of masked patches (no padding needed).

    Args:
        batch: images ``B``.
        num_patches: patches per image ``N``.
        mask_ratio: fraction masked, in ``(0, 1)``; MAE uses 0.75, BEiT/FLAVA about 0.4.
        generator: random source.
        device: where the mask lives.
    """
    if batch <= 0 or num_patches <= 0:
        raise ShapeError(f"mask_patches: batch ({batch}) and num_patches ({num_patches}) must be positive")
    if not 0.0 < mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio: must be in (0, 1), got {mask_ratio}")
    k = min(max(1, round(mask_ratio * num_patches)), num_patches - 1)  # at least one masked, one visible
    noise = torch.rand(batch, num_patches, generator=generator)  # (B, N)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # rank of each patch's noise within its image
    return (ranks < k).to(device=device)


class MaskedImageModelingLoss(nn.Module):
    r"""Mean squared error of predicted PIXELS at the masked patches (MAE's target; FLAVA's MIM/MMM image).

    The target of patch :math:`n` is its pixel vector normalised by the patch's own statistics,
    :math:`\hat x_n = (x_n - \mu_n) / \sqrt{\sigma_n^2 + \epsilon}` (MAE, He et al. 2022, sec. 3, "with
    normalized pixels as targets"; ``norm_pix=False`` keeps raw pixels). FLAVA itself predicts discrete
    dVAE codes of the patches (as BEiT); pixels need no separate image tokenizer. The loss is

    .. math::
        \mathcal{L} = \frac{1}{|M|} \sum_{(b, n) \in M} \frac{1}{K} \lVert p_{bn} - \hat x_{bn} \rVert^2

    over the masked patches :math:`M` only (MAE computes the loss "only on masked patches"); visible
    patches contribute nothing. A batch with no masked patch gives 0.

    Args:
        norm_pix: normalise each target patch by its mean and variance.
        eps: the :math:`\epsilon` of the normalisation (MAE: 1e-6).
    """

    def __init__(self, *, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if not eps > 0.0:
            raise ConfigError(f"eps: must be > 0, got {eps}")
        self.norm_pix = norm_pix
        self.eps = float(eps)

    def target(self, patches: Tensor) -> Tensor:
        """The regression target of ``(..., K)`` pixel patches (normalised per patch when ``norm_pix``).

        Args:
            patches: e.g. ``(B, N, K)`` from :func:`patchify`.
        """
        if not self.norm_pix:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True, unbiased=False)
        return (patches - mean) / (var + self.eps).sqrt()

    def forward(self, predictions: Tensor, patches: Tensor, mask: Tensor) -> Tensor:
        """Return the scalar loss.

        Args:
            predictions: ``(B, N, K)`` predicted pixel vectors of every patch (only masked ones count).
            patches: ``(B, N, K)`` true pixels, e.g. ``patchify(images, P)``; no gradient is taken.
            mask: ``(B, N)`` bool, ``True`` where the patch was masked (is predicted).
        """
        if predictions.dim() != 3 or not predictions.is_floating_point():
            raise ShapeError(
                f"predictions: expected a floating (B, N, K) tensor, got {tuple(predictions.shape)}"
            )
        if patches.shape != predictions.shape:
            raise ShapeError(
                f"patches {tuple(patches.shape)} must match predictions {tuple(predictions.shape)}"
            )
        if mask.shape != predictions.shape[:2] or mask.dtype != torch.bool:
            raise ShapeError(
                f"mask: expected bool shape {tuple(predictions.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            return _zero_like_graph(predictions)
        target = self.target(patches.detach().to(predictions.dtype))
        # Select first: visible patches can change neither the value nor the gradient.
        return (predictions[mask] - target[mask]).pow(2).mean()


@dataclass
class MultimodalMaskedLoss:
    """The output of :class:`MaskedMultimodalModelingLoss`.

    Attributes:
        loss: ``text_weight * text + image_weight * image``, the scalar to backpropagate.
        text: MLM on the multimodal encoder's text positions.
        image: MIM on the multimodal encoder's image positions.
    """

    loss: Tensor
    text: Tensor
    image: Tensor


class MaskedMultimodalModelingLoss(nn.Module):
    """FLAVA's masked multimodal modelling (MMM, Singh et al. 2022, sec. 3.2): MLM + MIM on the joint encoder.

    Both streams are masked as for the unimodal objectives (:func:`mask_tokens`, :func:`mask_patches`), the
    unimodal encoders read the masked inputs, and the multimodal encoder reads both; the text positions of
    its output predict the masked tokens and the image positions the masked patches' pixels, each with its
    own head (FLAVA keeps separate MMM heads). What makes it multimodal is only where the predictions are
    read: a masked word can be recovered from the image and a masked patch from the caption. This module
    adds the two losses; it is :class:`MaskedLanguageModelingLoss` plus :class:`MaskedImageModelingLoss`
    applied to the joint encoder's outputs.

    Args:
        text_weight: weight of the text (MLM) part.
        image_weight: weight of the image (MIM) part.
        ignore_index: label of unpredicted text positions.
        norm_pix: normalise each target patch (MAE); see :class:`MaskedImageModelingLoss`.
    """

    def __init__(
        self,
        *,
        text_weight: float = 1.0,
        image_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
        norm_pix: bool = True,
    ) -> None:
        super().__init__()
        if text_weight < 0 or image_weight < 0:
            raise ConfigError(f"text_weight and image_weight must be >= 0, got {text_weight}, {image_weight}")
        self.text_weight = float(text_weight)
        self.image_weight = float(image_weight)
        self.mlm = MaskedLanguageModelingLoss(ignore_index=ignore_index)
        self.mim = MaskedImageModelingLoss(norm_pix=norm_pix)

    def forward(
        self,
        text_logits: Tensor,
        text_labels: Tensor,
        patch_predictions: Tensor,
        patches: Tensor,
        patch_mask: Tensor,
    ) -> MultimodalMaskedLoss:
        """Return the weighted sum and its two parts.

        Args:
            text_logits: ``(..., V)`` MMM text-head logits at the multimodal encoder's text positions.
            text_labels: ``(...)`` targets, ``ignore_index`` where nothing was masked.
            patch_predictions: ``(B, N, K)`` MMM image-head pixel predictions at the image positions.
            patches: ``(B, N, K)`` true pixels of every patch.
            patch_mask: ``(B, N)`` bool, ``True`` where the patch was masked.
        """
        text = self.mlm(text_logits, text_labels)
        image = self.mim(patch_predictions, patches, patch_mask)
        return MultimodalMaskedLoss(
            loss=self.text_weight * text + self.image_weight * image, text=text, image=image
        )


@dataclass
class HardNegatives:
    """The output of :func:`mine_hard_negatives`.

    Attributes:
        text_for_image: ``(N,)`` index of the negative text drawn for each image (never its own).
        image_for_text: ``(N,)`` index of the negative image drawn for each text (never its own).
    """

    text_for_image: Tensor
    image_for_text: Tensor


@torch.no_grad()
def mine_hard_negatives(
    similarity: Tensor, *, same: Tensor | None = None, generator: torch.Generator | None = None
) -> HardNegatives:
    r"""Draw one hard negative per image and per text from the contrastive similarities (ALBEF, FLAVA).

    For image :math:`i` a text :math:`j \ne i` is drawn with probability
    :math:`\mathrm{softmax}_j(s_{ij})` renormalised over :math:`j \ne i` (ALBEF, Li et al. 2021, sec. 3.2:
    "texts that are more similar to the image have a higher chance to be sampled"), and likewise for each
    text over the images, with the columns of :math:`s`. The positive is never drawn. Pass the scaled
    logits (``exp(logit_scale) * x @ y.T``) to sample with the contrastive temperature, as ALBEF does.

    ``same`` marks pairs that are positives too although off the diagonal, e.g. two rows of the batch with
    the same caption or the same image (BLIP, Li et al. 2022, masks same-image pairs the same way). They are
    never drawn: the contrastive similarities rank exactly these false negatives highest, so without the
    mask an image's "hard negative" is often its own caption labelled unmatched, the ITM targets contradict
    each other and the head can only predict a constant. A row whose every other entry is marked (a batch
    of one repeated pair) falls back to all ``j != i``.

    Args:
        similarity: ``(N, N)`` image-to-text similarities, row ``i`` = image ``i``, positive on the diagonal;
            ``N >= 2``.
        same: optional ``(N, N)`` bool, ``True`` where image ``i`` and text ``j`` also match (symmetric use
            is up to the caller; the diagonal is always excluded).
        generator: random source for the draws.
    """
    if (
        similarity.dim() != 2
        or similarity.shape[0] != similarity.shape[1]
        or not similarity.is_floating_point()
    ):
        raise ShapeError(
            f"similarity: expected a floating square (N, N) matrix, got {tuple(similarity.shape)}"
        )
    n = similarity.shape[0]
    if n < 2:
        raise ShapeError("similarity: hard negatives need at least 2 pairs in the batch")
    eye = torch.eye(n, dtype=torch.bool, device=similarity.device)
    excluded = eye
    if same is not None:
        if same.shape != similarity.shape or same.dtype != torch.bool:
            raise ShapeError(f"same: expected bool {tuple(similarity.shape)}, got {same.dtype} {tuple(same.shape)}")
        excluded = excluded | same.to(similarity.device)
        # A row (or column) with nothing left to draw keeps only the diagonal excluded.
        full_rows = excluded.all(dim=1, keepdim=True)
        full_cols = excluded.all(dim=0, keepdim=True)
        rows_mask = torch.where(full_rows, eye, excluded)
        cols_mask = torch.where(full_cols, eye, excluded)
    else:
        rows_mask = cols_mask = eye
    sim = similarity.detach().float()
    probs_i2t = sim.masked_fill(rows_mask, float("-inf")).softmax(dim=1).cpu()  # row i: over texts for image i
    probs_t2i = sim.masked_fill(cols_mask, float("-inf")).T.softmax(dim=1).cpu()  # row j: over images for text j
    text_for_image = torch.multinomial(probs_i2t, 1, generator=generator).squeeze(1)  # (N,)
    image_for_text = torch.multinomial(probs_t2i, 1, generator=generator).squeeze(1)  # (N,)
    return HardNegatives(
        text_for_image=text_for_image.to(similarity.device),
        image_for_text=image_for_text.to(similarity.device),
    )


class ImageTextMatchingLoss(nn.Module):
    """Binary cross-entropy of a matched/unmatched classifier on the multimodal [CLS] (FLAVA's ITM).

    The caller builds the pairs: the ``N`` true pairs (label 1) and negatives (label 0), usually hard ones
    from :func:`mine_hard_negatives`, runs the multimodal encoder on them and feeds one logit per pair from
    an ITM head on [CLS_M]. ALBEF and FLAVA use a two-way softmax head; one logit with a sigmoid is the same
    classifier with half the output weights (``softmax([0, z]) = sigmoid(z)``).

    Args:
        pos_weight: weight of the positive pairs' term (e.g. 2 when there are twice as many negatives, to
            balance the classes); 1 = plain mean over pairs.
    """

    def __init__(self, *, pos_weight: float = 1.0) -> None:
        super().__init__()
        if not pos_weight > 0:
            raise ConfigError(f"pos_weight: must be > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Return the scalar loss.

        Args:
            logits: ``(M,)`` (or ``(M, 1)``) match logits, one per image-text pair.
            labels: ``(M,)`` 1 (or ``True``) for a matched pair, 0 for an unmatched one.
        """
        if logits.dim() == 2 and logits.shape[1] == 1:
            logits = logits.squeeze(1)
        if logits.dim() != 1 or not logits.is_floating_point() or logits.shape[0] == 0:
            raise ShapeError(f"logits: expected a non-empty floating (M,) tensor, got {tuple(logits.shape)}")
        if labels.shape != logits.shape:
            raise ShapeError(f"labels {tuple(labels.shape)} must match logits {tuple(logits.shape)}")
        targets = labels.to(logits.dtype)
        if bool(((targets != 0) & (targets != 1)).any()):
            raise ShapeError("labels: expected 0/1 values (matched = 1)")
        pos_weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
