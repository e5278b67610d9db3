"""``oscar convert-official``: Stable Diffusion 2.1 + the authors' OSCAR checkpoint -> a model folder.

The checkpoint the authors release (``save_model`` in their ``diffusion/oscar.py``) is one torch
pickle of a dict: ``hyper_encoders`` (the state dict of 8 hyper-encoders), ``embeddings`` (the
77 x 1024 learned prompt), ``unet_lora_{encoder,decoder,others}_modules`` (each adapter's target
modules), ``rank_unet`` and ``state_dict_unet`` (the adapters' weights and the trained
``conv_in``). It is read with ``torch.load(weights_only=True)`` only: a pickle that needs
anything but tensors, dicts, lists, ints and strings is refused before any of it runs. The
result is a model folder of safetensors and JSON that this package loads without pickle.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .autoencoder import DiffusersAutoencoder
from .config import CodecConfig
from .model import OscarModel
from .perco import PercoHyperEncoder, official_to_ours
from .rates import RateLadder, RatePoint
from .schedule import ScaledLinearSchedule
from .sd21 import EMBEDDING_KEY, LoraConditionedUNet, LoraSpec, load_base

__all__ = ["OFFICIAL_LADDER", "CheckpointRefused", "read_official_checkpoint", "convert_official"]

OFFICIAL_LADDER = RateLadder(tuple(
    RatePoint(index=i, downsample=64 // grid, codebook_size=k, timestep=t)
    for i, (grid, k, t) in enumerate(
        [(8, 256, 500), (16, 1024, 400), (32, 256, 310), (32, 2048, 280), (64, 16, 210), (64, 32, 190), (64, 64, 170), (64, 256, 150)]
    )
))
"""The released model's rates: (VQ grid at 512 px, K, timestep) of bpp 0.0019 ... 0.1250."""

ADAPTERS = {"default_encoder": "unet_lora_encoder_modules", "default_decoder": "unet_lora_decoder_modules",
            "default_others": "unet_lora_others_modules"}
LORA_ALPHA = 8.0
"""peft's default ``lora_alpha``, which the release trained with (it sets only the rank)."""
OFFICIAL_TILING = {"tile": 96, "overlap": 32, "whole_up_to": 96}
"""Our default tiles for the published model (latent px): its test script parses a tile size of
96 and an overlap of 32 but never uses them, coding every size whole; ``--tile off`` does that."""


class CheckpointRefused(ValueError):
    """A checkpoint that is not a plain released OSCAR checkpoint (or would run code to load)."""


def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """The released checkpoint's dict, loaded with ``weights_only=True``; checked for its keys."""
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        raise CheckpointRefused(
            f"{path} was refused: loading it would need more than tensors, dicts, lists, numbers and strings "
            f"(torch.load(weights_only=True) said: {str(e).splitlines()[0][:300]}). Only plain OSCAR checkpoints "
            "are converted; nothing in the file was run"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointRefused(f"{path} holds a {type(ckpt).__name__}, not the released checkpoint's dict")
    missing = sorted({"hyper_encoders", "embeddings", "rank_unet", "state_dict_unet", *ADAPTERS.values()} - set(ckpt))
    if missing:
        raise CheckpointRefused(f"{path} is not a released OSCAR checkpoint: {', '.join(missing)} missing")
    return ckpt


def _schedule(sd21: Path) -> tuple[ScaledLinearSchedule, str]:
    """SD 2.1's scheduler config -> our schedule and prediction type (refusing what we do not model)."""
    cfg = json.loads((sd21 / "scheduler" / "scheduler_config.json").read_text())
    if cfg.get("beta_schedule", "scaled_linear") != "scaled_linear" or cfg.get("clip_sample") or cfg.get("thresholding"):
        raise ValueError(f"{sd21}/scheduler: only the scaled-linear schedule without clipping or thresholding is supported")
    schedule = ScaledLinearSchedule(
        num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)), beta_start=float(cfg.get("beta_start", 0.00085)),
        beta_end=float(cfg.get("beta_end", 0.012)),
    )
    return schedule, cfg.get("prediction_type", "epsilon")


def _hyper_encoders(state: dict[str, torch.Tensor], ladder: RateLadder) -> list[PercoHyperEncoder]:
    """The ModuleList's state dict ("<i>.backbone...") -> one hyper-encoder per level, shapes checked."""
    per_level: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        per_level.setdefault(int(index), {})[rest] = value
    if sorted(per_level) != [p.index for p in ladder]:
        raise CheckpointRefused(f"checkpoint has hyper-encoders {sorted(per_level)}, the released ladder {len(ladder)} levels")
    out = []
    for point in ladder:
        ours = official_to_ours(per_level[point.index])
        k, dim = ours["quantizer.codebook"].shape[1:]
        if k != point.codebook_size:
            raise CheckpointRefused(f"hyper-encoder {point.index} has K={k}; the released ladder says {point.codebook_size}")
        he = PercoHyperEncoder(
            latent_channels=ours["proj.12.weight"].shape[0], downsample=point.downsample,
            channels=ours["backbone.0.weight"].shape[0], hyper_dim=ours["backbone.13.weight"].shape[0],
            codebook_size=k, codebook_dim=dim,
        )
        he.load_state_dict(ours, strict=True)
        out.append(he.eval())
    return out


def convert_official(
    sd21: str | Path, checkpoint: str | Path, out: str | Path, copy_base: bool = False, name: str = "oscar-sd21"
) -> OscarModel:
    """Builds the published OSCAR from ``sd21`` (a diffusers SD 2.1 folder: vae/, unet/,
    scheduler/, safetensors weights) and the released ``checkpoint``; saves it to ``out``.

    ``copy_base``: copy SD's VAE and UNet into the folder (self-contained, about 3.5 GB) instead
    of referring to ``sd21`` by its absolute path. Returns the model (adapters not merged).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    sd21 = Path(sd21).resolve()
    ckpt = read_official_checkpoint(checkpoint)
    schedule, prediction_type = _schedule(sd21)
    base = None if copy_base else sd21
    autoencoder = DiffusersAutoencoder(load_base(AutoencoderKL, sd21 / "vae"), base)
    lora = LoraSpec({adapter: list(ckpt[key]) for adapter, key in ADAPTERS.items()}, int(ckpt["rank_unet"]), LORA_ALPHA)
    embedding = torch.as_tensor(ckpt["embeddings"]).detach().float()
    denoiser = LoraConditionedUNet(load_base(UNet2DConditionModel, sd21 / "unet"), embedding, lora, base)
    denoiser.load_adapter_state({**ckpt["state_dict_unet"], EMBEDDING_KEY: embedding})
    hyper_encoders = _hyper_encoders(ckpt["hyper_encoders"], OFFICIAL_LADDER)
    he = hyper_encoders[0].config
    config = CodecConfig(
        name=name, ladder=OFFICIAL_LADDER, autoencoder_type="diffusers-kl", hyper_encoder_type="perco",
        denoiser_type="sd21-lora", prediction_type=prediction_type, schedule=schedule,
        hyper_encoder={"channels": he.channels, "hyper_dim": he.hyper_dim, "codebook_dim": he.codebook_dim},
        tiling=dict(OFFICIAL_TILING),
        info={"converted_from": {"sd21": str(sd21), "checkpoint": str(Path(checkpoint).resolve()), "base_copied": copy_base}},
    )
    model = OscarModel(config, autoencoder, hyper_encoders, denoiser).eval()
    model.save_pretrained(out)
    return model
