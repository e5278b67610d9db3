"""Stage 2d: the autoencoder's decoder alone, fine-tuned on what the codec really feeds it.

Why: the decoder was trained (stage 0) on clean latents, and the codec never gives it one: it
gets the denoiser's one-step estimate at some level. Fine-tuning the denoiser for perception
(stage 2p, ``docs/training.md``) did not move SSIMULACRA2; the decoder is the network that
draws the pixels, so it is where a perceptual loss can act directly. The encoder, the
hyper-encoders and the denoiser are frozen, so every index, entropy table and stream stays the
source model's: the new model decodes the old one's streams, and only the decoder's weights
(2.5 MB) are new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..model import OscarModel
from .data import CropSampler
from .hyper_encoder_stage import freeze
from .loop import LoopConfig, autocast, run_loop
from .losses import colour_loss, reconstruction_loss, ssimulacra2_loss

__all__ = ["DecoderStageConfig", "train_decoder"]

SSIMULACRA2_FULL_CROP = 256
"""The smallest crop on which SSIMULACRA2 has all six of its scales (8 px at the sixth). On a
smaller crop the metric drops scales and its fitted weights shift onto other features, so the
loss would be a different metric from the one the audit reports."""


@dataclass
class DecoderStageConfig:
    """Stage 2d's knobs; the weights were chosen on the BSDS500 val split (``docs/training.md``)."""

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, max_minutes=60, lr=5e-5, warmup_steps=50))
    batch_size: int = 4
    crop: int = SSIMULACRA2_FULL_CROP
    ms_ssim_weight: float = 2.0
    colour_weight: float = 2.0
    ssimulacra2_weight: float = 0.05
    level_weights: tuple[float, ...] = (1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0)
    name: str = "stage2d_decoder"


def train_decoder(
    cfg: DecoderStageConfig, model: OscarModel, sampler: CropSampler, workdir: Path, device: torch.device
) -> dict:
    """Fine-tunes ``model.autoencoder.decoder`` in place on the codec's own latents.

    Per step: a batch of crops, one level drawn by ``level_weights``, the frozen codec's
    one-step latent at that level (no gradient), then the decoder with L1 + w (1 - MS-SSIM)
    (which guards MS-SSIM, judged too), the CIELAB colour term and SSIMULACRA2's weighted error.
    """
    if cfg.crop < SSIMULACRA2_FULL_CROP and cfg.ssimulacra2_weight > 0:
        raise ValueError(f"crop {cfg.crop} is under {SSIMULACRA2_FULL_CROP}: SSIMULACRA2 would lose scales")
    ae = model.autoencoder
    freeze(ae)
    freeze(model.hyper_encoders)
    freeze(model.denoiser)
    decoder = ae.decoder.train()
    for p in decoder.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.loop.lr, weight_decay=0.0)
    weights = torch.tensor(cfg.level_weights, dtype=torch.float)
    if len(weights) != len(model.ladder):
        raise ValueError(f"level_weights has {len(weights)} entries for a {len(model.ladder)}-level ladder")
    gen = torch.Generator().manual_seed(7)

    def step(i: int, progress: float) -> dict[str, float]:
        x = sampler.sample(cfg.batch_size).to(device)
        point = model.ladder.get(int(torch.multinomial(weights, 1, generator=gen)))
        with torch.no_grad(), autocast(cfg.loop.bf16, device):
            z = ae.encode(x).float()
            z_tilde, _, _ = model.hyper_encoders[point.index](z)
            x0 = model.latents_from_z_tilde(z_tilde.float(), point, model.channel_rms(z)).float()  # as the codec does
        with autocast(cfg.loop.bf16, device):
            x_hat = ae.decode(x0).float()
        loss, parts = reconstruction_loss(x_hat, x, cfg.ms_ssim_weight)
        if cfg.colour_weight > 0:
            colour, colour_parts = colour_loss(x_hat, x)
            loss = loss + cfg.colour_weight * colour
            parts.update(colour_parts)
        if cfg.ssimulacra2_weight > 0:
            perceptual, perceptual_parts = ssimulacra2_loss(x_hat, x)
            loss = loss + cfg.ssimulacra2_weight * perceptual
            parts.update(perceptual_parts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        return {**parts, "level": float(point.index), "loss": float(loss.detach())}

    summary = run_loop(
        cfg.name, cfg.loop, workdir, step, {"decoder": decoder}, {"adamw": opt},
        extra_state=lambda: {"rng": sampler.rng_state()},
        restore_extra=lambda s: sampler.set_rng_state(s["rng"]) if "rng" in s else None,
    )
    freeze(ae)
    model.invalidate_hash()
    return summary
