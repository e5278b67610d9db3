"""Tiling: large images coded tile by tile, one VQ grid, no seams; one-tile images untouched."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oscar_model.tiling import Tiling, assemble_cores, blend_tiles, tile_spans

FIXTURES = Path(__file__).with_name("fixtures")


def test_tiling_spans_cover_the_axis_and_cores_partition_it():
    from oscar_model.tiling import _cores

    for size, tile, overlap in [(10, 4, 1), (96, 32, 8), (33, 32, 8), (20, 32, 8)]:
        spans = tile_spans(size, tile, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(b - a == min(tile, size) for a, b in spans)
        assert all(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))  # they overlap
        cores = _cores(spans)
        covered = np.zeros(size, int)
        for lo, hi in cores:
            covered[lo:hi] += 1
        assert (covered == 1).all()
        assert all(a <= lo and hi <= b for (a, b), (lo, hi) in zip(spans, cores))


def test_tiling_blend_of_an_exact_function_reassembles_it():
    field = np.random.default_rng(0).standard_normal((1, 3, 40 * 4, 56 * 4)).astype(np.float32)

    def piece(y0, y1, x0, x1):
        return field[:, :, y0 * 4 : y1 * 4, x0 * 4 : x1 * 4]

    np.testing.assert_allclose(blend_tiles(piece, 40, 56, Tiling(16, 4, 16), scale=4), field, rtol=1e-5, atol=1e-6)
    grid = np.arange(40 * 56).reshape(1, 1, 40, 56)
    cores = assemble_cores(lambda y0, y1, x0, x1: grid[:, :, y0:y1:2, x0:x1:2], 40, 56, Tiling(16, 4, 16), factor=2)
    assert np.array_equal(cores, grid[:, :, ::2, ::2])


@pytest.fixture(scope="module")
def small_tiles(tiny_model_dir):
    """The tiny test model with 24-latent-pixel tiles (192 px): a 200x300 photo spans several."""
    from oscar_model import OscarCodec

    codec = OscarCodec.from_pretrained(tiny_model_dir, device="cpu")
    codec.model.config = replace(codec.model.config, tiling={"tile": 24, "overlap": 8, "whole_up_to": 24})
    return codec


def test_tiling_decodes_a_large_image_close_to_the_whole_image_path(small_tiles, tiny_codec, photo):
    from pipeline.stages.metrics import psnr

    assert not small_tiles.fits_one_tile(*photo.shape[:2]) and tiny_codec.fits_one_tile(*photo.shape[:2])
    for level in (0, 5):
        (tiled,) = small_tiles.decode(small_tiles.encode([photo], [level])[0])
        (whole,) = tiny_codec.decode(tiny_codec.encode([photo], [level])[0])
        assert tiled.shape == photo.shape
        assert psnr(whole, tiled) > 30  # the same image up to what crosses a tile border


def test_tiling_keeps_one_vq_grid(small_tiles, tiny_codec, photo):
    """The tiled encoder's indices are the whole-image encoder's away from tile borders."""
    from oscar_model.bitstream import unpack

    for level in range(len(tiny_codec.ladder)):
        (tiled,), (whole,) = small_tiles.encode([photo], level), tiny_codec.encode([photo], level)
        a = small_tiles._indices(*small_tiles.parse(tiled))
        b = tiny_codec._indices(*tiny_codec.parse(whole))
        assert a.shape == b.shape and unpack(tiled).height == 200
        assert (a == b).mean() > 0.95


def test_tiling_leaves_no_seam_where_tiles_disagree():
    """Tiles whose outputs disagree by a constant (what a network's edge effects look like) are
    blended into a ramp across the overlap: no step larger than the offset spread over it."""
    overlap, scale = 4, 8
    tiling = Tiling(16, overlap, 16)
    offsets: dict[tuple[int, int], float] = {}

    def piece(y0, y1, x0, x1):
        offset = offsets.setdefault((y0, x0), float(len(offsets) % 2) * 10.0)  # alternate 0 / 10
        return np.full((1, 1, (y1 - y0) * scale, (x1 - x0) * scale), offset, dtype=np.float32)

    out = blend_tiles(piece, 16, 40, tiling, scale=scale)[0, 0]
    jumps = np.abs(np.diff(out, axis=1)).max()
    assert jumps <= 10.0 / (overlap * scale + 1) + 1e-5  # a hard cut would jump by 10
    assert (out[:, 0] == 0).all() and (out[:, 20 * scale] == 10).all()  # each tile rules its own middle


def test_tiling_refuses_index_search_on_images_over_one_tile(small_tiles, photo):
    with pytest.raises(ValueError, match="one tile"):
        small_tiles.encode([photo], [2], refine_steps=2)


def test_oscar_tiny_streams_are_unchanged_and_untiled():
    """oscar-tiny's streams of one-tile images are byte-identical to those frozen before the
    backend seam and tiling existed (tests/fixtures/make_tiny_streams.py wrote them)."""
    from oscar_model import OscarCodec
    from tests.fixtures.make_tiny_streams import crops

    frozen = json.loads((FIXTURES / "oscar_tiny_streams.json").read_text())
    codec = OscarCodec.from_pretrained("oscar-tiny", device="cpu")
    assert codec.model_id == frozen["model_id"]
    for name, image in crops().items():
        assert codec.fits_one_tile(*image.shape[:2])
        streams = codec.encode([image], frozen["levels"])[0]
        assert [base64.b64encode(s).decode() for s in streams] == frozen["streams"][name]
        # Decoded pixels depend on torch's thread count (float sums in another order can move a
        # rounding); the fixture was decoded with 2 threads. Streams do not depend on it.
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            decoded = codec.decode([base64.b64decode(s) for s in frozen["streams"][name]])
        finally:
            torch.set_num_threads(threads)
        # Across CPU models the float kernels differ, so pixels are compared with a tolerance to
        # the frozen decodes (make_tiny_streams.py --pixels); on one machine they are exact.
        for level, (image_now, png) in enumerate(zip(decoded, frozen["decoded_png"][name])):
            then = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))
            diff = np.abs(image_now.astype(int) - then.astype(int))
            assert diff.max() <= 3 and (diff > 0).mean() < 0.01, (name, level, int(diff.max()), float((diff > 0).mean()))
