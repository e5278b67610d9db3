"""The latent autoencoder: image in [-1, 1] <-> latent with 4 channels at 1/8 resolution.

Two implementations share one interface (:class:`oscar_model.contracts.Autoencoder`):

* :class:`CompactAutoencoder` - ours, small enough to train and run on a CPU.
* :class:`DiffusersAutoencoder` - diffusers' ``AutoencoderKL`` (the Stable Diffusion VAE
  role) loaded from a local directory.

Both encode deterministically (the posterior mode, never a sample): an archive must give the
same bytes for the same image on every run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import PixelShuffleUp, ResidualBlock, conv1x1, conv3x3

__all__ = ["CompactAutoencoder", "DiffusersAutoencoder"]


class CompactAutoencoder(ModelMixin, ConfigMixin):
    """A small f8 convolutional autoencoder (no attention, no normalisation: fast on CPU).

    ``scaling_factor`` plays the role of SD's ``vae.config.scaling_factor``: it is set after
    training so that latents have about unit variance, which the diffusion reading of the
    compressed latent (z_t = sqrt(abar) z + sqrt(1 - abar) eps) assumes.

    Args:
        block_channels: channels at 1/8, 1/4, 1/2 resolution and full resolution.
        latent_channels: channels of the latent (4, as SD).
        scaling_factor: multiplies the raw latent on encode, divides it on decode.
    """

    @register_to_config
    def __init__(
        self,
        block_channels: tuple[int, int, int, int] = (128, 96, 64, 32),
        latent_channels: int = 4,
        scaling_factor: float = 1.0,
        encoder_blocks_at_latent: int = 2,
        decoder_blocks_at_latent: int = 2,
    ) -> None:
        super().__init__()
        c8, c4, c2, c1 = block_channels
        self.latent_channels = latent_channels
        self.downscale = 8
        act = nn.LeakyReLU(0.1, inplace=True)
        self.encoder = nn.Sequential(
            conv3x3(3, c1),
            act,
            conv3x3(c1, c2, stride=2),
            ResidualBlock(c2),
            conv3x3(c2, c4, stride=2),
            ResidualBlock(c4),
            conv3x3(c4, c8, stride=2),
            *[ResidualBlock(c8) for _ in range(encoder_blocks_at_latent)],
            conv1x1(c8, latent_channels),
        )
        self.decoder = nn.Sequential(
            conv3x3(latent_channels, c8),
            *[ResidualBlock(c8) for _ in range(decoder_blocks_at_latent)],
            PixelShuffleUp(c8, c4),
            ResidualBlock(c4),
            PixelShuffleUp(c4, c2),
            ResidualBlock(c2),
            PixelShuffleUp(c2, c1),
            conv3x3(c1, c1),
            nn.LeakyReLU(0.1, inplace=True),
            conv3x3(c1, 3),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents / self.config.scaling_factor)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


class DiffusersAutoencoder(nn.Module):
    """diffusers' ``AutoencoderKL`` behind :class:`~oscar_model.contracts.Autoencoder` (the SD VAE role).

    Encodes with the posterior mode (``latent_dist.mode()``), not a sample. ``base``: the Stable
    Diffusion folder the VAE was loaded from when the model folder refers to it instead of
    holding a copy (saving writes the reference again).
    """

    def __init__(self, vae: nn.Module, base: Path | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.base = base
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DiffusersAutoencoder:
        """A copied VAE (``folder`` holds its config and safetensors) or a referenced one (base.json)."""
        from diffusers import AutoencoderKL

        from .sd21 import base_of, load_base

        return cls(load_base(AutoencoderKL, Path(folder)), base_of(Path(folder)))

    def save_pretrained(self, folder: str | Path) -> None:
        from .sd21 import write_base_reference

        if self.base is not None:
            write_base_reference(Path(folder), self.base, "vae")
        else:
            self.vae.save_pretrained(str(folder), safe_serialization=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images).latent_dist.mode() * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scaling_factor).sample
