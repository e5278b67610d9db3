"""The audit as a codec engineer reads it: classical sweeps and matched rows in the metrics
table (unreached rows null), BD-rates that agree with the ``bjontegaard`` package run on the
table's own mean curves, a report with BD-rates and crops (checked in headless Chromium where
one is installed), and --report-only rebuilding it without encoding."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.report.bd_rate import bd_rate, envelope, image_bd_rates
from pipeline.report.crops import pick_window
from pipeline.report.stats import MetricsAggregate, worst_images
from pipeline.tables.schema import METRICS


def _aggregate(rows: list[dict], model: str = "") -> MetricsAggregate:
    """The streamed aggregate of metrics rows held in memory."""
    agg = MetricsAggregate(model)
    agg.add(pa.Table.from_pylist([{k: r.get(k) for k in METRICS.names} for r in rows], schema=METRICS))
    return agg


def summarize_metrics(rows: list[dict], model: str = "") -> list[dict]:
    return _aggregate(rows, model).summary()


def mean_curves(rows: list[dict], model: str = "") -> dict[str, list[dict]]:
    return _aggregate(rows, model).curves()

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def curve(bpps, qualities, metric="psnr"):
    return [{"bpp": b, metric: q} for b, q in zip(bpps, qualities)]


def test_a_curve_at_half_the_rate_everywhere_is_minus_50_percent():
    """Exact for any interpolation: the test curve is the anchor's shifted by log10(0.5) in rate."""
    quality = [24.0, 26.5, 28.0, 30.5, 33.0]
    anchor = curve([0.1, 0.2, 0.31, 0.55, 1.0], quality)
    test = curve([b["bpp"] / 2 for b in anchor], quality)
    value, overlap = bd_rate(anchor, test, "psnr")
    assert value == pytest.approx(-50.0, abs=1e-6)
    assert overlap == [24.0, 33.0]
    value, _ = bd_rate(test, anchor, "psnr")
    assert value == pytest.approx(100.0, abs=1e-6)


def test_lower_is_better_metrics_and_curves_that_do_not_overlap():
    anchor = curve([0.1, 0.2, 0.4], [0.30, 0.20, 0.10], "lpips")
    test = curve([0.05, 0.1, 0.2], [0.30, 0.20, 0.10], "lpips")
    value, overlap = bd_rate(anchor, test, "lpips")
    assert value == pytest.approx(-50.0, abs=1e-6) and overlap == [0.1, 0.3]
    assert bd_rate(curve([0.1, 0.2], [20, 22]), curve([0.1, 0.2], [30, 32]), "psnr") == (None, None)
    assert bd_rate(curve([0.1], [20]), curve([0.1, 0.2], [20, 22]), "psnr") == (None, None)  # one point is no curve


def test_the_envelope_keeps_the_points_that_beat_every_cheaper_one():
    points = curve([0.3, 0.1, 0.2, 0.4, 0.5], [25, 22, 26, 24, 27])  # 0.3 and 0.4 cost more and are no better
    assert envelope(points, "psnr") == ([0.1, 0.2, 0.5], [22, 26, 27])


def rows_for(image, codec, mode, setting, level, bpp, psnr, reached=True):
    return {"image_id": image, "source_uri": f"/x/{image}.png", "codec": codec, "mode": mode, "setting": setting,
            "rate_level": level, "reached": reached, "bpp": bpp if reached else None, "psnr": psnr if reached else None,
            "ms_ssim": None, "lpips": None, "dists": None, "encode_ms": 1.0, "decode_ms": 1.0}


def test_means_leave_out_unreached_rows_and_count_them():
    rows = [rows_for("a", "jpeg", "matched", "quality 5", 0, 0.1, 25), rows_for("b", "jpeg", "matched", "quality 1", 0, 0, 0, False),
            rows_for("a", "oscar", "sweep", "level 0", 0, 0.1, 24), rows_for("b", "oscar", "sweep", "level 0", 0, 0.3, 26)]
    by = {(s["codec"], s["setting"]): s for s in summarize_metrics(rows)}
    assert by[("jpeg", "at OSCAR L0")]["images"] == 1 and by[("jpeg", "at OSCAR L0")]["unreached"] == 1
    assert by[("jpeg", "at OSCAR L0")]["psnr"] == 25
    assert by[("oscar", "level 0")]["bpp"] == pytest.approx(0.2)
    curves = mean_curves(rows)
    assert set(curves) == {"oscar"}  # matched rows are not a curve


def test_worst_images_rank_the_gap_to_the_best_classical_codec():
    rows = []
    for image, oscar_psnr in [("good", 30), ("bad", 20), ("mid", 25)]:
        rows.append(rows_for(image, "oscar", "sweep", "level 1", 1, 0.1, oscar_psnr))
        rows.append(rows_for(image, "jpeg", "matched", "quality 3", 1, 0.1, 24))
        rows.append(rows_for(image, "webp", "matched", "quality 3", 1, 0.1, 26))
        rows.append(rows_for(image, "avif", "matched", "quality 0", 1, 0.1, 99, reached=False))  # ignored
    per_image = image_bd_rates(rows, "oscar")  # what the write stage puts in bd_rates/, per image
    assert {(p["codec"], p["metric"]) for p in per_image} == {(c, "psnr") for c in ("avif", "jpeg", "webp")}
    assert next(p for p in per_image if p["image_id"] == "bad" and p["codec"] == "avif")["matched_gap"] is None
    # Streamed in batches of two rows, as the report reads the table: the top-2 holds two images.
    table = pa.Table.from_pylist(per_image)
    ranked = worst_images(table.to_batches(max_chunksize=2), n=2)
    assert [w["image_id"] for w in ranked] == ["bad", "mid"]
    assert ranked[0]["gap"] == pytest.approx(6) and ranked[0]["metric"] == "psnr"


def test_the_crop_goes_where_the_decodes_differ():
    reference = np.zeros((300, 400, 3), np.uint8)
    other = reference.copy()
    other[200:260, 300:380] = 255
    y, x, side = pick_window(reference, [other], size=100)
    assert side == 100 and y <= 200 and y + side >= 260 and x <= 300 and x + side >= 380


# ------------------------------------------------------------------ the job, end to end

@pytest.fixture(scope="module")
def audit_out(tmp_path_factory):
    """oscar-tiny (the shipped, trained model) audited on four photos that are in neither Kodak
    nor BSDS500, against JPEG and WebP, at every level."""
    import ray
    from skimage import data

    from jobs import audit

    base = tmp_path_factory.mktemp("audit")
    photos = base / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(data, name)()
        Image.fromarray(image[: 256, : 320]).save(photos / f"{name}.png")
    started = not ray.is_initialized()  # an earlier module's in-process job may have left one up
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = base / "out"
        assert audit.main(["--input", str(photos), "--output", str(out), "--codecs", "oscar-tiny,jpeg,webp",
                           "--metrics", "psnr,ms_ssim", "--quiet"]) == 0  # the perceptual ones: test_perceptual_metrics
    finally:
        if started:
            ray.shutdown()
    return out


def test_metrics_hold_sweeps_and_matched_rows_and_unreached_rows_are_null(audit_out):
    from pipeline.tables.delta import read_delta

    rows = read_delta(str(audit_out), "metrics").to_pylist()
    modes = {(r["codec"], r["mode"]) for r in rows}
    assert modes == {("oscar-tiny", "sweep"), ("jpeg", "sweep"), ("jpeg", "matched"), ("webp", "sweep"), ("webp", "matched")}
    sweeps = [r for r in rows if r["codec"] == "jpeg" and r["mode"] == "sweep"]
    assert len(sweeps) == 4 * 12 and all(r["reached"] and r["rate_level"] is None for r in sweeps)
    unreached = [r for r in rows if r["reached"] is False]
    assert unreached, "at oscar-tiny's lowest levels JPEG cannot go as low"
    for r in unreached:
        assert r["mode"] == "matched" and "cannot reach" in r["setting"]
        assert all(r[k] is None for k in ("bpp", "psnr", "ms_ssim", "lpips", "dists", "n_bytes"))
    for r in rows:
        if r["mode"] == "matched" and r["reached"]:
            oscar = next(o for o in rows if o["codec"] == "oscar-tiny" and o["image_id"] == r["image_id"]
                         and o["rate_level"] == r["rate_level"])
            assert r["bpp"] <= oscar["bpp"] + 1e-9


def test_bd_rates_agree_with_the_bjontegaard_package_on_the_tables_mean_curves(audit_out):
    """Recomputed here from the metrics table with DuckDB and bjontegaard.bd_rate(method="pchip")."""
    import bjontegaard
    import duckdb
    from deltalake import DeltaTable

    metrics = DeltaTable(str(audit_out / "metrics")).to_pyarrow_dataset()  # noqa: F841 (DuckDB finds it by name)
    means = duckdb.sql("SELECT codec, setting, avg(bpp), avg(psnr), avg(ms_ssim) FROM metrics "
                       "WHERE mode = 'sweep' AND reached GROUP BY 1, 2").fetchall()
    summary = json.loads((audit_out / "summary.json").read_text())
    # The streamed means (Arrow batches, pipeline.report.stats) are DuckDB's GROUP BY.
    streamed = {(e["codec"], e["setting"]): e for e in summary["summary"] if e["mode"] == "sweep"}
    assert len(streamed) == len(means) == 7 + 2 * 12
    for codec, setting, bpp, psnr, ms_ssim in means:
        e = streamed[(codec, setting)]
        assert (e["bpp"], e["psnr"], e["ms_ssim"]) == pytest.approx((bpp, psnr, ms_ssim), abs=1e-5), (codec, setting)
    assert summary["images"] == duckdb.sql("SELECT count(DISTINCT image_id) FROM metrics").fetchall()[0][0] == 4
    checked = 0
    for codec in ("jpeg", "webp"):
        for i, metric in ((3, "psnr"), (4, "ms_ssim")):
            def pts(name, i=i):
                xs, qs = [], []
                for row in sorted((r for r in means if r[0] == name), key=lambda r: r[2]):
                    if not qs or row[i] > qs[-1]:  # the monotone envelope pchip needs
                        xs.append(row[2])
                        qs.append(row[i])
                return xs, qs

            (ax, aq), (tx, tq) = pts(codec), pts("oscar-tiny")
            reported = summary["bd_rate"][codec][metric]
            if min(aq[-1], tq[-1]) <= max(aq[0], tq[0]):
                assert reported is None
                continue
            expected = bjontegaard.bd_rate(ax, aq, tx, tq, method="pchip", require_matching_points=False, min_overlap=0)
            assert reported == pytest.approx(expected, abs=1.0), (codec, metric)
            assert math.isfinite(reported)
            checked += 1
    assert checked >= 2


def test_report_shows_bd_rates_and_crops_and_report_only_rebuilds_it(audit_out):
    from deltalake import DeltaTable

    from jobs import audit

    page = (audit_out / "report.html").read_text()
    assert "BD-rate" in page and "bjontegaard" in page
    assert page.count('class="crop"') >= 2
    assert "Quality per level" in page and "MS-SSIM" in page
    per_image = DeltaTable(str(audit_out / "bd_rates")).to_pyarrow_table().to_pylist()
    assert {p["codec"] for p in per_image} == {"jpeg", "webp"} and len({p["image_id"] for p in per_image}) == 4

    version = DeltaTable(str(audit_out / "metrics")).version()
    before = json.loads((audit_out / "summary.json").read_text())
    (audit_out / "report.html").unlink()
    (audit_out / "summary.json").unlink()
    assert audit.main(["--report-only", "--output", str(audit_out)]) == 0
    assert (audit_out / "report.html").read_text().count('class="crop"') >= 2
    assert json.loads((audit_out / "summary.json").read_text())["bd_rate"] == before["bd_rate"]
    assert DeltaTable(str(audit_out / "metrics")).version() == version  # nothing encoded, nothing committed


def test_report_only_refuses_another_models_output(audit_out, tiny_model_dir, capsys):
    from jobs import audit

    assert audit.main(["--report-only", "--output", str(audit_out), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model id" in err[0]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(audit_out, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,2400",
                    f"--screenshot={shot}", (audit_out / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert pixels.shape[:2] == (2400, 1280)
    # Rendered, not blank: the plots and the crops put colour on much of the page.
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 40
    assert coloured.mean() > 0.05


def test_an_audit_holds_no_json_text(audit_out):
    from conftest import json_text_cells

    assert json_text_cells(audit_out) == {}
