"""Stage 1 (the per-rate hyper-encoders against the frozen autoencoder), the rate ->
pseudo-timestep calibration, and growing the ladder by a level warm-started from the one below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..hyper_encoder import HyperEncoder
from ..model import OscarModel
from ..rates import RateLadder, RatePoint
from .data import CropSampler, LatentCropSampler, full_image_batches
from .loop import LoopConfig, autocast, run_loop
from .losses import reconstruction_loss

__all__ = [
    "HyperEncoderStageConfig", "train_hyper_encoders", "calibrate_timesteps", "grow_ladder", "rescale_to", "freeze",
]


@dataclass
class HyperEncoderStageConfig:
    """Stage 1, per level: ``loop`` is one level's budget (steps and minutes).

    Why per level: trained jointly, six levels shared each optimiser step, and in 26 minutes
    each got 1033 updates; the level at 0.125 bpp then decoded to MS-SSIM 0.798 on Kodak.
    Trained alone for 14 minutes (4757 updates, latent loss only), the same level reached
    0.883. Cached latents make a step about three times cheaper still.
    """

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=5000, max_minutes=6, lr=5e-4))
    batch_size: int = 8
    crop: int = 256
    commit_weight: float = 1.0
    image_loss_from: float = 0.7
    """Fraction of each level's budget (steps or minutes, whichever runs out first) after which an image loss through the frozen decoder is added."""
    image_loss_weight: float = 0.5
    image_batch: int = 4
    image_crop: int = 128
    """The image loss decodes the centre ``image_crop`` pixels of the first ``image_batch`` crops:
    a full batch through the decoder would cost ten latent-only steps."""
    revive_every: int = 100
    revive_until: float = 0.8
    name: str = "stage1_hyper_encoders"


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def rescale_to(z_tilde: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-channel rescaling of z~ to the original latent's RMS (what the decoder receives)."""
    rms_t = z_tilde.float().pow(2).mean(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    rms = z.float().pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
    return z_tilde * (rms / rms_t)


def train_hyper_encoders(
    cfg: HyperEncoderStageConfig,
    model: OscarModel,
    sampler: LatentCropSampler,
    workdir: Path,
    device: torch.device,
    levels: Sequence[int] | None = None,
) -> dict:
    """Stage 1: the hyper-encoders of ``levels`` (default: all), one level after another.

    Each level gets its own optimiser and its own resumable loop (``{name}_level{k}``) on
    latent crops of the frozen autoencoder (``sampler``). Loss: -cos(z, z~) + commitment; after
    ``image_loss_from`` of the level's budget, plus L1 + (1 - MS-SSIM) of the frozen decoder's
    image from the rescaled z~ (centre crops). Levels not named are left untouched.
    """
    from .losses import cosine_loss

    ae = freeze(model.autoencoder)
    selected = list(range(len(model.hyper_encoders))) if levels is None else list(levels)
    f = int(ae.downscale)
    per_level: dict[str, dict] = {}
    for lvl in selected:
        he = model.hyper_encoders[lvl].train()
        opt = torch.optim.AdamW(he.parameters(), lr=cfg.loop.lr, weight_decay=0.0)

        def step(i: int, progress: float, he=he, opt=opt) -> dict[str, float]:
            image_phase = progress >= cfg.image_loss_from
            z, x = sampler.sample(cfg.batch_size, pixels=image_phase)
            z = z.to(device)
            with autocast(cfg.loop.bf16, device):
                z_tilde, _, commit = he(z)
            cos = cosine_loss(z_tilde.float(), z)
            total = cos + cfg.commit_weight * commit
            metrics = {"cos": -float(cos.detach())}
            if image_phase:
                n, c = cfg.image_batch, cfg.image_crop // f
                y0 = (z.shape[-1] - c) // 2
                zc = rescale_to(z_tilde.float(), z)[:n, :, y0 : y0 + c, y0 : y0 + c]
                with autocast(cfg.loop.bf16, device):
                    x_hat = ae.decode(zc)
                xc = x[:n, :, f * y0 : f * (y0 + c), f * y0 : f * (y0 + c)].to(device)
                rec, parts = reconstruction_loss(x_hat.float(), xc)
                total = total + cfg.image_loss_weight * rec
                metrics["img_ms_ssim"] = parts["ms_ssim"]
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(he.parameters(), 1.0)
            opt.step()
            if (i + 1) % cfg.revive_every == 0 and progress < cfg.revive_until:
                metrics["revived"] = float(he.quantizer.revive_dead_codes(he.features(z).detach()))
            metrics["loss"] = float(total.detach())
            return metrics

        per_level[f"level_{lvl}"] = run_loop(
            f"{cfg.name}_level{lvl}", cfg.loop, workdir, step, {"hyper_encoder": he}, {"adamw": opt},
            extra_state=lambda: {"rng": sampler.rng_state()},
            restore_extra=lambda s: sampler.set_rng_state(s["rng"]) if "rng" in s else None,
        )
        he.eval()
    model.invalidate_hash()
    return {
        "stage": cfg.name,
        "levels": selected,
        "steps": sum(s["steps"] for s in per_level.values()),
        "wall_minutes": round(sum(s["wall_minutes"] for s in per_level.values()), 2),
        "budget_hit": any(s.get("budget_hit", False) for s in per_level.values()),
        "per_level": per_level,
    }


# ---------------------------------------------------------------------------- calibration


@torch.inference_mode()
def calibrate_timesteps(
    model: OscarModel, sampler: CropSampler, device: torch.device, limit: int = 200, levels: Sequence[int] | None = None
) -> dict:
    """Measures E[cos(z~, z)] per level on training images; sets t with sqrt(abar_t) ~ E[cos].

    Only ``levels`` (default: all) get a new t: a trained denoiser's other levels keep theirs.
    """
    import torch.nn.functional as F

    chosen = [p.index for p in model.ladder] if levels is None else list(levels)
    sums = dict.fromkeys(chosen, 0.0)
    n = 0
    for x in full_image_batches(sampler, model.stride, limit):
        z = model.encode_latents(x.to(device))
        for lvl in chosen:
            he = model.hyper_encoders[lvl]
            zt = rescale_to(he.decode(he.encode(z)), z)
            sums[lvl] += float(F.cosine_similarity(zt.flatten(1), z.flatten(1)).mean())
        n += 1
    cosines = {lvl: s / n for lvl, s in sums.items()}
    timesteps = [
        model.config.schedule.timestep_for_cosine(cosines[p.index]) if p.index in cosines else p.timestep
        for p in model.ladder
    ]
    model.config.ladder = model.config.ladder.with_timesteps(timesteps)
    model.invalidate_hash()
    return {
        "images": n,
        "levels": chosen,
        "mean_cosine": [round(cosines[lvl], 4) for lvl in chosen],
        "timesteps": [timesteps[lvl] for lvl in chosen],
    }


# ---------------------------------------------------------------------------- growing the ladder
def grow_ladder(model: OscarModel, points: Sequence[RatePoint]) -> list[int]:
    """Appends the levels of ``points`` the model lacks; returns their indices.

    Each new level is warm-started from the highest existing level with the same down-sampling
    and codebook size and no more groups: its trunk, codebooks and projections are copied and
    the extra groups' columns of ``post_quant_proj`` are zeroed. Why: the new level then starts
    out decoding exactly like the level below it, and training only has to learn what the
    extra bits add, which is minutes on a CPU instead of a stage-1 run from scratch.
    """
    added: list[int] = []
    for point in points:
        if point.index < len(model.ladder):
            have = model.ladder.get(point.index)
            if (have.downsample, have.codebook_size, have.groups) != (point.downsample, point.codebook_size, point.groups):
                raise ValueError(f"level {point.index} exists with a different shape: {have} vs {point}")
            continue
        if point.index != len(model.ladder):
            raise ValueError(f"level {point.index} would leave a gap after level {len(model.ladder) - 1}")
        he = HyperEncoder(
            **{**model.config.hyper_encoder, "latent_channels": model.autoencoder.latent_channels,
               "downsample": point.downsample, "codebook_size": point.codebook_size, "groups": point.groups}
        ).to(model.device)
        donors = [
            p for p in model.ladder
            if (p.downsample, p.codebook_size) == (point.downsample, point.codebook_size) and p.groups <= point.groups
        ]
        if donors:
            donor = model.hyper_encoders[max(donors, key=lambda p: (p.groups, p.index)).index]
            _copy_overlapping(he, donor)
            dim = donor.quantizer.codebook_dim * donor.quantizer.groups
            with torch.no_grad():
                he.post_quant_proj.weight[:, dim:] = 0
        model.hyper_encoders.append(he)
        model.config.ladder = RateLadder((*model.ladder.points, point))
        added.append(point.index)
    model.invalidate_hash()
    return added


@torch.no_grad()
def _copy_overlapping(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copies every tensor of ``source`` into ``target``; where shapes differ, the leading slice."""
    target_state = target.state_dict()
    for name, value in source.state_dict().items():
        dst = target_state[name]
        region = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, value.shape))
        dst[region] = value[region]
