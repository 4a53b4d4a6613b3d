"""Training objectives for joint embeddings, one ``nn.Module`` per loss.

Sections, in build order:

1. Input checks shared by the losses.
2. Margin (hinge) contrastive loss: VSE (Kiros et al. 2014) and VSE++ hardest negatives (Faghri et al.
   2018).
3. Softmax contrastive loss: InfoNCE (van den Oord et al. 2018) in its symmetric CLIP form (Radford et
   al. 2021), with OpenCLIP's distributed all-gather and "local loss" (Ilharco et al. 2021).
4. Sigmoid contrastive loss: SigLIP (Zhai et al. 2023).

Every loss takes two ``(N, D)`` feature batches whose row ``i`` form a positive pair; every other row of
the other batch is a negative. Temperatures are passed as ``logit_scale = log(1 / tau)`` and applied as
``exp(logit_scale)``, as in OpenCLIP, so an unconstrained parameter keeps the scale positive.

Under ``torch.distributed`` the softmax and sigmoid losses gather features from every process (see
:mod:`polymodal.distributed`); on one process they are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal import distributed
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

        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


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
