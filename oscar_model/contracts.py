"""The written contract of the three roles a model folder's networks play, checked on load.

Why: a backend is chosen by the type its ``oscar.json`` names (:mod:`oscar_model.registry`),
and the codec relies on more than ``forward``: ``.downscale`` and ``.latent_channels`` of the
autoencoder, the hyper-encoders' ``.quantizer``, ``features`` and ``decode_codes`` (the encoder's
index search), the denoiser's ``config.block_out_channels`` (the stride). A component missing
one failed deep inside a job; :func:`check_component` names what is missing when it loads.
``merge_adapters()`` is optional (a denoiser with LoRA adapters merges them on load).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Autoencoder", "HyperEncoder", "Denoiser", "ROLES", "check_component"]


@runtime_checkable
class Autoencoder(Protocol):
    """Images (B, 3, H, W) in [-1, 1] <-> scaled latents (B, latent_channels, H/downscale, W/downscale)."""

    latent_channels: int
    downscale: int

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def save_pretrained(self, folder: Any) -> None: ...


@runtime_checkable
class HyperEncoder(Protocol):
    """One rate level: latents -> VQ indices (B, G, h, w) and back to a latent-shaped z~.

    ``features`` (latents -> what the quantizer sees), ``quantizer`` (``indices``/``lookup``) and
    ``decode_codes`` (codes -> z~) are what the encoder's index search (``--refine``) drives."""

    quantizer: Any

    def features(self, latents: torch.Tensor) -> torch.Tensor: ...

    def encode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def decode(self, indices: torch.Tensor) -> torch.Tensor: ...

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor: ...

    def save_pretrained(self, folder: Any) -> None: ...


@runtime_checkable
class Denoiser(Protocol):
    """``denoiser(z_t, timesteps).sample``: the network's prediction (epsilon or v) at z_t;
    ``config.block_out_channels`` sets the stride the input must divide by."""

    config: Any

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> Any: ...

    def save_pretrained(self, folder: Any) -> None: ...


ROLES: dict[str, tuple[type, tuple[str, ...]]] = {
    "autoencoder": (Autoencoder, ("latent_channels", "downscale", "encode", "decode", "save_pretrained")),
    "hyper_encoder": (HyperEncoder, ("quantizer", "features", "encode", "decode", "decode_codes", "save_pretrained")),
    "denoiser": (Denoiser, ("config", "__call__", "save_pretrained")),
}
"""Role -> (its Protocol, the members it names: Python 3.11 has no public list of a Protocol's members)."""


def check_component(role: str, kind: str, component: Any) -> Any:
    """Returns ``component`` if it meets ``role``'s contract; a TypeError naming what it lacks otherwise."""
    _, wanted = ROLES[role]
    missing = sorted(name for name in wanted if not hasattr(component, name))
    if role == "denoiser" and not missing and not hasattr(component.config, "block_out_channels"):
        missing = ["config.block_out_channels"]
    if missing:
        raise TypeError(f"{role} type {kind!r} ({type(component).__name__}) does not meet the {role} contract: it lacks "
                        f"{', '.join(missing)} (see oscar_model/contracts.py)")
    return component
