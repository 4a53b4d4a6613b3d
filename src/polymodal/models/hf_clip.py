"""Hugging Face CLIP checkpoints in and out of polymodal's :class:`~polymodal.models.clip.CLIP`, offline.

A Hugging Face CLIP folder holds ``config.json`` (``model_type: "clip"``, with ``vision_config`` and
``text_config``), ``model.safetensors`` and the tokenizer files (``tokenizer.json``, or ``vocab.json`` and
``merges.txt``; ``preprocessor_config.json`` optionally gives the pixel mean and std). CLIP's architecture
maps onto polymodal's towers as:

* vision: patch convolution without bias, class token, learned positions, ``pre_layrnorm`` (``ln_pre``),
  pre-norm layers, ``post_layernorm`` on the class token, projection without bias;
* text: learned positions, causal pre-norm layers, ``final_layer_norm``, pooling at the EOT token,
  projection without bias; activation ``quick_gelu`` (OpenAI's checkpoints) or ``gelu``.

Hugging Face keeps ``q_proj``, ``k_proj`` and ``v_proj`` apart; polymodal's attention holds them stacked in
one ``in_proj`` (one matrix product instead of three), so loading concatenates them and saving splits them.
Transformers is not needed for either direction: ``config.json`` is read and written as plain JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer as Backend
from tokenizers import processors
from torch import Tensor

from polymodal.core.checkpoint import atomic_write_json, load_weights, save_weights
from polymodal.data.pixels import RESAMPLES, ImagePreprocess
from polymodal.errors import CheckpointError, ConfigError
from polymodal.models.clip import CLIP, OPENAI_MEAN, OPENAI_STD, CLIPConfig
from polymodal.text import load_clip_tokenizer
from polymodal.towers.text_transformer import TextTransformerConfig
from polymodal.towers.vit import ViTConfig

WEIGHTS = "model.safetensors"
# Keys some checkpoints carry that are buffers, not weights (position ids written by older transformers).
_IGNORED_SUFFIXES = ("embeddings.position_ids",)
_ACTS = ("gelu", "quick_gelu")

# polymodal layer name -> Hugging Face layer name, inside one encoder layer (attention handled apart).
_LAYER_MAP = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "self_attn.out_proj": "self_attn.out_proj",
}


# ------------------------------------------------------------------------------------------ detection
def is_hf_clip_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like a Hugging Face CLIP folder (``config.json`` with ``model_type: clip``).

    Args:
        path: A folder.
    """
    f = Path(path) / "config.json"
    if not f.is_file():
        return False
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and cfg.get("model_type") == "clip" and "kind" not in cfg


# ------------------------------------------------------------------------------------------ config
def _require(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise CheckpointError(f"{where}: missing {key!r}")
    return section[key]


def config_from_hf(cfg: dict[str, Any], *, source: str = "config.json") -> CLIPConfig:
    """A :class:`CLIPConfig` for a Hugging Face CLIP ``config.json`` dict.

    Args:
        cfg: The parsed ``config.json``.
        source: Named in error messages.
    """
    vision = cfg.get("vision_config")
    text = cfg.get("text_config")
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise CheckpointError(f"{source}: needs 'vision_config' and 'text_config' sections")
    acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= set(_ACTS):
        raise CheckpointError(f"{source}: hidden_act must be one of {_ACTS} in both towers; got {sorted(acts)}")
    act = acts.pop()
    if vision.get("num_channels", 3) != 3:
        raise CheckpointError(f"{source}: only 3-channel images are supported")
    image_size, patch = vision.get("image_size", 224), vision.get("patch_size", 32)
    if not isinstance(image_size, int) or not isinstance(patch, int):
        raise CheckpointError(f"{source}: image_size and patch_size must be integers (square images)")
    where_v, where_t = f"{source} vision_config", f"{source} text_config"
    try:
        return CLIPConfig(
            embed_dim=int(cfg.get("projection_dim", 512)),
            vision=ViTConfig(
                image_size=image_size,
                patch_size=patch,
                width=int(_require(vision, "hidden_size", where_v)),
                layers=int(_require(vision, "num_hidden_layers", where_v)),
                heads=int(_require(vision, "num_attention_heads", where_v)),
                mlp_dim=int(_require(vision, "intermediate_size", where_v)),
                pool="cls", pos_embedding="learned", ln_pre=True, patch_bias=False, proj_bias=False,
                act=act, norm_eps=float(vision.get("layer_norm_eps", 1e-5)),
            ),  # fmt: skip
            text=TextTransformerConfig(
                context_length=int(text.get("max_position_embeddings", 77)),
                vocab_size=int(_require(text, "vocab_size", where_t)),
                width=int(_require(text, "hidden_size", where_t)),
                layers=int(_require(text, "num_hidden_layers", where_t)),
                heads=int(_require(text, "num_attention_heads", where_t)),
                mlp_dim=int(_require(text, "intermediate_size", where_t)),
                causal=True, pool="eot", pos_embedding="learned", proj_bias=False,
                act=act, norm_eps=float(text.get("layer_norm_eps", 1e-5)),
            ),  # fmt: skip
            tokenizer="clip",
            init_temperature=math.exp(-float(cfg.get("logit_scale_init_value", math.log(1 / 0.07)))),
        )
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None


def config_to_hf(config: CLIPConfig, *, eos_token_id: int, bos_token_id: int, pad_token_id: int) -> dict[str, Any]:
    """The Hugging Face ``config.json`` dict of a polymodal CLIP; refuses architectures HF cannot express.

    Args:
        config: The polymodal configuration.
        eos_token_id: The tokenizer's EOT id (HF pools at its first occurrence).
        bos_token_id: The tokenizer's BOS id.
        pad_token_id: The tokenizer's padding id.
    """
    v, t = config.vision, config.text
    problems = []
    if v.pool != "cls" or not v.ln_pre or v.pos_embedding != "learned" or v.patch_bias or v.proj_bias:
        problems.append("vision tower needs pool='cls', ln_pre, learned positions, no patch or projection bias")
    if not t.causal or t.pool != "eot" or t.pos_embedding != "learned" or t.proj_bias:
        problems.append("text tower needs causal attention, EOT pooling, learned positions, no projection bias")
    if v.act != t.act or v.act not in _ACTS:
        problems.append(f"both towers need the same activation, one of {_ACTS}")
    if eos_token_id == 2:
        problems.append("EOT id 2 makes transformers pool by argmax (its legacy path)")
    if problems:
        raise ConfigError("save_hf: this CLIP has no Hugging Face equivalent: " + "; ".join(problems))
    return {
        "model_type": "clip",
        "architectures": ["CLIPModel"],
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": math.log(1 / config.init_temperature),
        "initializer_factor": 1.0,
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": v.width, "intermediate_size": v.mlp_dim or 4 * v.width,
            "num_hidden_layers": v.layers, "num_attention_heads": v.heads, "image_size": v.image_size,
            "patch_size": v.patch_size, "num_channels": 3, "hidden_act": v.act, "layer_norm_eps": v.norm_eps,
            "projection_dim": config.embed_dim,
        },
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
            "intermediate_size": t.mlp_dim or 4 * t.width, "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads, "max_position_embeddings": t.context_length, "hidden_act": t.act,
            "layer_norm_eps": t.norm_eps, "projection_dim": config.embed_dim, "eos_token_id": eos_token_id,
            "bos_token_id": bos_token_id, "pad_token_id": pad_token_id,
        },
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ weights
def _tower_map(ours: str, theirs: str, layers: int) -> dict[str, str]:
    """polymodal key -> HF key for the encoder layers of one tower (attention in_proj excluded)."""
    out = {}
    for i in range(layers):
        for mine, hf in _LAYER_MAP.items():
            for p in ("weight", "bias"):
                out[f"{ours}.encoder.layers.{i}.{mine}.{p}"] = f"{theirs}.encoder.layers.{i}.{hf}.{p}"
    return out


def key_map(config: CLIPConfig) -> dict[str, str]:
    """polymodal parameter name -> Hugging Face name, for every parameter but the stacked ``in_proj``.

    Args:
        config: The (HF-compatible) configuration.
    """
    m = {
        "logit_scale": "logit_scale",
        "visual.class_token": "vision_model.embeddings.class_embedding",
        "visual.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.pos.weight": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "visual.proj.weight": "visual_projection.weight",
        "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
        "text.pos.weight": "text_model.embeddings.position_embedding.weight",
        "text.ln_final.weight": "text_model.final_layer_norm.weight",
        "text.ln_final.bias": "text_model.final_layer_norm.bias",
        "text.proj.weight": "text_projection.weight",
    }
    m.update(_tower_map("visual", "vision_model", config.vision.layers))
    m.update(_tower_map("text", "text_model", config.text.layers))
    return m


def _in_proj_keys(config: CLIPConfig) -> list[tuple[str, str]]:
    """(polymodal ``...self_attn.in_proj``, HF ``...self_attn``) prefixes of every attention layer."""
    out = []
    for ours, theirs, layers in (("visual", "vision_model", config.vision.layers),
                                 ("text", "text_model", config.text.layers)):
        for i in range(layers):
            out.append((f"{ours}.encoder.layers.{i}.self_attn.in_proj", f"{theirs}.encoder.layers.{i}.self_attn"))
    return out


def state_from_hf(hf: dict[str, Tensor], config: CLIPConfig, *, source: str) -> dict[str, Tensor]:
    """Rename (and stack q/k/v of) a Hugging Face CLIP state dict into polymodal's names.

    Args:
        hf: The checkpoint's tensors.
        config: The configuration read from the same folder.
        source: Named in error messages.
    """
    hf = {k: v for k, v in hf.items() if not k.endswith(_IGNORED_SUFFIXES)}
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for mine, theirs in key_map(config).items():
        if theirs in hf:
            ours[mine] = hf[theirs]
            used.add(theirs)
        else:
            missing.append(theirs)
    for mine, theirs in _in_proj_keys(config):
        for p in ("weight", "bias"):
            names = [f"{theirs}.{x}_proj.{p}" for x in ("q", "k", "v")]
            absent = [n for n in names if n not in hf]
            if absent:
                missing.extend(absent)
                continue
            ours[f"{mine}.{p}"] = torch.cat([hf[n] for n in names], dim=0)  # (3D, D) rows [W_q; W_k; W_v]
            used.update(names)
    unknown = sorted(set(hf) - used)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {missing[:3]}")
        if unknown:
            parts.append(f"{len(unknown)} unknown key(s), e.g. {unknown[:3]}")
        raise CheckpointError(f"{source}: not a CLIP checkpoint of this config.json: " + "; ".join(parts))
    return ours


def state_to_hf(model: CLIP) -> dict[str, Tensor]:
    """polymodal CLIP parameters under Hugging Face names (q/k/v split apart).

    Args:
        model: The model.
    """
    params = dict(model.named_parameters())
    out = {theirs: params[mine].detach() for mine, theirs in key_map(model.config).items()}
    for mine, theirs in _in_proj_keys(model.config):
        for p in ("weight", "bias"):
            q, k, v = params[f"{mine}.{p}"].detach().chunk(3, dim=0)
            out.update({f"{theirs}.q_proj.{p}": q, f"{theirs}.k_proj.{p}": k, f"{theirs}.v_proj.{p}": v})
    return {k: v.contiguous().clone() for k, v in out.items()}


# ------------------------------------------------------------------------------------------ folders
def _pixel_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = folder / "preprocessor_config.json"
    if not f.is_file():
        return OPENAI_MEAN, OPENAI_STD
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None
    return tuple(d.get("image_mean", OPENAI_MEAN)), tuple(d.get("image_std", OPENAI_STD))


def load_hf_clip(path: str | Path) -> CLIP:
    """Load a Hugging Face CLIP folder (config, safetensors weights, tokenizer) into a polymodal CLIP.

    Nothing is downloaded. Returns the model in eval mode.

    Args:
        path: The folder, e.g. one written by ``CLIPModel.save_pretrained`` and its tokenizer's
            ``save_pretrained``.
    """
    folder = Path(path)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{folder}: missing config.json")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if raw.get("model_type") != "clip":
        raise CheckpointError(f"{cfg_path}: model_type is {raw.get('model_type')!r}, not 'clip'")
    if not (folder / WEIGHTS).is_file():
        extra = " (pytorch_model.bin is not read: it can run code; convert it to safetensors)" if (
            folder / "pytorch_model.bin").is_file() else ""
        raise CheckpointError(f"{folder}: missing {WEIGHTS}{extra}")
    config = config_from_hf(raw, source=str(cfg_path))
    mean, std = _pixel_stats(folder)
    config.image_mean, config.image_std = mean, std  # type: ignore[assignment]
    config.__post_init__()
    tokenizer = load_clip_tokenizer(folder)
    if tokenizer.vocab_size > config.text.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, the text model embeds {config.text.vocab_size}"
        )
    model = CLIP(config, tokenizer=tokenizer)
    state = state_from_hf(load_weights(folder / WEIGHTS), config, source=str(folder / WEIGHTS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            if params[k].shape != v.shape:
                raise CheckpointError(
                    f"{folder / WEIGHTS}: {k} has shape {tuple(v.shape)}, config.json implies {tuple(params[k].shape)}"
                )
            params[k].copy_(v)
    return model.eval()


def save_hf(model: CLIP, path: str | Path) -> Path:
    """Write ``model`` as a Hugging Face CLIP folder that ``transformers.CLIPModel.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` read (and :func:`load_hf_clip` reads back).

    Args:
        model: A CLIP whose architecture Hugging Face can express (see :func:`config_to_hf`) and that has a
            tokenizer.
        path: The folder to write.
    """
    tok = model.tokenizer
    if tok is None:
        raise ConfigError("save_hf: the model has no tokenizer yet (fit_tokenizer first)")
    folder = Path(path)
    hf_cfg = config_to_hf(model.config, eos_token_id=tok.eot_id, bos_token_id=tok.bos_id, pad_token_id=tok.pad_id)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / WEIGHTS, state_to_hf(model), metadata={"format": "pt"})
    atomic_write_json(folder / "config.json", hf_cfg)
    # transformers' tokenizer adds BOS/EOT through the pipeline's post-processor (polymodal adds them in
    # pack()), so the written pipeline gets one: both sides then produce the same ids.
    backend = Backend.from_str(tok.to_json())
    backend.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A {tok.eot_token}",
        special_tokens=[(tok.bos_token, tok.bos_id), (tok.eot_token, tok.eot_id)],
    )
    backend.save(str(folder / "tokenizer.json"))
    special = {"bos_token": tok.bos_token, "eos_token": tok.eot_token, "pad_token": tok.pad_token,
               "unk_token": tok.eot_token if tok.kind == "clip-bpe" else "[UNK]"}
    atomic_write_json(folder / "special_tokens_map.json", special)
    atomic_write_json(folder / "tokenizer_config.json", {
        # A generic fast tokenizer over tokenizer.json: CLIPTokenizer would rebuild CLIP's own pipeline,
        # which a tokenizer learned from captions is not.
        "tokenizer_class": "CLIPTokenizer" if tok.kind == "clip-bpe" else "PreTrainedTokenizerFast",
        "model_max_length": model.config.text.context_length, **special,
    })
    atomic_write_json(folder / "preprocessor_config.json", preprocessor_config(model.image_preprocess))
    return folder


def preprocessor_config(spec: ImagePreprocess) -> dict[str, Any]:
    """``preprocessor_config.json`` of a ``transformers.CLIPImageProcessor`` doing what ``spec`` does (up to
    the rounding of the long side, which Hugging Face truncates).

    Args:
        spec: A centre-crop preprocessing, as :attr:`CLIP.image_preprocess`.
    """
    if spec.fit != "crop" or spec.channels != 3:
        raise ConfigError(f"preprocessor_config: CLIPImageProcessor only centre-crops RGB images, not {spec.id}")
    norm, size = spec.normalization, spec.size
    return {
        "image_processor_type": "CLIPImageProcessor", "image_mean": list(norm.mean), "image_std": list(norm.std),
        "do_resize": True, "size": {"shortest_edge": spec.resize or size},
        "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_normalize": True,
        "do_rescale": True, "rescale_factor": 1 / norm.scale, "resample": int(RESAMPLES[spec.resample]),
        "do_convert_rgb": True,
    }


__all__ = ["config_from_hf", "config_to_hf", "is_hf_clip_dir", "load_hf_clip", "preprocessor_config", "save_hf",
           "state_from_hf", "state_to_hf"]
