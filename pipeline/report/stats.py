"""The audit's numbers, streamed: one pass over ``metrics/`` in Arrow batches, holding only sums
per setting and histograms per level, so building the report costs the same driver memory for
a thousand images as for a hundred million.

* :class:`MetricsAggregate` - means per (codec, mode, setting) for the summary table, the mean RD
  curves the headline BD-rates use, and per-level quality histograms of the model (the spread
  plot and the typical image);
* :func:`worst_images` - the images where the model trails the best classical codec most, from
  ``bd_rates/`` (per-image values the write stage computed), with a top-k of k entries.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..batch import column
from ..stages.metrics import QUALITY_METRICS

__all__ = ["MetricsAggregate", "SPREAD_BINS", "worst_images", "METRICS_COLUMNS"]

VALUES = ("bpp", *QUALITY_METRICS, "encode_ms", "decode_ms")
METRICS_COLUMNS = ["codec", "mode", "setting", "rate_level", "reached", *VALUES]
"""The columns of ``metrics/`` the aggregate reads."""
SPREAD_BINS = {"psnr": np.linspace(0.0, 60.0, 1201), "ms_ssim": np.linspace(0.0, 1.0, 2001)}
"""Histogram edges of the spread plot: 0.05 dB and 0.0005 MS-SSIM, finer than either is read."""


def _finite(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as float64 with NaN and infinities made null (a mean of what was measured)."""
    col = pc.cast(col, pa.float64())
    return pc.if_else(pc.is_finite(col), col, pa.scalar(None, pa.float64()))


class MetricsAggregate:
    """Sums and counts per group and histograms per level; :meth:`add` takes batches of any size."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.curve_groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.spread: dict[int, dict[str, np.ndarray]] = {}
        self.modes: set[str] = set()

    # ------------------------------------------------------------------ accumulation
    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if not table.num_rows:
            return
        self.modes |= {m for m in column(table.group_by("mode").aggregate([]), "mode") if m}
        values = {k: _finite(table.column(k)) for k in VALUES}
        mode, reached = table.column("mode"), pc.fill_null(table.column("reached"), False)
        level = table.column("rate_level")
        # Summary: OSCAR and each classical codec per sweep setting; matched rows per OSCAR level.
        key = pc.if_else(pc.equal(mode, "matched"),
                         pc.binary_join_element_wise("at OSCAR L", pc.cast(level, pa.string()), ""), table.column("setting"))
        both = pa.table({"codec": table.column("codec"), "mode": mode, "key": key, "level": level,
                         "reached": pc.cast(reached, pa.int64()), **{k: values[k] for k in VALUES}})
        both = both.filter(pc.is_in(mode, pa.array(["sweep", "matched"])))
        self._merge(self.groups, both, ["codec", "mode", "key"], "reached")
        # Curves: each codec's own settings, measured, with a bpp.
        curve = both.filter(pc.and_(pc.equal(both.column("mode"), "sweep"),
                                    pc.and_(pc.equal(both.column("reached"), 1), pc.is_valid(both.column("bpp")))))
        self._merge(self.curve_groups, curve.drop_columns(["mode"]), ["codec", "key"], None)
        self._add_spread(both.filter(pc.and_(pc.equal(both.column("codec"), self.model),
                                             pc.and_(pc.equal(both.column("mode"), "sweep"), pc.equal(both.column("reached"), 1)))))

    def _merge(self, into: dict, table: pa.Table, keys: list[str], reached: str | None) -> None:
        if not table.num_rows:
            return
        aggs = [("level", "min"), ("codec", "count")] + [(k, agg) for k in VALUES for agg in ("sum", "count")]
        if reached:
            aggs.append((reached, "sum"))
            # Means over the rows that reached their target only: null the others' values.
            mask = pc.equal(table.column(reached), 1)
            for k in VALUES:
                table = table.set_column(table.schema.get_field_index(k), k,
                                         pc.if_else(mask, table.column(k), pa.scalar(None, pa.float64())))
        for row in table.group_by(keys).aggregate(aggs).to_pylist():
            g = into.setdefault(tuple(row[k] for k in keys), {"level": None, "rows": 0, "reached": 0,
                                                            **{f"{k}_sum": 0.0 for k in VALUES}, **{f"{k}_n": 0 for k in VALUES}})
            if row["level_min"] is not None:
                g["level"] = row["level_min"] if g["level"] is None else min(g["level"], row["level_min"])
            g["rows"] += row["codec_count"]
            g["reached"] += (row[f"{reached}_sum"] or 0) if reached else row["codec_count"]
            for k in VALUES:
                g[f"{k}_sum"] += row[f"{k}_sum"] or 0.0
                g[f"{k}_n"] += row[f"{k}_count"]

    def _add_spread(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        levels = table.column("level").to_numpy(zero_copy_only=False)
        for metric, edges in SPREAD_BINS.items():
            vals = table.column(metric).to_numpy(zero_copy_only=False)
            for lv in np.unique(levels):
                pick = vals[(levels == lv) & ~np.isnan(vals.astype(float))]
                hist = self.spread.setdefault(int(lv), {m: np.zeros(len(e) - 1, np.int64) for m, e in SPREAD_BINS.items()})
                hist[metric] += np.histogram(np.clip(pick, edges[0], edges[-1]), edges)[0]

    # ------------------------------------------------------------------ results
    def summary(self) -> list[dict[str, Any]]:
        """Means per (codec, mode, setting) over the rows that reached their target (the others are
        counted in ``unreached``; their metrics are null)."""
        out = []
        for (codec, mode, setting), g in self.groups.items():
            entry: dict[str, Any] = {"codec": codec, "mode": mode, "setting": setting, "rate_level": g["level"],
                                     "images": g["reached"], "unreached": g["rows"] - g["reached"]}
            for k in VALUES:
                entry[k] = round(g[f"{k}_sum"] / g[f"{k}_n"], 6) if g[f"{k}_n"] else None
            out.append(entry)
        return sorted(out, key=lambda e: (e["codec"], e["mode"], e["rate_level"] if e["mode"] == "matched" else 0,
                                          e["bpp"] if e["bpp"] is not None else math.inf))

    def curves(self) -> dict[str, list[dict[str, Any]]]:
        """codec -> one point per own setting: mean bpp and mean of each metric over the images
        (a metric's mean only where every image has it), sorted by bpp."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (codec, setting), g in self.curve_groups.items():
            point: dict[str, Any] = {"setting": setting, "rate_level": g["level"], "images": g["rows"]}
            for k in ("bpp", *QUALITY_METRICS):
                point[k] = g[f"{k}_sum"] / g[f"{k}_n"] if g[f"{k}_n"] == g["rows"] else None
            out[codec].append(point)
        return {c: sorted(pts, key=lambda p: p["bpp"]) for c, pts in out.items()}

    def levels(self) -> list[int]:
        """The model's levels that have measured rows."""
        return sorted(self.spread)

    def images(self) -> int:
        """Images with metrics: each has one row per setting of the model's own sweep."""
        return max((g["rows"] for (codec, mode, _), g in self.groups.items() if codec == self.model and mode == "sweep"),
                   default=0)

    def quantiles(self, level: int, metric: str, qs: Iterable[float]) -> list[float | None]:
        """Quantiles of the model's per-image ``metric`` at ``level``, from its histogram (to a bin)."""
        hist = self.spread.get(level, {}).get(metric)
        if hist is None or not hist.sum():
            return [None for _ in qs]
        edges, cum = SPREAD_BINS[metric], np.cumsum(hist)
        centres = (edges[:-1] + edges[1:]) / 2
        return [float(centres[min(np.searchsorted(cum, q * cum[-1], side="left"), len(centres) - 1)]) for q in qs]


def worst_images(batches: Iterable[pa.RecordBatch | pa.Table], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` images with the largest :func:`~pipeline.report.bd_rate.matched_gap` to their best
    classical codec (MS-SSIM where it was measured, else PSNR), from ``bd_rates`` batches.

    Streamed with O(n) memory: a top-n over distinct images by their largest gap. An image that
    falls out and comes back with a larger gap re-enters with it, which is then its largest.
    """
    tops: dict[str, dict[str, tuple[float, str]]] = {"ms_ssim": {}, "psnr": {}}
    heaps: dict[str, list[tuple[float, str]]] = {"ms_ssim": [], "psnr": []}
    for batch in batches:
        cols = batch.select(["image_id", "source_uri", "metric", "matched_gap"]).to_pydict()
        for image_id, source, metric, gap in zip(*cols.values()):
            if metric not in tops or gap is None or not math.isfinite(gap):
                continue
            top, heap = tops[metric], heaps[metric]
            if image_id in top:
                if gap > top[image_id][0]:
                    top[image_id] = (gap, source)
                    heap[:] = [(g, i) for i, (g, _) in top.items()]
                    heapq.heapify(heap)
                continue
            if len(top) < n or gap > heap[0][0]:
                top[image_id] = (gap, source)
                heapq.heappush(heap, (gap, image_id))
                if len(top) > n:
                    _, out = heapq.heappop(heap)
                    del top[out]
    metric = "ms_ssim" if tops["ms_ssim"] else "psnr"
    ranked = sorted(tops[metric].items(), key=lambda kv: -kv[1][0])
    return [{"image_id": i, "source_uri": s, "metric": metric, "gap": g} for i, (g, s) in ranked]
