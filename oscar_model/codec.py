"""OscarCodec: images <-> OSCAR bitstreams, at any rate of the model's ladder.

    encode:  image -> pad to stride -> autoencoder.encode -> z ----+--> per-channel RMS (sent)
                                                                   +--> hyper_encoder[r] -> indices -> entropy code
    decode:  indices -> hyper_encoder[r].decode -> z~ -> rescale to sent RMS -> read as z_t, t = t_r
             -> denoiser (ONE step) -> x0 latent -> autoencoder.decode -> crop -> image

A model folder holds ``oscar.json`` (ladder, schedule, component types) and one sub-folder per
network (``autoencoder/``, ``hyper_encoders/level_<i>/``, ``denoiser/``) in diffusers'
``save_pretrained`` format, plus ``entropy_tables.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors.numpy import save_file as save_numpy
from torch import nn
from torch.nn import functional as F

from .autoencoder import load_autoencoder
from .bitstream import BitstreamError, Container, dequantize_rms, pack, quantize_rms, unpack
from .config import CodecConfig
from .context_model import ContextModel
from .denoiser import denoiser_stride, predict_clean_latent
from .entropy import (
    ENTROPY_TABLES_NAME,
    decode_indices,
    encode_indices,
    entropy_tensors,
    load_entropy_tables,
)
from .hyper_encoder import HyperEncoder
from .images import ImageLike, to_rgb_array
from .rates import RateLadder, RateLike, RatePoint
from .refine import refine_indices
from .registry import CONFIG_NAME, resolve_model_path

__all__ = ["CodecConfig", "OscarCodec", "BitstreamError"]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class OscarCodec(nn.Module):
    """The whole codec. Build with :meth:`from_pretrained` (a registered name or a folder)."""

    def __init__(
        self,
        config: CodecConfig,
        autoencoder: nn.Module,
        hyper_encoders: Sequence[HyperEncoder],
        denoiser: nn.Module,
        entropy_tables: dict[int, np.ndarray] | None = None,
        context_models: dict[int, ContextModel] | None = None,
    ) -> None:
        super().__init__()
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
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None) -> OscarCodec:
        """Loads a model folder (safetensors only). ``device=None``: CUDA when present, else CPU."""
        path = resolve_model_path(name_or_path)
        config = CodecConfig.from_json((path / CONFIG_NAME).read_text())
        ae = load_autoencoder(path / "autoencoder", config.autoencoder_type)
        hes = [HyperEncoder.from_pretrained(str(path / "hyper_encoders" / f"level_{p.index}"), low_cpu_mem_usage=False) for p in config.ladder]
        unet = UNet2DModel.from_pretrained(str(path / "denoiser"), low_cpu_mem_usage=False)
        tables, contexts = load_entropy_tables(path / ENTROPY_TABLES_NAME, config.ladder)
        codec = cls(config, ae, hes, unet, tables, contexts)
        return codec.to(torch.device(device) if device else default_device()).eval()

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.autoencoder.save_pretrained(path / "autoencoder")
        for p, he in zip(self.config.ladder, self.hyper_encoders):
            he.save_pretrained(path / "hyper_encoders" / f"level_{p.index}")
        self.denoiser.save_pretrained(path / "denoiser")
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
    def model_id(self) -> bytes:
        return bytes.fromhex(self.model_hash[:8])

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
    def _to_tensor(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2).float()
        x = x.div_(127.5).sub_(1.0)
        h, w = x.shape[-2:]
        ph, pw = -h % self.stride, -w % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

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
        scale = target_rms / self.channel_rms(z_tilde).clamp_min(1e-6)
        z_t = z_tilde * scale[:, :, None, None]
        if not denoise:
            return z_t
        t = point.timestep if timestep is None else int(timestep)
        self.config.schedule._check(t)
        ts = torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)
        return predict_clean_latent(self.denoiser, self.config.schedule, z_t, ts, self.config.prediction_type)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents).float()

    # ------------------------------------------------------------------ bytes-level API
    @overload
    def encode(
        self, images: Sequence[ImageLike], rates: RateLike, batch_size: int = ..., refine_steps: int = ...
    ) -> list[bytes]: ...
    @overload
    def encode(
        self, images: Sequence[ImageLike], rates: Sequence[RateLike], batch_size: int = ..., refine_steps: int = ...
    ) -> list[list[bytes]]: ...

    @torch.inference_mode()
    def encode(self, images, rates, batch_size: int = 8, refine_steps: int = 0):
        """Encodes images at one rate (-> one stream per image) or several (-> a list per image).

        A rate is an ``int`` ladder level or a ``float`` bpp (nearest level). The autoencoder
        runs once per image; every requested rate is quantised from that one latent.
        Same-size images are batched ``batch_size`` at a time. ``refine_steps`` > 0 searches
        the indices through the decoder (:mod:`oscar_model.refine`): better images, slower
        encoding, the same decoder.
        """
        single = not isinstance(rates, Sequence)
        points = [self.ladder.resolve(r) for r in ([rates] if single else rates)]
        arrays = [to_rgb_array(im) for im in images]
        out, _, _ = self.encode_arrays_timed(arrays, points, batch_size, refine_steps)
        return [o[0] for o in out] if single else out

    @torch.inference_mode()
    def encode_arrays_timed(
        self, arrays: Sequence[np.ndarray], points: Sequence[RatePoint], batch_size: int = 8, refine_steps: int = 0
    ) -> tuple[list[list[bytes]], list[float], list[list[float]]]:
        """Like :meth:`encode` on RGB uint8 arrays, also returning per-image wall times.

        Returns (streams[image][rate], autoencoder_ms[image], rate_ms[image][rate]); a batch's
        time is shared equally by its images. Encoding one image at rate r alone costs about
        ``autoencoder_ms + rate_ms[r]``.
        """
        if refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
        out: list[list[bytes]] = [[b""] * len(points) for _ in arrays]
        ae_ms = [0.0] * len(arrays)
        rate_ms = [[0.0] * len(points) for _ in arrays]
        for idxs in same_size_batches(arrays, batch_size):
            h, w = arrays[idxs[0]].shape[:2]
            t0 = time.perf_counter()
            x = self._to_tensor([arrays[i] for i in idxs])
            z = self.encode_latents(x)
            rms = self.channel_rms(z).cpu().numpy()
            if refine_steps > 0:  # the norms the decoder will use, once for every level
                sent = np.stack([dequantize_rms(quantize_rms(r)) for r in rms])
                target = torch.from_numpy(sent).float().to(self.device)
            t_ae = (time.perf_counter() - t0) * 1000 / len(idxs)
            for pos, point in enumerate(points):
                t1 = time.perf_counter()
                if refine_steps > 0:
                    codes = refine_indices(self, x, z, point, target, refine_steps, size=(h, w)).cpu().numpy()
                else:
                    codes = self.hyper_encoders[point.index].encode(z).cpu().numpy()
                for b, i in enumerate(idxs):
                    out[i][pos] = self._pack(codes[b], point, h, w, rms[b])
                t_rate = (time.perf_counter() - t1) * 1000 / len(idxs)
                for i in idxs:
                    rate_ms[i][pos] = t_rate
            for i in idxs:
                ae_ms[i] = t_ae
        return out, ae_ms, rate_ms

    def _pack(self, codes: np.ndarray, point: RatePoint, h: int, w: int, rms: np.ndarray) -> bytes:
        coding, payload = encode_indices(
            codes.reshape(point.groups, -1), point.codebook_size, self.entropy_tables.get(point.index),
            self.context_models.get(point.index), codes.shape[-2:],
        )
        return pack(Container(self.model_id, point.index, coding, h, w, quantize_rms(rms), payload))

    def parse(self, stream: bytes) -> tuple[Container, RatePoint]:
        """Unpacks a stream and checks that this model can decode it."""
        c = unpack(stream)
        if c.model_id != self.model_id:
            raise BitstreamError(
                f"stream was written by model id {c.model_id.hex()}, this is {self.config.name} "
                f"(id {self.model_id.hex()}): decode it with the model that encoded it"
            )
        if c.rate_index >= len(self.ladder):
            raise BitstreamError(f"stream names rate level {c.rate_index}; the model has {len(self.ladder)}")
        if len(c.rms_codes) != self.autoencoder.latent_channels:
            raise BitstreamError(f"stream has {len(c.rms_codes)} latent channels, model {self.autoencoder.latent_channels}")
        return c, self.ladder.get(c.rate_index)

    def _indices(self, c: Container, point: RatePoint) -> np.ndarray:
        ph, pw = (-(-c.height // self.stride) * self.stride, -(-c.width // self.stride) * self.stride)
        gh, gw = point.grid(ph, pw)
        flat = decode_indices(
            c.payload, c.coding, point.groups, gh * gw, point.codebook_size,
            self.entropy_tables.get(point.index), self.context_models.get(point.index), (gh, gw),
        )
        return flat.reshape(point.groups, gh, gw)

    @torch.inference_mode()
    def decode(
        self,
        streams: Sequence[bytes],
        timestep: int | None = None,
        batch_size: int = 8,
        denoise: bool = True,
    ) -> list[np.ndarray]:
        """Streams -> RGB uint8 images (H, W, 3) at their original size.

        ``timestep`` overrides the ladder's pseudo-timestep (lower: closer to the transmitted
        latent, higher: more of the denoiser's own detail). ``denoise=False`` skips the
        one-step denoiser (an ablation). Raises :class:`BitstreamError` for bad streams,
        before any image is decoded.
        """
        parsed = [self.parse(s) for s in streams]
        codes = [self._indices(c, p) for c, p in parsed]
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, (c, _) in enumerate(parsed):
            groups[(c.height, c.width, c.rate_index)].append(i)
        out: list[np.ndarray | None] = [None] * len(streams)
        for (h, w, rate_index), members in groups.items():
            point = self.ladder.get(rate_index)
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                idx = torch.from_numpy(np.stack([codes[i] for i in chunk])).to(self.device)
                rms = torch.from_numpy(np.stack([dequantize_rms(parsed[i][0].rms_codes) for i in chunk]))
                x0 = self.reconstruct_latents(idx, point, rms.float().to(self.device), timestep, denoise)
                images = self.decode_latents(x0)[:, :, :h, :w]
                pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                for b, i in enumerate(chunk):
                    out[i] = pixels[b]
        return out  # type: ignore[return-value]

    @staticmethod
    def bpp(stream: bytes) -> float:
        """Bits per pixel of a stream: every byte of the container counted."""
        c = unpack(stream)
        return 8 * len(stream) / (c.height * c.width)


def same_size_batches(arrays: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices of ``arrays`` grouped by (H, W), at most ``batch_size`` per group: what can be stacked."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, a in enumerate(arrays):
        by_size[a.shape[:2]].append(i)
    return [members[s : s + batch_size] for members in by_size.values() for s in range(0, len(members), batch_size)]
