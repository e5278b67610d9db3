"""Classical codecs through Pillow (JPEG, WebP, AVIF): a quality sweep, or matched to a target bpp.

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
from .oscar import pixels_of

__all__ = ["CLASSIC_CODECS", "ClassicResult", "encode_classic", "decode_classic", "match_bpp", "sweep",
           "available_codecs", "ClassicCodecStage"]

CLASSIC_CODECS = {
    "jpeg": {"format": "JPEG", "kwargs": {"subsampling": 2, "optimize": True}, "q_range": (1, 95),
             "sweep": (1, 2, 3, 5, 8, 12, 17, 25, 35, 50, 70, 90)},
    "webp": {"format": "WEBP", "kwargs": {"method": 6}, "q_range": (0, 100),
             "sweep": (0, 2, 5, 10, 15, 20, 30, 40, 55, 70, 85, 95)},
    "avif": {"format": "AVIF", "kwargs": {"speed": 6, "subsampling": "4:2:0"}, "q_range": (0, 100),
             "sweep": (0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 90)},
}


def available_codecs() -> list[str]:
    feats = {"jpeg": features.check("jpg"), "webp": features.check("webp"), "avif": features.check("avif")}
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
    spec = CLASSIC_CODECS[codec]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=spec["format"], quality=int(quality), **spec["kwargs"])
    return buf.getvalue()


def decode_classic(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _timed(image: np.ndarray, codec: str, quality: int) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    data = encode_classic(image, codec, quality)
    return data, 1000 * (time.perf_counter() - t0)


def sweep(image: np.ndarray, codec: str) -> list[ClassicResult]:
    """The codec at every quality of its sweep grid (all reached: there is no target)."""
    if codec not in CLASSIC_CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(CLASSIC_CODECS)}")
    h, w = image.shape[:2]
    out = []
    for q in CLASSIC_CODECS[codec]["sweep"]:
        data, ms = _timed(image, codec, q)
        out.append(ClassicResult(codec, q, data, 8 * len(data) / (h * w), True, ms))
    return out


def match_bpp(image: np.ndarray, codec: str, target_bpp: float, cache: dict[int, bytes] | None = None) -> ClassicResult:
    """The highest quality whose file is at or below ``target_bpp`` (bisection).

    ``cache`` (quality -> file) saves encodes across the targets of one image and codec.
    """
    if codec not in CLASSIC_CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(CLASSIC_CODECS)}")
    h, w = image.shape[:2]
    lo, hi = CLASSIC_CODECS[codec]["q_range"]
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

    def __init__(self, codecs: tuple[str, ...]) -> None:
        self.codecs = codecs

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
                out.append(_measurement(original, res, "sweep", None, None, measured))
            for stream in streams:
                target = 8 * len(stream["bitstream"]) / pixels
                res = match_bpp(original, codec, target, files)
                out.append(_measurement(original, res, "matched", stream["rate_level"], target, measured))
        return out


def _measurement(original: np.ndarray, res: ClassicResult, mode: str, level: int | None, target: float | None,
                 measured: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One classical setting as a measurement; metrics only where the target was reached."""
    from .metrics import quality_of

    setting = f"quality {res.quality}" + ("" if res.reached else f" (cannot reach {target:.4f} bpp)")
    if res.reached and res.quality not in measured:
        t0 = time.perf_counter()
        decoded = decode_classic(res.data)
        decode_ms = (time.perf_counter() - t0) * 1000
        measured[res.quality] = {"n_bytes": len(res.data), "bpp": res.bpp, **quality_of(original, decoded),
                                 "encode_ms": res.encode_ms, "decode_ms": decode_ms}
    return measurement(res.codec, level, setting, mode, res.reached, **measured.get(res.quality, {}))
