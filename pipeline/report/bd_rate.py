"""BD-rates of the audit: the same quality for how many fewer (or more) bits than a classical codec.

The Bjøntegaard delta rate integrates log(bpp) over the quality range both curves cover; here
with the pchip interpolation of the ``bjontegaard`` package (the method of current video
codec test conditions) rather than the original cubic fit, which overshoots on curves like
OSCAR's. The classical codec is the anchor and OSCAR the test, so a negative value means
OSCAR needs fewer bits for the same quality.

Curves:
* **headline**: mean curves - for each codec and setting (OSCAR level, classical quality of the
  sweep), the mean bpp and mean metric over the images (streamed from the table by
  :class:`pipeline.report.stats.MetricsAggregate`);
* **per image**: that image's own points (:func:`bd_rate_rows`, the audit's row builder, in the write stage).

pchip needs quality to rise with rate. A point that costs more bits than another and is no
better is one no encoder would choose, so each curve keeps its points sorted by bpp that beat
every cheaper one (its monotone envelope; on smooth curves that is every point). LPIPS and DISTS
(lower is better) are negated for the fit and reported as they are.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ..stages.metrics import QUALITY_METRICS, finite
from ..tables.schema import BD_RATES

__all__ = ["curve_rows", "envelope", "bd_rate", "headline_bd_rates", "image_bd_rates", "bd_rate_rows", "matched_gap"]

Point = dict[str, Any]


def curve_rows(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The rows a curve is made of: each codec's own settings (``mode == "sweep"``: OSCAR's levels,
    a classical codec's quality grid), measured (``reached``), with a bpp."""
    return (r for r in rows if r.get("mode") == "sweep" and r.get("reached") and finite(r.get("bpp")))


def envelope(points: list[Point], metric: str) -> tuple[list[float], list[float]]:
    """(bpp, quality) of the points that beat every cheaper one, quality signed so higher is better."""
    sign = QUALITY_METRICS[metric]
    xs: list[float] = []
    qs: list[float] = []
    for p in sorted((p for p in points if finite(p.get(metric)) and finite(p.get("bpp")) and p["bpp"] > 0),
                    key=lambda p: p["bpp"]):
        q = sign * float(p[metric])
        if not qs or q > qs[-1]:
            xs.append(float(p["bpp"]))
            qs.append(q)
    return xs, qs


def overlap_fraction(anchor: list[Point], test: list[Point], metric: str) -> float | None:
    """The share of the two curves' joint quality range that both cover: a BD-rate over a sliver
    of it (as bjontegaard warns below 0.75) says little."""
    (_, aq), (_, tq) = envelope(anchor, metric), envelope(test, metric)
    if not aq or not tq:
        return None
    span = max(aq[-1], tq[-1]) - min(aq[0], tq[0])
    return round(max(0.0, min(aq[-1], tq[-1]) - max(aq[0], tq[0])) / span, 4) if span > 0 else None


def bd_rate(anchor: list[Point], test: list[Point], metric: str) -> tuple[float | None, list[float] | None]:
    """BD-rate of ``test`` against ``anchor`` in percent, and the quality range it is taken over.

    (None, None) where either curve has fewer than two usable points or they do not overlap.
    """
    import bjontegaard

    ax, aq = envelope(anchor, metric)
    tx, tq = envelope(test, metric)
    if len(ax) < 2 or len(tx) < 2:
        return None, None
    lo, hi = max(aq[0], tq[0]), min(aq[-1], tq[-1])
    if hi <= lo:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns below 75% overlap; the range is reported instead
        value = bjontegaard.bd_rate(ax, aq, tx, tq, method="pchip", require_matching_points=False, min_overlap=0)
    sign = QUALITY_METRICS[metric]
    overlap = sorted([sign * lo, sign * hi])
    return (float(value) if finite(float(value)) else None), [round(v, 5) for v in overlap]


def headline_bd_rates(curves: dict[str, list[Point]], model: str) -> dict[str, dict[str, Any]]:
    """``{codec: {"psnr": pct, "ms_ssim": pct, ..., "overlaps": {metric: [lo, hi]},
    "overlap_fraction": {metric: share of the joint range}}}``
    of the model against each classical codec on the mean curves; metrics never measured are left out."""
    out: dict[str, dict[str, Any]] = {}
    test = curves.get(model, [])
    for codec, anchor in sorted(curves.items()):
        if codec == model:
            continue
        entry: dict[str, Any] = {"overlaps": {}, "overlap_fraction": {}}
        for metric in QUALITY_METRICS:
            if not any(finite(p.get(metric)) for p in test) or not any(finite(p.get(metric)) for p in anchor):
                continue
            value, overlap = bd_rate(anchor, test, metric)
            entry[metric] = None if value is None else round(value, 2)
            entry["overlaps"][metric] = overlap
            entry["overlap_fraction"][metric] = overlap_fraction(anchor, test, metric) if overlap else None
        out[codec] = entry
    return out


def matched_gap(rows: list[dict[str, Any]], codec: str, model: str, metric: str) -> float | None:
    """One image: how much better ``codec`` does than the model at the model's own bpp, averaged
    over the levels where it reached that bpp (its matched quality minus the model's, signed so
    that positive means the classical codec is better); None where no level compares."""
    sign = QUALITY_METRICS[metric]
    oscar = {r["rate_level"]: r[metric] for r in rows
             if r["codec"] == model and r.get("mode") == "sweep" and finite(r.get(metric))}
    gaps = [sign * (r[metric] - oscar[r["rate_level"]]) for r in rows
            if r["codec"] == codec and r.get("mode") == "matched" and r.get("reached") and finite(r.get(metric))
            and r["rate_level"] in oscar]
    return sum(gaps) / len(gaps) if gaps else None


def image_bd_rates(rows: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The ``bd_rates`` table's rows (:data:`pipeline.tables.schema.BD_RATES`) from metrics rows: one per
    (image, classical codec, metric the model was measured in) with that image's own BD-rate and
    :func:`matched_gap`. Built in the write stage from each image's rows, so the report never
    groups the metrics table by image."""
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_image[r["image_id"]].append(r)
    out = []
    for image_id, members in by_image.items():
        rivals = sorted({r["codec"] for r in members} - {model})
        if not rivals:  # an archive's image (every job's rows pass here): nothing to compare
            continue
        curves: dict[str, list[Point]] = defaultdict(list)
        for r in curve_rows(members):
            curves[r["codec"]].append(r)
        for codec in rivals:
            for metric in QUALITY_METRICS:
                if not any(finite(p.get(metric)) for p in curves.get(model, [])):
                    continue
                value, overlap = bd_rate(curves.get(codec, []), curves.get(model, []), metric)
                out.append({"image_id": image_id, "source_uri": members[0]["source_uri"], "codec": codec,
                            "metric": metric, "bd_rate": value, "overlap_lo": overlap[0] if overlap else None,
                            "overlap_hi": overlap[1] if overlap else None,
                            "matched_gap": matched_gap(members, codec, model, metric), "unit_id": members[0].get("unit_id")})
    return out


def bd_rate_rows(metrics: pa.Table, model: str) -> pa.Table:
    """:func:`image_bd_rates` of a block's ``metrics`` rows, as ``bd_rates`` rows. The one place the
    audit's rows become Python values: the curve fits run per image on a handful of points each."""
    return pa.Table.from_pylist(image_bd_rates(metrics.to_pylist(), model), schema=BD_RATES)
