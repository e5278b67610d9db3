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

Rows (:func:`pipeline.rows.table_rows`): the kept stream in ``bitstreams`` with ``target``,
``target_met`` and ``chosen``; in ``metrics`` one row per level with its size, mode ``target``
for the kept level and ``probe`` for the others, measured where the search decoded it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from oscar_model.options import CodecOptions

from .metrics import QUALITY_METRICS
from .rows import Batch, batch_of, failed, rows_of
from .stages import EncodeStage, pixels_of
from .storage import StorageOptions

__all__ = ["QualityTarget", "cheapest_meeting", "TargetStage", "target_summary"]

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

    def __init__(self, model: Any, target: str, rates: tuple[float | int, ...] | None = None, device: str | None = None,
                 max_bpp: float | None = None, keep_all: bool = False, batch_size: int = 8,
                 options: CodecOptions | None = None) -> None:
        self.encode = EncodeStage(model, rates, device, batch_size, keep_pixels=True, options=options)
        self.codec = self.encode.codec
        self.target = QualityTarget.parse(target)
        self.max_bpp = max_bpp
        self.keep_all = keep_all

    def __call__(self, batch: Batch) -> Batch:
        rows = rows_of(self.encode(batch))
        for i, r in enumerate(rows):
            if r["status"] == "ok":
                try:
                    self._choose(r)
                except Exception as e:  # this image's decode failed: its error row, the batch goes on
                    rows[i] = failed(r, "decode", e)
            r.pop("pixels", None)
        return batch_of(rows)

    def _choose(self, r: dict[str, Any]) -> None:
        from .metrics import quality_of

        original = pixels_of(r)
        pixels = original.shape[0] * original.shape[1]
        streams = {int(lv): bytes(s) for lv, s in zip(r["rate_levels"], r["bitstreams"])}
        encode_ms = dict(zip(streams, r["encode_ms"]))
        levels = sorted(streams)
        candidates = [lv for lv in levels if self.max_bpp is None or 8 * len(streams[lv]) / pixels <= self.max_bpp]
        candidates = candidates or levels[:1]  # even the lowest level is over --max-bpp: keep it, unmet
        measured: dict[int, dict[str, Any]] = {}

        def measure(level: int) -> float | None:
            t0 = time.perf_counter()
            (image,) = self.codec.decode([streams[level]])
            ms = (time.perf_counter() - t0) * 1000
            measured[level] = {**quality_of(original, image), "decode_ms": ms}
            return measured[level][self.target.metric]

        chosen, met = cheapest_meeting(candidates, measure, self.target)
        kept = levels if self.keep_all else [chosen]
        probes = [{"level": lv, "n_bytes": len(streams[lv]), "encode_ms": encode_ms[lv], **measured.get(lv, {})}
                  for lv in levels]
        r.update(rate_levels=kept, bitstreams=[streams[lv] for lv in kept], encode_ms=[encode_ms[lv] for lv in kept],
                 target=str(self.target), target_met=met, chosen_level=chosen, target_probes=json.dumps(probes),
                 decodes=len(measured))


def target_summary(output_uri: str, storage: StorageOptions | None) -> dict[str, Any]:
    """The archive's target figures, streamed from its committed tables (a few numbers per level
    in memory, however many images): the target, the share meeting it, the levels kept (all, and
    where met), the bytes spent, and the bytes of the cheapest single level that meets it on at
    least the same share of images. The job's summary and the report's histogram both read it."""
    from deltalake import DeltaTable

    from .delta import delta_storage_options, table_uri

    def batches(table: str, columns: list[str]):
        uri = table_uri(output_uri, table)
        return DeltaTable(uri, storage_options=delta_storage_options(uri, storage)).to_pyarrow_dataset().to_batches(columns=columns)

    images = met = spent = decodes = 0
    target = None
    met_levels: dict[int, int] = {}
    chosen: dict[int, int] = {}
    for b in batches("bitstreams", ["rate_level", "n_bytes", "chosen", "target_met", "target"]):
        kept = b.filter(pc.equal(b.column("chosen"), True))
        for level, n, ok, t in zip(*(kept.column(c).to_pylist() for c in ("rate_level", "n_bytes", "target_met", "target"))):
            target = target or t
            images += 1
            spent += n
            chosen[level] = chosen.get(level, 0) + 1
            if ok:
                met += 1
                met_levels[level] = met_levels.get(level, 0) + 1
    level_bytes: dict[int, int] = {}
    for b in batches("metrics", ["rate_level", "n_bytes", "mode", "decode_ms"]):
        rows = b.filter(pc.is_in(b.column("mode"), value_set=pa.array(["target", "probe"])))
        decodes += rows.num_rows - rows.column("decode_ms").null_count
        for level, n in zip(rows.column("rate_level").to_pylist(), rows.column("n_bytes").to_pylist()):
            level_bytes[level] = level_bytes.get(level, 0) + n
    share = met / images if images else 0.0
    fixed = None
    for level in sorted(level_bytes):  # images meeting at a fixed level: those whose cheapest is at or below it
        if images and sum(n for lv, n in met_levels.items() if lv <= level) / images >= share:
            fixed = {"level": level, "bytes": level_bytes[level]}
            break
    return {"target": target, "images": images, "met": met, "share_met": round(share, 4), "bytes": spent,
            "decodes_per_image": round(decodes / images, 3) if images else None,
            "chosen_levels": {str(k): v for k, v in sorted(chosen.items())},
            "met_levels": {str(k): v for k, v in sorted(met_levels.items())},
            "fixed_level": fixed, "saving": round(1 - spent / fixed["bytes"], 4) if fixed and fixed["bytes"] else None}
