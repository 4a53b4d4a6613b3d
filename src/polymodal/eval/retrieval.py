"""Cross-modal retrieval recall@k, defined as in CLIP_benchmark (LAION) and the CLIP-like papers.

Given N images and M texts, where text ``j`` describes image ``text_to_image[j]`` (one or more texts per
image):

* ``image_retrieval_recall@k`` (text -> image): the fraction of the M texts whose image is among the k
  images most similar to the text.
* ``text_retrieval_recall@k`` (image -> text): the fraction of the N images for which at least one of
  their texts is among the k texts most similar to the image.

Similarity is cosine similarity. The (M, N) score matrix is built in row blocks, so memory grows with
``batch_size * max(N, M)``, never ``N * M``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval._inputs import as_labels, as_matrix

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def _ranked_hits(
    queries: torch.Tensor,
    keys: torch.Tensor,
    is_positive: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    kmax: int,
    batch_size: int,
) -> torch.Tensor:
    """For each query, whether a positive key is among its j most similar keys, for j = 1..kmax.

    Args:
        queries: Unit-norm query embeddings, shape (Q, D).
        keys: Unit-norm key embeddings, shape (K, D).
        is_positive: Maps (top key indices (b, kmax), query indices (b, 1)) to a bool (b, kmax) saying
            which retrieved keys are positives of their query.
        kmax: The largest k, already clipped to K.
        batch_size: Queries scored at once.

    Returns:
        A bool tensor, shape (Q, kmax); column j-1 says "a positive is within the top j".
    """
    out = []
    for start in range(0, queries.shape[0], batch_size):
        q = queries[start : start + batch_size]  # (b, D)
        top = (q @ keys.T).topk(kmax, dim=1).indices  # (b, kmax), most similar first
        query_index = torch.arange(start, start + q.shape[0])[:, None]  # (b, 1)
        hit = is_positive(top, query_index)  # (b, kmax)
        out.append(hit.cumsum(dim=1) > 0)  # a hit at rank r counts for every k >= r
    return torch.cat(out)  # (Q, kmax)


@torch.no_grad()
def retrieval_metrics(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    text_to_image: torch.Tensor | np.ndarray | Sequence[int],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@k of text->image and image->text retrieval over the whole evaluation set.

    A k larger than the number of candidates is clipped to it (recall 1.0). Ties in similarity are
    broken by ``torch.topk``, as in CLIP_benchmark.

    Args:
        image_emb: Image embeddings, shape (N, D); L2-normalised here.
        text_emb: Text embeddings, shape (M, D); L2-normalised here.
        text_to_image: For each text, the index of the image it describes, shape (M,); every image must
            have at least one text.
        ks: The k of recall@k.
        batch_size: Queries scored at once; bounds memory at ``batch_size * max(N, M)`` floats.

    Returns:
        ``{"image_retrieval_recall@k": ..., "text_retrieval_recall@k": ...}`` for every k in ``ks``.
    """
    images = F.normalize(as_matrix(image_emb, name="image_emb"), dim=-1)  # (N, D)
    texts = F.normalize(as_matrix(text_emb, name="text_emb"), dim=-1)  # (M, D)
    n, m = images.shape[0], texts.shape[0]
    if n == 0 or m == 0:
        raise ShapeError(f"image_emb/text_emb: need at least one of each, got {n} images and {m} texts")
    if images.shape[1] != texts.shape[1]:
        raise ShapeError(f"text_emb: dim {texts.shape[1]} does not match image_emb dim {images.shape[1]}")
    owner = as_labels(text_to_image, name="text_to_image", length=m, num_classes=n)  # (M,)
    without = int((torch.bincount(owner, minlength=n) == 0).sum())
    if without:
        # CLIP_benchmark would silently count such images as misses; a caption-less image is a data bug.
        raise ShapeError(f"text_to_image: {without} of {n} images have no text")
    if not ks or any(int(k) < 1 for k in ks):
        raise ConfigError(f"ks: expected positive integers, got {tuple(ks)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")

    kmax = max(int(k) for k in ks)
    # text -> image: text j's only positive is image owner[j].
    t2i = _ranked_hits(
        texts, images, lambda top, j: top == owner[j], kmax=min(kmax, n), batch_size=batch_size
    )  # (M, kmax)
    # image -> text: image i's positives are all texts j with owner[j] == i.
    i2t = _ranked_hits(
        images, texts, lambda top, i: owner[top] == i, kmax=min(kmax, m), batch_size=batch_size
    )  # (N, kmax)

    metrics: dict[str, float] = {}
    for k in ks:
        k = int(k)
        metrics[f"image_retrieval_recall@{k}"] = t2i[:, min(k, n) - 1].float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = i2t[:, min(k, m) - 1].float().mean().item()
    return metrics

