"""Reduced JPEG decoding for inference (``load_image(min_size=...)``, ``polymodal.embed.decode_size``).

A JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain as far as it stays at least as large as the
model's preprocessing needs. These tests check that the model sees (nearly) the same picture, that nothing
is ever decoded smaller than needed, that EXIF rotation and the pixel limit still work, that other formats
are untouched, and that every inference path decodes alike (index vectors == ``embed`` vectors).
"""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _search_helpers import model
from polymodal.data.images import load_image, load_images
from polymodal.data.pixels import ImagePreprocess
from polymodal.embed import decode_size, embed_images, image_paths
from polymodal.errors import ConfigError, DataError
from polymodal.search.index import DB_NAME
from polymodal.search.ingest import BuildConfig, sources_from_images, update_index
from polymodal.search.uploads import UploadLimits, check_upload


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photograph-like RGB array: smooth colour regions, edges, fine periodic texture and sensor noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (h // 150 + 2, w // 150 + 2, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    texture = 25 * np.sin(xx / 5.0 + yy / 11.0) * np.cos(yy / 7.0)  # fine detail, like foliage or fabric
    edges = np.where((xx // 97 + yy // 131) % 2 == 0, 30.0, -30.0)  # hard edges, like buildings
    arr = base + (texture + edges)[..., None] + rng.normal(0, 8, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_photo() -> bytes:
    return jpeg(photo(2000, 1500))


@pytest.fixture(scope="module")
def aligner():
    """The default aligner (pretrained EfficientNet-Lite0 at 224 px, TF centre crop from 256 px)."""
    import torch

    from polymodal.models.aligner import Aligner, AlignerConfig

    torch.manual_seed(0)
    return Aligner(AlignerConfig()).eval()


def test_the_default_aligner_embeds_a_reduced_photo_like_the_full_decode(big_photo, aligner):
    import torch

    assert decode_size(aligner) == (256, 256)  # shorter side to 256, then the 224 crop
    full = load_image(big_photo)
    reduced = load_image(big_photo, min_size=decode_size(aligner))
    assert full.size == (2000, 1500) and reduced.size == (500, 375)  # decoded at 1/4 scale
    with torch.no_grad():
        a, b = aligner.encode_image(aligner.preprocess([full, reduced]), normalize=True)
    assert float(a @ b) >= 0.99
    # The tower's input itself barely moves: mean absolute difference under 2 grey levels of 255.
    fa, fb = (np.asarray(aligner.image_preprocess.frame(im), np.float32) for im in (full, reduced))
    assert np.abs(fa - fb).mean() < 2.0


SPECS = [ImagePreprocess.effnet(224), ImagePreprocess.effnet(224, fit="pad"), ImagePreprocess.clip(224),
         ImagePreprocess.hf_clip(224), ImagePreprocess(size=224, fit="squash"), ImagePreprocess.effnet(64)]


@pytest.mark.parametrize("w, h", [(2000, 1500), (1500, 2000), (2049, 513), (300, 4000), (511, 512), (200, 150)])
def test_a_reduced_image_is_never_smaller_than_the_preprocessing_needs(w, h):
    data = jpeg(np.full((h, w, 3), 128, np.uint8))  # flat: quick to encode; the sizes are what matter
    for spec in SPECS:
        short, long = spec.min_source_size
        im = load_image(data, min_size=spec.min_source_size)
        assert min(im.size) >= min(short, w, h) and max(im.size) >= min(long, max(w, h))
        # ... and the strongest reduction that does so: half that size again would be too small on a side.
        s = round(w / im.size[0])  # the scale Pillow chose: 1, 2, 4 or 8
        assert s in (1, 2, 4, 8)
        assert s == 8 or min(w, h) / (2 * s) < short or max(w, h) / (2 * s) < long
        # So the preprocessing only ever shrinks it: its resize target fits inside the decoded image.
        if spec.fit == "crop":
            assert min(im.size) >= min(spec.resize or spec.size, w, h)
        elif spec.fit == "pad":
            assert max(im.size) >= min(spec.size, max(w, h))
        else:
            assert min(im.size) >= min(spec.size, w, h)


def test_exif_rotation_is_applied_after_the_reduced_decode():
    arr = photo(2000, 1000, seed=3)
    arr[:200, :200] = (255, 0, 0)  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    data = jpeg(arr, exif=exif.tobytes())
    full = load_image(data)
    reduced = load_image(data, min_size=(256, 256))
    assert full.size == (1000, 2000) and reduced.size == (500, 1000)  # upright portrait, at 1/2 scale
    r = np.asarray(reduced).astype(int)
    assert r[:90, -90:, 0].mean() > 200 and r[:90, -90:, 1:].mean() < 60  # the block is now top-right
    # The same picture as the full decode shrunk to the same size.
    shrunk = np.asarray(full.resize(reduced.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(shrunk - r).mean() < 6


def test_the_pixel_limit_uses_the_size_in_the_header_not_the_reduced_size(big_photo):
    with pytest.raises(DataError, match="2000x1500"):
        load_image(big_photo, max_pixels=2_000_000, min_size=(64, 64))  # 500x375 decoded would pass
    with pytest.raises(Exception, match="2000x1500"):
        check_upload(big_photo, UploadLimits(max_pixels=2_000_000), min_size=(64, 64))
    assert check_upload(big_photo, UploadLimits(), min_size=(256, 256)).size == (500, 375)


def test_pngs_and_small_jpegs_are_decoded_whole():
    arr = photo(1200, 900, seed=1)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    png = load_image(buf.getvalue(), min_size=(256, 256))
    assert png.size == (1200, 900) and np.array_equal(np.asarray(png), arr)
    small = jpeg(arr[:300, :400])
    assert np.array_equal(np.asarray(load_image(small, min_size=(256, 256))), np.asarray(load_image(small)))
    loaded = load_images([], min_size=(256, 256))
    assert loaded.images == [] and loaded.bad == []


@pytest.mark.parametrize("bad", [(0, 10), (10,), (1.5, 2), (True, 3), "ab", 224])
def test_bad_min_size_is_a_config_error(big_photo, bad):
    with pytest.raises(ConfigError, match="min_size"):
        load_image(big_photo, min_size=bad)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Large JPEGs (reduced when decoded), one rotated by EXIF, and a PNG (decoded whole)."""
    root = tmp_path_factory.mktemp("draft-folder")
    for i, (w, h) in enumerate([(1200, 900), (900, 1200), (800, 800)]):
        (root / f"photo{i}.jpg").write_bytes(jpeg(photo(w, h, seed=10 + i)))
    exif = Image.Exif()
    exif[0x0112] = 8
    (root / "turned.jpg").write_bytes(jpeg(photo(1000, 700, seed=20), exif=exif.tobytes()))
    Image.fromarray(photo(500, 400, seed=21)).save(root / "drawing.png")
    return root


def stored_vectors(index: Path) -> dict[str, np.ndarray]:
    con = sqlite3.connect(index / DB_NAME)
    try:
        vecs = {h: np.frombuffer(v, np.float32) for h, v in con.execute("SELECT hash, vector FROM vectors")}
        return {p: vecs[h] for p, h in con.execute("SELECT path, hash FROM items")}
    finally:
        con.close()


def thumb_sizes(index: Path) -> list[tuple[int, int]]:
    con = sqlite3.connect(index / DB_NAME)
    try:
        return [Image.open(io.BytesIO(d)).size for (d,) in con.execute("SELECT data FROM thumbs")]
    finally:
        con.close()


def test_index_build_stores_the_vectors_embed_gives(photo_folder, tmp_path):
    m = model()  # 64 px crop from 96 px: every JPEG here is decoded reduced
    assert decode_size(m) == (96, 96)
    paths = image_paths([photo_folder])
    assert paths[1].name == "photo0.jpg" and load_image(paths[1], min_size=decode_size(m)).size == (150, 113)
    emb = embed_images(m, paths, batch_size=2, progress=False, workers=2)
    for workers in (0, 2):
        out = tmp_path / f"idx{workers}"
        update_index(m, out, sources_from_images([photo_folder]), sync=True,
                     config=BuildConfig(batch_size=2, workers=workers))
        stored = stored_vectors(out)
        assert sorted(stored) == sorted(os.path.abspath(p) for p in paths)
        for row, vec in zip(emb.rows, emb.vectors):
            np.testing.assert_allclose(stored[os.path.abspath(row)], vec, rtol=0, atol=1e-5)
        assert all(max(s) == 192 for s in thumb_sizes(out))  # thumbnails still 192 px on the long side
    # An image query for a file finds that file's own vector.
    from polymodal.search.index import SearchIndex
    from polymodal.search.query import Searcher

    s = Searcher(SearchIndex.open(tmp_path / "idx2"), m, batch_wait=0.0)
    q = s.embed_image(paths[1])[0]
    np.testing.assert_allclose(q, stored_vectors(tmp_path / "idx2")[os.path.abspath(paths[1])], rtol=0, atol=1e-5)


def test_a_thumbnail_larger_than_the_model_needs_is_not_made_from_the_reduced_image(photo_folder, tmp_path):
    m = model()  # needs 96 px; 512 px thumbnails need more, so those files are decoded again for them
    update_index(m, tmp_path / "idx", sources_from_images([photo_folder]), sync=True,
                 config=BuildConfig(batch_size=2, workers=0, thumb_size=512))
    assert sorted(max(s) for s in thumb_sizes(tmp_path / "idx")) == [500, 512, 512, 512, 512]
