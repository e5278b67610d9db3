"""An OSCAR model: its networks (each of the type its folder names), ladder, entropy tables and
identity, loaded from and saved to a model folder; and the tensor-level steps of coding.

    encode:  image -> pad to stride -> autoencoder.encode -> z ----+--> per-channel RMS (sent)
                                                                   +--> hyper_encoder[r] -> indices
    decode:  indices -> hyper_encoder[r].decode -> z~ -> rescale to sent RMS -> read as z_t, t = t_r
             -> denoiser (ONE step) -> x0 latent -> autoencoder.decode

A model folder holds ``oscar.json`` (ladder, schedule, the type of each network) and one
sub-folder per network (``autoencoder/``, ``hyper_encoders/level_<i>/``, ``denoiser/``), each
loaded by the class its type names (:mod:`oscar_model.registry`: the compact networks of
oscar-tiny, or Stable Diffusion 2.1 with LoRA for the published model), plus
``entropy_tables.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from torch import nn

from .config import CodecConfig, read_model_config
from .context_model import ContextModel
from .denoiser import denoiser_stride, predict_clean_latent
from .entropy import ENTROPY_TABLES_NAME, entropy_tensors, load_entropy_tables
from .pixels import arrays_to_model_input
from .rates import RateLadder, RatePoint
from .registry import CONFIG_NAME, load_component

__all__ = ["OscarModel", "default_device"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class OscarModel(nn.Module):
    """The networks, ladder and entropy tables of a model folder, its identity, and the tensor-level
    steps of coding. Training changes it in place; :class:`~oscar_model.codec.OscarCodec` holds
    one and adds images, bytes and the choices of how to run (tiles, precision, limits)."""

    def __init__(
        self,
        config: CodecConfig,
        autoencoder: nn.Module,
        hyper_encoders: Sequence[nn.Module],
        denoiser: nn.Module,
        entropy_tables: dict[int, np.ndarray] | None = None,
        context_models: dict[int, ContextModel] | None = None,
    ) -> None:
        super().__init__()
        factor = int(autoencoder.downscale)
        if any(p.latent_factor != factor for p in config.ladder):  # the ladder's bpp follow the autoencoder
            config.ladder = RateLadder(tuple(replace(p, latent_factor=factor) for p in config.ladder))
        if len(hyper_encoders) != len(config.ladder):
            raise ValueError(f"{len(hyper_encoders)} hyper-encoders for a ladder of {len(config.ladder)} levels")
        for p, he in zip(config.ladder, hyper_encoders):
            hc = he.config
            if (hc.downsample, hc.codebook_size, hc.groups) != (p.downsample, p.codebook_size, p.groups):
                raise ValueError(
                    f"level {p.index}: ladder says (s={p.downsample}, K={p.codebook_size}, G={p.groups}) but its "
                    f"hyper-encoder is (s={hc.downsample}, K={hc.codebook_size}, G={hc.groups})"
                )
        self.config = config
        self.autoencoder = autoencoder
        self.hyper_encoders = nn.ModuleList(hyper_encoders)
        self.denoiser = denoiser
        self.entropy_tables: dict[int, np.ndarray] = dict(entropy_tables or {})
        self.context_models: dict[int, ContextModel] = dict(context_models or {})
        self._model_hash: str | None = None

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, device: str | torch.device | None = None, merge_adapters: bool = True
    ) -> OscarModel:
        """Loads a model folder (safetensors only). ``device=None``: CUDA when present, else CPU.

        The model id is computed from the weights as stored, before LoRA adapters are merged
        into their base weights for speed (merging changes the tensors, not the function).
        ``merge_adapters=False`` keeps them apart: for code that changes the model and must
        compute its new id (``oscar fit-tables``).
        """
        path, config = read_model_config(name_or_path)
        ae = load_component("autoencoder", config.autoencoder_type, path / "autoencoder")
        hes = [load_component("hyper_encoder", config.hyper_encoder_type, path / "hyper_encoders" / f"level_{p.index}")
               for p in config.ladder]
        denoiser = load_component("denoiser", config.denoiser_type, path / "denoiser")
        tables, contexts = load_entropy_tables(path / ENTROPY_TABLES_NAME, config.ladder)
        model = cls(config, ae, hes, denoiser, tables, contexts)
        model.model_hash  # noqa: B018 - computed now, from the weights as stored
        for module in model.modules() if merge_adapters else ():
            if module is not model and hasattr(module, "merge_adapters"):
                module.merge_adapters()
        return model.to(torch.device(device) if device else default_device()).eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.autoencoder.save_pretrained(path / "autoencoder")
        for p, he in zip(self.config.ladder, self.hyper_encoders):
            he.save_pretrained(path / "hyper_encoders" / f"level_{p.index}")
        self.denoiser.save_pretrained(path / "denoiser")
        self.save_tables(path)

    def save_tables(self, path: str | Path) -> None:
        """Writes the entropy tables and ``oscar.json`` (ladder, typical bpp, model hash) only."""
        path = Path(path)
        if self.entropy_tables or self.context_models:
            save_numpy(entropy_tensors(self.entropy_tables, self.context_models), str(path / ENTROPY_TABLES_NAME))
        (path / CONFIG_NAME).write_text(self.config.to_json(model_hash=self.model_hash))

    # ------------------------------------------------------------------ identity
    @property
    def model_hash(self) -> str:
        """SHA-256 over every weight, the entropy tables and the ladder (what decoding depends on)."""
        if self._model_hash is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.config.ladder.to_dicts(), sort_keys=True).encode())
            h.update(self.config.prediction_type.encode())
            for name, t in sorted(self.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
            for k in sorted(self.entropy_tables):
                h.update(np.ascontiguousarray(self.entropy_tables[k], dtype=np.float64).tobytes())
            for k in sorted(self.context_models):
                for name, t in self.context_models[k].tensors(f"level_{k}").items():
                    h.update(name.encode())
                    h.update(t.tobytes())
            self._model_hash = h.hexdigest()
        return self._model_hash

    @property
    def model_id(self) -> str:
        """The first 8 hex digits of the model hash: the 4 bytes every stream carries, written as
        everywhere else in the project (ModelInfo, the tables, the manifests, the messages)."""
        return self.model_hash[:8]

    def invalidate_hash(self) -> None:
        """Call after changing weights in place (training) so the id is recomputed."""
        self._model_hash = None

    @property
    def ladder(self) -> RateLadder:
        return self.config.ladder

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def stride(self) -> int:
        """Images are padded to a multiple of this before encoding."""
        f = int(self.autoencoder.downscale)
        return f * max(self.ladder.max_downsample, denoiser_stride(self.denoiser))

    # ------------------------------------------------------------------ tensor-level steps
    def to_model_input(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size RGB uint8 images -> the autoencoder's padded input (:mod:`oscar_model.pixels`)."""
        return arrays_to_model_input(arrays, self.stride, self.device)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Padded images in [-1, 1] -> latents z."""
        return self.autoencoder.encode(images).float()

    @staticmethod
    def channel_rms(latents: torch.Tensor) -> torch.Tensor:
        return latents.float().pow(2).mean(dim=(2, 3)).sqrt()

    def reconstruct_latents(
        self,
        indices: torch.Tensor,
        point: RatePoint,
        target_rms: torch.Tensor,
        timestep: int | None = None,
        denoise: bool = True,
    ) -> torch.Tensor:
        """Indices -> z~ rescaled to ``target_rms`` -> (one denoising step) -> latent x0."""
        z_tilde = self.hyper_encoders[point.index].decode(indices).float()
        return self.latents_from_z_tilde(z_tilde, point, target_rms, timestep, denoise)

    def latents_from_z_tilde(
        self,
        z_tilde: torch.Tensor,
        point: RatePoint,
        target_rms: torch.Tensor,
        timestep: int | None = None,
        denoise: bool = True,
    ) -> torch.Tensor:
        """z~ rescaled to ``target_rms`` -> (one denoising step) -> latent x0."""
        z_t = self.rescale(z_tilde, target_rms)
        return self.denoise(z_t, point, timestep) if denoise else z_t

    def rescale(self, z_tilde: torch.Tensor, target_rms: torch.Tensor) -> torch.Tensor:
        """z~ scaled per channel to the transmitted RMS of the original latent."""
        scale = target_rms / self.channel_rms(z_tilde).clamp_min(1e-6)
        return z_tilde * scale[:, :, None, None]

    def denoise(self, z_t: torch.Tensor, point: RatePoint, timestep: int | None = None) -> torch.Tensor:
        """The one denoising step: z_t read at the level's pseudo-timestep -> latent x0."""
        t = point.timestep if timestep is None else int(timestep)
        self.config.schedule._check(t)
        ts = torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)
        return predict_clean_latent(self.denoiser, self.config.schedule, z_t, ts, self.config.prediction_type)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents).float()
