"""What every codec of a model shares, whichever runtime runs its networks: the flow of coding,
streams and indices.

:class:`StreamCodec` holds the whole flow of :meth:`~StreamCodec.encode` and
:meth:`~StreamCodec.decode` (same-size batches, tiles for large images, folds for thin ones),
parses and checks streams (model id, level, size limits), and turns indices into a stream and
back through the entropy coder. It holds no network and imports no torch: a runtime's codec
runs the networks behind five steps (``_latents``, ``_level_indices``, ``_encode_tiled``,
``_decode_whole``, ``_decode_tiled``): :class:`~oscar_model.codec.OscarCodec` in torch,
:class:`~oscar_model.onnx_codec.OnnxCodec` in ONNX Runtime.

Why streams never depend on the runtime: the entropy coder's probabilities come from the
model's integer tables and from the indices already decoded, never from a network's
floating-point output. A runtime's float differences can change which index an encoder picks
(as the thread count can within one runtime), never whether a stream decodes, or how.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from .bitstream import BitstreamError, Container, dequantize_rms, pack, quantize_rms, unpack
from .config import CodecConfig
from .context_model import ContextModel
from .entropy import decode_indices, encode_indices
from .folding import Fold, fold, fold_layout, unfold
from .images import ImageLike, same_size_batches, to_rgb_array
from .options import CodecOptions
from .rates import RateLadder, RateLike, RatePoint
from .tiling import Tiling, padded_size

__all__ = ["StreamCodec"]


class StreamCodec:
    """The stream side of a codec. A subclass sets ``options`` and provides the model's facts:
    ``config``, ``model_hash``, ``stride``, ``latent_factor`` (image pixels per latent pixel),
    ``latent_channels``, ``entropy_tables`` and ``context_models``."""

    options: CodecOptions
    config: CodecConfig
    model_hash: str
    stride: int
    latent_factor: int
    latent_channels: int
    entropy_tables: dict[int, np.ndarray]
    context_models: dict[int, ContextModel]

    @property
    def ladder(self) -> RateLadder:
        return self.config.ladder

    @property
    def model_id(self) -> str:
        """The 8 hex digits every stream of this model carries: the model hash's first 8."""
        return self.model_hash[:8]

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels

    # ------------------------------------------------------------------ the networks: a runtime's steps
    def _encode_context(self) -> contextlib.AbstractContextManager:
        """Around a whole encode call (the torch codec: inference mode, one thread)."""
        return contextlib.nullcontext()

    def _decode_context(self) -> contextlib.AbstractContextManager:
        """Around a whole decode call."""
        return contextlib.nullcontext()

    def _latents(self, arrays: list[np.ndarray]) -> tuple[Any, np.ndarray]:
        """Same-size RGB uint8 images (one tile) -> (the latents, in the runtime's own form; their
        per-channel RMS (B, C) as a float32 array)."""
        raise NotImplementedError

    def _level_indices(self, latents: Any, point: RatePoint, rms: np.ndarray, refine_steps: int,
                       size: tuple[int, int]) -> np.ndarray:
        """The latents of :meth:`_latents` -> int64 VQ indices (B, G, h, w) at ``point``."""
        raise NotImplementedError

    def _encode_tiled(self, array: np.ndarray, points: Sequence[RatePoint]) -> tuple[list[np.ndarray], np.ndarray]:
        """One image over one tile -> (indices (G, h, w) per point, the latent's per-channel RMS)."""
        raise NotImplementedError

    def _decode_whole(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        """Indices (B, G, h, w) of same-size images (one tile) and their sent RMS (B, C) -> RGB
        uint8 (B, H, W, 3) cropped to ``size``."""
        raise NotImplementedError

    def _decode_tiled(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        """Indices (G, h, w) of one image over one tile and its sent RMS (C,) -> RGB uint8 (H, W, 3)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ images <-> streams
    @overload
    def encode(
        self, images: Sequence[ImageLike], rates: RateLike, batch_size: int = ..., refine_steps: int = ...
    ) -> list[bytes]: ...
    @overload
    def encode(
        self, images: Sequence[ImageLike], rates: Sequence[RateLike], batch_size: int = ..., refine_steps: int = ...
    ) -> list[list[bytes]]: ...

    def encode(self, images, rates, batch_size: int = 8, refine_steps: int = 0):
        """Encodes images at one rate (-> one stream per image) or several (-> a list per image).

        A rate is an ``int`` ladder level or a ``float`` bpp (nearest level). The autoencoder
        runs once per image; every requested rate is quantised from that one latent.
        Same-size images are batched ``batch_size`` at a time. ``refine_steps`` > 0 searches
        the indices through the decoder (:mod:`oscar_model.refine`, torch only): better images,
        slower encoding, the same decoder.
        """
        single = not isinstance(rates, Sequence)
        points = [self.ladder.resolve(r) for r in ([rates] if single else rates)]
        arrays = [to_rgb_array(im) for im in images]
        out, _, _ = self.encode_arrays_timed(arrays, points, batch_size, refine_steps)
        return [o[0] for o in out] if single else out

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
        with self._encode_context():
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
                    codes, rms = self._encode_tiled(arrays[i], points)
                    ae_ms[i] = (time.perf_counter() - t0) * 1000
                    for pos, point in enumerate(points):
                        t1 = time.perf_counter()
                        out[i][pos] = pack_image(i, codes[pos], point, rms)
                        rate_ms[i][pos] = (time.perf_counter() - t1) * 1000
                continue
            t0 = time.perf_counter()
            latents, rms = self._latents([arrays[i] for i in idxs])
            t_ae = (time.perf_counter() - t0) * 1000 / len(idxs)
            for pos, point in enumerate(points):
                t1 = time.perf_counter()
                codes = self._level_indices(latents, point, rms, refine_steps, (h, w))
                for b, i in enumerate(idxs):
                    out[i][pos] = pack_image(i, codes[b], point, rms[b])
                t_rate = (time.perf_counter() - t1) * 1000 / len(idxs)
                for i in idxs:
                    rate_ms[i][pos] = t_rate
            for i in idxs:
                ae_ms[i] = t_ae
        return out, ae_ms, rate_ms

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
        with self._decode_context():
            for (h, w, rate_index), members in groups.items():
                point = self.ladder.get(rate_index)
                rms = {i: dequantize_rms(parsed[i][0].rms_codes).astype(np.float32) for i in members}
                if not self.fits_one_tile(h, w):
                    for i in members:
                        out[i] = self._decode_tiled(codes[i], point, rms[i], (h, w), timestep, denoise)
                    continue
                for start in range(0, len(members), batch_size):
                    chunk = members[start : start + batch_size]
                    pixels = self._decode_whole(np.stack([codes[i] for i in chunk]), point,
                                                np.stack([rms[i] for i in chunk]), (h, w), timestep, denoise)
                    for b, i in enumerate(chunk):
                        out[i] = pixels[b]
        for i, (c, _) in enumerate(parsed):
            if (layout := self.layout(c)) is not None:
                out[i] = unfold(out[i], layout)
        return out  # type: ignore[return-value]

    @property
    def tiling(self) -> Tiling:
        """The tiles in use (``options.tile`` over the model's own), on the latent grid's stride."""
        base = Tiling(**self.config.tiling)
        tile = self.options.tile
        if tile == "off":
            base = Tiling(base.tile, base.overlap, whole_up_to=1 << 30)
        elif tile != "auto":
            base = Tiling(int(tile), min(base.overlap, int(tile) // 4), whole_up_to=int(tile))
        return base.aligned(self.stride // self.latent_factor)

    def fits_one_tile(self, height: int, width: int) -> bool:
        """Whether an image of this size takes the whole-image path (see :mod:`oscar_model.tiling`)."""
        f = self.latent_factor
        ph, pw = padded_size(height, width, self.stride)
        return self.tiling.fits(ph // f, pw // f)

    def _pack(self, codes: np.ndarray, point: RatePoint, h: int, w: int, rms: np.ndarray, folded: bool) -> bytes:
        coding, payload = encode_indices(
            codes.reshape(point.groups, -1), point.codebook_size, self.entropy_tables.get(point.index),
            self.context_models.get(point.index), codes.shape[-2:],
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
        channels = self.latent_channels
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
            self.entropy_tables.get(point.index), self.context_models.get(point.index), (gh, gw),
        )
        return flat.reshape(point.groups, gh, gw)

    @staticmethod
    def bpp(stream: bytes) -> float:
        """Bits per pixel of a stream: every byte of the container counted."""
        c = unpack(stream)
        return 8 * len(stream) / (c.height * c.width)
