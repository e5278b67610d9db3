"""Who wins where: the best codec per quality metric and bpp band, and the one-sentence verdict.

A BD-rate averages over the quality range two curves share, which hides where each codec wins:
a generative codec may win below the classical codecs' floor and lose above it. So the report
also reads every codec's mean curve at one rate per band (the band's geometric middle) and
names the best codec there and its margin over the runner-up. A codec whose curve does not
reach that rate (its lowest setting costs more, or its highest costs less) has no value there:
it is never credited with a quality it cannot deliver at that rate.
"""

from __future__ import annotations

import math
from typing import Any

from ..stages.metrics import QUALITY_METRICS, finite
from .bd_rate import envelope

__all__ = ["BANDS", "NARROW", "CODEC_NAMES", "codec_label", "quality_at", "band_winners", "verdict"]

BANDS = (("< 0.05 bpp", 0.01, 0.05), ("0.05-0.15 bpp", 0.05, 0.15), ("> 0.15 bpp", 0.15, 0.6))
"""(label, low, high): each band is read at the geometric middle of low and high."""

NARROW = 0.25
"""A BD-rate over less than this share of the two curves' joint quality range is called narrow."""

CODEC_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "jxl": "JPEG XL"}


def codec_label(codec: str) -> str:
    """``jxl`` -> ``JPEG XL``, ``avif@1/4`` -> ``AVIF at 1/4 size``; a model's name as it is."""
    base, _, scale = codec.partition("@")
    name = CODEC_NAMES.get(base, base)
    return f"{name} at {scale} size" if scale else name


def quality_at(points: list[dict[str, Any]], metric: str, bpp: float) -> float | None:
    """The curve's ``metric`` at ``bpp`` (linear in log bpp between its envelope points), or None
    outside the rates the curve covers."""
    xs, qs = envelope(points, metric)
    if len(xs) < 1 or bpp < xs[0] or bpp > xs[-1]:
        return None
    if len(xs) == 1:
        return QUALITY_METRICS[metric] * qs[0]
    for (x0, q0), (x1, q1) in zip(zip(xs, qs), zip(xs[1:], qs[1:])):
        if x0 <= bpp <= x1:
            t = (math.log(bpp) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0.0
            return QUALITY_METRICS[metric] * (q0 + t * (q1 - q0))
    return None


def band_winners(curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (metric, band) with measurements: the rate read, each codec's quality there,
    the best codec, the runner-up and the margin between them (in the metric's units)."""
    out = []
    for metric, sign in QUALITY_METRICS.items():
        if not any(finite(p.get(metric)) for pts in curves.values() for p in pts):
            continue
        for label, lo, hi in BANDS:
            at = math.sqrt(lo * hi)
            values = {c: v for c, pts in curves.items() if (v := quality_at(pts, metric, at)) is not None}
            ranked = sorted(values, key=lambda c: -sign * values[c])
            out.append({
                "metric": metric, "band": label, "bpp": round(at, 4), "values": values,
                "best": ranked[0] if ranked else None, "runner_up": ranked[1] if len(ranked) > 1 else None,
                "margin": abs(values[ranked[0]] - values[ranked[1]]) if len(ranked) > 1 else None,
                "unreached": sorted(set(curves) - set(values)),
            })
    return out


def verdict(winners: list[dict[str, Any]], bd: dict[str, dict[str, Any]], model: str) -> str:
    """One plain sentence: where ``model`` is the best codec, where it is not and who beats it, and
    the BD-rate on SSIMULACRA2 (else MS-SSIM) against the strongest classical codec."""
    won = [w for w in winners if w["best"] == model and w["runner_up"] is not None]
    alone = [w for w in winners if w["best"] == model and w["runner_up"] is None]
    lost = [w for w in winners if w["best"] not in (None, model) and model in w["values"]]
    absent = [w for w in winners if model not in w["values"]]

    def where(rows: list[dict[str, Any]]) -> str:
        by_band: dict[str, list[str]] = {}
        for w in rows:
            by_band.setdefault(w["band"], []).append(w["metric"])
        return "; ".join(f"{band} on {', '.join(ms)}" for band, ms in by_band.items())

    parts = [f"{model} is the best codec in {len(won) + len(alone)} of {len(winners)} (metric, rate) cells"]
    if won:
        parts.append(f"it wins at {where(won)}")
    if alone:
        parts.append(f"it is the only codec that reaches {', '.join(sorted({w['band'] for w in alone}))}, so it wins "
                     "there by default")
    if lost:
        beaten_by = sorted({codec_label(w["best"]) for w in lost})
        parts.append(f"it loses at {where(lost)}, to {', '.join(beaten_by)}")
    if absent:
        parts.append(f"it does not reach {', '.join(sorted({w['band'] for w in absent}))}")
    metric = "ssimulacra2" if any(e.get("ssimulacra2") is not None for e in bd.values()) else "ms_ssim"
    measured = {c: e[metric] for c, e in bd.items() if e.get(metric) is not None}
    wide = {c: v for c, v in measured.items() if (bd[c].get("overlap_fraction", {}).get(metric) or 0) >= NARROW}
    measured = wide or measured  # a BD-rate over a sliver of the quality range names no rival if a wider one exists
    if measured:
        strongest = max(measured, key=lambda c: measured[c])  # the rival against which the model needs most bits
        parts.append(f"its BD-rate on {metric} against {codec_label(strongest)}, the strongest rival there, is "
                     f"{measured[strongest]:+.1f}% ({'more' if measured[strongest] > 0 else 'fewer'} bits for the same quality)")
    return "; ".join(parts) + "."
