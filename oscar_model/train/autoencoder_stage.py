"""Stage 0: the compact f8 autoencoder (L1 + (1 - MS-SSIM)), then its latent scaling factor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..autoencoder import CompactAutoencoder
from ..pixels import to_model_range
from .data import CropSampler
from .loop import LoopConfig, autocast, run_loop
from .losses import reconstruction_loss

__all__ = ["AutoencoderStageConfig", "train_autoencoder", "latent_scaling_factor"]


@dataclass
class AutoencoderStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=7000, max_minutes=35, lr=4e-4))
    batch_size: int = 16
    crop: int = 128
    ms_ssim_weight: float = 1.0
    block_channels: tuple[int, int, int, int] = (128, 96, 64, 32)


def train_autoencoder(
    cfg: AutoencoderStageConfig, sampler: CropSampler, workdir: Path, device: torch.device
) -> tuple[CompactAutoencoder, dict]:
    """Stage 0: trains the compact f8 autoencoder; sets its latent scaling factor at the end."""
    ae = CompactAutoencoder(block_channels=cfg.block_channels).to(device)
    ae = ae.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.loop.lr, weight_decay=0.0)

    def step(i: int, progress: float) -> dict[str, float]:
        x = sampler.sample(cfg.batch_size).to(device).contiguous(memory_format=torch.channels_last)
        with autocast(cfg.loop.bf16, device):
            x_hat = ae(x)
        loss, parts = reconstruction_loss(x_hat.float(), x, cfg.ms_ssim_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        return {"loss": float(loss.detach()), **parts}

    summary = run_loop(
        "stage0_autoencoder", cfg.loop, workdir, step, {"autoencoder": ae}, {"adamw": opt},
        extra_state=lambda: {"rng": sampler.rng_state()},
        restore_extra=lambda s: sampler.set_rng_state(s["rng"]) if "rng" in s else None,
    )
    ae.eval()
    ae.register_to_config(scaling_factor=1.0)
    ae.register_to_config(scaling_factor=latent_scaling_factor(ae, sampler, device))
    summary["scaling_factor"] = ae.config.scaling_factor
    return ae, summary


@torch.inference_mode()
def latent_scaling_factor(ae: CompactAutoencoder, sampler: CropSampler, device: torch.device) -> float:
    """1 / std of raw latents over the training images (SD's recipe for scaling_factor)."""
    sq, n = 0.0, 0
    for im in sampler.images:
        h, w = (s // 8 * 8 for s in im.shape[:2])
        x = to_model_range(im[None, :h, :w])
        z = ae.encode(x.to(device)).float()
        sq += float((z - z.mean()).pow(2).sum())
        n += z.numel()
    return float(1.0 / (sq / n) ** 0.5)
