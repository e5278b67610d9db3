"""The training stages of oscar-tiny, following the method (see README, "Training").

stage 0  the compact autoencoder (L1 + (1 - MS-SSIM))
stage 1  the per-rate hyper-encoders against the frozen autoencoder
         (-cos(z, z~) + VQ commitment, then an image loss through the frozen decoder)
calib    E[cos(z~, z)] per rate -> pseudo-timestep t with sqrt(abar_t) ~ E[cos]
stage 2  the shared one-step denoiser (+ hyper-encoders fine-tuned), random rate per step
(grow_ladder appends top levels to a trained codec, warm-started from the level below; it is
a library function now, not a stage of jobs.train)
stats    per-rate index histograms -> static entropy-coding tables
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..autoencoder import CompactAutoencoder
from ..hyper_encoder import HyperEncoder
from ..rates import RateLadder, RatePoint
from .data import CropSampler, LatentCropSampler, to_model_range
from .loop import LoopConfig, autocast, run_loop
from .losses import reconstruction_loss


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


# ---------------------------------------------------------------------------- stage 1
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


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
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
    codec,
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

    ae = _freeze(codec.autoencoder)
    selected = list(range(len(codec.hyper_encoders))) if levels is None else list(levels)
    f = int(ae.downscale)
    per_level: dict[str, dict] = {}
    for lvl in selected:
        he = codec.hyper_encoders[lvl].train()
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
    codec.invalidate_hash()
    return {
        "stage": cfg.name,
        "levels": selected,
        "steps": sum(s["steps"] for s in per_level.values()),
        "wall_minutes": round(sum(s["wall_minutes"] for s in per_level.values()), 2),
        "budget_hit": any(s.get("budget_hit", False) for s in per_level.values()),
        "per_level": per_level,
    }


# ---------------------------------------------------------------------------- calibration
def full_image_batches(sampler: CropSampler, stride: int, limit: int | None = None):
    """Each training image, cropped to a multiple of ``stride``, as a (1, 3, H, W) tensor."""
    for im in sampler.images[:limit]:
        h, w = (s // stride * stride for s in im.shape[:2])
        yield to_model_range(im[None, :h, :w])


@torch.inference_mode()
def calibrate_timesteps(
    codec, sampler: CropSampler, device: torch.device, limit: int = 200, levels: Sequence[int] | None = None
) -> dict:
    """Measures E[cos(z~, z)] per level on training images; sets t with sqrt(abar_t) ~ E[cos].

    Only ``levels`` (default: all) get a new t: a trained denoiser's other levels keep theirs.
    """
    import torch.nn.functional as F

    chosen = [p.index for p in codec.ladder] if levels is None else list(levels)
    sums = dict.fromkeys(chosen, 0.0)
    n = 0
    for x in full_image_batches(sampler, codec.stride, limit):
        z = codec.encode_latents(x.to(device))
        for lvl in chosen:
            he = codec.hyper_encoders[lvl]
            zt = rescale_to(he.decode(he.encode(z)), z)
            sums[lvl] += float(F.cosine_similarity(zt.flatten(1), z.flatten(1)).mean())
        n += 1
    cosines = {lvl: s / n for lvl, s in sums.items()}
    timesteps = [
        codec.config.schedule.timestep_for_cosine(cosines[p.index]) if p.index in cosines else p.timestep
        for p in codec.ladder
    ]
    codec.config.ladder = codec.config.ladder.with_timesteps(timesteps)
    codec.invalidate_hash()
    return {
        "images": n,
        "levels": chosen,
        "mean_cosine": [round(cosines[lvl], 4) for lvl in chosen],
        "timesteps": [timesteps[lvl] for lvl in chosen],
    }


# ---------------------------------------------------------------------------- growing the ladder
def grow_ladder(codec, points: Sequence[RatePoint]) -> list[int]:
    """Appends the levels of ``points`` the codec lacks; returns their indices.

    Each new level is warm-started from the highest existing level with the same down-sampling
    and codebook size and no more groups: its trunk, codebooks and projections are copied and
    the extra groups' columns of ``post_quant_proj`` are zeroed. Why: the new level then starts
    out decoding exactly like the level below it, and training only has to learn what the
    extra bits add, which is minutes on a CPU instead of a stage-1 run from scratch.
    """
    added: list[int] = []
    for point in points:
        if point.index < len(codec.ladder):
            have = codec.ladder.get(point.index)
            if (have.downsample, have.codebook_size, have.groups) != (point.downsample, point.codebook_size, point.groups):
                raise ValueError(f"level {point.index} exists with a different shape: {have} vs {point}")
            continue
        if point.index != len(codec.ladder):
            raise ValueError(f"level {point.index} would leave a gap after level {len(codec.ladder) - 1}")
        he = HyperEncoder(
            **{**codec.config.hyper_encoder, "latent_channels": codec.autoencoder.latent_channels,
               "downsample": point.downsample, "codebook_size": point.codebook_size, "groups": point.groups}
        ).to(next(codec.parameters()).device)
        donors = [
            p for p in codec.ladder
            if (p.downsample, p.codebook_size) == (point.downsample, point.codebook_size) and p.groups <= point.groups
        ]
        if donors:
            donor = codec.hyper_encoders[max(donors, key=lambda p: (p.groups, p.index)).index]
            _copy_overlapping(he, donor)
            dim = donor.quantizer.codebook_dim * donor.quantizer.groups
            with torch.no_grad():
                he.post_quant_proj.weight[:, dim:] = 0
        codec.hyper_encoders.append(he)
        codec.config.ladder = RateLadder((*codec.ladder.points, point))
        added.append(point.index)
    codec.invalidate_hash()
    return added


@torch.no_grad()
def _copy_overlapping(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copies every tensor of ``source`` into ``target``; where shapes differ, the leading slice."""
    target_state = target.state_dict()
    for name, value in source.state_dict().items():
        dst = target_state[name]
        region = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, value.shape))
        dst[region] = value[region]


# ---------------------------------------------------------------------------- stage 2
@dataclass
class DenoiserStageConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, max_minutes=30, lr=3e-4))
    batch_size: int = 8
    crop: int = 192
    hyper_lr_scale: float = 0.1
    latent_weight: float = 1.0
    cosine_weight: float = 2.0
    pixel_weight: float = 1.0
    adversarial_weight: float = 0.05
    adversarial_from: float = 0.3
    disc_lr: float = 2e-4
    ms_ssim_weight: float = 1.0
    level_weights: tuple[float, ...] | None = None
    name: str = "stage2_denoiser"


def refine_config() -> DenoiserStageConfig:
    """Stage 2b: stage 2 again at a lower learning rate, aimed at what users compare us on.

    Why: the classical codecs we are measured against reach down to about 0.05 bpp, so the
    levels from 2 up are drawn twice as often, MS-SSIM is weighted 2x, and the hyper-encoders
    move 3x faster than in stage 2 (their codebooks are settled; the bits are in their
    projections). The adversarial term starts at once: its discriminator restarts from scratch.
    """
    return DenoiserStageConfig(
        loop=LoopConfig(steps=8000, max_minutes=60, lr=1e-4, warmup_steps=200),
        hyper_lr_scale=0.3, ms_ssim_weight=2.0, level_weights=(1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0),
        adversarial_from=0.0, name="stage2b_refine",
    )


def polish_config() -> DenoiserStageConfig:
    """Stage 2c: the high-rate polish, aimed at the levels users compare against WebP and AVIF.

    Why: after 2b the top three levels still trailed WebP in MS-SSIM at the same bpp while the
    bottom two were far ahead of anything a classical codec reaches. So levels 3-6 are drawn
    3x as often as levels 0-1 (level 4, where WebP came closest, 4x), MS-SSIM is weighted 4x,
    and the hyper-encoders learn at half the denoiser's rate. The adversarial term stays on
    (fresh discriminator, from step 0).
    """
    return DenoiserStageConfig(
        loop=LoopConfig(steps=12000, max_minutes=80, lr=1e-4, warmup_steps=200),
        hyper_lr_scale=0.5, ms_ssim_weight=4.0, level_weights=(1.0, 1.0, 2.0, 3.0, 4.0, 3.0, 3.0),
        adversarial_from=0.0, name="stage2c_polish",
    )


def train_denoiser(
    cfg: DenoiserStageConfig, codec, sampler: CropSampler, workdir: Path, device: torch.device
) -> dict:
    """Stage 2: the shared one-step denoiser, with the hyper-encoders fine-tuned.

    A random level per step; loss = L1(x0, z) + 2 (1 - cos(x0, z)) on latents, L1 + (1 - MS-SSIM)
    on the frozen decoder's image, and a hinge GAN term from a latent patch discriminator
    (switched on after ``adversarial_from`` of the stage) so the step does not average to blur.
    """
    import torch.nn.functional as F

    from .losses import LatentDiscriminator, hinge_d_loss, hinge_g_loss

    ae = _freeze(codec.autoencoder)
    hes = codec.hyper_encoders.train()
    unet = codec.denoiser.train()
    disc = LatentDiscriminator(ae.latent_channels).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": unet.parameters(), "lr": cfg.loop.lr},
            {"params": hes.parameters(), "lr": cfg.loop.lr * cfg.hyper_lr_scale},
        ],
        weight_decay=0.0,
    )
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
    schedule = codec.config.schedule
    gen = torch.Generator().manual_seed(2)
    weights = torch.tensor(cfg.level_weights or [1.0] * len(codec.ladder), dtype=torch.float)
    if len(weights) != len(codec.ladder):
        raise ValueError(f"level_weights has {len(weights)} entries for a {len(codec.ladder)}-level ladder")

    def step(i: int, progress: float) -> dict[str, float]:
        from ..denoiser import predict_clean_latent

        x = sampler.sample(cfg.batch_size).to(device)
        with torch.no_grad(), autocast(cfg.loop.bf16, device):
            z = ae.encode(x).float()
        draw = torch.multinomial(weights, 1, generator=gen) if cfg.level_weights else torch.randint(len(weights), (1,), generator=gen)
        point = codec.ladder.get(int(draw))
        ts = torch.full((x.shape[0],), point.timestep, device=device, dtype=torch.long)
        with autocast(cfg.loop.bf16, device):
            z_tilde, _, commit = hes[point.index](z)
            z_t = rescale_to(z_tilde.float(), z)
            x0 = predict_clean_latent(unet, schedule, z_t, ts, codec.config.prediction_type).float()
            x_hat = ae.decode(x0)
        lat = (x0 - z).abs().mean()
        cos = 1 - F.cosine_similarity(x0.flatten(1), z.flatten(1)).mean()
        rec, parts = reconstruction_loss(x_hat.float(), x, cfg.ms_ssim_weight)
        loss = cfg.latent_weight * lat + cfg.cosine_weight * cos + cfg.pixel_weight * rec + commit
        adv_on = progress >= cfg.adversarial_from and cfg.adversarial_weight > 0
        metrics = {"latent_l1": float(lat.detach()), "cos": 1 - float(cos.detach()), "level": float(point.index)}
        if adv_on:
            g_loss = hinge_g_loss(disc(x0))
            loss = loss + cfg.adversarial_weight * g_loss
            metrics["g"] = float(g_loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(hes.parameters()), 1.0)
        opt.step()
        if adv_on:
            d_loss = hinge_d_loss(disc(z), disc(x0.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            metrics["d"] = float(d_loss.detach())
        metrics.update(parts)
        metrics["loss"] = float(loss.detach())
        return metrics

    summary = run_loop(
        cfg.name, cfg.loop, workdir, step,
        {"denoiser": unet, "hyper_encoders": hes, "discriminator": disc},
        {"adamw": opt, "adamw_d": opt_d},
        extra_state=lambda: {"rng": sampler.rng_state()},
        restore_extra=lambda s: sampler.set_rng_state(s["rng"]) if "rng" in s else None,
    )
    unet.eval()
    hes.eval()
    codec.invalidate_hash()
    return summary


# ---------------------------------------------------------------------------- statistics
CONTEXT_MAX_CODES = 1024
"""Levels with larger codebooks keep the order-0 table. At K = 1024 the 500 training photos
fill under 3% of a (K+1, K) table; the codebook-similarity component carries such a level
(oscar-tiny's level 0 on Kodak: 8.55 bits per index, 9.62 without it, 10 fixed-length)."""


def codebook_of(codec, level: int) -> np.ndarray:
    """A level's unit codes (G, K, d) as float64, what the context model's similarity bins are cut from."""
    return codec.hyper_encoders[level].quantizer.normalized_codebook().detach().cpu().double().numpy()


TYPICAL_BPP_EVERY = 4
"""Typical bpp is measured on images 1, 5, 9, ... (125 of BSDS500's 500, all odd-numbered)."""


@torch.inference_mode()
def index_statistics(codec, sampler: CropSampler, device: torch.device) -> dict:
    """Per-level index histograms over the training images -> static entropy tables.

    Levels with K <= 1024 also get a :class:`ContextModel` (left/upper neighbour and previous
    group); its bits per index are reported on held-out images (counted on the even-numbered
    training images, measured on the odd ones) next to the order-0 entropy. Last, each level's
    typical bpp is measured from real streams under the same split, so ``--bpp`` picks levels
    by what they cost on photos the tables have not seen.
    """
    import numpy as np

    from ..entropy import ContextModel, counts_to_table

    grids: dict[int, list[np.ndarray]] = {p.index: [] for p in codec.ladder}
    for x in full_image_batches(sampler, codec.stride):
        z = codec.encode_latents(x.to(device))
        for p in codec.ladder:
            grids[p.index].append(codec.hyper_encoders[p.index].encode(z)[0].cpu().numpy())

    def histogram(level_grids: list[np.ndarray], k: int) -> np.ndarray:
        """(G, K) index counts over (G, H, W) grids."""
        return sum(np.stack([np.bincount(g.reshape(-1), minlength=k) for g in grid]) for grid in level_grids)

    summary = {}
    half_tables, half_models = {}, {}  # from the even-numbered images only
    full_tables, full_models = {}, {}
    for p in codec.ladder:
        level_grids = grids[p.index]
        c = histogram(level_grids, p.codebook_size)
        prob = c / c.sum(axis=1, keepdims=True)
        ent = float(-(prob * np.log2(np.where(prob > 0, prob, 1))).sum(axis=1).mean())
        summary[f"level_{p.index}"] = {
            "codes_used": int((c > 0).sum()),
            "codes_total": int(c.size),
            "entropy_bits": round(ent, 3),
            "fixed_bits": float(np.log2(p.codebook_size)),
        }
        full_tables[p.index] = counts_to_table(c)
        half_tables[p.index] = counts_to_table(histogram(level_grids[0::2], p.codebook_size))
        if p.codebook_size <= CONTEXT_MAX_CODES:
            codebook = codebook_of(codec, p.index)
            half_models[p.index] = ContextModel.fit(level_grids[0::2], p.codebook_size, codebook=codebook)
            full_models[p.index] = ContextModel.fit(level_grids, p.codebook_size, codebook=codebook)
            held_out = half_models[p.index].bits(level_grids[1::2])
            summary[f"level_{p.index}"]["context_bits_held_out"] = round(held_out, 3)
    # Typical bpp on images the tables never saw: tables from the even-numbered images, streams
    # of odd-numbered ones. Measured on the images the shipped tables were counted on, a K = 1024
    # level would look 18% cheaper than it is (its sparse tables partly memorise them).
    codec.entropy_tables, codec.context_models = half_tables, half_models
    typical = typical_bpp(codec, sampler.images[1::TYPICAL_BPP_EVERY])
    codec.entropy_tables, codec.context_models = full_tables, full_models
    codec.config.ladder = codec.config.ladder.with_typical_bpp(typical)
    codec.invalidate_hash()
    for p, bpp in zip(codec.ladder, typical):
        summary[f"level_{p.index}"]["typical_bpp"] = round(bpp, 5)
    return summary


def typical_bpp(codec, images) -> list[float]:
    """Mean actual bpp per level (every container byte) of real streams for ``images``."""
    totals = [0.0] * len(codec.ladder)
    levels = [p.index for p in codec.ladder]
    for im in images:
        (streams,) = codec.encode([im], levels)
        for lvl, stream in zip(levels, streams):
            totals[lvl] += codec.bpp(stream)
    return [t / len(images) for t in totals]
