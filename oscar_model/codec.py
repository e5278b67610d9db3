"""OscarCodec: images <-> OSCAR bitstreams, at any rate of the model's ladder.

A codec holds an :class:`~oscar_model.model.OscarModel` (the networks and their tensor-level
steps, which training changes in place) and the :class:`~oscar_model.options.CodecOptions` it
runs with, and adds what users hold: images in, streams out, and back. Same-size images are
batched; an image larger than a tile is coded tile by tile (:mod:`oscar_model.tiled_codec`)
with the same bitstream. A thin image (a strip a few pixels tall) is coded folded into a
near-square one (:mod:`oscar_model.folding`). It is not an ``nn.Module``: what it adds is
policy over a model, not parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .bitstream import BitstreamError, dequantize_rms, quantize_rms
from .config import CodecConfig
from .context_model import ContextModel
from .model import OscarModel
from .options import ENCODE_THREADS, CodecOptions
from .pixels import to_uint8
from .rates import RatePoint
from .refine import refine_indices
from .streams import StreamCodec
from .tiled_codec import decode_tiled, encode_tiled

__all__ = ["CodecConfig", "CodecOptions", "OscarCodec", "BitstreamError"]


class OscarCodec(StreamCodec):
    """The whole codec, its networks run by torch (the reference runtime, and the GPU's). Build
    with :meth:`from_pretrained` (a registered name or a folder), or around a model in memory:
    ``OscarCodec(model, CodecOptions(tile="off"))``. The stream side is :class:`StreamCodec`'s."""

    def __init__(self, model: OscarModel, options: CodecOptions | None = None) -> None:
        self.model = model
        self.options = options or CodecOptions()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str | torch.device | None = None, options: CodecOptions | None = None,
    ) -> OscarCodec:
        """Loads a model folder (:meth:`OscarModel.from_pretrained`: safetensors only; ``device=None``:
        CUDA when present, else CPU) and runs it with ``options``."""
        return cls(OscarModel.from_pretrained(name_or_path, device=device), options)

    def with_options(self, **changes) -> OscarCodec:
        """The same model (shared, not copied) run with some options changed."""
        return OscarCodec(self.model, dataclasses.replace(self.options, **changes))

    # ------------------------------------------------------------------ what the model says
    @property
    def config(self) -> CodecConfig:
        return self.model.config

    @property
    def model_hash(self) -> str:
        return self.model.model_hash

    @property
    def latent_factor(self) -> int:
        return int(self.model.autoencoder.downscale)

    @property
    def latent_channels(self) -> int:
        return int(self.model.autoencoder.latent_channels)

    @property
    def entropy_tables(self) -> dict[int, np.ndarray]:
        return self.model.entropy_tables

    @property
    def context_models(self) -> dict[int, ContextModel]:
        return self.model.context_models

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def stride(self) -> int:
        """Images are padded to a multiple of this before encoding."""
        return self.model.stride

    # ------------------------------------------------------------------ how it runs
    def decode_autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the decoder's networks where ``options.precision`` asks for it, else nothing."""
        precision = self.options.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ the networks, in torch
    def _encode_context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(encode_threads(self.device))
        return stack

    def _decode_context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(self.decode_autocast())
        return stack

    def _latents(self, arrays: list[np.ndarray]) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray]:
        x = self.model.to_model_input(arrays)
        z = self.model.encode_latents(x)
        return (x, z), self.model.channel_rms(z).cpu().numpy()

    def _level_indices(self, latents: tuple[torch.Tensor, torch.Tensor], point: RatePoint, rms: np.ndarray,
                       refine_steps: int, size: tuple[int, int]) -> np.ndarray:
        x, z = latents
        if refine_steps > 0:  # the norms the decoder will use
            sent = np.stack([dequantize_rms(quantize_rms(r)) for r in rms])
            target = torch.from_numpy(sent).float().to(self.device)
            return refine_indices(self.model, x, z, point, target, refine_steps, size=size).cpu().numpy()
        return self.model.hyper_encoders[point.index].encode(z).cpu().numpy()

    def _encode_tiled(self, array: np.ndarray, points: Sequence[RatePoint]) -> tuple[list[np.ndarray], np.ndarray]:
        return encode_tiled(self.model, self.tiling, array, points)

    def _decode_whole(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        idx = torch.from_numpy(indices).to(self.device)
        target = torch.from_numpy(rms).to(self.device)
        images = self.model.decode_latents(self.model.reconstruct_latents(idx, point, target, timestep, denoise))
        return to_uint8(images[:, :, : size[0], : size[1]])

    def _decode_tiled(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        return decode_tiled(self.model, self.tiling, indices, point, torch.from_numpy(rms), size, timestep, denoise)


@contextlib.contextmanager
def encode_threads(device: torch.device | str):
    """Runs the block with :data:`ENCODE_THREADS` torch threads on CPU, then restores the count."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(ENCODE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)
