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
from .images import pixels_of
from .metrics import METRIC_RANGES, QUALITY_METRICS
from .oscar import EncodeStage

__all__ = ["QualityTarget", "cheapest_meeting", "TargetStage"]

@dataclass(frozen=True)
class QualityTarget:
    """``metric >= value`` (PSNR, MS-SSIM, SSIMULACRA2) or ``metric <= value`` (FLIP, Butteraugli, LPIPS, DISTS)."""

    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> QualityTarget:
        m = re.fullmatch(r"\s*([a-z0-9_-]+)\s*(>=|<=)\s*(-?[0-9]*\.?[0-9]+)\s*", text or "")
        if not m or m.group(1).replace("-", "_") not in QUALITY_METRICS:
            raise ValueError(f"--target {text!r}: expected METRIC>=VALUE or METRIC<=VALUE with METRIC one of "
                             f"{', '.join(QUALITY_METRICS)} (e.g. ms_ssim>=0.9, ssimulacra2>=60, flip<=0.1)")
        metric, op, value = m.group(1).replace("-", "_"), m.group(2), float(m.group(3))
        want = ">=" if QUALITY_METRICS[metric] > 0 else "<="
        if op != want:
            raise ValueError(f"--target {text!r}: {metric} is better when {'higher' if want == '>=' else 'lower'}; "
                             f"write {metric}{want}{value:g}")
        lo, hi = METRIC_RANGES[metric]
        if (lo is not None and value <= lo) or (hi is not None and value > hi):
            where = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (
                f"above {lo:g}" if lo is not None else f"up to {hi:g}")
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
    search visits, and keeps the cheapest that meets the target (all of them with ``keep_all``).

    With ``codecs`` (classical codecs, :mod:`pipeline.stages.classic`) each of them is a
    candidate too: its quality scale is bisected on the target metric for the lowest setting
    that meets it (about 7 encodes and decodes per codec and image), and the image keeps the
    smallest file that meets the target, whichever codec made it. Where no candidate meets it,
    the one of highest quality is kept (``target_met = false``).
    """

    def __init__(self, model: Any, target: str, levels: tuple[int, ...] | None = None, device: str | None = None,
                 max_bpp: float | None = None, keep_all: bool = False, batch_size: int = 8,
                 options: CodecOptions | None = None, metrics: tuple[str, ...] = ("psnr", "ms_ssim"),
                 codecs: tuple[str, ...] = ()) -> None:
        self.encode = EncodeStage(model, levels, device, batch_size, keep_pixels=True, options=options)
        self.codec = self.encode.codec
        self.target = QualityTarget.parse(target)
        self.max_bpp = max_bpp
        self.keep_all = keep_all
        self.metrics = tuple(dict.fromkeys((*metrics, self.target.metric)))
        self.codecs = codecs

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
        """(the streams kept, a measurement per probe, the ``target`` value) of one image."""
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
            measured[level] = {**quality_of(original, image, self.metrics), "decode_ms": ms}
            return measured[level][self.target.metric]

        chosen, met = cheapest_meeting(candidates, measure, self.target)
        name = self.codec.config.name
        finalists = [_Finalist(name, chosen, f"level {chosen}", size[chosen], met,
                               measured.get(chosen, {}).get(self.target.metric))]
        probed = {codec: self._classical(original, codec) for codec in self.codecs}
        finalists += [f for f, _ in probed.values() if f is not None]
        winner = _pick(finalists, self.target)
        mode = {(f.codec, f.setting): ("target" if f is winner else "candidate") for f in finalists}
        probes = [measurement(name, lv, f"level {lv}, target {self.target}", mode.get((name, f"level {lv}"), "probe"),
                              None, n_bytes=size[lv], bpp=8 * size[lv] / pixels, encode_ms=by_level[lv]["encode_ms"],
                              **measured.get(lv, {}))
                  for lv in levels]
        probes += [measurement(codec, None, f"quality {q}, target {self.target}", mode.get((codec, f"quality {q}"), "probe"),
                               None, n_bytes=len(data), bpp=8 * len(data) / pixels, **values)
                   for codec, (_, files) in probed.items() for q, (data, values) in sorted(files.items())]
        if winner.codec == name:
            kept = [{**by_level[lv], "chosen": lv == chosen} for lv in (levels if self.keep_all else [chosen])]
        else:
            kept = [{"rate_level": None, "bitstream": probed[winner.codec][1][winner.quality][0], "encode_ms": None,
                     "codec": winner.codec, "setting": winner.setting, "chosen": True}]
            kept += [{**by_level[lv], "chosen": False} for lv in (levels if self.keep_all else [])]
        decodes = len(measured) + sum(len(files) for _, files in probed.values())
        return kept, probes, {"spec": str(self.target), "met": winner.met, "decodes": decodes,
                              "chosen_level": winner.level, "chosen_codec": winner.codec}

    def _classical(self, original: np.ndarray, codec: str
                   ) -> tuple[_Finalist | None, dict[int, tuple[bytes, dict[str, Any]]]]:
        """Bisection over ``codec``'s quality scale (:func:`cheapest_meeting`) for the lowest setting
        whose decode meets the target: (that setting, or the highest one measured within
        ``max_bpp`` when none meets - none when no setting probed is within it; each quality
        probed -> its file and measurement)."""
        from .classic import CLASSIC_CODECS, decode_classic, encode_classic, parse_codec
        from .metrics import quality_of

        h, w = original.shape[:2]
        lo, hi = CLASSIC_CODECS[parse_codec(codec)[0]]["q_range"]
        probed: dict[int, tuple[bytes, dict[str, Any]]] = {}

        def probe(q: int) -> tuple[bytes, dict[str, Any]]:
            if q not in probed:
                t0 = time.perf_counter()
                data = encode_classic(original, codec, q)
                t1 = time.perf_counter()
                image = decode_classic(data, (w, h))
                ms = {"encode_ms": (t1 - t0) * 1000, "decode_ms": (time.perf_counter() - t1) * 1000}
                probed[q] = (data, {**quality_of(original, image, self.metrics), **ms})
            return probed[q]

        def within(q: int) -> bool:
            return self.max_bpp is None or 8 * len(probe(q)[0]) / (h * w) <= self.max_bpp

        lowest, met = cheapest_meeting(list(range(lo, hi + 1)), lambda q: probe(q)[1][self.target.metric], self.target)
        if met and within(lowest):
            best = lowest
        else:  # none meets (or the one that does is over --max-bpp): the best measured within it
            met = False
            fits = [q for q in probed if within(q)]
            best = max(fits) if fits else None
        if best is None:
            return None, probed
        data, values = probed[best]
        return _Finalist(codec, None, f"quality {best}", len(data), met, values[self.target.metric], best), probed


@dataclass(frozen=True)
class _Finalist:
    """One codec's answer for an image: its cheapest setting meeting the target (else its best)."""

    codec: str
    level: int | None
    setting: str
    n_bytes: int
    met: bool
    value: float | None
    quality: int | None = None
    """A classical codec's quality setting (None for the model's level)."""


def _pick(finalists: list[_Finalist], target: QualityTarget) -> _Finalist:
    """The smallest file among the finalists that meet the target; where none does, the one of
    highest quality (the first, the model's, on a tie or where nothing was measured)."""
    meeting = [f for f in finalists if f.met]
    if meeting:
        return min(meeting, key=lambda f: f.n_bytes)
    sign = QUALITY_METRICS[target.metric]
    scored = [f for f in finalists if f.value is not None and not math.isnan(f.value)]
    return max(scored, key=lambda f: sign * f.value) if scored else finalists[0]
