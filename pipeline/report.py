"""Audit outputs: a summary per codec and level, RD plots and a one-page HTML report."""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from typing import Any

from .delta import read_delta
from .storage import StorageOptions, write_bytes, write_json

__all__ = ["summarize_metrics", "rd_plot_png", "write_report"]


def summarize_metrics(rows: list[dict[str, Any]], codecs: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Mean bpp / PSNR / MS-SSIM / times per (codec, OSCAR level).

    Means are over the images the codec reached (file at or below OSCAR's bpp); the others are
    counted in ``unreached``: their files are bigger than the target, and averaging them in
    would credit the codec with quality bought by extra bits.
    """
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        if r["bpp"] is None or (codecs and r["codec"] not in codecs and not any(c.startswith("oscar") for c in [r["codec"]])):
            continue
        groups[(r["codec"], int(r["rate_level"]))].append(r)

    def mean(vals):
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))]
        return round(sum(vals) / len(vals), 5) if vals else None

    out = []
    for (codec, level), all_rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rs = [r for r in all_rows if "cannot reach" not in (r["setting"] or "")]
        out.append({
            "codec": codec, "rate_level": level, "images": len(rs),
            "bpp": mean([r["bpp"] for r in rs]), "psnr": mean([r["psnr"] for r in rs]),
            "ms_ssim": mean([r["ms_ssim"] for r in rs]), "lpips": mean([r["lpips"] for r in rs]),
            "encode_ms": mean([r["encode_ms"] for r in rs]), "decode_ms": mean([r["decode_ms"] for r in rs]),
            "unreached": len(all_rows) - len(rs),
        })
    return out


def rd_plot_png(summary: list[dict[str, Any]], title: str = "rate-distortion", extra: dict[str, list[tuple[float, float, float]]] | None = None) -> bytes:
    """bpp vs PSNR and MS-SSIM, one line per codec (``extra``: name -> [(bpp, psnr, ms_ssim)])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    by_codec: dict[str, list[dict]] = defaultdict(list)
    for s in summary:
        by_codec[s["codec"]].append(s)
    for codec, rows in by_codec.items():
        rows = sorted(rows, key=lambda r: r["bpp"] or 0)
        bold = codec.startswith("oscar")
        for ax, key in zip(axes, ("psnr", "ms_ssim")):
            pts = [(r["bpp"], r[key]) for r in rows if r["bpp"] is not None and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", lw=2.5 if bold else 1.5, label=codec)
    for name, pts in (extra or {}).items():
        pts = sorted(pts)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], ls="--", lw=1, alpha=0.7, label=name)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], ls="--", lw=1, alpha=0.7, label=name)
    for ax, label in zip(axes, ("RGB PSNR (dB)", "MS-SSIM (RGB)")):
        ax.set_xlabel("bits per pixel (every byte counted)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _html_table(summary: list[dict[str, Any]]) -> str:
    cols = ["codec", "rate_level", "images", "bpp", "psnr", "ms_ssim", "lpips", "encode_ms", "decode_ms", "unreached"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{'-' if s[c] is None else html.escape(str(s[c]))}</td>" for c in cols) + "</tr>" for s in summary
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(output_uri: str, storage: StorageOptions | None, codecs: tuple[str, ...], model_name: str) -> str:
    """Writes summary.json, rd.png and report.html under ``output_uri``; returns the report's URI."""
    rows = read_delta(output_uri, "metrics", storage).to_pylist()
    errors = read_delta(output_uri, "errors", storage).num_rows
    summary = summarize_metrics(rows)
    write_json(output_uri, "summary.json", {"summary": summary, "errors": errors}, storage)
    png = rd_plot_png(summary, title=f"audit: {model_name} vs classical codecs at matched bpp")
    write_bytes(output_uri, "rd.png", png, storage)
    images = len({r["image_id"] for r in rows})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>OSCAR audit</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>Audit: {html.escape(model_name)} against {html.escape(', '.join(c for c in codecs if not c.startswith('oscar')))}</h1>
<p>{images} images, {errors} unreadable files (see errors/). Classical codecs are matched per image to the bpp
{html.escape(model_name)} reached at each level (highest quality at or below it); "unreached" counts images where a codec
cannot go that low; its means are over the images it reached. All metrics are computed against each image's own original, on RGB.</p>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" width="100%">
{_html_table(summary)}
</body></html>"""
    write_bytes(output_uri, "report.html", page.encode(), storage)
    return f"{output_uri.rstrip('/')}/report.html"
