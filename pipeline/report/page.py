"""The audit's outputs, rebuilt from its committed tables: summary.json (means per codec and
setting, BD-rates with their overlap per metric, the best codec per metric and bpp band),
rd.png, and one self-contained report.html (the verdict in one sentence, who wins where,
BD-rates with their per-image spread, RD curves, side-by-side crops, the worst images, the
spread per level).

Everything here reads ``metrics/``, ``bd_rates/`` and ``bitstreams/`` only, so ``jobs.audit
--report-only`` rebuilds it without re-encoding the corpus. The tables are streamed
(:mod:`pipeline.report.stats`): the driver holds sums per setting, histograms per level and a
handful of images, whatever the corpus size.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from typing import Any

import pyarrow.compute as pc

from oscar_model.model_info import ModelInfo

from ..batch import column
from ..stages.metrics import QUALITY_METRICS
from ..storage import StorageOptions, write_bytes, write_json
from ..tables.scan import count_rows, scan_delta
from .bd_rate import headline_bd_rates
from .crops import comparison_crops, read_original
from .figures import METRIC_LABELS, chosen_levels_png, quality_spread_png, rd_curves_png
from .stats import METRICS_COLUMNS, MetricsAggregate, worst_images
from .targets import target_summary
from .verdict import NARROW, band_winners, codec_label, verdict

__all__ = ["write_report"]

COLUMNS = {"codec": "Codec", "mode": "Mode", "setting": "Setting", "images": "Images", "unreached": "Can't reach",
           "bpp": "bpp", "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "lpips": "LPIPS", "dists": "DISTS",
           "ssimulacra2": "SSIMULACRA2", "flip": "FLIP", "butteraugli": "Butteraugli",
           "encode_ms": "Encode (ms/image)", "decode_ms": "Decode (ms/image)"}
DIGITS = {"bpp": 4, "psnr": 2, "ms_ssim": 4, "lpips": 4, "dists": 4, "ssimulacra2": 2, "flip": 4, "butteraugli": 3, "encode_ms": 0, "decode_ms": 0}
WORST = 5


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in DIGITS:
        return f"{value:,.{DIGITS[key]}f}"
    return html.escape(str(value))


def _table(entries: list[dict[str, Any]], columns: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    body = "".join("<tr>" + "".join(f"<td>{_fmt(k, e.get(k))}</td>" for k in columns) + "</tr>" for e in entries)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str, css: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" class="{css}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _bd_table(bd: dict[str, dict[str, Any]], spread: dict[tuple[str, str], tuple[float, float, int]]) -> str:
    metrics = [m for m in QUALITY_METRICS if any(m in e for e in bd.values())]
    head = "<th>against</th>" + "".join(f"<th>BD-rate, {METRIC_LABELS[m].split(' (')[0]}</th>" for m in metrics)
    body = ""
    for codec, e in bd.items():
        cells = []
        for m in metrics:
            value, overlap = e.get(m), e["overlaps"].get(m)
            text = "no overlap" if value is None else f"{value:+.1f}%"
            share = e.get("overlap_fraction", {}).get(m)
            narrow = (f' <span class="warn" title="a BD-rate over so little of the joint quality range says little">'
                      f'⚠ narrow: {100 * share:.0f}% of the range</span>') if share is not None and share < NARROW else ""
            span = "" if not overlap else f"<small> over {overlap[0]:.4g}–{overlap[1]:.4g}</small>{narrow}"
            lo_hi = spread.get((codec, m))
            per_image = (f"<br><small>per image {lo_hi[0]:+.1f}% to {lo_hi[1]:+.1f}% (n={lo_hi[2]})</small>"
                         if lo_hi else "")
            cells.append(f'<td class="{"good" if value is not None and value < 0 else ""}">{text}{span}{per_image}</td>')
        body += f"<tr><td>{html.escape(codec_label(codec))}</td>{''.join(cells)}</tr>"
    return f'<table class="bd"><tr>{head}</tr>{body}</table>'


def _bd_spread(output_uri: str, storage: StorageOptions | None) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(codec, metric) -> (lowest, highest, count) of the per-image BD-rates, streamed from bd_rates/."""
    out: dict[tuple[str, str], tuple[float, float, int]] = {}
    for batch in scan_delta(output_uri, "bd_rates", storage, columns=["codec", "metric", "bd_rate"]):
        for codec, metric, value in zip(column(batch, "codec"), column(batch, "metric"), column(batch, "bd_rate")):
            if value is None:
                continue
            lo, hi, n = out.get((codec, metric), (value, value, 0))
            out[(codec, metric)] = (min(lo, value), max(hi, value), n + 1)
    return out


def _winners_table(winners: list[dict[str, Any]], model: str) -> str:
    head = ("<tr><th>metric</th><th>band (read at)</th><th>best codec</th><th>margin over the runner-up</th>"
            f"<th>{html.escape(model)}</th><th>cannot reach it</th></tr>")
    body = ""
    for w in winners:
        mine = w["values"].get(model)
        best = codec_label(w["best"]) if w["best"] else "–"
        margin = (f"{w['margin']:.4g} over {html.escape(codec_label(w['runner_up']))}"
                  if w["margin"] is not None else "–")
        body += (f"<tr><td>{METRIC_LABELS[w['metric']].split(' (')[0]}</td><td>{w['band']} ({w['bpp']:g})</td>"
                 f"<td class='{'good' if w['best'] == model else ''}'>{html.escape(best)}</td><td>{margin}</td>"
                 f"<td>{'–' if mine is None else f'{mine:.4g}'}</td>"
                 f"<td>{html.escape(', '.join(codec_label(c) for c in w['unreached'])) or '–'}</td></tr>")
    return f"<table>{head}{body}</table>"


def _decoder(model: ModelInfo, storage: StorageOptions | None):
    from oscar_model.runtimes import open_codec

    from ..inputs.model_cache import local_model_folder

    return open_codec(local_model_folder(model, storage), device="cpu")


def _crops(output_uri: str, storage: StorageOptions | None, model: ModelInfo,
           wanted_levels: dict[str, list[int]]) -> dict[str, list[tuple[int, bytes]] | str]:
    """image_id -> its panels at the levels it is shown at, or why there are none (only those
    images' rows and streams are read, and only those streams decoded)."""
    ids = ("image_id", wanted_levels)

    def read(table: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
        return [r for b in scan_delta(output_uri, table, storage, columns=columns, key=ids) for r in b.to_pylist()]

    wanted = read("bitstreams", ["image_id", "rate_level", "bitstream"])
    rows = read("metrics")
    codec = _decoder(model, storage) if wanted else None
    out: dict[str, list[tuple[int, bytes]] | str] = {}
    for image_id, levels in sorted(wanted_levels.items()):
        streams = {int(b["rate_level"]): b["bitstream"] for b in wanted if b["image_id"] == image_id and b["rate_level"] in levels}
        mine = [r for r in rows if r["image_id"] == image_id]
        try:
            if codec is None or set(streams) != set(levels):
                raise ValueError("its streams are not in bitstreams/")
            original = read_original(mine[0]["source_uri"], storage)
            decoded = dict(zip(streams, codec.decode(list(streams.values()))))
            out[image_id] = comparison_crops(original, decoded, mine, model.name, levels)
        except Exception as e:  # a moved source, another model's streams: the report says so and goes on
            out[image_id] = f"no crops: {type(e).__name__}: {e}"
    return out


def typical_image(output_uri: str, storage: StorageOptions | None, agg: MetricsAggregate, level: int) -> dict | None:
    """The image whose quality at ``level`` is nearest the median image's (MS-SSIM where measured,
    else PSNR): a second pass over that level's rows of the model, holding one candidate."""
    metric = "ms_ssim" if agg.quantiles(level, "ms_ssim", [0.5])[0] is not None else "psnr"
    (median,) = agg.quantiles(level, metric, [0.5])
    if median is None:
        return None
    where = ((pc.field("codec") == agg.model) & (pc.field("mode") == "sweep") & (pc.field("rate_level") == level)
             & pc.field(metric).is_valid())
    best: dict | None = None
    columns = ["image_id", "source_uri", metric, "codec", "mode", "rate_level"]  # what is read and what ``where`` reads
    for batch in scan_delta(output_uri, "metrics", storage, columns=columns, where=where):
        for image_id, source, value in zip(*batch.select(columns[:3]).to_pydict().values()):
            if best is None or abs(value - median) < best["distance"] or (
                    abs(value - median) == best["distance"] and image_id < best["image_id"]):
                best = {"image_id": image_id, "source_uri": source, "distance": abs(value - median)}
    return best


def write_report(output_uri: str, storage: StorageOptions | None, model: ModelInfo) -> str:
    """Writes summary.json, rd.png and report.html under ``output_uri``; returns the report's URI."""
    name = model.name
    agg = MetricsAggregate(name)
    for batch in scan_delta(output_uri, "metrics", storage, columns=METRICS_COLUMNS):
        agg.add(batch)
    errors = count_rows(output_uri, "errors", storage)
    curves = agg.curves()
    bd = headline_bd_rates(curves, name)
    winners = band_winners(curves)
    sentence = verdict(winners, bd, name) if bd else ""
    summary = agg.summary()
    write_json(output_uri, "summary.json", {"model": name, "images": agg.images(), "errors": errors, "verdict": sentence,
                                            "bd_rate": bd, "band_winners": winners, "summary": summary}, storage)
    matched = defaultdict(list)
    for s in summary:
        if s["mode"] == "matched" and s["bpp"] is not None:
            matched[s["codec"]].append(s)
    rd = rd_curves_png(curves, name, matched) if curves else None  # an archive at a target has no curve
    if rd:
        write_bytes(output_uri, "rd.png", rd, storage)

    levels = agg.levels()
    shown = [levels[0], levels[len(levels) // 2], levels[-1]] if len(levels) >= 3 else levels
    shown = sorted(set(shown))
    bd_columns = ["image_id", "source_uri", "metric", "matched_gap"]
    worst = worst_images(scan_delta(output_uri, "bd_rates", storage, columns=bd_columns), WORST)
    typical = typical_image(output_uri, storage, agg, levels[len(levels) // 2]) if levels else None
    # The typical image at every shown level; a worst one only at the middle level it is shown at.
    crop_levels = {w["image_id"]: [shown[len(shown) // 2]] for w in worst}
    if typical:
        crop_levels[typical["image_id"]] = shown
    crops = _crops(output_uri, storage, model, crop_levels) if crop_levels else {}
    by_image_bd = defaultdict(list)
    if worst:
        for batch in scan_delta(output_uri, "bd_rates", storage, columns=["image_id", "metric", "bd_rate"],
                                key=("image_id", [w["image_id"] for w in worst])):
            for image_id, metric, value in zip(column(batch, "image_id"), column(batch, "metric"), column(batch, "bd_rate")):
                if value is not None:
                    by_image_bd[(image_id, metric)].append(value)

    def crop_html(image_id: str, only: int | None = None) -> str:
        got = crops.get(image_id)
        if isinstance(got, str) or got is None:
            return f"<p class='note'>{html.escape(got or 'no crops')}</p>"
        return "".join(f"<figure>{_img(png, f'{image_id} level {lv}', 'crop')}<figcaption>level {lv}</figcaption></figure>"
                       for lv, png in got if only is None or lv == only)

    worst_rows = "".join(
        f"<h3>{i}. {html.escape(w['source_uri'])}</h3><p>{'MS-SSIM' if w['metric'] == 'ms_ssim' else 'PSNR'} by which the "
        f"classical codec that does best on it beats {html.escape(name)} at {html.escape(name)}'s bpp, averaged over the "
        f"levels: {w['gap']:+.4f}; BD-rate against the best classical codec (this image's "
        f"curves): {_fmt_bd(by_image_bd.get((w['image_id'], w['metric'])))}</p>{crop_html(w['image_id'], shown[len(shown) // 2])}"
        for i, w in enumerate(worst, start=1))
    classical = ", ".join(codec_label(c) for c in curves if c != name) or "no classical codec"
    target_html = _target_section(output_uri, storage) if "target" in agg.modes else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>OSCAR audit: {html.escape(name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}td:first-child{{text-align:left}}.bd td{{font-size:1.15em}}.good{{color:#06702a;font-weight:600}}
img{{max-width:100%}}img.crop{{image-rendering:pixelated;cursor:zoom-in}}img.crop.zoom{{max-width:none;width:200%}}
figure{{margin:.4em 0;overflow-x:auto}}figcaption,.note,small{{color:#666}}.warn{{color:#a35200;font-size:.8em}}
.verdict{{font-size:1.15em;background:#f6f6f0;padding:.6em .8em;border-left:4px solid #888}}</style></head><body>
<h1>Audit: {html.escape(name)} against {html.escape(classical)}</h1>
{f'<p class="verdict">{html.escape(sentence)}</p>' if sentence else ""}
<p>{agg.images()} images; {errors} inputs could not be read (see <code>errors/</code>). Every metric is measured on RGB against
each image's own original; bpp counts every byte of each file.</p>
{target_html}<h2>Who wins where</h2>
{_winners_table(winners, name) if winners else "<p class='note'>no curves to compare</p>"}
<p class="note">Each codec's mean curve read at one rate per band. A codec whose settings do not reach that rate has no
value there (a downscaled variant often does).</p>
<h2>BD-rate: bits {html.escape(name)} needs for the same quality</h2>
{_bd_table(bd, _bd_spread(output_uri, storage)) if bd else "<p class='note'>no classical codec audited</p>"}
<p class="note">Bjøntegaard delta rate (pchip interpolation, the <code>bjontegaard</code> package) of {html.escape(name)}'s
mean curve against each classical codec's quality sweep, over the quality range both cover (shown). Negative: fewer bits.
Per-image values are in the <code>bd_rates</code> table.</p>
<h2>Rate-distortion curves</h2>{_img(rd, "RD curves") if rd else "<p class='note'>no codec's settings to plot</p>"}
<h2>Side by side{f": {html.escape(typical['source_uri'])}" if typical else ""}</h2>
<p class="note">Each classical codec at the highest quality whose file is at or below {html.escape(name)}'s bpp on this
image; a codec that cannot go that low is a grey panel that says so. The crop is where the decodes differ most; click a
crop to zoom.</p>{crop_html(typical["image_id"]) if typical else ""}
<h2>The {len(worst)} images where {html.escape(name)} does worst against the best classical codec</h2>{worst_rows or
"<p class='note'>no per-image gaps in bd_rates/: no classical codec reached " + html.escape(name) + "'s bpp, or the output "
"was written before they were recorded (audit it again into a new output)</p>"}
<h2>Quality per level, image by image</h2>{_img(quality_spread_png(agg), "quality spread") if levels else ""}
<h2>All settings (means over the images)</h2>{_table(summary, COLUMNS)}
<script>document.querySelectorAll('img.crop').forEach(i=>i.onclick=()=>i.classList.toggle('zoom'))</script>
</body></html>"""
    write_bytes(output_uri, "report.html", page.encode(), storage)
    return f"{output_uri.rstrip('/')}/report.html"


def _target_section(output_uri: str, storage: StorageOptions | None) -> str:
    """For an archive written at a quality target: the histogram of the levels its images kept."""
    t = target_summary(output_uri, storage)
    png = chosen_levels_png(t["chosen_levels"], t["met_levels"], t["target"])
    mix = t.get("codecs")
    mix_html = ""
    if mix:
        rows = "".join(f"<tr><td>{html.escape(codec_label(c))} alone</td><td>{e['bytes']:,}</td><td>{e['met']}</td>"
                       f"<td>{mix['kept'].get(c, 0)}</td></tr>" for c, e in mix["alone"].items())
        mix_html = (f"<p>Each image kept the smallest file that meets the target, from any codec; "
                    f"{mix['met_only_thanks_to_the_mix']} images met it only thanks to the mix.</p><table><tr><th>codec"
                    f"</th><th>bytes</th><th>images meeting the target</th><th>images that kept it</th></tr>"
                    f"<tr><td>the mix</td><td>{t['bytes']:,}</td><td>{t['met']}</td><td>{t['images']}</td></tr>{rows}</table>")
    return (f"<h2>Quality target {html.escape(t['target'] or '?')}</h2><p>met on {t['met']} of {t['images']} images; each "
            f"image kept the cheapest level that meets it (the top level where none does).</p>{mix_html}"
            f"{_img(png, 'chosen levels')}")


def _fmt_bd(values: list[float] | None) -> str:
    return "no overlap" if not values else f"{max(values):+.1f}%"
