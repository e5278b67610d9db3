"""Building fresh (untrained) models: the oscar-tiny design and small test models."""

from __future__ import annotations

from typing import Any

from torch import nn

from .autoencoder import CompactAutoencoder
from .config import CodecConfig
from .denoiser import build_tiny_denoiser
from .hyper_encoder import HyperEncoder
from .model import OscarModel
from .rates import RateLadder, RatePoint

__all__ = ["TINY_LADDER", "build_model"]

# oscar-tiny's ladder. Timesteps here are starting guesses in the reference model's range;
# training's calibration stage replaces them with measured ones.
TINY_LADDER = RateLadder(
    (
        RatePoint(index=0, downsample=4, codebook_size=1024, groups=1, timestep=400),  # 0.0098 bpp
        RatePoint(index=1, downsample=2, codebook_size=256, groups=1, timestep=310),  # 0.0313
        RatePoint(index=2, downsample=2, codebook_size=256, groups=2, timestep=250),  # 0.0625
        RatePoint(index=3, downsample=1, codebook_size=256, groups=1, timestep=150),  # 0.125
        RatePoint(index=4, downsample=1, codebook_size=512, groups=1, timestep=120),  # 0.1406
        RatePoint(index=5, downsample=1, codebook_size=256, groups=2, timestep=100),  # 0.25
        # Context coding brings level 5 down to about 0.15 bpp on Kodak; this one lands near 0.28.
        RatePoint(index=6, downsample=1, codebook_size=256, groups=3, timestep=60),  # 0.375
    )
)


def build_model(
    name: str = "oscar-tiny",
    ladder: RateLadder = TINY_LADDER,
    autoencoder: nn.Module | None = None,
    hyper_encoder: dict[str, Any] | None = None,
    denoiser: dict[str, Any] | None = None,
    autoencoder_config: dict[str, Any] | None = None,
    prediction_type: str = "v_prediction",
) -> OscarModel:
    """A randomly initialised model (or one around a given trained autoencoder)."""
    he_cfg = {"channels": 96, "num_res_blocks": 2, "attention": True, "codebook_dim": 16, **(hyper_encoder or {})}
    ae = autoencoder if autoencoder is not None else CompactAutoencoder(**(autoencoder_config or {}))
    hes = [
        HyperEncoder(
            latent_channels=ae.latent_channels,
            downsample=p.downsample,
            codebook_size=p.codebook_size,
            groups=p.groups,
            **he_cfg,
        )
        for p in ladder
    ]
    unet = build_tiny_denoiser(**(denoiser or {}))
    config = CodecConfig(name=name, ladder=ladder, prediction_type=prediction_type, hyper_encoder=he_cfg)
    return OscarModel(config, ae, hes, unet)
