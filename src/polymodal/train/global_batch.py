"""One optimiser step on an exact global contrastive batch, split over processes and micro-batches.

The contrastive loss of a batch is not a sum of per-example terms: every row is a negative for every
other, so splitting a batch of ``B`` pairs over ``W`` processes, or into ``K`` micro-batches to save
memory, must not shrink the set of negatives. Two standard tricks keep it exact:

* Over processes, each rank encodes its ``B / W`` rows and the features of all ranks are all-gathered
  *with gradients* (OpenCLIP's ``gather_with_grad``; Ilharco et al. 2021), so every rank scores its rows
  against all ``B`` columns. With ``local_loss`` each rank builds only its ``(B/W, B)`` logit rows
  (memory ``O(B^2 / W)`` per rank), otherwise the full ``(B, B)`` matrix (``O(B^2)``).
* Over micro-batches, the features of all ``K`` micro-batches are first computed without gradients
  and cached; then each micro-batch is encoded again with gradients, put in its slot among the cached
  (constant) features, and the loss of the whole batch is back-propagated. Summing over the ``K``
  passes gives exactly the full-batch gradient, because each pass carries the gradient of one
  micro-batch's rows only (GradCache, Gao et al. 2021; OpenCLIP's ``accum_freq``). The RNG state is
  replayed for the second pass, so dropout draws the same masks as in the cached pass, and the
  temperature's gradient is taken in the first pass only, so it is counted once.

The step's gradients are then summed over ranks (:func:`polymodal.core.distributed.all_reduce_grads`); the
loss terms are scaled so that the sum is the gradient of the single-process loss of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polymodal.core import distributed
from polymodal.core.distributed import all_reduce_grads, all_reduce_sum, gather_rows, maybe_fail, rank_slices
from polymodal.losses import symmetric_cross_entropy
from polymodal.train.loop import progress_bar
from polymodal.train.trunk_features import collate_text_trunks


def global_clip_loss(img: Tensor, txt: Tensor, scale: Tensor, counts: Sequence[int], *, local_loss: bool) -> Tensor:
    """This rank's share of the symmetric InfoNCE loss of the global batch (CLIP, Radford et al. 2021).

    With ``L`` the single-process loss of the ``B = sum(counts)`` rows, the returned terms satisfy
    ``sum over ranks = L`` (``local_loss``: rank ``r`` sums the cross-entropies of its own rows, over
    all ``B`` columns, divided by ``2B``) or ``L / W`` on every rank (full matrix). Either way, summing
    the ranks' gradients gives ``dL/dθ``. On one process both forms equal :class:`polymodal.losses.ClipLoss`;
    this one gathers rows of unequal counts (a ragged last batch), and both reduce their logits with the
    shared :func:`polymodal.losses.symmetric_cross_entropy`.

    Args:
        img: ``(counts[rank], D)`` this rank's image features (L2-normalised).
        txt: ``(counts[rank], D)`` the paired text features.
        scale: ``exp(logit_scale)``, a scalar.
        counts: rows per rank.
        local_loss: build only this rank's logit rows.

    Returns:
        A scalar to call ``backward`` on.
    """
    world = len(counts) if distributed.is_dist() else 1
    me = distributed.rank() if world > 1 else 0
    total = int(sum(counts)) if world > 1 else img.shape[0]
    all_img = gather_rows(img, counts, name="image_features")  # (B, D)
    all_txt = gather_rows(txt, counts, name="text_features")  # (B, D)
    if local_loss:
        offset = int(sum(counts[:me])) if world > 1 else 0
        labels = torch.arange(img.shape[0], device=img.device) + offset  # this rank's rows sit at offset
        per_image = scale * img @ all_txt.T  # (n, B)
        per_text = scale * txt @ all_img.T  # (n, B)
        loss = symmetric_cross_entropy(per_image, per_text, labels, total=total)
        # Keep the gathers in the graph even on a rank with no rows: their backward is a collective.
        return loss + 0.0 * (all_img.sum() + all_txt.sum())
    logits = scale * all_img @ all_txt.T  # (B, B)
    labels = torch.arange(total, device=img.device)
    return symmetric_cross_entropy(logits, logits.T, labels) / world


def _features(model, h_img: Tensor, txt_items: list[Tensor], *, dim: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Image and text features of one (micro-)batch; an empty batch gives ``(0, dim)`` leaves."""
    if len(txt_items) == 0:
        z = like.new_zeros(0, dim)
        return z.clone().requires_grad_(torch.is_grad_enabled()), z.clone().requires_grad_(torch.is_grad_enabled())
    return model.image_features(h_img), model.text_features(collate_text_trunks(txt_items))


def _with_grad_path(x: Tensor) -> Tensor:
    """``x``, made a grad-requiring leaf when nothing upstream requires grad (an empty micro-batch), so
    the gather's backward collective still runs on this rank."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def exact_step_backward(
    model,
    h_img: Tensor,
    txt_items: list[Tensor],
    *,
    counts: Sequence[int],
    accum_steps: int,
    local_loss: bool,
) -> float:
    """Accumulate into ``.grad`` this rank's part of the gradient of the global batch's loss.

    Args:
        model: a dual encoder (``image_features``, ``text_features``, ``logit_scale``, ``config``).
        h_img: ``(n, ...)`` cached image-trunk outputs of this rank's rows.
        txt_items: ``n`` cached text-trunk outputs of the paired captions.
        counts: rows per rank for this step (``counts[rank] == n``).
        accum_steps: micro-batches per rank; 1 encodes the local rows in one pass.
        local_loss: see :func:`global_clip_loss`.

    Returns:
        The loss of the global batch (the same on every rank).
    """
    dim = model.config.embed_dim
    like = model.logit_scale.detach()
    max_scale = model.config.max_logit_scale

    def scale(*, grad: bool) -> Tensor:
        s = model.logit_scale.clamp(max=max_scale).exp()
        return s if grad else s.detach()

    n = len(txt_items)
    if accum_steps == 1:
        img, txt = _features(model, h_img, txt_items, dim=dim, like=like)
        loss = global_clip_loss(_with_grad_path(img), _with_grad_path(txt), scale(grad=True), counts,
                                local_loss=local_loss)
        loss.backward()
        return _global_value(loss.detach(), counts, local_loss=local_loss)

    micro = rank_slices(n, accum_steps)
    rng_states: list[Tensor] = []
    img_parts, txt_parts = [], []
    with torch.no_grad():  # pass 1: every micro-batch's features, as constants
        for sl in micro:
            rng_states.append(torch.get_rng_state())
            i, t = _features(model, h_img[sl], txt_items[sl], dim=dim, like=like)
            img_parts.append(i)
            txt_parts.append(t)
        after = torch.get_rng_state()
        value = global_clip_loss(torch.cat(img_parts), torch.cat(txt_parts), scale(grad=False), counts,
                                 local_loss=local_loss)
    for j, sl in enumerate(micro):  # pass 2: one micro-batch with gradients at a time
        torch.set_rng_state(rng_states[j])  # the same dropout masks as in pass 1
        i, t = _features(model, h_img[sl], txt_items[sl], dim=dim, like=like)
        img = torch.cat([*img_parts[:j], i, *img_parts[j + 1 :]])  # (n, D), grad on slice j only
        txt = torch.cat([*txt_parts[:j], t, *txt_parts[j + 1 :]])  # (n, D)
        loss = global_clip_loss(_with_grad_path(img), _with_grad_path(txt), scale(grad=j == 0), counts,
                                local_loss=local_loss)
        loss.backward()
    torch.set_rng_state(after)
    return _global_value(value, counts, local_loss=local_loss)


def _global_value(loss: Tensor, counts: Sequence[int], *, local_loss: bool) -> float:
    """The global batch's loss from this rank's term (see :func:`global_clip_loss`)."""
    world = len(counts) if distributed.is_dist() else 1
    if local_loss:
        return all_reduce_sum(float(loss.item()))
    return float(loss.item()) * world


def run_global_epoch(trainer) -> float:
    """One epoch of :class:`polymodal.train.fit.DualEncoderTrainer` over processes and/or micro-batches.

    The global order, views and caption picks are drawn exactly as in the single-process epoch, from a
    generator seeded by ``(seed, epoch)`` alone, so they do not depend on the number of processes; each
    rank then takes its contiguous slice of every global batch (:func:`polymodal.core.distributed.rank_slices`).
    Gradients are summed over ranks before clipping, so every rank takes the same optimiser step.

    Args:
        trainer: the trainer whose ``epoch`` is run.

    Returns:
        The mean over steps of the global-batch loss.
    """
    model, cfg = trainer.model, trainer.config
    world, me = distributed.world_size(), distributed.rank()
    g = torch.Generator().manual_seed(cfg.seed * 1000 + trainer.epoch)
    order = torch.randperm(len(trainer.train_set), generator=g)
    view_of = torch.randint(0, len(trainer.views), (len(order),), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    losses: list[float] = []
    bar = progress_bar(range(trainer.steps_per_epoch), desc=f"epoch {trainer.epoch + 1}/{cfg.epochs}",
                       enabled=trainer.progress)
    for step in bar:
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        if len(idx) < 2:
            continue
        picks = torch.randint(0, 1 << 30, (len(idx),), generator=g)  # drawn for the global batch
        slices = rank_slices(len(idx), world)
        counts = [s.stop - s.start for s in slices]
        mine, my_picks = idx[slices[me]], picks[slices[me]]
        if len(mine):
            h_img = torch.stack([trainer.views[int(view_of[i])][int(i)] for i in mine])  # (n, ...)
        else:
            h_img = torch.empty(0)
        caps = [trainer.train_text[int(i)] for i in mine]
        txt_items = [c[int(p) % len(c)] for c, p in zip(caps, my_picks)]
        trainer.optimizer.zero_grad(set_to_none=True)
        # Dropout draws from a stream seeded by (seed, epoch, step, rank): different masks on different
        # ranks (not one mask copied W times), and the same on a resumed run whatever its process count.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((cfg.seed, trainer.epoch, step, me)) % (1 << 62))
            loss = exact_step_backward(model, h_img, txt_items, counts=counts, accum_steps=cfg.accum_steps,
                                       local_loss=cfg.local_loss)
        all_reduce_grads(params)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        trainer.optimizer.step()
        trainer.scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, model.config.max_logit_scale)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}")
        maybe_fail(trainer.epoch * trainer.steps_per_epoch + step + 1)
    return float(sum(losses) / len(losses)) if losses else float("nan")
