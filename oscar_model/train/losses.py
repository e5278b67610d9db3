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


# sRGB (D65) -> XYZ, and the CIE reference white, for a differentiable CIELAB.
_RGB_TO_XYZ = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = torch.tensor([0.9505, 1.0, 1.089])


def lab_of(x: torch.Tensor) -> torch.Tensor:
    """CIELAB (L in 0..100, a and b about -100..100) of images in [-1, 1], differentiable.

    Why CIELAB: its a/b axes are where a loss sees a red going grey as a large error; in RGB the
    same loss is spread thinly over three correlated channels and the one-step predictor's
    regression to the mean pays little for it.
    """
    rgb = ((x.float().clamp(-1, 1) + 1) / 2).clamp_min(0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055).clamp_min(1e-6) ** 2.4)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB_TO_XYZ.to(x.device), linear) / _WHITE.to(x.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-6) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def colour_loss(x_hat: torch.Tensor, x: torch.Tensor, pool: int = 4) -> tuple[torch.Tensor, dict[str, float]]:
    """Local colour error: L1 of CIELAB a/b over ``pool``-px blocks, plus the chroma the decode lost.

    Both terms are per 100 CIELAB units. Pooling first makes it a loss on local colour, not on
    the texture a one-step decoder is free to invent; the second term charges only for chroma
    missing (a desaturated block), never for chroma added, which is the error users see.
    """
    lab_hat = F.avg_pool2d(lab_of(x_hat), pool)
    lab = F.avg_pool2d(lab_of(x), pool)
    ab_error = (lab_hat[:, 1:] - lab[:, 1:]).abs().mean() / 100
    chroma_hat = lab_hat[:, 1:].pow(2).sum(1).add(1e-6).sqrt()
    chroma = lab[:, 1:].pow(2).sum(1).add(1e-6).sqrt()
    lost = F.relu(chroma - chroma_hat).mean() / 100
    return ab_error + lost, {"ab_l1": float(ab_error.detach()) * 100, "chroma_lost": float(lost.detach()) * 100}


def ssimulacra2_loss(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """SSIMULACRA2's weighted feature error (0 = identical; about 5 to 40 on our decodes), batch
    mean, on images in [-1, 1]: the metric we report, as a loss (:mod:`oscar_model.ssimulacra2`)."""
    from ..ssimulacra2 import score_of, weighted_error

    error = weighted_error((x.float() + 1) / 2, (x_hat.float().clamp(-1, 1) + 1) / 2)
    return error.mean(), {"ssimulacra2": float(score_of(error.detach()).mean())}


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
