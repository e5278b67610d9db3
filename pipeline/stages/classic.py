"""Classical codecs through Pillow (JPEG, WebP, AVIF, JPEG XL): a quality sweep, or matched to a target bpp.

JPEG XL comes through ``pillow-jxl-plugin`` (libjxl), chosen over ``imagecodecs`` by
``benchmarks/jxl_binding.py``: on 4 Kodak photos it encoded 1.2-2x faster, as a 6 MB package
against 44 MB, behind Pillow's own API. imagecodecs' files were 2-4% smaller at the same quality
number and its floor a little lower (0.106 against 0.123 bpp); the downscaled variants reach
far below either. A codec named ``avif@1/4`` is AVIF at a quarter of each side:
the image is resized with Lanczos, encoded, decoded and resized back with Lanczos, which is
how practitioners reach rates below a codec's floor. Its bpp counts its bytes over the
full-size image's pixels and its metrics are taken at full size.

Two ways the audit uses them, per image:

* **sweep** (:func:`sweep`): every quality of the codec's grid (``CLASSIC_CODECS[c]["sweep"]``),
  12 settings each, denser at the low qualities where OSCAR's ladder sits: the codec's whole
  rate-distortion curve, from which BD-rates are computed.
* **matched** (:func:`match_bpp`): the quality is searched (bisection over the integer quality
  scale) for the largest file at or below the bpp OSCAR reached; a codec that cannot go that
  low says so (``reached=False``) instead of silently reporting a higher rate.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, features

from ..batch import Batch, column, measurement, with_columns
from .images import pixels_of

__all__ = ["CLASSIC_CODECS", "ClassicResult", "parse_codec", "is_classic", "encode_classic", "decode_classic",
           "match_bpp", "sweep", "available_codecs", "ClassicCodecStage"]

CLASSIC_CODECS = {
    "jpeg": {"format": "JPEG", "kwargs": {"subsampling": 2, "optimize": True}, "q_range": (1, 95),
             "sweep": (1, 2, 3, 5, 8, 12, 17, 25, 35, 50, 70, 90)},
    "webp": {"format": "WEBP", "kwargs": {"method": 6}, "q_range": (0, 100),
             "sweep": (0, 2, 5, 10, 15, 20, 30, 40, 55, 70, 85, 95)},
    "avif": {"format": "AVIF", "kwargs": {"speed": 6, "subsampling": "4:2:0"}, "q_range": (0, 100),
             "sweep": (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 90)},
    "jxl": {"format": "JXL", "kwargs": {"effort": 7}, "q_range": (0, 100),
            "sweep": (0, 3, 6, 10, 15, 20, 30, 40, 50, 65, 80, 90)},
}
"""Each base codec: Pillow's format name, fixed encoder options, the quality scale and the sweep grid."""

MAX_DOWNSCALE = 16


def parse_codec(name: str) -> tuple[str, int]:
    """``"avif@1/4"`` -> ``("avif", 4)``, ``"jpeg"`` -> ``("jpeg", 1)``; ValueError for anything else."""
    base, _, scale = name.partition("@")
    if base not in CLASSIC_CODECS:
        raise ValueError(f"unknown codec {name!r}; expected one of {sorted(CLASSIC_CODECS)}, optionally downscaled "
                         "as CODEC@1/K (avif@1/2, jxl@1/4)")
    if not scale:
        return base, 1
    num, _, den = scale.partition("/")
    if num != "1" or not den.isdigit() or not 2 <= int(den) <= MAX_DOWNSCALE:
        raise ValueError(f"codec {name!r}: the scale must be 1/K with K from 2 to {MAX_DOWNSCALE} (avif@1/4)")
    return base, int(den)


def is_classic(name: str) -> bool:
    try:
        parse_codec(name)
    except ValueError:
        return False
    return True


def _register_jxl() -> bool:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError:
        return False
    return True


def available_codecs() -> list[str]:
    """The base codecs this Pillow can encode and decode."""
    feats = {"jpeg": features.check("jpg"), "webp": features.check("webp"), "avif": features.check("avif"),
             "jxl": _register_jxl()}
    return [c for c, ok in feats.items() if ok]


@dataclass
class ClassicResult:
    codec: str
    quality: int
    data: bytes
    bpp: float
    reached: bool
    encode_ms: float


def encode_classic(image: np.ndarray, codec: str, quality: int) -> bytes:
    """The codec's file of ``image`` at ``quality`` (downscaled first for ``codec@1/K``)."""
    base, scale = parse_codec(codec)
    spec = CLASSIC_CODECS[base]
    if base == "jxl":
        _register_jxl()
    picture = Image.fromarray(image)
    if scale > 1:
        h, w = image.shape[:2]
        picture = picture.resize((max(1, round(w / scale)), max(1, round(h / scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    picture.save(buf, format=spec["format"], quality=int(quality), **spec["kwargs"])
    return buf.getvalue()


def decode_classic(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB pixels of a classical file, resized with Lanczos to ``size`` (width, height) where it differs."""
    _register_jxl()
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and picture.size != tuple(size):
        picture = picture.resize(tuple(size), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _timed(image: np.ndarray, codec: str, quality: int) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    data = encode_classic(image, codec, quality)
    return data, 1000 * (time.perf_counter() - t0)


def sweep(image: np.ndarray, codec: str) -> list[ClassicResult]:
    """The codec at every quality of its sweep grid (all reached: there is no target)."""
    h, w = image.shape[:2]
    out = []
    for q in CLASSIC_CODECS[parse_codec(codec)[0]]["sweep"]:
        data, ms = _timed(image, codec, q)
        out.append(ClassicResult(codec, q, data, 8 * len(data) / (h * w), True, ms))
    return out


def match_bpp(image: np.ndarray, codec: str, target_bpp: float, cache: dict[int, bytes] | None = None) -> ClassicResult:
    """The highest quality whose file is at or below ``target_bpp`` (bisection).

    ``cache`` (quality -> file) saves encodes across the targets of one image and codec.
    """
    h, w = image.shape[:2]
    lo, hi = CLASSIC_CODECS[parse_codec(codec)[0]]["q_range"]
    cache = {} if cache is None else cache

    def bpp_at(q: int) -> float:
        if q not in cache:
            cache[q] = encode_classic(image, codec, q)
        return 8 * len(cache[q]) / (h * w)

    if bpp_at(lo) > target_bpp:
        best, reached = lo, False
    else:
        best, reached = lo, True
        a, b = lo, hi
        while a <= b:
            mid = (a + b) // 2
            if bpp_at(mid) <= target_bpp:
                best, a = mid, mid + 1
            else:
                b = mid - 1
    data, encode_ms = _timed(image, codec, best)
    return ClassicResult(codec, best, data, 8 * len(data) / (h * w), reached, encode_ms)


class ClassicCodecStage:
    """Actor: each classical codec on each image, two ways: over its quality sweep (its own RD
    curve, the BD-rates' input) and matched to the bpp OSCAR reached at each level.

    Adds ``classic_metrics``: one measurement per (codec, mode, setting). A matched codec that
    cannot go as low as OSCAR's bpp is marked unreached and carries no metrics. Drops pixels.
    """

    def __init__(self, codecs: tuple[str, ...], metrics: tuple[str, ...] = ("psnr", "ms_ssim")) -> None:
        self.codecs = codecs
        self.metrics = metrics

    def __call__(self, batch: Batch) -> Batch:
        rows = {name: column(batch, name) for name in ("error", "pixels", "height", "width", "streams")}
        found: list[list[dict[str, Any]]] = []
        for i, error in enumerate(rows["error"]):
            found.append([] if error is not None else self._measure(
                pixels_of(rows["pixels"][i], rows["height"][i], rows["width"][i]), rows["streams"][i]))
        return with_columns(batch.drop_columns(["pixels"]), classic_metrics=found)

    def _measure(self, original: np.ndarray, streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pixels = original.shape[0] * original.shape[1]
        out = []
        for codec in self.codecs:
            files: dict[int, bytes] = {}
            measured: dict[int, dict[str, Any]] = {}  # quality -> metrics, shared by both modes
            for res in sweep(original, codec):
                files[res.quality] = res.data
                out.append(_measurement(original, res, "sweep", None, None, measured, self.metrics))
            for stream in streams:
                target = 8 * len(stream["bitstream"]) / pixels
                res = match_bpp(original, codec, target, files)
                out.append(_measurement(original, res, "matched", stream["rate_level"], target, measured, self.metrics))
        return out


def _measurement(original: np.ndarray, res: ClassicResult, mode: str, level: int | None, target: float | None,
                 measured: dict[int, dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    """One classical setting as a measurement; metrics only where the target was reached."""
    from .metrics import quality_of

    setting = f"quality {res.quality}" + ("" if res.reached else f" (cannot reach {target:.4f} bpp)")
    if res.reached and res.quality not in measured:
        t0 = time.perf_counter()
        decoded = decode_classic(res.data, (original.shape[1], original.shape[0]))
        decode_ms = (time.perf_counter() - t0) * 1000
        measured[res.quality] = {"n_bytes": len(res.data), "bpp": res.bpp, **quality_of(original, decoded, metrics),
                                 "encode_ms": res.encode_ms, "decode_ms": decode_ms}
    return measurement(res.codec, level, setting, mode, res.reached, **measured.get(res.quality, {}))
