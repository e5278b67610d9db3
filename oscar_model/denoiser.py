"""The shared one-step denoiser: compressed latent z~ read as z_t -> clean latent z0.

One network serves every rate; it is told the rate only through the pseudo-timestep t.
The compact model uses diffusers' ``UNet2DModel`` (time-conditioned, no text); the SD 2.1
path uses ``UNet2DConditionModel`` with a learned prompt embedding in place of text
(:class:`oscar_model.sd21.LoraConditionedUNet`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DModel

from .schedule import ScaledLinearSchedule

__all__ = ["TINY_DENOISER_CONFIG", "build_tiny_denoiser", "predict_clean_latent", "denoiser_stride"]

TINY_DENOISER_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (64, 128, 128),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "attention_head_dim": 32,
    "norm_num_groups": 32,
}


def build_tiny_denoiser(**overrides: Any) -> UNet2DModel:
    """A compact UNet2DModel (about 4 M parameters) for latents at 1/8 resolution."""
    return UNet2DModel(**{**TINY_DENOISER_CONFIG, **overrides})


def denoiser_stride(unet: torch.nn.Module) -> int:
    """How many latent pixels one UNet down-sampling chain needs the input to divide by."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def predict_clean_latent(
    unet: torch.nn.Module,
    schedule: ScaledLinearSchedule,
    z_t: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """One denoising step straight to x0 (``pred_original_sample``). ``unet`` is called as
    ``unet(z_t, timesteps).sample``: the SD 2.1 denoiser brings its own prompt embedding."""
    out = unet(z_t, timesteps).sample
    return schedule.predict_x0(z_t, out.to(z_t.dtype), timesteps, prediction_type)
