"""The image encoder's coordinate channels (CoordConv): position reaches the cell features themselves."""

from __future__ import annotations

import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.models.classifier_encoders import (
    ImageEncoder,
    ImageEncoderConfig,
    encoder_config_from_dict,
    encoder_config_to_dict,
)


def _interior_tokens(enc: ImageEncoder, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        enc.pos.zero_()  # leave out the added learned positions: only what the convolutions see
        tokens = enc(image).tokens  # (1, h*w, D)
    side = enc.config.image_size // 2 ** len(enc.config.widths)
    grid = tokens.view(side, side, -1)  # (h, w, D)
    return grid[1:-1, 1:-1].reshape(-1, grid.shape[-1])  # cells away from the zero padding


def test_without_coords_a_uniform_image_gives_equal_interior_cells_with_coords_not() -> None:
    torch.manual_seed(0)
    image = torch.full((1, 3, 32, 32), 0.3)
    plain = _interior_tokens(ImageEncoder(ImageEncoderConfig(channels=3, image_size=32, widths=(8, 8))), image)
    # a convolution is translation equivariant: every interior cell of a uniform image is the same
    torch.testing.assert_close(plain, plain[:1].expand_as(plain), rtol=0, atol=1e-5)
    coord = _interior_tokens(ImageEncoder(ImageEncoderConfig(channels=3, image_size=32, widths=(8, 8), coords=True)), image)
    assert float((coord - coord[:1]).abs().amax()) > 1e-3  # the cells know where they are


def test_coords_config_round_trip_and_parameter_names() -> None:
    cfg = ImageEncoderConfig(channels=1, image_size=28, widths=(16, 32), coords=True)
    assert encoder_config_from_dict(encoder_config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="coords"):
        ImageEncoderConfig(coords="yes")  # type: ignore[arg-type]
    coord = dict(ImageEncoder(cfg).named_parameters())
    assert coord["blocks.0.0.weight"].shape == (16, 3, 3, 3)  # grey + x + y
    plain = dict(ImageEncoder(ImageEncoderConfig()).named_parameters())
    # the parameter names of models saved before the option existed
    assert {"blocks.0.weight", "blocks.4.weight", "proj.weight", "pos", "pool.weight"} <= set(plain)
