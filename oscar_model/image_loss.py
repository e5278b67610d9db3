"""The image objective: L1 + (1 - MS-SSIM) on images in [-1, 1].

Training minimises it (:mod:`oscar_model.train.losses`) and the encoder's index search
(:mod:`oscar_model.refine`) minimises it per image at run time, so it lives on the inference
side: a codec user never imports training code.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ms_ssim

__all__ = ["MS_SSIM_WINDOW", "MS_SSIM_MIN_SIDE", "reconstruction_terms", "image_loss"]

MS_SSIM_WINDOW = 7
"""Smaller than the usual 11 so that 128-px training crops can use all five MS-SSIM scales."""

MS_SSIM_MIN_SIDE = (MS_SSIM_WINDOW - 1) * 2**4 + 1
"""Five-scale MS-SSIM needs this many pixels on the short side; smaller images use L1 alone."""


def reconstruction_terms(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image L1 and MS-SSIM of images in [-1, 1] (MS-SSIM on [0, 1]), each (B,)."""
    l1 = (x_hat - x).abs().mean(dim=(1, 2, 3))
    msssim = ms_ssim(
        (x_hat.float().clamp(-1, 1) + 1) / 2, (x.float() + 1) / 2, data_range=1.0,
        size_average=False, win_size=MS_SSIM_WINDOW,
    )
    return l1, msssim


def image_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image L1 + (1 - MS-SSIM) -> (B,); L1 alone for images too small for five scales."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return (x_hat - x).abs().mean(dim=(1, 2, 3))
    l1, msssim = reconstruction_terms(x_hat, x)
    return l1 + 1 - msssim
