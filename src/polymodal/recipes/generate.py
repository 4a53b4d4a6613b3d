"""Runs of the text-to-image flow model: ``polymodal generate train|run``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polymodal.data.sources import require_source
from polymodal.recipes.common import Log, history_line, say


@dataclass
class GeneratorTrained:
    out: Path
    pairs: int
    conditional: bool
    history: list[dict[str, float]]


def train(data: str, out: str, *, steps: int = 500, batch_size: int = 48, channels: int = 32, lr: float = 2e-3,
          conditional: bool = True, recolour: bool = False, seed: int = 0, resume: bool = False,
          log: Log | None = None) -> GeneratorTrained:
    """Train the 32x32 text-to-image flow model (MiniLM text embeddings, classifier-free guidance) on the
    train split of ``data``'s image-text pairs and save it to ``out``; the defaults are those of
    docs/vision-language.md (scripts/vision_language/generate_eval.py). ``out/checkpoint`` is rewritten
    every 50 steps; ``resume`` continues from it."""
    from polymodal.data.pairs import load_pairs
    from polymodal.generate.model import from_pil
    from polymodal.generate.train import GeneratorTrainConfig, train_generator
    from polymodal.models.io import save
    from polymodal.towers.minilm import MiniLMTextTower

    require_source(data, command="generate train", needs="image-text pairs", kinds=("manifest",))
    pairs = load_pairs(data, "train")
    texts, pil = list(pairs.texts), list(pairs.images)
    if recolour:
        from polymodal.generate.prompt_match import colour_variants

        held_out = {t for split in ("val", "test") for t in load_pairs(data, split).texts}
        extra_t, extra_i = colour_variants(texts, pil, exclude=held_out)
        say(log, f"recolouring: {len(extra_t)} extra pairs")
        texts, pil = texts + extra_t, pil + extra_i
    images = from_pil(pil)
    cond = MiniLMTextTower.pretrained().encode(texts, normalize=True) if conditional else None
    cfg = GeneratorTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, model={"channels": channels})
    say(log, f"training the {'conditional' if conditional else 'unconditional'} generator: {len(texts)} images, "
             f"{steps} steps")
    res = train_generator(images, cond, cfg, on_history=history_line(log, steps), checkpoint=Path(out) / "checkpoint",
                          resume=resume)
    save(res.model, out, extra={"history": res.history, "steps": steps, "data": data, "recolour": recolour})
    return GeneratorTrained(Path(out), len(texts), conditional, res.history)


@dataclass
class Grid:
    out: Path
    prompts: int
    per_prompt: int


def run(model_dir: str, prompts: list[str], out: str, *, num: int = 4, guidance: float = 2.0, steps: int = 20,
        seed: int = 0) -> Grid:
    """Draw ``num`` images per prompt; write one row per prompt to the PNG ``out`` (3x nearest upscale)."""
    import torch
    from PIL import Image

    from polymodal.generate.flow import sample_images
    from polymodal.generate.model import FlowUNet, to_pil
    from polymodal.models.io import load
    from polymodal.towers.minilm import MiniLMTextTower

    model = load(model_dir, FlowUNet, what="generate run")
    cond = None
    if model.config.conditional:
        cond = MiniLMTextTower.pretrained().encode(list(prompts), normalize=True).repeat_interleave(num, 0)
    gen = torch.Generator().manual_seed(seed)
    images = to_pil(sample_images(model, cond, num=num * len(prompts), steps=steps, guidance=guidance, generator=gen))
    s = model.config.image_size + 2
    sheet = Image.new("RGB", (num * s, len(prompts) * s), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % num) * s + 1, (i // num) * s + 1))
    sheet = sheet.resize((sheet.width * 3, sheet.height * 3), Image.Resampling.NEAREST)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return Grid(Path(out), len(prompts), num)
