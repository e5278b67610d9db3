"""Classical codecs through Pillow (JPEG, WebP, AVIF), matched to a target bpp.

The quality setting is searched per image (bisection over the integer quality scale) for the
file whose bpp is closest to the target from below when possible; a codec that cannot go
that low says so (``reached=False``) instead of silently reporting a higher rate.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, features

__all__ = ["CLASSIC_CODECS", "ClassicResult", "encode_classic", "match_bpp", "available_codecs"]

CLASSIC_CODECS = {
    "jpeg": {"format": "JPEG", "kwargs": {"subsampling": 2, "optimize": True}, "q_range": (1, 95)},
    "webp": {"format": "WEBP", "kwargs": {"method": 6}, "q_range": (0, 100)},
    "avif": {"format": "AVIF", "kwargs": {"speed": 6, "subsampling": "4:2:0"}, "q_range": (0, 100)},
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


def match_bpp(image: np.ndarray, codec: str, target_bpp: float) -> ClassicResult:
    """The highest quality whose file is at or below ``target_bpp`` (bisection)."""
    if codec not in CLASSIC_CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(CLASSIC_CODECS)}")
    h, w = image.shape[:2]
    lo, hi = CLASSIC_CODECS[codec]["q_range"]
    cache: dict[int, bytes] = {}

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
    t0 = time.perf_counter()
    data = encode_classic(image, codec, best)
    encode_ms = 1000 * (time.perf_counter() - t0)
    return ClassicResult(codec, best, data, 8 * len(data) / (h * w), reached, encode_ms)
