"""Thin images are coded folded: the networks see about their own pixels, not 32x as many."""

from __future__ import annotations

import numpy as np
import pytest

from oscar_model.bitstream import BitstreamError, pack, unpack
from oscar_model.folding import fold, fold_layout, unfold

STRIDE = 32


def padded_area(h: int, w: int) -> int:
    return -(-h // STRIDE) * STRIDE * (-(-w // STRIDE) * STRIDE)


@pytest.mark.parametrize("size", [(1, 200_000), (200_000, 1), (5, 40_000), (3, 7), (1, 64), (20, 3000), (10, 3000), (31, 90_001)])
def test_fold_then_unfold_gives_the_image_back_and_the_coded_area_stays_near_the_pixels(size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    layout = fold_layout(*size, STRIDE)
    if layout is None:  # padding at most doubles the work, or the image is one stride square anyway
        assert padded_area(*size) <= 2 * size[0] * size[1] or padded_area(*size) == STRIDE * STRIDE
        return
    folded = fold(image, layout)
    assert folded.shape[:2] == layout.coded_size
    np.testing.assert_array_equal(unfold(folded, layout), image)
    h, w = layout.coded_size
    assert padded_area(h, w) < padded_area(*size)
    if size[0] * size[1] >= 10_000:
        assert padded_area(h, w) <= 1.5 * size[0] * size[1]
        assert 0.5 <= h / w <= 2  # near-square


@pytest.mark.parametrize("size", [(448, 448), (512, 768), (100, 3000), (64, 100_000), (32, 32), (1, 1)])
def test_images_that_are_not_thin_are_not_folded(size):
    assert fold_layout(*size, STRIDE) is None


def test_a_strip_is_coded_folded_and_decodes_to_its_size(tiny_codec, photo):
    strip = np.ascontiguousarray(photo[:64, :64].reshape(1, -1, 3))  # 1 x 4096, the crop's pixels in raster order
    stream = tiny_codec.encode([strip], 3)[0]
    container, _ = tiny_codec.parse(stream)
    assert container.folded and (container.height, container.width) == (1, 4096)
    assert tiny_codec.coded_size(container) == (64, 64)
    decoded = tiny_codec.decode([stream])[0]
    assert decoded.shape == strip.shape
    # Folding puts the crop's rows back one under the other: it codes as the crop itself does.
    square = tiny_codec.decode([tiny_codec.encode([photo[:64, :64].copy()], 3)[0]])[0]
    np.testing.assert_array_equal(decoded.reshape(64, 64, 3), square)


def test_a_tall_band_folds_too_and_beats_the_unfolded_stream(tiny_codec, photo, monkeypatch):
    import oscar_model.streams as streams_module

    band = np.ascontiguousarray(np.concatenate([photo[:, :4]] * 8, axis=0))  # 1600 x 4
    folded = tiny_codec.encode([band], 2)[0]
    monkeypatch.setattr(streams_module, "fold_layout", lambda *a: None)
    unfolded = tiny_codec.encode([band], 2)[0]
    monkeypatch.undo()
    assert unpack(folded).folded and not unpack(unfolded).folded
    assert len(folded) < len(unfolded)
    # A stream written unfolded (as before folding existed) still decodes.
    for stream in (folded, unfolded):
        assert tiny_codec.decode([stream])[0].shape == band.shape


def test_a_fold_flag_on_an_image_that_is_never_folded_is_a_bitstream_error(tiny_codec, photo):
    from dataclasses import replace

    stream = tiny_codec.encode([photo], 1)[0]
    forged = pack(replace(unpack(stream), folded=True))
    with pytest.raises(BitstreamError, match="never coded folded"):
        tiny_codec.decode([forged])
