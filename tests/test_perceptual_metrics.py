"""The audit's offline perceptual metrics and its new baselines, checked against independent code.

* SSIMULACRA2 (ours, in torch) against the PyPI ``ssimulacra2`` package, a separate numpy
  implementation, on Kodak crops under JPEG, WebP and AVIF.
* FLIP and Butteraugli are the upstream implementations (NVIDIA's package, libjxl's tool): what
  is tested is that we call them right (identical images score perfect, worse files score worse).
* JPEG XL and the downscaled baselines: real files, bpp over the full-size pixels, full-size decodes.
* The audit end to end (the issue's command on three Kodak crops), and an archive at an
  SSIMULACRA2 target.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oscar_model.ssimulacra2 import ssimulacra2
from pipeline.stages.classic import decode_classic, encode_classic, match_bpp, parse_codec
from pipeline.stages.metrics import butteraugli, chosen_metrics, flip_error, quality_of
from pipeline.stages.target import QualityTarget

KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"


def kodak_crop(name: str, box: tuple[int, int, int, int] = (128, 128, 384, 320)) -> np.ndarray:
    if not (KODAK / f"{name}.png").exists():
        pytest.skip(f"{KODAK} is not beside the checkout")
    return np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB").crop(box))


def roundtrip(image: np.ndarray, fmt: str, quality: int, **kwargs) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=quality, **kwargs)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def reference_ssimulacra2(original: np.ndarray, distorted: np.ndarray, tmp_path: Path) -> float:
    """The PyPI package, as its users run it: on two PNG files."""
    from ssimulacra2 import compute_ssimulacra2

    a, b = tmp_path / "original.png", tmp_path / "distorted.png"
    Image.fromarray(original).save(a)
    Image.fromarray(distorted).save(b)
    return float(compute_ssimulacra2(str(a), str(b)))


@pytest.mark.parametrize(("name", "fmt", "quality"), [("kodim23", "JPEG", 8), ("kodim23", "WEBP", 20),
                                                      ("kodim13", "JPEG", 60), ("kodim05", "AVIF", 30)])
def test_ssimulacra2_agrees_with_the_independent_package(name, fmt, quality, tmp_path):
    original = kodak_crop(name)
    distorted = roundtrip(original, fmt, quality)
    ours = ssimulacra2(original, distorted)
    assert ours == pytest.approx(reference_ssimulacra2(original, distorted, tmp_path), abs=0.05)
    assert ssimulacra2(original, original) == pytest.approx(100.0, abs=1e-6)


def test_ssimulacra2_handles_small_and_odd_images(tmp_path):
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    distorted = np.clip(original.astype(int) + rng.integers(-20, 21, original.shape), 0, 255).astype(np.uint8)
    assert ssimulacra2(original, distorted) == pytest.approx(reference_ssimulacra2(original, distorted, tmp_path), abs=0.05)


def test_ssimulacra2_is_a_loss_training_can_descend():
    """The batched, differentiable form: one image's score does not depend on its batch-mates, and
    a gradient step on a distorted image raises its score."""
    import torch

    from oscar_model.ssimulacra2 import score_of, weighted_error

    original = kodak_crop("kodim23", (200, 200, 296, 296))
    distorted = roundtrip(original, "JPEG", 10)
    a = torch.from_numpy(np.stack([original, original])).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.stack([distorted, original])).permute(0, 3, 1, 2).float() / 255
    scores = score_of(weighted_error(a, b))
    assert float(scores[0]) == pytest.approx(ssimulacra2(original, distorted), abs=1e-3)
    assert float(scores[1]) == pytest.approx(100.0, abs=1e-4)
    x = b[:1].clone().requires_grad_(True)
    weighted_error(a[:1], x).sum().backward()
    assert torch.isfinite(x.grad).all()
    stepped = (x - 2e-3 * x.grad.sign()).clamp(0, 1).detach()
    assert float(score_of(weighted_error(a[:1], stepped))[0]) > float(scores[0])


def test_flip_and_butteraugli_score_identical_images_perfect_and_worse_files_worse():
    original = kodak_crop("kodim23")
    good, bad = roundtrip(original, "JPEG", 85), roundtrip(original, "JPEG", 5)
    assert flip_error(original, original) == 0.0
    assert 0 < flip_error(original, good) < flip_error(original, bad) < 1
    if shutil.which("butteraugli_main") is None:
        assert butteraugli(original, bad) is None  # absent: null, never a made-up number
        return
    assert butteraugli(original, original) == pytest.approx(0.0, abs=1e-3)
    assert 0 < butteraugli(original, good) < 1.5 < butteraugli(original, bad)


def test_metrics_are_chosen_by_name_and_refused_in_one_line():
    assert chosen_metrics(("psnr",), ("ssimulacra2",)) == ("psnr", "ssimulacra2")
    assert {"psnr", "ms_ssim", "ssimulacra2", "flip"} <= set(chosen_metrics(None))
    with pytest.raises(ValueError, match="unknown metrics \\['vmaf'\\]"):
        chosen_metrics(("psnr", "vmaf"))
    original = kodak_crop("kodim23")
    measured = quality_of(original, roundtrip(original, "JPEG", 30), ("psnr", "ssimulacra2"))
    assert measured["ssimulacra2"] is not None and measured["flip"] is None and measured["ms_ssim"] is None
    assert QualityTarget.parse("ssimulacra2>=-10").met(-5.0)
    assert QualityTarget.parse("flip<=0.1").met(0.05)
    with pytest.raises(ValueError, match="write flip<=0.1"):
        QualityTarget.parse("flip>=0.1")
    with pytest.raises(ValueError, match="up to 100"):
        QualityTarget.parse("ssimulacra2>=120")


def test_jpeg_xl_writes_real_files_and_downscaled_codecs_count_full_size_pixels():
    original = kodak_crop("kodim23")
    h, w = original.shape[:2]
    jxl = encode_classic(original, "jxl", 30)
    assert jxl[:2] == b"\xff\x0a" or jxl[4:12] == b"JXL \r\n\x87\n"  # a bare codestream or the ISO container
    assert decode_classic(jxl).shape == original.shape
    assert parse_codec("avif@1/4") == ("avif", 4)
    for bad in ("avif@1/1", "avif@2/3", "bpg", "jpeg@1/99"):
        with pytest.raises(ValueError):
            parse_codec(bad)
    quarter = encode_classic(original, "avif@1/4", 50)
    assert Image.open(io.BytesIO(quarter)).size == (round(w / 4), round(h / 4))
    assert decode_classic(quarter, (w, h)).shape == original.shape
    floor = match_bpp(original, "avif", 0.0)  # AVIF's lowest quality at full size
    below = 0.5 * floor.bpp
    assert not match_bpp(original, "avif", below).reached
    reached = match_bpp(original, "avif@1/4", below)
    assert reached.reached and reached.bpp == pytest.approx(8 * len(reached.data) / (h * w))


@pytest.fixture(scope="module")
def audit_of_three_crops(tmp_path_factory):
    """The issue's command: oscar-tiny, JPEG, AVIF, JPEG XL and half-size AVIF at L1, L3, L5 on 3 Kodak crops."""
    import ray

    from jobs import audit

    base = tmp_path_factory.mktemp("perceptual")
    photos = base / "photos"
    photos.mkdir()
    for name in ("kodim23", "kodim13", "kodim05"):
        Image.fromarray(kodak_crop(name, (176, 128, 304, 224))).save(photos / f"{name}.png")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = base / "audit"
        assert audit.main(["--input", str(photos), "--output", str(out), "--codecs",
                           "oscar-tiny,jpeg,avif,jxl,avif@1/2", "--rates", "L1,L3,L5",
                           "--metrics", "psnr,ms_ssim,ssimulacra2,flip", "--quiet"]) == 0  # Butteraugli: tested above
        yield photos, out
    finally:
        if started:
            ray.shutdown()


def test_the_audit_measures_jpeg_xl_and_half_size_avif_on_every_metric(audit_of_three_crops):
    from deltalake import DeltaTable

    _, out = audit_of_three_crops
    rows = DeltaTable(str(out / "metrics")).to_pyarrow_table().to_pylist()
    codecs = {r["codec"] for r in rows}
    assert {"oscar-tiny", "jpeg", "avif", "jxl", "avif@1/2"} <= codecs
    measured = [r for r in rows if r["reached"] is not False]
    assert {r["codec"] for r in measured} == codecs
    for r in measured:
        assert np.isfinite(r["ssimulacra2"]) and np.isfinite(r["flip"]), r
    summary = json.loads((out / "summary.json").read_text())
    assert any(e.get("ssimulacra2") is not None for e in summary["bd_rate"].values())
    assert all("overlap" not in e and "ssimulacra2" in e["overlaps"] for e in summary["bd_rate"].values())
    assert summary["verdict"].startswith("oscar-tiny is the best codec in")
    page = (out / "report.html").read_text()
    assert "JPEG XL" in page and "AVIF at 1/2 size" in page and "Who wins where" in page


def test_the_audits_ssimulacra2_matches_the_package_on_a_re_encode(audit_of_three_crops, tmp_path):
    """JPEG sweep rows: the package, run on its own files from a fresh encode of the same setting."""
    from deltalake import DeltaTable

    photos, out = audit_of_three_crops
    rows = [r for r in DeltaTable(str(out / "metrics")).to_pyarrow_table().to_pylist()
            if r["codec"] == "jpeg" and r["mode"] == "sweep"]
    checked = 0
    for r in rows[:: max(1, len(rows) // 6)]:
        original = np.asarray(Image.open(Path(r["source_uri"])).convert("RGB"))
        quality = int(r["setting"].split()[1])
        distorted = roundtrip(original, "JPEG", quality, subsampling=2, optimize=True)
        assert r["ssimulacra2"] == pytest.approx(reference_ssimulacra2(original, distorted, tmp_path), abs=1.0)
        checked += 1
    assert checked >= 5


def test_an_archive_can_target_ssimulacra2(audit_of_three_crops, tmp_path):
    from deltalake import DeltaTable

    from jobs import archive

    photos, _ = audit_of_three_crops
    out = tmp_path / "archive"
    assert archive.main(["--input", str(photos), "--output", str(out), "--target", "ssimulacra2>=50",
                         "--metrics", "psnr", "--quiet"]) == 0
    kept = DeltaTable(str(out / "bitstreams")).to_pyarrow_table().to_pylist()
    probes = DeltaTable(str(out / "metrics")).to_pyarrow_table().to_pylist()
    assert len(kept) == 3 and all(k["target"] == "ssimulacra2>=50" for k in kept)
    for k in kept:
        chosen = next(p for p in probes if p["image_id"] == k["image_id"] and p["mode"] == "target")
        assert chosen["rate_level"] == k["rate_level"]
        assert (chosen["ssimulacra2"] >= 50) == k["target_met"]


def test_who_wins_where_reads_each_curve_only_where_it_reaches():
    from pipeline.report.verdict import band_winners, quality_at, verdict

    curves = {"m": [{"bpp": 0.02, "ssimulacra2": 10.0}, {"bpp": 0.1, "ssimulacra2": 40.0}],
              "avif@1/2": [{"bpp": 0.08, "ssimulacra2": 50.0}, {"bpp": 0.3, "ssimulacra2": 70.0}]}
    assert quality_at(curves["m"], "ssimulacra2", 0.0447) == pytest.approx(25.0, abs=0.01)  # half-way in log bpp
    assert quality_at(curves["m"], "ssimulacra2", 0.2) is None  # beyond its top setting: no value, never a guess
    cells = {w["band"]: w for w in band_winners(curves)}
    assert cells["< 0.05 bpp"]["best"] == "m" and cells["< 0.05 bpp"]["runner_up"] is None
    assert cells["0.05-0.15 bpp"]["best"] == "avif@1/2" and cells["0.05-0.15 bpp"]["runner_up"] == "m"
    assert cells["> 0.15 bpp"]["unreached"] == ["m"]
    bd = {"avif@1/2": {"ssimulacra2": 42.0, "overlap_fraction": {"ssimulacra2": 0.5}}}
    sentence = verdict(band_winners(curves), bd, "m")
    assert "only codec that reaches < 0.05 bpp" in sentence and "to AVIF at 1/2 size" in sentence
    assert "does not reach > 0.15 bpp" in sentence and "+42.0%" in sentence
