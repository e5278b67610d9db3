"""The audit report's plots (PNG bytes): RD curves for every measured metric, and the spread of
per-image quality at each OSCAR level. Legends sit below the axes, so no point hides under one."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

__all__ = ["rd_plot_png", "rd_curves_png", "quality_spread_png", "METRIC_LABELS"]

METRIC_LABELS = {"psnr": "PSNR (dB, RGB)", "ms_ssim": "MS-SSIM (RGB)", "lpips": "LPIPS (lower is better)",
                 "dists": "DISTS (lower is better)",
                 "ssimulacra2": "SSIMULACRA2 (higher is better)", "flip": "FLIP (lower is better)",
                 "butteraugli": "Butteraugli 3-norm (lower is better)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def rd_curves_png(curves: dict[str, list[dict[str, Any]]], model: str, matched: dict[str, list[dict[str, Any]]] | None = None,
                  title: str = "") -> bytes:
    """Mean RD curves, one panel per metric that has values: each codec's own settings as a line
    (OSCAR's levels bold), and ``matched`` (codec -> points at OSCAR's bpp) as hollow markers."""
    plt = _pyplot()
    metrics = [m for m in METRIC_LABELS if any(p.get(m) is not None for pts in curves.values() for p in pts)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    colors = {}
    for ax, metric in zip(axes[0], metrics):
        for codec in sorted(curves, key=lambda c: (c != model, c)):
            pts = [(p["bpp"], p[metric]) for p in curves[codec] if p.get(metric) is not None and p.get("bpp") is not None]
            if not pts:
                continue
            (line,) = ax.plot(*zip(*sorted(pts)), marker="o", ms=4 if codec != model else 6,
                              lw=2.6 if codec == model else 1.4, label=f"{codec} ({'levels' if codec == model else 'quality sweep'})",
                              color=colors.get(codec))
            colors[codec] = line.get_color()
            for p in (matched or {}).get(codec, []):
                if p.get(metric) is not None:
                    ax.plot(p["bpp"], p[metric], marker="s", mfc="none", color=colors[codec], ms=6, ls="none")
                    if p.get("unreached"):  # a mean over fewer images than the curves': say over how many
                        ax.annotate(f"n={p['images']}", (p["bpp"], p[metric]), textcoords="offset points",
                                    xytext=(4, -9), fontsize=7, color=colors[codec])
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (every byte counted, log scale)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if matched:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="s", mfc="none", color="grey", ls="none"))
        labels.append("classical codec matched per image to OSCAR's bpp (means; n= where only n images reach it)")
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), bbox_to_anchor=(0.5, -0.02), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return _png(fig)


def rd_plot_png(summary: list[dict[str, Any]], title: str = "rate-distortion",
                extra: dict[str, list[tuple[float, float, float]]] | None = None) -> bytes:
    """bpp vs PSNR and MS-SSIM from rows of (codec, bpp, psnr, ms_ssim), one line per codec
    (``extra``: name -> [(bpp, psnr, ms_ssim)] dashed): the Kodak benchmark's figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    by_codec: dict[str, list[dict]] = defaultdict(list)
    for s in summary:
        by_codec[s["codec"]].append(s)
    for codec, rows in by_codec.items():
        rows = sorted(rows, key=lambda r: r["bpp"] or 0)
        for ax, key in zip(axes, ("psnr", "ms_ssim")):
            pts = [(r["bpp"], r[key]) for r in rows if r["bpp"] is not None and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", lw=2.5 if codec.startswith("oscar") else 1.5, label=codec)
    for name, pts in (extra or {}).items():
        pts = sorted(pts)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], ls="--", lw=1, alpha=0.7, label=name)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], ls="--", lw=1, alpha=0.7, label=name)
    for ax, key in zip(axes, ("psnr", "ms_ssim")):
        ax.set_xlabel("bits per pixel (every byte counted)")
        ax.set_ylabel(METRIC_LABELS[key])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _png(fig)


def quality_spread_png(agg) -> bytes:
    """Per-image PSNR and MS-SSIM at each level of the model, from the histograms of a
    :class:`~pipeline.report.stats.MetricsAggregate`: the shape of each level's distribution, a box
    over its quartiles and whiskers at the 5th and 95th percentiles. Drawn from counts, so a
    million images make the same picture as ten."""
    import numpy as np

    from .stats import SPREAD_BINS

    plt = _pyplot()
    levels = agg.levels()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("psnr", "ms_ssim")):
        stats, lows, highs = [], [], []
        for i, lv in enumerate(levels, start=1):
            p5, q1, med, q3, p95 = agg.quantiles(lv, metric, [0.05, 0.25, 0.5, 0.75, 0.95])
            if med is None:
                continue
            stats.append({"med": med, "q1": q1, "q3": q3, "whislo": p5, "whishi": p95, "fliers": [], "label": f"L{lv}"})
            hist = agg.spread[lv][metric]
            edges = SPREAD_BINS[metric]
            lo, hi = np.flatnonzero(hist)[[0, -1]]
            shape = hist[lo : hi + 1] / hist.max() * 0.38
            ax.fill_betweenx((edges[lo : hi + 1] + edges[lo + 1 : hi + 2]) / 2, i - shape, i + shape, color="tab:blue",
                             alpha=0.25, lw=0)
            lows.append(edges[lo])
            highs.append(edges[hi + 1])
        if stats:
            ax.bxp(stats, positions=[levels.index(int(s["label"][1:])) + 1 for s in stats], showfliers=False, widths=0.25)
            pad = (max(highs) - min(lows)) * 0.05
            ax.set_ylim(min(lows) - pad, max(highs) + pad)
        ax.set_xticks(range(1, len(levels) + 1), [f"L{lv}" for lv in levels])
        ax.set_xlabel(f"{agg.model} level")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("per-image quality at each level (shape: all images; box: quartiles; whiskers: 5th-95th percentile)")
    fig.tight_layout()
    return _png(fig)


def chosen_levels_png(chosen: dict[str, int], met_at: dict[str, int], target: str) -> bytes:
    """How many images kept each level under a quality target (level -> count), split by whether
    it was met (``met_at``: level -> images that met it there)."""
    plt = _pyplot()
    levels = sorted(chosen, key=int)
    met = [met_at.get(level, 0) for level in levels]
    unmet = [chosen[level] - met_at.get(level, 0) for level in levels]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar([f"L{lv}" for lv in levels], met, label="target met", color="tab:green")
    ax.bar([f"L{lv}" for lv in levels], unmet, bottom=met, label="not met (top level kept)", color="tab:red")
    ax.set_xlabel("level kept")
    ax.set_ylabel("images")
    ax.set_title(f"chosen levels at target {target}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return _png(fig)
