"""Folding thin images into near-square ones, so a strip costs what its pixels cost.

Why: the networks work on the image padded to the model's stride (32 px for oscar-tiny), so a
1x200,000 strip was coded as 32x200,000 - 32 times its pixels, tile after tile, with a 1-row
index grid that the context decoder walks one position per call (7 s to encode and 11 s to
decode, against 0.3 s for a 448x448 image of the same pixel count). Folded, it is cut into k
segments of equal length stacked one under the other (a 447x448 image), coded as usual, and cut
back apart after decoding.

The fold is a pure function of the original size and the stride (:func:`fold_layout`): a
stream says only *that* it is folded (flag bit 2 of its container), and the decoder
recomputes *how*, so a stream cannot ask for a layout the encoder would not have chosen.
Images that are not thin never fold, and their streams are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tiling import padded_size

__all__ = ["Fold", "fold_layout", "fold", "unfold"]

PADDING_WASTE_TO_FOLD = 2
"""Fold when padding to the stride would more than double the pixels the networks see."""


@dataclass(frozen=True)
class Fold:
    """How an image of ``size`` (height, width) is coded: ``segments`` pieces of its long side,
    ``segment`` pixels each (the last one edge-padded), stacked along the short side; ``transpose``
    when the long side is the height (the image is turned first, so segments are always rows)."""

    size: tuple[int, int]
    segments: int
    segment: int
    transpose: bool

    @property
    def coded_size(self) -> tuple[int, int]:
        short = min(self.size)
        return short * self.segments, self.segment


def _padded_area(height: int, width: int, stride: int) -> int:
    ph, pw = padded_size(height, width, stride)
    return ph * pw


def fold_layout(height: int, width: int, stride: int) -> Fold | None:
    """The fold for an image of this size, or None where it codes better as it is.

    Segments are about as long as the stack is tall (k = sqrt(long / short)), which makes the
    coded image near-square; a fold that would not lower the padded area is not made.
    """
    short, long = min(height, width), max(height, width)
    if _padded_area(height, width, stride) <= PADDING_WASTE_TO_FOLD * height * width:
        return None
    segments = max(2, round(math.sqrt(long / short)))
    segment = -(-long // segments)
    segments = -(-long // segment)  # no empty segment
    layout = Fold((height, width), segments, segment, transpose=height > width)
    if segments < 2 or _padded_area(*layout.coded_size, stride) >= _padded_area(height, width, stride):
        return None
    return layout


def fold(array: np.ndarray, layout: Fold) -> np.ndarray:
    """(H, W, C) image -> its folded (k * short, segment, C) image."""
    turned = array.transpose(1, 0, 2) if layout.transpose else array
    short, long = turned.shape[:2]
    padded = np.pad(turned, ((0, 0), (0, layout.segments * layout.segment - long), (0, 0)), mode="edge")
    pieces = padded.reshape(short, layout.segments, layout.segment, -1).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(pieces.reshape(layout.segments * short, layout.segment, -1))


def unfold(folded: np.ndarray, layout: Fold) -> np.ndarray:
    """The inverse of :func:`fold`: a folded (k * short, segment, C) image -> (H, W, C)."""
    short, long = min(layout.size), max(layout.size)
    pieces = folded.reshape(layout.segments, short, layout.segment, -1).transpose(1, 0, 2, 3)
    turned = pieces.reshape(short, layout.segments * layout.segment, -1)[:, :long]
    return np.ascontiguousarray(turned.transpose(1, 0, 2) if layout.transpose else turned)
