"""Losses for the three training stages."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..image_loss import reconstruction_terms
from ..layers import conv3x3


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, ms_ssim_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + w * (1 - MS-SSIM), both on images in [-1, 1] (MS-SSIM on [0, 1]), batch means."""
    l1, msssim = (t.mean() for t in reconstruction_terms(x_hat, x))
    loss = l1 + ms_ssim_weight * (1 - msssim)
    return loss, {"l1": float(l1.detach()), "ms_ssim": float(msssim.detach())}


def cosine_loss(z_tilde: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(z, z~), per image over all latent elements (the method's stage-1 loss)."""
    return -F.cosine_similarity(z_tilde.flatten(1), z.flatten(1), dim=1).mean()


class LatentDiscriminator(nn.Module):
    """A small patch discriminator on latents (the method's optional latent GAN).

    Judging latents rather than pixels is ~64x cheaper on CPU, and the frozen decoder turns a
    sharp latent into a sharp image.
    """

    def __init__(self, latent_channels: int = 4, channels: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv3x3(latent_channels, channels),
            nn.LeakyReLU(0.2),
            conv3x3(channels, channels * 2, stride=2),
            nn.GroupNorm(8, channels * 2),
            nn.LeakyReLU(0.2),
            conv3x3(channels * 2, channels * 2),
            nn.GroupNorm(8, channels * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels * 2, 1, kernel_size=3, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
