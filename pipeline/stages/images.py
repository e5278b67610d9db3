"""The CPU stage between the readers and the codec: raw bytes -> validated RGB pixels (no torch)."""

from __future__ import annotations

import hashlib

import numpy as np

from oscar_model.images import DEFAULT_MAX_PIXELS, open_image, to_rgb_array

from ..batch import Batch, column, error_of, with_columns

__all__ = ["decode_images", "pixels_of"]


def decode_images(batch: Batch, max_pixels: int = DEFAULT_MAX_PIXELS) -> Batch:
    """A reader's rows (:mod:`pipeline.inputs.readers`) -> RGB pixels, EXIF orientation applied.

    Adds ``image_id`` (the SHA-256 of the file's bytes, first 32 hex digits), ``width``,
    ``height``, ``pixels`` and ``reference``; drops ``bytes``. Empty, truncated, non-image and
    over-sized (decompression bomb) files become error rows; rows a reader already failed pass
    through.
    """
    errors = column(batch, "error")
    ids, widths, heights, pixels = [], [], [], []
    for i, raw in enumerate(column(batch, "bytes")):
        raw = raw or b""
        ids.append(hashlib.sha256(raw).hexdigest()[:32] if raw else None)
        width = height = 0
        image = b""
        if errors[i] is None:
            try:
                if not raw:
                    raise ValueError("empty file (0 bytes)")
                rgb = to_rgb_array(open_image(raw, max_pixels=max_pixels))
                height, width, image = rgb.shape[0], rgb.shape[1], rgb.tobytes()
            except Exception as e:  # any decoder failure is this row's error, not the job's
                errors[i] = error_of("read", e)
        widths.append(width)
        heights.append(height)
        pixels.append(image)
    out = with_columns(batch.drop_columns(["bytes"]), image_id=ids, width=widths, height=heights, pixels=pixels,
                       reference=["source"] * batch.num_rows)
    return with_columns(out, error=errors)


def pixels_of(raw: bytes, height: int, width: int) -> np.ndarray:
    """The ``pixels`` column's raw RGB bytes of one image as an (H, W, 3) array."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(int(height), int(width), 3)
