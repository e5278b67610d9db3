"""RGB uint8 <-> the networks' tensors: the one definition of the scaling and the padding.

Why one module: the autoencoder's input range ([0, 255] -> [-1, 1]), the padding to the
model's stride (edge replication) and the way back to uint8 (clamp, round) existed four times
(whole-image path, tiled path, training, the decoder's two exits); a change to one and not
the others would make the tiled and whole paths, or training and inference, disagree.
The arithmetic is exactly what those copies did, so streams stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_model_range", "arrays_to_model_input", "to_uint8",
           "to_uint8_in_place"]


def to_model_range(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], the autoencoder's input range."""
    x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.require(batch, requirements=["C", "W"]))
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def arrays_to_model_input(arrays: Sequence[np.ndarray], stride: int, device: torch.device | str) -> torch.Tensor:
    """Same-size RGB uint8 images -> one batch in [-1, 1], padded by edge replication to ``stride``."""
    x = to_model_range(torch.from_numpy(np.stack(arrays)).to(device))
    h, w = x.shape[-2:]
    ph, pw = -h % stride, -w % stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Decoded images (B, 3, H, W) in about [-1, 1] -> RGB uint8 (B, H, W, 3)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_uint8_in_place(images: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float -> (H, W, 3) uint8 without a second float copy of a large image."""
    images.clamp_(-1, 1).add_(1).mul_(127.5).round_()
    return images[0].to(torch.uint8).permute(1, 2, 0).numpy()
