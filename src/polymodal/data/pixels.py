"""Images to model input tensors: one spec (:class:`ImagePreprocess`) and one function.

Every model in the project turns PIL images into a float32 ``(B, C, S, S)`` tensor the same way:

1. **colour**: to RGB (or grey for ``channels=1``); transparency is either dropped, as Pillow's
   ``convert`` does, or composited onto white (``alpha="white"``: emoji and icons are drawn on white);
2. **framing** to a square (``fit``):

   - ``"crop"``: resize the shorter side to ``resize`` (default ``size``), cut the central ``size x size``
     (TF EfficientNet uses ``resize = size + 32``, CLIP ``resize = size``); the longer side is rounded
     (``long_side="round"``) or truncated as Hugging Face's image processors do (``"floor"``);
   - ``"pad"``: centre the image on a square of its border's median colour, then resize (keeps a wide
     object that a crop would cut);
   - ``"squash"``: resize straight to ``size x size`` (small generated images, fixed-size datasets);

3. **resampling** filter of those resizes (``resample``);
4. **normalisation** ``(x / scale - mean) / std`` per channel on the 0..255 pixel values
   (:class:`Normalization`), each step in float32.

A spec is a small frozen dataclass that round-trips through JSON (:meth:`ImagePreprocess.to_dict`,
:meth:`ImagePreprocess.from_dict`), so a model carries its own as ``model.image_preprocess`` and
``model.preprocess(images)`` applies it. :func:`preprocess_images` is the one function behind every call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.errors import ConfigError, DataError

__all__ = [
    "ALPHAS",
    "CLIP",
    "CLIP_MEAN",
    "CLIP_STD",
    "EFFNET",
    "FITS",
    "IMAGENET",
    "LONG_SIDES",
    "RESAMPLES",
    "ImageLike",
    "ImagePreprocess",
    "Normalization",
    "check_image",
    "pad_to_square",
    "preprocess_images",
]

FITS = ("crop", "pad", "squash")
LONG_SIDES = ("round", "floor")
ALPHAS = ("drop", "white")
RESAMPLES: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

ImageLike = Image.Image | np.ndarray
"""A PIL image, or a uint8 array ``(H, W)`` (grey), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA)."""


# ---------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """``(x / scale - mean) / std`` per channel, for pixel values ``x`` in 0..255; each step in float32.

    ``scale=1`` takes ``mean`` and ``std`` in pixel units (EfficientNet-Lite's ``(x - 127) / 128``);
    ``scale=255`` in units of ``[0, 1]`` (how ImageNet and CLIP publish them). The two are not the same
    float32 arithmetic, so a model keeps the form it was trained with.

    Args:
        mean: one value per channel.
        std: one positive value per channel.
        scale: the first division (> 0).
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "scale", float(self.scale))
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean) or not all(s > 0 for s in self.std):
            raise ConfigError(
                f"Normalization needs one or three means and as many positive stds, got {self.mean}, {self.std}"
            )
        if not self.scale > 0:
            raise ConfigError(f"Normalization.scale must be positive, got {self.scale}")

    @classmethod
    def from_unit(cls, mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
        """Statistics of pixels scaled to [0, 1], applied in pixel units: ``(x - 255 mean) / (255 std)``."""
        return cls(tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))

    @property
    def channels(self) -> int:
        """How many channels it normalises (1 or 3)."""
        return len(self.mean)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise pixel values ``(C, H, W)`` or ``(B, C, H, W)`` (uint8 or float) to float32; ``x`` is
        left unchanged."""
        return self.apply_(x.float().clone() if x.dtype == torch.float32 else x.float())

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the float32 tensor ``x`` ``(C, H, W)`` or ``(B, C, H, W)`` in place and return it (the
        same float32 operations as out of place)."""
        if self.scale != 1.0:
            x.div_(self.scale)
        x.sub_(torch.tensor(self.mean, dtype=x.dtype).reshape(-1, 1, 1))
        return x.div_(torch.tensor(self.std, dtype=x.dtype).reshape(-1, 1, 1))


EFFNET = Normalization((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))  # EfficientNet-Lite: one mean for int8
IMAGENET = Normalization.from_unit((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# OpenAI CLIP's pixel statistics (of its training set), in [0, 1] units.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP = Normalization.from_unit(CLIP_MEAN, CLIP_STD)


# ---------------------------------------------------------------------------------------------------
# Colour and framing
# ---------------------------------------------------------------------------------------------------


def check_image(image: object, owner: str) -> Image.Image:
    """``image`` as a PIL image with pixels (a uint8 array is wrapped), else a :class:`DataError` naming ``owner``."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise DataError(None, f"{owner}: expected a PIL.Image.Image or a uint8 array (H, W), (H, W, 3) or "
                            f"(H, W, 4), got a {image.dtype} array of shape {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise DataError(None, f"{owner}: expected a PIL.Image.Image or a uint8 array, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise DataError(getattr(image, "filename", None) or None, f"{owner}: image has no pixels ({image.size})")
    return image


def _on_white(img: Image.Image) -> Image.Image:
    """RGB with any transparency pasted onto white through its alpha mask."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def pad_to_square(img: Image.Image) -> Image.Image:
    """The image centred on a square of its border's median colour (the background, for a cut-out).

    Args:
        img: an RGB or grey image.
    """
    w, h = img.size
    if w == h:
        return img
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])  # (2w + 2h[, C])
    median = np.median(border, axis=0)
    colour: int | tuple[int, ...] = int(median) if np.ndim(median) == 0 else tuple(int(c) for c in median)
    side = max(w, h)
    out = Image.new(img.mode, (side, side), colour)  # type: ignore[arg-type]
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


# ---------------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePreprocess:
    """How a model turns an image into its input (see the module docstring for the steps).

    Args:
        size: output side in pixels.
        fit: ``"crop"``, ``"pad"`` or ``"squash"``.
        resize: for ``"crop"``, the shorter side before cropping (``>= size``); ``None`` means ``size``.
        long_side: for ``"crop"``, ``"round"`` or ``"floor"`` the longer side after resizing.
        resample: ``"nearest"``, ``"bilinear"``, ``"bicubic"`` or ``"lanczos"``.
        channels: 3 (RGB) or 1 (grey).
        alpha: ``"drop"`` transparency (Pillow's conversion) or composite it onto ``"white"``.
        normalization: the per-channel normalisation; its channel count must equal ``channels``.
    """

    size: int = 224
    fit: str = "crop"
    resize: int | None = None
    long_side: str = "round"
    resample: str = "bicubic"
    channels: int = 3
    alpha: str = "drop"
    normalization: Normalization = field(default_factory=Normalization)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"ImagePreprocess.size must be a positive int, got {self.size!r}")
        for name, allowed in (("fit", FITS), ("long_side", LONG_SIDES), ("resample", tuple(RESAMPLES)),
                              ("alpha", ALPHAS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"ImagePreprocess.{name} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < self.size
        ):
            raise ConfigError(f"ImagePreprocess.resize must be an int >= size={self.size}, got {self.resize!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"ImagePreprocess.channels must be 1 or 3, got {self.channels!r}")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization(**self.normalization))
        if self.normalization.channels != self.channels:
            raise ConfigError(f"ImagePreprocess: {self.channels} channels but a normalisation of "
                              f"{self.normalization.channels}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def effnet(cls, size: int = 224, fit: str = "crop") -> ImagePreprocess:
        """The TF EfficientNet evaluation pipeline: shorter side to ``size + 32``, centre crop (or the whole
        image padded to a square), bicubic, ``(x - 127) / 128``."""
        return cls(size=size, fit=fit, resize=size + 32 if fit == "crop" else None, normalization=EFFNET)

    @classmethod
    def clip(cls, size: int = 224, mean: tuple[float, ...] = CLIP_MEAN,
             std: tuple[float, ...] = CLIP_STD) -> ImagePreprocess:
        """polymodal's CLIP: transparency onto white, shorter side to ``size`` (bicubic, long side rounded),
        centre crop, ``(x / 255 - mean) / std``.

        Args:
            size: output side.
            mean: RGB means in [0, 1] units.
            std: RGB stds in [0, 1] units.
        """
        return cls(size=size, fit="crop", alpha="white", normalization=Normalization(mean, std, scale=255.0))

    @classmethod
    def hf_clip(cls, size: int = 224) -> ImagePreprocess:
        """Equal to ``transformers.CLIPImageProcessor`` with ``shortest_edge = crop = size`` (PIL backend): the
        long side truncated, ``(x - 255 mean) / (255 std)`` in pixel units."""
        return cls(size=size, fit="crop", long_side="floor", normalization=CLIP)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_dict` reads it back to an equal spec."""
        n = self.normalization
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "normalization"}
        d["normalization"] = {"mean": list(n.mean), "std": list(n.std), "scale": n.scale}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImagePreprocess:
        """From :meth:`to_dict`'s output, refusing unknown keys."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown image preprocessing keys: {', '.join(unknown)}")
        d = dict(d)
        norm = d.get("normalization")
        if isinstance(norm, Mapping):
            unknown = sorted(set(norm) - {f.name for f in fields(Normalization)})
            if unknown:
                raise ConfigError(f"unknown image normalization keys: {', '.join(unknown)}")
            d["normalization"] = Normalization(**norm)
        return cls(**d)

    @property
    def id(self) -> str:
        """One string naming every choice, for cache keys."""
        n = self.normalization
        framing = f"crop{self.resize or self.size}-{self.long_side}" if self.fit == "crop" else self.fit
        stats = ",".join(f"{v:.8g}" for v in n.mean) + "/" + ",".join(f"{v:.8g}" for v in n.std)
        return (f"pixels:{self.size}:{framing}:{self.resample}:{'rgb' if self.channels == 3 else 'grey'}:"
                f"alpha-{self.alpha}:x/{n.scale:g}:{stats}")

    @property
    def min_source_size(self) -> tuple[int, int]:
        """``(shorter, longer)``: the smallest image sides :meth:`frame` reduces from without upscaling.

        ``"crop"`` resizes the shorter side to ``resize or size``; ``"pad"`` pads to a square of the longer
        side and resizes that to ``size``; ``"squash"`` resizes each side to ``size``. An image at least this
        large is only ever shrunk, which is what :func:`~polymodal.data.images.load_image` needs to know to
        decode a JPEG reduced (``min_size``) without changing what the model sees beyond resampling noise.
        """
        if self.fit == "crop":
            return self.resize or self.size, self.resize or self.size
        if self.fit == "pad":
            return 1, self.size
        return self.size, self.size

    def with_size(self, size: int) -> ImagePreprocess:
        """The same pipeline at another output side (a ``"crop"`` keeps its margin ``resize - size``)."""
        resize = None if self.resize is None else self.resize - self.size + size
        return replace(self, size=size, resize=resize)

    # ------------------------------------------------------------------ application
    def frame(self, image: ImageLike) -> Image.Image:
        """Steps 1-3: the ``size x size`` RGB (or grey) picture the model sees, before normalisation.

        Args:
            image: a PIL image of any mode, or a uint8 array.
        """
        img = check_image(image, "ImagePreprocess")
        if self.alpha == "white":
            img = _on_white(img)
        img = img.convert("RGB" if self.channels == 3 else "L")
        size, resample = self.size, RESAMPLES[self.resample]
        if self.fit == "squash":
            return img.resize((size, size), resample)
        if self.fit == "pad":
            return pad_to_square(img).resize((size, size), resample)
        w, h = img.size
        short = self.resize or size
        if self.long_side == "round":
            scale = short / min(w, h)
            rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        elif w <= h:
            rw, rh = short, max(short, int(h * short / w))
        else:
            rw, rh = max(short, int(w * short / h)), short
        img = img.resize((rw, rh), resample)  # Pillow returns a copy when the size is already right
        left, top = (rw - size) // 2, (rh - size) // 2
        return img.crop((left, top, left + size, top + size))

    def pixels(self, image: ImageLike) -> np.ndarray:
        """:meth:`frame` as uint8 ``(size, size, channels)``."""
        arr = np.asarray(self.frame(image), dtype=np.uint8)
        return arr[..., None] if arr.ndim == 2 else arr

    def one(self, image: ImageLike, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image as float32 ``(channels, size, size)``; ``generator`` is ignored (the signature of the
        loader's per-record transforms, which random augmentations share)."""
        return self([image])[0]

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images to the model's input, float32 ``(B, channels, size, size)``: :func:`preprocess_images`."""
        return preprocess_images(images, self)


def preprocess_images(images: Sequence[ImageLike], spec: ImagePreprocess) -> torch.Tensor:
    """The one path from images to a model's input tensor.

    Args:
        images: PIL images of any size and mode, or uint8 arrays.
        spec: the model's preprocessing.

    Returns:
        float32 ``(B, spec.channels, spec.size, spec.size)``; ``(0, C, S, S)`` for no images.

    Raises:
        DataError: an image is not a PIL image or uint8 array, or has no pixels.
    """
    if isinstance(images, (Image.Image, np.ndarray)):
        raise DataError(None, "preprocess_images: expected a sequence of images, got a single image")
    images = list(images)
    if not images:
        return torch.empty(0, spec.channels, spec.size, spec.size)
    batch = torch.from_numpy(np.stack([spec.pixels(im) for im in images]))  # (B, S, S, C) uint8
    # Transpose the bytes (4x less to move than floats), then normalise the fresh float copy in place.
    x = batch.permute(0, 3, 1, 2).contiguous().float()  # (B, C, S, S) in 0..255
    return spec.normalization.apply_(x)
