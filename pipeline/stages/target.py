"""Archiving at a quality target: each image at the cheapest level whose decode meets it.

Why: photos differ widely in the bits a given quality takes, so one fixed level wastes bytes
on easy images or misses the bar on hard ones. The archive job already encodes every level
from one latent (cheap: one autoencoder pass, then a hyper-encoder per level) and decodes in
the same actor; decoding and measuring is what costs. So :class:`TargetStage` encodes every
candidate level, then bisects the ladder - decoding only the levels the search visits (about
log2(levels) + 1 of them) - for the lowest level that meets the target. That is exact when an
image's quality rises with the level, which is what the ladder is trained for (the benchmark
checks it against a full ladder). Where no level meets it, the top candidate is kept and the
row says ``target_met = false``: nothing is silently dropped.

In-flight columns (:mod:`pipeline.batch`): ``streams`` holds the kept stream (every level with
``keep_all``), ``oscar_metrics`` one measurement per candidate level (its size always, its
quality where the search decoded it; mode ``target`` for the kept level, ``probe`` for the
others), and ``target`` the target, whether it was met, the level kept and the decodes spent.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from oscar_model.options import CodecOptions

from ..batch import Batch, column, error_of, measurement, with_columns
from .metrics import METRIC_RANGES, QUALITY_METRICS
from .oscar import EncodeStage, pixels_of

__all__ = ["QualityTarget", "cheapest_meeting", "TargetStage"]

@dataclass(frozen=True)
class QualityTarget:
    """``metric >= value`` (PSNR, MS-SSIM) or ``metric <= value`` (LPIPS, DISTS)."""

    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> QualityTarget:
        m = re.fullmatch(r"\s*([a-z_-]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+)\s*", text or "")
        if not m or m.group(1).replace("-", "_") not in QUALITY_METRICS:
            raise ValueError(f"--target {text!r}: expected METRIC>=VALUE or METRIC<=VALUE with METRIC one of psnr, "
                             "ms_ssim, lpips, dists (e.g. ms_ssim>=0.9, psnr>=30, lpips<=0.2)")
        metric, op, value = m.group(1).replace("-", "_"), m.group(2), float(m.group(3))
        want = ">=" if QUALITY_METRICS[metric] > 0 else "<="
        if op != want:
            raise ValueError(f"--target {text!r}: {metric} is better when {'higher' if want == '>=' else 'lower'}; "
                             f"write {metric}{want}{value:g}")
        lo, hi = METRIC_RANGES[metric]
        if value <= lo or (hi is not None and value > hi):
            where = f"between {lo:g} and {hi:g}" if hi is not None else f"above {lo:g}"
            raise ValueError(f"--target {text!r}: {metric} takes values {where}; give a bar inside that range")
        return cls(metric, value)

    @property
    def op(self) -> str:
        return ">=" if QUALITY_METRICS[self.metric] > 0 else "<="

    def met(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return value >= self.value if QUALITY_METRICS[self.metric] > 0 else value <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def cheapest_meeting(levels: list[int], measure: Callable[[int], float | None], target: QualityTarget) -> tuple[int, bool]:
    """(the lowest of ``levels`` (ascending) whose measured value meets ``target``, True), or
    (the top level, False) where none does; ``measure`` is called on the levels bisection visits.

    The level just below the answer is always one that was measured and failed; levels further
    down are taken to fail too (quality rising with the level).
    """
    lo, hi = 0, len(levels)
    while lo < hi:
        mid = (lo + hi) // 2
        if target.met(measure(levels[mid])):
            hi = mid
        else:
            lo = mid + 1
    return (levels[lo], True) if lo < len(levels) else (levels[-1], False)


class TargetStage:
    """Actor: encodes every candidate level of each image, then decodes only the levels the
    search visits, and keeps the cheapest that meets the target (all of them with ``keep_all``)."""

    def __init__(self, model: Any, target: str, levels: tuple[int, ...] | None = None, device: str | None = None,
                 max_bpp: float | None = None, keep_all: bool = False, batch_size: int = 8,
                 options: CodecOptions | None = None) -> None:
        self.encode = EncodeStage(model, levels, device, batch_size, keep_pixels=True, options=options)
        self.codec = self.encode.codec
        self.target = QualityTarget.parse(target)
        self.max_bpp = max_bpp
        self.keep_all = keep_all

    def __call__(self, batch: Batch) -> Batch:
        batch = self.encode(batch)
        errors = column(batch, "error")
        rows = {name: column(batch, name) for name in ("streams", "pixels", "height", "width")}
        kept: list[list[dict[str, Any]]] = [[] for _ in errors]
        probes: list[list[dict[str, Any]]] = [[] for _ in errors]
        targets: list[dict[str, Any] | None] = [None] * len(errors)
        for i, error in enumerate(errors):
            if error is not None:
                continue
            try:
                kept[i], probes[i], targets[i] = self._choose(
                    pixels_of(rows["pixels"][i], rows["height"][i], rows["width"][i]), rows["streams"][i])
            except Exception as e:  # this image's decode failed: its error row, the batch goes on
                errors[i] = error_of("decode", e)
        out = with_columns(batch.drop_columns(["pixels"]), streams=kept, oscar_metrics=probes, target=targets)
        return with_columns(out, error=errors)

    def _choose(self, original: np.ndarray, streams: list[dict[str, Any]]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        """(the streams kept, a measurement per level, the ``target`` value) of one image."""
        from .metrics import quality_of

        pixels = original.shape[0] * original.shape[1]
        by_level = {s["rate_level"]: s for s in streams}
        levels = sorted(by_level)
        size = {lv: len(by_level[lv]["bitstream"]) for lv in levels}
        candidates = [lv for lv in levels if self.max_bpp is None or 8 * size[lv] / pixels <= self.max_bpp]
        candidates = candidates or levels[:1]  # even the lowest level is over --max-bpp: keep it, unmet
        measured: dict[int, dict[str, Any]] = {}

        def measure(level: int) -> float | None:
            t0 = time.perf_counter()
            (image,) = self.codec.decode([by_level[level]["bitstream"]])
            ms = (time.perf_counter() - t0) * 1000
            measured[level] = {**quality_of(original, image), "decode_ms": ms}
            return measured[level][self.target.metric]

        chosen, met = cheapest_meeting(candidates, measure, self.target)
        name = self.codec.config.name
        probes = [measurement(name, lv, f"level {lv}, target {self.target}", "target" if lv == chosen else "probe",
                              None, n_bytes=size[lv], bpp=8 * size[lv] / pixels, encode_ms=by_level[lv]["encode_ms"],
                              **measured.get(lv, {}))
                  for lv in levels]
        kept = [by_level[lv] for lv in (levels if self.keep_all else [chosen])]
        return kept, probes, {"spec": str(self.target), "met": met, "chosen_level": chosen, "decodes": len(measured)}
