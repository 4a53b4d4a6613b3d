"""Single-process tests of polymodal.losses: golden values, reference parity, gradients, input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polymodal.core import distributed
from polymodal.errors import ConfigError, ShapeError
from polymodal.losses import ClipLoss, InfoNCELoss, MarginContrastiveLoss, SigLipLoss


def _features(n: int, d: int, *, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    b = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    return a, b


# ---------------------------------------------------------------------------------------------------------
# Margin loss
# ---------------------------------------------------------------------------------------------------------

# A = identity rows e1, e2, e3; B rows are unit vectors, so sim[i, j] = B[j, i]:
#   sim = [[0.8, 0.6, 0.0],
#          [0.6, 0.8, 0.6],
#          [0.0, 0.0, 0.8]]
# With margin 0.3 every hinge is [0.3 - 0.8 + s_neg]_+ = [s_neg - 0.5]_+, so a negative of 0.6 costs 0.1.
#   A -> B, rows:    sums [0.1, 0.2, 0.0] (total 0.3),  maxima [0.1, 0.1, 0.0] (total 0.2)
#   B -> A, columns: sums [0.1, 0.1, 0.1] (total 0.3),  maxima [0.1, 0.1, 0.1] (total 0.3)
_MARGIN_A = torch.eye(3, dtype=torch.float64)
_MARGIN_B = torch.tensor([[0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("hardest", "symmetric", "expected"),
    [
        (False, True, (0.3 + 0.3) / 3),
        (False, False, 0.3 / 3),
        (True, True, (0.2 + 0.3) / 3),
        (True, False, 0.2 / 3),
    ],
)
def test_margin_loss_golden(hardest: bool, symmetric: bool, expected: float) -> None:
    loss = MarginContrastiveLoss(margin=0.3, hardest=hardest, symmetric=symmetric)(_MARGIN_A, _MARGIN_B)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_margin_loss_is_cosine_and_normalized_flag_skips_normalisation() -> None:
    loss = MarginContrastiveLoss(margin=0.3)
    # Scaling rows does not change cosine similarity.
    scaled = loss(3.0 * _MARGIN_A, torch.tensor([[2.0], [0.5], [7.0]], dtype=torch.float64) * _MARGIN_B)
    assert scaled.item() == pytest.approx(0.2, abs=1e-12)
    # normalized=True trusts the input: unnormalised rows then give raw dot products, a different value.
    raw = MarginContrastiveLoss(margin=0.3, normalized=True)(3.0 * _MARGIN_A, _MARGIN_B)
    assert raw.item() != pytest.approx(0.2, abs=1e-3)
    assert MarginContrastiveLoss(margin=0.3, normalized=True)(_MARGIN_A, _MARGIN_B).item() == pytest.approx(
        0.2
    )


def test_margin_loss_pulls_positives_together() -> None:
    # Perfectly separated pairs (positives 1, negatives 0) cost nothing; the lecture's sign
    # (alpha + s_pos - s_neg) would charge them 1 + alpha per negative instead.
    eye = torch.eye(4, dtype=torch.float64)
    assert MarginContrastiveLoss(margin=0.2)(eye, eye).item() == 0.0
    # And gradient descent on the loss raises every positive similarity.
    a, b = _features(6, 5, seed=0)
    a.requires_grad_(True)
    loss_fn = MarginContrastiveLoss(margin=0.5)
    loss_fn(a, b).backward()
    with torch.no_grad():
        before = (F.normalize(a, dim=-1) * b).sum(-1)
        after = (F.normalize(a - 0.05 * a.grad, dim=-1) * b).sum(-1)
    assert loss_fn(a - 0.05 * a.grad, b) < loss_fn(a, b)
    assert (after - before).sum() > 0


def test_margin_loss_single_pair_has_no_negatives() -> None:
    a, b = _features(1, 4, seed=1)
    for hardest in (False, True):
        assert MarginContrastiveLoss(hardest=hardest)(a, b).item() == 0.0


@pytest.mark.parametrize("hardest", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_margin_loss_gradcheck(hardest: bool, symmetric: bool) -> None:
    # Unnormalised inputs so the gradient also goes through the normalisation; margin 0.5 makes most
    # hinges active, and random inputs keep every hinge and max away from its kink.
    g = torch.Generator().manual_seed(2)
    a = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    loss = MarginContrastiveLoss(margin=0.5, hardest=hardest, symmetric=symmetric)
    assert loss(a, b).item() > 0
    assert torch.autograd.gradcheck(loss, (a, b))


# ---------------------------------------------------------------------------------------------------------
# CLIP / InfoNCE
# ---------------------------------------------------------------------------------------------------------


def _clip_reference(img: torch.Tensor, txt: torch.Tensor, logit_scale: float) -> float:
    """Hand-written symmetric cross-entropy over the logit matrix, in plain Python floats."""
    n = img.shape[0]
    t = math.exp(logit_scale)
    logits = [[t * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    rows = sum(-logits[i][i] + math.log(sum(math.exp(v) for v in logits[i])) for i in range(n)) / n
    cols = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_loss_matches_hand_written_cross_entropy(local_loss: bool) -> None:
    img, txt = _features(6, 8, seed=3)
    logit_scale = math.log(1 / 0.07)
    loss = ClipLoss(local_loss=local_loss)(img, txt, torch.tensor(logit_scale, dtype=torch.float64))
    assert loss.item() == pytest.approx(_clip_reference(img, txt, logit_scale), rel=1e-12)


@pytest.mark.parametrize("local_loss", [False, True])
def test_the_trainers_global_batch_loss_is_clip_loss_on_one_process(local_loss: bool) -> None:
    # The torchrun trainer's exact global-batch loss and ClipLoss share one reduction
    # (symmetric_cross_entropy): on one process they agree in value and in every gradient.
    from polymodal.train.global_batch import global_clip_loss

    img, txt = _features(7, 5, seed=11)
    leaves = [t.clone().requires_grad_(True) for t in (img, txt, img, txt)]
    scales = [torch.tensor(2.3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ours = global_clip_loss(leaves[0], leaves[1], scales[0].exp(), [7], local_loss=local_loss)
    ref = ClipLoss()(leaves[2], leaves[3], scales[1])
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=0)
    for a, b in ((leaves[0], leaves[2]), (leaves[1], leaves[3]), (scales[0], scales[1])):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


def test_symmetric_cross_entropy_shares_add_up_to_the_batch_loss() -> None:
    from polymodal.losses import symmetric_cross_entropy

    img, txt = _features(6, 4, seed=12)
    logits = 5.0 * img @ txt.T
    labels = torch.arange(6)
    whole = symmetric_cross_entropy(logits, logits.T, labels)
    assert whole.item() == pytest.approx((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)).item() / 2)
    # Rows 0-1 and 2-5 as two processes' shares of the batch of 6, each over all 6 columns.
    shares = [symmetric_cross_entropy(logits[sl], logits.T[sl], labels[sl], total=6) for sl in (slice(0, 2), slice(2, 6))]
    assert sum(s.item() for s in shares) == pytest.approx(whole.item(), rel=1e-12)


def test_clip_loss_matches_hugging_face_clip() -> None:
    modeling_clip = pytest.importorskip("transformers.models.clip.modeling_clip")
    # transformers renamed clip_loss to image_text_contrastive_loss; accept either.
    hf_loss = getattr(modeling_clip, "image_text_contrastive_loss", None) or modeling_clip.clip_loss
    img, txt = _features(7, 5, seed=4)
    logit_scale = torch.tensor(2.0, dtype=torch.float64)
    logits_per_text = logit_scale.exp() * txt @ img.T  # what CLIPModel passes
    assert torch.allclose(ClipLoss()(img, txt, logit_scale), hf_loss(logits_per_text), rtol=0, atol=1e-12)


def test_clip_loss_perfect_alignment_at_high_scale_is_near_zero() -> None:
    eye = torch.eye(4, dtype=torch.float64)
    assert ClipLoss()(eye, eye, torch.tensor(math.log(100.0), dtype=torch.float64)).item() < 1e-40
    # At logit_scale -> -inf every logit is 0 and the loss is log N.
    assert ClipLoss()(eye, eye, torch.tensor(-50.0, dtype=torch.float64)).item() == pytest.approx(math.log(4))


def test_clip_loss_gradcheck_including_logit_scale() -> None:
    img, txt = _features(4, 3, seed=5)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    logit_scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ClipLoss(), (img, txt, logit_scale))


def test_info_nce_equals_the_symmetric_formula_worked_by_hand() -> None:
    # x = (e1, e2), y = (e1, (0.6, 0.8)), scale t: the logit matrix is t * [[1, 0.6], [0, 0.8]]. With two
    # candidates each cross-entropy is log(1 + exp(-(positive - negative))):
    #   image 1: log(1 + e^{-0.4 t})   image 2: log(1 + e^{-0.8 t})   (rows, image -> text)
    #   text 1:  log(1 + e^{-t})       text 2:  log(1 + e^{-0.2 t})   (columns, text -> image)
    # and InfoNCE (van den Oord et al. 2018, eq. 4; CLIP's symmetric form) is the mean of the four. The matrix
    # is not symmetric, so a loss that uses only one direction, or the rows twice, gets another value.
    t = 3.0
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    by_hand = sum(math.log1p(math.exp(-m * t)) for m in (0.4, 0.8, 1.0, 0.2)) / 4
    got = InfoNCELoss()(img, txt, torch.tensor(math.log(t), dtype=torch.float64))
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    # Matched features at a large scale drive it to 0; at scale 0 (every logit equal) it is log N.
    assert InfoNCELoss()(img, img, torch.tensor(math.log(1e3), dtype=torch.float64)).item() < 1e-300
    flat = InfoNCELoss()(img, txt, torch.tensor(-60.0, dtype=torch.float64))
    assert flat.item() == pytest.approx(math.log(2))


def test_clip_loss_accepts_python_float_and_one_element_scale() -> None:
    img, txt = _features(3, 4, seed=6)
    expected = ClipLoss()(img, txt, torch.tensor(0.5, dtype=torch.float64))
    assert torch.equal(ClipLoss()(img, txt, 0.5), expected)
    assert torch.equal(ClipLoss()(img, txt, torch.tensor([0.5], dtype=torch.float64)), expected)


# ---------------------------------------------------------------------------------------------------------
# SigLIP
# ---------------------------------------------------------------------------------------------------------


def _siglip_reference(img: torch.Tensor, txt: torch.Tensor, logit_scale: float, logit_bias: float) -> float:
    """-1/N sum_ij log sigmoid(z_ij (t x_i.y_j + b)), written out (Zhai et al. 2023, eq. 1)."""
    n = img.shape[0]
    t = math.exp(logit_scale)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log(1.0 + math.exp(-z * (t * float(img[i] @ txt[j]) + logit_bias)))
    return total / n


def test_siglip_loss_matches_formula() -> None:
    img, txt = _features(5, 6, seed=7)
    scale, bias = math.log(10.0), -10.0  # the paper's initialisation
    loss = SigLipLoss()(
        img, txt, torch.tensor(scale, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    )
    assert loss.item() == pytest.approx(_siglip_reference(img, txt, scale, bias), rel=1e-12)
    loss = SigLipLoss()(img, txt, 1.7, 0.4)
    assert loss.item() == pytest.approx(_siglip_reference(img, txt, 1.7, 0.4), rel=1e-12)


def test_siglip_loss_matches_hugging_face_siglip_model() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    text = transformers.SiglipTextConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=8,
    )
    vision = transformers.SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=8,
        patch_size=4,
    )
    model = transformers.SiglipModel(
        transformers.SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())
    )
    model.eval()
    with torch.no_grad():
        model.logit_bias.fill_(-1.5)  # away from the init, so a dropped bias would show
        out = model(
            input_ids=torch.randint(0, 50, (4, 8)), pixel_values=torch.randn(4, 3, 8, 8), return_loss=True
        )
        ours = SigLipLoss()(out.image_embeds, out.text_embeds, model.logit_scale, model.logit_bias)
    assert torch.allclose(ours, out.loss, rtol=1e-5, atol=1e-6)


def test_siglip_loss_gradcheck_including_scale_and_bias() -> None:
    img, txt = _features(4, 3, seed=8)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    scale = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SigLipLoss(), (img, txt, scale, bias))


# ---------------------------------------------------------------------------------------------------------
# Errors and the single-process distributed helpers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("img", "txt", "match"),
    [
        (torch.zeros(3, 4), torch.zeros(2, 4), "image_features .* text_features"),
        (torch.zeros(3, 4, 1), torch.zeros(3, 4, 1), "image_features: expected shape"),
        (torch.zeros(0, 4), torch.zeros(0, 4), "image_features: the batch is empty"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), "floating dtype"),
        (
            torch.zeros(3, 4),
            torch.zeros(3, 4, dtype=torch.float64),
            "float32 but text_features is torch.float64",
        ),
    ],
)
def test_bad_features_raise_shape_error(img: torch.Tensor, txt: torch.Tensor, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        ClipLoss()(img, txt, 1.0)
    with pytest.raises(ShapeError):
        SigLipLoss()(img, txt, 1.0, 0.0)
    with pytest.raises(ShapeError):
        MarginContrastiveLoss()(img, txt)


def test_non_scalar_logit_scale_raises() -> None:
    img, txt = _features(3, 4, seed=9)
    with pytest.raises(ShapeError, match="logit_scale"):
        ClipLoss()(img, txt, torch.zeros(3))
    with pytest.raises(ShapeError, match="logit_bias"):
        SigLipLoss()(img, txt, 1.0, torch.zeros(2))


def test_negative_margin_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="margin"):
        MarginContrastiveLoss(margin=-0.1)


def test_distributed_helpers_are_identity_without_a_process_group() -> None:
    assert not distributed.is_dist()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    x = torch.randn(3, 2)
    assert distributed.all_gather_with_grad(x) is x
    chunks = distributed.all_gather_chunks(x)
    assert len(chunks) == 1 and chunks[0] is x
