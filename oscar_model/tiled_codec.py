"""Encoding and decoding one image tile by tile (images larger than the model's tile).

Same networks, same bitstream as the whole-image path in :mod:`oscar_model.codec`; the only
differences are where each network sees the image: the autoencoder, every hyper-encoder, the
denoiser and the autoencoder's decoder each run on overlapping tiles of the latent grid
(:mod:`oscar_model.tiling`). The per-channel norms are those of the whole latent (encoder)
and the rescaling uses the whole z~ (decoder), as untiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .pixels import to_model_range, to_uint8_in_place
from .rates import RatePoint
from .tiling import Tiling, assemble_cores, blend_tiles, pad_array_to_stride

if TYPE_CHECKING:
    from .model import OscarModel

__all__ = ["encode_tiled", "decode_tiled"]


@torch.inference_mode()
def encode_tiled(
    model: OscarModel, tiling: Tiling, array: np.ndarray, points: Sequence[RatePoint]
) -> tuple[list[np.ndarray], np.ndarray]:
    """One RGB uint8 image -> (VQ indices (G, h, w) per level of ``points``, the latent's per-channel RMS)."""
    f, stride, device = int(model.autoencoder.downscale), model.stride, model.device
    h, w = array.shape[:2]
    padded = pad_array_to_stride(array, stride)
    lh, lw = padded.shape[0] // f, padded.shape[1] // f

    def latents(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        tile = torch.from_numpy(np.ascontiguousarray(padded[y0 * f : y1 * f, x0 * f : x1 * f])).to(device)
        return _array(model.encode_latents(to_model_range(tile[None])))

    z = torch.from_numpy(blend_tiles(latents, lh, lw, tiling.for_autoencoder().aligned(stride // f)))
    rms = model.channel_rms(z)[0].numpy()
    codes = []
    for point in points:
        he = model.hyper_encoders[point.index]
        grid = assemble_cores(lambda y0, y1, x0, x1, he=he: he.encode(z[:, :, y0:y1, x0:x1].to(device)).cpu().numpy(),
                              lh, lw, tiling, point.downsample)
        codes.append(grid[0])
    return codes, rms


@torch.inference_mode()
def decode_tiled(
    model: OscarModel, tiling: Tiling, indices: np.ndarray, point: RatePoint, target_rms: torch.Tensor,
    size: tuple[int, int], timestep: int | None = None, denoise: bool = True,
) -> np.ndarray:
    """VQ indices (G, h, w) of one image -> its RGB uint8 pixels (H, W, 3) at ``size``. The caller
    chooses the precision (an autocast around the call)."""
    f, s, device, stride = int(model.autoencoder.downscale), point.downsample, model.device, model.stride
    lh, lw = indices.shape[1] * s, indices.shape[2] * s
    idx = torch.from_numpy(indices)[None]
    he = model.hyper_encoders[point.index]
    z_tilde = blend_tiles(lambda y0, y1, x0, x1: _array(he.decode(idx[:, :, y0 // s : y1 // s, x0 // s : x1 // s].to(device))),
                          lh, lw, tiling)
    z_t = model.rescale(torch.from_numpy(z_tilde), target_rms[None])
    del z_tilde
    if denoise:
        z_t = torch.from_numpy(blend_tiles(
            lambda y0, y1, x0, x1: _array(model.denoise(z_t[:, :, y0:y1, x0:x1].to(device), point, timestep)), lh, lw, tiling))
    pixels = blend_tiles(lambda y0, y1, x0, x1: _array(model.decode_latents(z_t[:, :, y0:y1, x0:x1].to(device))),
                         lh, lw, tiling.for_autoencoder().aligned(stride // f), scale=f)
    height, width = size
    return np.ascontiguousarray(to_uint8_in_place(torch.from_numpy(pixels))[:height, :width])


def _array(t: torch.Tensor) -> np.ndarray:
    """A network's output tile as the float32 array the numpy blending takes."""
    return t.float().cpu().numpy()
