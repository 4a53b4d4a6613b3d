"""Text-to-image flow model: loss and gradients, guidance, Fréchet distance, a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polymodal
from polymodal.errors import CheckpointError, ShapeError
from polymodal.generate import (
    FlowUNet,
    GeneratorConfig,
    GeneratorTrainConfig,
    flow_matching_loss,
    frechet_distance,
    from_pil,
    sample_images,
    to_pil,
    train_generator,
)

SMALL = GeneratorConfig(image_size=8, channels=8, cond_dim=4, emb_dim=16)


def _perturbed() -> FlowUNet:
    """A model whose zero-initialised residual convs are nudged, so every input reaches the output."""
    torch.manual_seed(0)
    model = FlowUNet(SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p += 0.05 * torch.randn_like(p)
    return model


def test_loss_gradients_and_condition_dropping() -> None:
    model = _perturbed()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    c = torch.randn(4, 4)
    loss = flow_matching_loss(model, x, c, p_uncond=0.0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        if name != "null_cond":  # only used when a condition is dropped
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.null_cond.grad is None
    model.zero_grad()
    flow_matching_loss(model, x, c, p_uncond=1.0).backward()  # every row dropped: the text gets no gradient
    assert model.null_cond.grad is not None and model.null_cond.grad.abs().sum() > 0
    assert model.cond_proj.weight.grad.abs().sum() > 0  # through the null vector only


def test_loss_is_velocity_regression() -> None:
    # A "model" that outputs the exact velocity x1 - x0 has zero loss: check the path definition.
    model = FlowUNet(SMALL)
    x1 = torch.rand(3, 3, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(3, generator=g)

    class Exact(torch.nn.Module):
        config = SMALL
        null_cond = model.null_cond

        def forward(self, xt: torch.Tensor, tt: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
            assert torch.allclose(xt, (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1, atol=1e-6)
            return x1 - x0

    assert flow_matching_loss(Exact(), x1, None, generator=torch.Generator().manual_seed(1)).item() < 1e-10  # type: ignore[arg-type]


def _euler_by_hand(
    model: FlowUNet, cond: torch.Tensor, *, steps: int, guidance: float, seed: int
) -> torch.Tensor:
    """Euler steps of ``v_u + w (v_c - v_u)`` from the same starting noise, written out (Ho & Salimans 2022)."""
    n, s = cond.shape[0], model.config.image_size
    x = torch.randn((n, 3, s, s), generator=torch.Generator().manual_seed(seed))
    null = model.null_cond.expand(n, -1)
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((n,), i / steps)
            v_c, v_u = model(x, t, cond), model(x, t, null)
            x = x + (v_u + guidance * (v_c - v_u)) / steps
    return x.clamp(-1, 1)


def test_guidance_one_equals_conditional_and_shapes() -> None:
    model = _perturbed().eval()
    c = torch.randn(2, 4)
    a = sample_images(model, c, steps=4, guidance=1.0, generator=torch.Generator().manual_seed(0))
    # w = 1 is the plain conditional model: Euler on v(x, t, c) alone, never touching the null condition.
    x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i in range(4):
            x = x + model(x, torch.full((2,), i / 4), c) / 4
    torch.testing.assert_close(a, x.clamp(-1, 1), rtol=0, atol=1e-6)
    # Other weights follow the guided formula; w = 0 is the unconditional model.
    for w in (0.0, 3.0):
        got = sample_images(model, c, steps=4, guidance=w, generator=torch.Generator().manual_seed(0))
        want = _euler_by_hand(model, c, steps=4, guidance=w, seed=0)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    b = sample_images(model, c, steps=4, guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() > 1e-2  # guidance changes the samples, so the checks above can tell them apart
    assert a.shape == (2, 3, 8, 8) and a.abs().max() <= 1
    u = sample_images(model, None, num=3, steps=2)
    assert u.shape == (3, 3, 8, 8)
    with pytest.raises(ShapeError):
        model(torch.randn(1, 3, 4, 4), torch.zeros(1), None)


def test_frechet_distance_matches_scipy_formula() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64)
    b = torch.randn(150, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    mu1, mu2 = a.numpy().mean(0), b.numpy().mean(0)
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    want = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_pil_roundtrip_and_save_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    back = from_pil(to_pil(x), size=8)
    assert (back - x).abs().max() <= 1 / 127.5 + 1e-6
    model = FlowUNet(SMALL).eval()
    polymodal.save(model, tmp_path / "g")
    again = polymodal.load(tmp_path / "g")
    c = torch.randn(1, 4)
    assert torch.equal(sample_images(model, c, steps=2, generator=torch.Generator().manual_seed(0)),
                       sample_images(again, c, steps=2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(CheckpointError):
        polymodal.load(tmp_path)


def test_tiny_end_to_end_generates_the_conditioned_colour() -> None:
    # Two "prompts" (one-hot conditions) for a red and a blue 8x8 image: after a short training the
    # guided samples must be the right colour, which the unconditional path cannot know.
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None].expand(3, 8, 8)
    blue = torch.tensor([-1.0, -1.0, 1.0])[:, None, None].expand(3, 8, 8)
    images = torch.stack([red, blue] * 8)
    cond = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]] * 8)
    cfg = GeneratorTrainConfig(steps=150, batch_size=16, lr=3e-3, ema=0.0,
                               model={"channels": 8, "emb_dim": 16})
    result = train_generator(images, cond, cfg)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    out = sample_images(result.model, torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), steps=10, guidance=2.0,
                        generator=torch.Generator().manual_seed(0))
    mean = out.mean(dim=(2, 3))  # (2, 3) mean RGB
    assert mean[0, 0] > mean[0, 2] + 0.5  # red image: red > blue
    assert mean[1, 2] > mean[1, 0] + 0.5  # blue image: blue > red


def test_training_resumes_bit_identically_ema_included(tmp_path, monkeypatch) -> None:
    from _resume_helpers import assert_same_state, crash_after_checkpoints

    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    cfg = GeneratorTrainConfig(steps=120, batch_size=8, lr=3e-3, ema=0.9, flip=True,
                               model={"channels": 8, "emb_dim": 16})
    whole = train_generator(images, cond, cfg)
    crash_after_checkpoints(monkeypatch, 1, lambda: train_generator(images, cond, cfg, checkpoint=tmp_path / "g"))
    resumed = train_generator(images, cond, cfg, checkpoint=tmp_path / "g", resume=True)
    assert [h["step"] for h in resumed.history] == [50, 100, 120]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert_same_state(resumed.model, whole.model)  # the EMA weights, which sampling uses


# ---------------------------------------------------------------- the colour-and-shape prompt check
def _real_pairs() -> tuple[list[str], list]:  # type: ignore[type-arg]
    from polymodal.data.openmoji import load_openmoji
    from polymodal.generate.prompt_match import COLOURS, SHAPES

    by_text = {r.text: r.image for r in load_openmoji(None)}
    pairs = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    return pairs, to_pil(from_pil([by_text[p] for p in pairs]))


def test_prompt_match_is_right_on_every_real_colour_shape_emoji_and_only_there() -> None:
    from polymodal.generate.prompt_match import prompt_match

    pairs, images = _real_pairs()
    m = prompt_match(images, [f"a {p}" for p in pairs])
    assert (m.colour, m.shape, m.both) == (1.0, 1.0, 1.0)
    assert m.found == [tuple(p.split()) for p in pairs]
    # Every image against every other prompt: matches exactly on the diagonal (18 of 324).
    crossed = prompt_match([im for im in images for _ in pairs], [f"a {p}" for _ in pairs for p in pairs])
    assert crossed.both == pytest.approx(1 / len(pairs))
    assert crossed.colour == pytest.approx(1 / 6) and crossed.shape == pytest.approx(1 / 3)


def test_prompt_match_edge_cases() -> None:
    from PIL import Image

    from polymodal.errors import ConfigError
    from polymodal.generate.prompt_match import dominant_colour, parse_prompt, prompt_match, shape_of

    blank = Image.new("RGB", (32, 32), "white")
    assert dominant_colour(blank) is None and shape_of(blank) is None
    assert prompt_match([blank], ["a red circle"]).both == 0.0
    assert parse_prompt("An Orange square ") == ("orange", "square")
    with pytest.raises(ConfigError, match="COLOUR SHAPE"):
        parse_prompt("a teal hexagon")
    with pytest.raises(ConfigError, match="as many prompts"):
        prompt_match([blank], [])


def test_recolour_repaints_the_fill_and_variants_never_produce_held_out_captions() -> None:
    from polymodal.generate.prompt_match import COLOURS, colour_variants, prompt_match, recolour

    pairs, images = _real_pairs()
    circle = images[pairs.index("red circle")]
    repainted = [recolour(circle, "red", c) for c in COLOURS]
    assert prompt_match(repainted, [f"a {c} circle" for c in COLOURS]).both == 1.0
    # red -> red keeps the image up to HSV rounding and the hue snapping to the palette's
    diff = np.abs(np.asarray(repainted[0], dtype=int) - np.asarray(circle, dtype=int))
    assert diff.max() <= 8 and diff.mean() < 1.0
    texts = ["red circle", "blue circle", "red thing"]
    out_t, out_i = colour_variants(texts, [circle, circle, circle], exclude={"green circle"})
    assert "green circle" not in out_t and "blue circle" not in out_t and "red circle" not in out_t
    assert {"orange circle", "yellow circle", "purple circle"} <= set(out_t)
    assert {"green thing", "blue thing"} <= set(out_t) and len(out_t) == len(out_i) == 3 + 5
    # A caption whose colour is not the image's dominant one gives nothing.
    assert colour_variants(["green circle"], [circle]) == ([], [])
