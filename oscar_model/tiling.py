"""Any image size in bounded memory: every network runs on overlapping tiles of the latent grid.

An image whose latent fits one tile takes the whole-image path, unchanged (its streams are
byte-identical to an untiled codec's). A larger one is cut into tiles of ``tile`` x ``tile``
latent pixels overlapping by ``overlap``; continuous outputs (latents, z~, the denoised
latent, pixels) are blended across the overlaps with linear ramps, so no seam shows, and the
discrete VQ indices are taken from each tile's core (cores partition the grid), so the VQ grid
stays one grid and the bitstream does not know about tiles. Peak memory then depends on the
tile, not on the image; time grows linearly with the area.

All tile corners lie on multiples of ``align`` latent pixels (the codec's stride / 8), so
every tile is a valid input for the hyper-encoders' down-sampling and the denoiser's.

The blending is numpy, whichever runtime ran the networks (torch or ONNX Runtime: each
tile's output comes back as a float32 array), so both runtimes blend with the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Tiling", "padded_size", "pad_array_to_stride", "tile_spans", "blend_tiles", "assemble_cores"]


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``stride``: what the networks see of an image."""
    return -(-height // stride) * stride, -(-width // stride) * stride


def pad_array_to_stride(array: np.ndarray, stride: int) -> np.ndarray:
    """(..., H, W, 3) uint8 padded by edge replication to ``stride``: the same pixels as
    :func:`oscar_model.pixels.arrays_to_model_input`'s padding, for the tiled path that cuts tiles
    from it and for the ONNX Runtime codec."""
    h, w = array.shape[-3:-1]
    lead = [(0, 0)] * (array.ndim - 3)
    return np.pad(array, (*lead, (0, -h % stride), (0, -w % stride), (0, 0)), mode="edge")


@dataclass(frozen=True)
class Tiling:
    """Sizes in latent pixels (x 8 in image pixels).

    Attributes:
        tile: side of a tile.
        overlap: how far neighbouring tiles overlap (blended there).
        whole_up_to: a latent up to this size on both sides takes the whole-image path (default:
            ``tile``). oscar-tiny keeps 128 (1024 px), where it always worked whole, but tiles
            larger images at 64: its hyper-encoders attend globally at their coarsest grid, which
            costs the square of a tile's area (3 s for a 128-latent tile on 2 CPU cores, 0.2 s
            for a 64 one).
    """

    tile: int = 64
    overlap: int = 16
    whole_up_to: int = 128

    def __post_init__(self) -> None:
        if not 0 <= 2 * self.overlap < self.tile:
            raise ValueError(f"tiling overlap {self.overlap} must be under half the tile {self.tile}")

    def fits(self, height: int, width: int) -> bool:
        """Whether a latent of this size takes the whole-image path."""
        return height <= self.whole_up_to and width <= self.whole_up_to

    def for_autoencoder(self) -> Tiling:
        """Tiles for the autoencoder: half the overlap. Why: its convolutions see a few latent
        pixels, not the tile (the compact one has no attention at all); with the full overlap
        its decoder, the costliest network of oscar-tiny, did 1.8x the work on a 24 Mpx photo.
        Larger tiles did not help: 128-latent tiles cost 20% more per pixel than 64 on a CPU."""
        return Tiling(self.tile, self.overlap // 2, self.whole_up_to)

    def aligned(self, align: int) -> Tiling:
        """The same tiling with tile and overlap rounded down to multiples of ``align``."""
        tile = max(align, self.tile // align * align)
        overlap = min(self.overlap // align * align, (tile // 2 - 1) // align * align)
        return Tiling(tile, max(0, overlap), self.whole_up_to)


def tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one axis: ``tile`` long, stepping ``tile - overlap``, the
    last one flush with the end. Starts are multiples of the step's factors (and ``size - tile``)."""
    if size <= tile:
        return [(0, size)]
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    return [(s, s + tile) for s in starts]


def _ramp(start: int, end: int, size: int, overlap: int, scale: int) -> np.ndarray:
    """1-D float32 blending weights of a tile's output: rising over the overlap on every inner edge."""
    n, ov = (end - start) * scale, overlap * scale
    w = np.ones(n, dtype=np.float32)
    if ov and start > 0:
        w[:ov] = np.arange(1, ov + 1, dtype=np.float32) / np.float32(ov + 1)
    if ov and end < size:
        w[n - ov :] = np.minimum(w[n - ov :], np.arange(ov, 0, -1, dtype=np.float32) / np.float32(ov + 1))
    return w


def blend_tiles(
    fn: Callable[[int, int, int, int], np.ndarray],
    height: int,
    width: int,
    tiling: Tiling,
    scale: int = 1,
) -> np.ndarray:
    """Runs ``fn(y0, y1, x0, x1)`` (latent coordinates) -> a float32 array (1, C, (y1-y0)*scale,
    (x1-x0)*scale) on every tile of a ``height`` x ``width`` latent grid; returns the blended
    (1, C, H*scale, W*scale) float32 array."""
    weight = np.zeros((1, 1, height * scale, width * scale), dtype=np.float32)
    out: np.ndarray | None = None
    for y0, y1 in tile_spans(height, tiling.tile, tiling.overlap):
        wy = _ramp(y0, y1, height, tiling.overlap, scale)
        for x0, x1 in tile_spans(width, tiling.tile, tiling.overlap):
            piece = np.asarray(fn(y0, y1, x0, x1), dtype=np.float32)
            if out is None:
                out = np.zeros((1, piece.shape[1], height * scale, width * scale), dtype=np.float32)
            w = wy[:, None] * _ramp(x0, x1, width, tiling.overlap, scale)[None, :]
            region = (slice(None), slice(None), slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
            out[region] += piece * w
            weight[region] += w
    return np.divide(out, weight, out=out)


def _cores(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each tile's core: from the middle of its overlap with the previous tile to the middle of
    its overlap with the next; together they cover the axis exactly once."""
    cores = []
    for i, (start, end) in enumerate(spans):
        lo = start if i == 0 else (start + spans[i - 1][1]) // 2
        hi = end if i == len(spans) - 1 else (spans[i + 1][0] + end) // 2
        cores.append((lo, hi))
    return cores


def assemble_cores(
    fn: Callable[[int, int, int, int], np.ndarray], height: int, width: int, tiling: Tiling, factor: int
) -> np.ndarray:
    """Runs ``fn(y0, y1, x0, x1)`` (latent coordinates) -> an array (1, G, (y1-y0)/factor, (x1-x0)/factor)
    on every tile and keeps each tile's core: a (1, G, H/factor, W/factor) grid with no blending
    (VQ indices). Core edges are rounded to multiples of ``factor``."""
    out = None
    ys, xs = tile_spans(height, tiling.tile, tiling.overlap), tile_spans(width, tiling.tile, tiling.overlap)
    for (y0, y1), (cy0, cy1) in zip(ys, _cores(ys)):
        for (x0, x1), (cx0, cx1) in zip(xs, _cores(xs)):
            piece = np.asarray(fn(y0, y1, x0, x1))
            if out is None:
                out = np.zeros((1, piece.shape[1], height // factor, width // factor), dtype=piece.dtype)
            cy0, cy1, cx0, cx1 = (c // factor * factor for c in (cy0, cy1, cx0, cx1))
            out[:, :, cy0 // factor : cy1 // factor, cx0 // factor : cx1 // factor] = piece[
                :, :, (cy0 - y0) // factor : (cy1 - y0) // factor, (cx0 - x0) // factor : (cx1 - x0) // factor
            ]
    return out
