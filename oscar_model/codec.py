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
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch

from .bitstream import BitstreamError, Container, dequantize_rms, pack, quantize_rms, unpack
from .config import CodecConfig
from .entropy import decode_indices, encode_indices
from .folding import Fold, fold, fold_layout, unfold
from .images import ImageLike, same_size_batches, to_rgb_array
from .model import OscarModel
from .options import CodecOptions
from .pixels import padded_size, to_uint8
from .rates import RateLadder, RateLike, RatePoint
from .refine import refine_indices
from .tiled_codec import decode_tiled, encode_tiled
from .tiling import Tiling

__all__ = ["CodecConfig", "CodecOptions", "OscarCodec", "BitstreamError"]


class OscarCodec:
    """The whole codec. Build with :meth:`from_pretrained` (a registered name or a folder), or
    around a model in memory: ``OscarCodec(model, CodecOptions(tile="off"))``."""

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
    def ladder(self) -> RateLadder:
        return self.model.ladder

    @property
    def model_id(self) -> str:
        """The 8 hex digits every stream of this model carries (:attr:`OscarModel.model_id`)."""
        return self.model.model_id

    @property
    def model_hash(self) -> str:
        return self.model.model_hash

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def stride(self) -> int:
        """Images are padded to a multiple of this before encoding."""
        return self.model.stride

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels

    # ------------------------------------------------------------------ how it runs
    @property
    def tiling(self) -> Tiling:
        """The tiles in use (``options.tile`` over the model's own), on the latent grid's stride."""
        base = Tiling(**self.config.tiling)
        tile = self.options.tile
        if tile == "off":
            base = Tiling(base.tile, base.overlap, whole_up_to=1 << 30)
        elif tile != "auto":
            base = Tiling(int(tile), min(base.overlap, int(tile) // 4), whole_up_to=int(tile))
        return base.aligned(self.stride // int(self.model.autoencoder.downscale))

    def decode_autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the decoder's networks where ``options.precision`` asks for it, else nothing."""
        precision = self.options.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        with encode_threads(self.device):
            return self._encode_arrays_timed(arrays, points, batch_size, refine_steps)

    def _encode_arrays_timed(
        self, arrays: Sequence[np.ndarray], points: Sequence[RatePoint], batch_size: int, refine_steps: int
    ) -> tuple[list[list[bytes]], list[float], list[list[float]]]:
        out: list[list[bytes]] = [[b""] * len(points) for _ in arrays]
        ae_ms = [0.0] * len(arrays)
        rate_ms = [[0.0] * len(points) for _ in arrays]
        layouts = [fold_layout(*a.shape[:2], self.stride) for a in arrays]
        originals, arrays = arrays, [a if f is None else fold(a, f) for a, f in zip(arrays, layouts)]

        def pack_image(i: int, codes: np.ndarray, point: RatePoint, rms: np.ndarray) -> bytes:
            h, w = originals[i].shape[:2]
            return self._pack(codes, point, h, w, rms, folded=layouts[i] is not None)

        for idxs in same_size_batches(arrays, batch_size):
            h, w = arrays[idxs[0]].shape[:2]
            self.check_size(h, w, "image" if layouts[idxs[0]] is None else "folded")
            if not self.fits_one_tile(h, w):
                if refine_steps > 0:
                    raise ValueError(f"--refine works on images up to one tile ({self.tiling.tile * 8} px); this one is {w}x{h}")
                for i in idxs:
                    t0 = time.perf_counter()
                    codes, rms = encode_tiled(self.model, self.tiling, arrays[i], points)
                    ae_ms[i] = (time.perf_counter() - t0) * 1000
                    for pos, point in enumerate(points):
                        t1 = time.perf_counter()
                        out[i][pos] = pack_image(i, codes[pos], point, rms)
                        rate_ms[i][pos] = (time.perf_counter() - t1) * 1000
                continue
            t0 = time.perf_counter()
            x = self.model.to_model_input([arrays[i] for i in idxs])
            z = self.model.encode_latents(x)
            rms = self.model.channel_rms(z).cpu().numpy()
            if refine_steps > 0:  # the norms the decoder will use, once for every level
                sent = np.stack([dequantize_rms(quantize_rms(r)) for r in rms])
                target = torch.from_numpy(sent).float().to(self.device)
            t_ae = (time.perf_counter() - t0) * 1000 / len(idxs)
            for pos, point in enumerate(points):
                t1 = time.perf_counter()
                if refine_steps > 0:
                    codes = refine_indices(self.model, x, z, point, target, refine_steps, size=(h, w)).cpu().numpy()
                else:
                    codes = self.model.hyper_encoders[point.index].encode(z).cpu().numpy()
                for b, i in enumerate(idxs):
                    out[i][pos] = pack_image(i, codes[b], point, rms[b])
                t_rate = (time.perf_counter() - t1) * 1000 / len(idxs)
                for i in idxs:
                    rate_ms[i][pos] = t_rate
            for i in idxs:
                ae_ms[i] = t_ae
        return out, ae_ms, rate_ms

    def fits_one_tile(self, height: int, width: int) -> bool:
        """Whether an image of this size takes the whole-image path (see :mod:`oscar_model.tiling`)."""
        f = int(self.model.autoencoder.downscale)
        ph, pw = padded_size(height, width, self.stride)
        return self.tiling.fits(ph // f, pw // f)

    def _pack(self, codes: np.ndarray, point: RatePoint, h: int, w: int, rms: np.ndarray, folded: bool) -> bytes:
        coding, payload = encode_indices(
            codes.reshape(point.groups, -1), point.codebook_size, self.model.entropy_tables.get(point.index),
            self.model.context_models.get(point.index), codes.shape[-2:],
        )
        return pack(Container(self.model_id, point.index, coding, h, w, quantize_rms(rms), payload, folded=folded))

    def layout(self, c: Container) -> Fold | None:
        """How a stream's image was coded: its fold, or None (coded as it is)."""
        if not c.folded:
            return None
        layout = fold_layout(c.height, c.width, self.stride)
        if layout is None:
            raise BitstreamError(f"stream says folded, but a {c.width}x{c.height} image is never coded folded")
        return layout

    def coded_size(self, c: Container) -> tuple[int, int]:
        """The (height, width) the networks decode for a stream: the folded size of a folded one."""
        layout = self.layout(c)
        return (c.height, c.width) if layout is None else layout.coded_size

    def parse(self, stream: bytes) -> tuple[Container, RatePoint]:
        """Unpacks a stream and checks that this model can decode it (and that its work is bounded)."""
        c = unpack(stream)
        if c.model_id != self.model_id:
            raise BitstreamError(
                f"stream was written by model id {c.model_id}, this is {self.config.name} "
                f"(id {self.model_id}): decode it with the model that encoded it"
            )
        if c.rate_index >= len(self.ladder):
            raise BitstreamError(f"stream names rate level {c.rate_index}; the model has {len(self.ladder)}")
        channels = self.model.autoencoder.latent_channels
        if len(c.rms_codes) != channels:
            raise BitstreamError(f"stream has {len(c.rms_codes)} latent channels, model {channels}")
        try:
            self.check_size(*self.coded_size(c), "stream claims a" + (" folded" if c.folded else ""))
        except ValueError as e:
            raise BitstreamError(str(e)) from None
        return c, self.ladder.get(c.rate_index)

    def check_size(self, height: int, width: int, what: str) -> None:
        """Refuses an image whose area padded to the model's stride exceeds ``options.max_pixels``.

        The padded area is what the networks process: a 1x50,000,000 header passed a check of
        the claimed area and asked for 32x as much work.
        """
        ph, pw = padded_size(height, width, self.stride)
        padded = ph * pw
        if padded > self.max_pixels:
            raise ValueError(
                f"{what} {width}x{height} image: {padded} pixels once padded to the model's stride of {self.stride}, "
                f"over the limit of {self.max_pixels} (raise it with --max-pixels)"
            )

    def _indices(self, c: Container, point: RatePoint) -> np.ndarray:
        gh, gw = point.grid(*padded_size(*self.coded_size(c), self.stride))
        flat = decode_indices(
            c.payload, c.coding, point.groups, gh * gw, point.codebook_size,
            self.model.entropy_tables.get(point.index), self.model.context_models.get(point.index), (gh, gw),
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
            groups[(*self.coded_size(c), c.rate_index)].append(i)
        out: list[np.ndarray | None] = [None] * len(streams)
        for (h, w, rate_index), members in groups.items():
            point = self.ladder.get(rate_index)
            rms = {i: torch.from_numpy(dequantize_rms(parsed[i][0].rms_codes)).float() for i in members}
            if not self.fits_one_tile(h, w):
                for i in members:
                    with self.decode_autocast():
                        out[i] = decode_tiled(self.model, self.tiling, codes[i], point, rms[i], (h, w), timestep, denoise)
                continue
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                idx = torch.from_numpy(np.stack([codes[i] for i in chunk])).to(self.device)
                target = torch.stack([rms[i] for i in chunk]).to(self.device)
                with self.decode_autocast():
                    images = self.model.decode_latents(self.model.reconstruct_latents(idx, point, target, timestep, denoise))
                pixels = to_uint8(images[:, :, :h, :w])
                for b, i in enumerate(chunk):
                    out[i] = pixels[b]
        for i, (c, _) in enumerate(parsed):
            if (layout := self.layout(c)) is not None:
                out[i] = unfold(out[i], layout)
        return out  # type: ignore[return-value]

    @staticmethod
    def bpp(stream: bytes) -> float:
        """Bits per pixel of a stream: every byte of the container counted."""
        c = unpack(stream)
        return 8 * len(stream) / (c.height * c.width)


ENCODE_THREADS = 1
"""Torch threads while encoding on CPU, whoever calls: float sums in another order can flip a VQ
index (2 of 45 streams differed between 1 and 2 threads), so the CLI, the job's actors and
library callers all encode at this one count and write the same bytes on one machine."""


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
