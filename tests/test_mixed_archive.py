"""A mixed archive (``--codecs``): each image keeps the smallest file that meets the target,
whichever codec wrote it. Checked from outside the pipeline: every kept stream is decoded by
its own tool (the codec's API for OSCAR streams, plain Pillow for AVIF and JPEG XL files) and
measured again; the redecode job and ``oscar decode`` read the mixed archive too."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.stages.metrics import ms_ssim_rgb

KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"
PHOTOS = ("kodim01", "kodim05", "kodim13", "kodim14", "kodim20", "kodim23")
TARGET = 0.9


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    import ray

    from jobs import archive

    if not KODAK.exists():
        pytest.skip(f"{KODAK} is not beside the checkout")
    base = tmp_path_factory.mktemp("mixed")
    photos = base / "photos"
    photos.mkdir()
    for name in PHOTOS:
        Image.open(KODAK / f"{name}.png").convert("RGB").crop((224, 160, 416, 304)).save(photos / f"{name}.png")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = base / "archive"
        assert archive.main(["--input", str(photos), "--output", str(out), "--target", f"ms_ssim>={TARGET}",
                             "--codecs", "oscar-tiny,avif,jxl", "--metrics", "ms_ssim", "--quiet"]) == 0
        yield photos, out
    finally:
        if started:
            ray.shutdown()


def kept_streams(out: Path) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(out / "bitstreams")).to_pyarrow_table().to_pylist()


def test_each_image_keeps_one_stream_with_its_codec_named(mixed):
    _, out = mixed
    rows = kept_streams(out)
    assert len(rows) == len(PHOTOS) and len({r["image_id"] for r in rows}) == len(PHOTOS)
    for r in rows:
        assert r["chosen"] and r["codec"] in ("oscar-tiny", "avif", "jxl")
        if r["codec"] == "oscar-tiny":
            assert r["model_id"] and r["rate_level"] is not None and r["setting"] == f"level {r['rate_level']}"
        else:
            assert r["model_id"] is None and r["rate_level"] is None and r["setting"].startswith("quality ")


def test_every_kept_stream_decoded_by_its_own_tool_meets_the_target(mixed):
    import pillow_jxl  # noqa: F401  (JPEG XL for plain Pillow)

    from oscar_model.codec import OscarCodec

    photos, out = mixed
    codec = OscarCodec.from_pretrained("oscar-tiny")
    originals = {}
    for path in photos.iterdir():
        originals[str(path)] = np.asarray(Image.open(path).convert("RGB"))
    for r in kept_streams(out):
        original = originals[r["source_uri"].removeprefix("file://")]
        if r["codec"] == "oscar-tiny":
            (decoded,) = codec.decode([r["bitstream"]])
        else:
            decoded = np.asarray(Image.open(io.BytesIO(r["bitstream"])).convert("RGB"))
            assert Image.open(io.BytesIO(r["bitstream"])).format == {"avif": "AVIF", "jxl": "JXL"}[r["codec"]]
        if r["target_met"]:
            assert ms_ssim_rgb(original, decoded) >= TARGET - 0.002, r["codec"]


def test_the_mix_spends_fewer_bytes_than_oscar_alone_or_meets_more(mixed):
    _, out = mixed
    target = json.loads((out / "run_manifest.json").read_text())["counts"]["target"]
    mix = target["codecs"]
    alone = mix["alone"]["oscar-tiny"]
    assert target["bytes"] < alone["bytes"] or target["met"] > alone["met"]
    assert target["met"] >= max(e["met"] for e in mix["alone"].values())
    assert sum(mix["kept"].values()) == len(PHOTOS)
    assert mix["met_only_thanks_to_the_mix"] == target["met"] - alone["met"]


def test_redecode_writes_every_image_whatever_its_codec(mixed, tmp_path):
    from deltalake import DeltaTable

    from jobs import redecode

    _, out = mixed
    assert redecode.main(["--archive", str(out), "--output", str(tmp_path / "r"), "--images", "--quiet"]) == 0
    assert DeltaTable(str(tmp_path / "r" / "errors")).to_pyarrow_table().num_rows == 0
    pngs = sorted((tmp_path / "r" / "images").iterdir())
    assert len(pngs) == len(PHOTOS)
    rows = DeltaTable(str(tmp_path / "r" / "metrics")).to_pyarrow_table().to_pylist()
    assert {r["codec"] for r in rows} == {r["codec"] for r in kept_streams(out)}
    for png in pngs:
        assert Image.open(png).size == (192, 144)


def test_oscar_decode_reads_a_classical_file_without_loading_a_model(mixed, tmp_path, capsys):
    from oscar_model import cli

    _, out = mixed
    classical = [r for r in kept_streams(out) if r["codec"] != "oscar-tiny"]
    if not classical:
        pytest.skip("oscar-tiny won every image: no classical file to read")
    path = tmp_path / f"kept.{classical[0]['codec']}"
    path.write_bytes(classical[0]["bitstream"])
    assert cli.main(["decode", str(path), "-o", str(tmp_path / "kept.png")]) == 0
    assert "decoded by Pillow" in capsys.readouterr().out
    assert Image.open(tmp_path / "kept.png").size == (192, 144)


def test_codecs_without_a_target_or_without_the_model_are_refused(capsys):
    from jobs import archive

    for argv, message in ((["--codecs", "oscar-tiny,avif"], "go with --target"),
                          (["--target", "ms_ssim>=0.9", "--codecs", "avif,jxl"], "name the model too"),
                          (["--target", "ms_ssim>=0.9", "--codecs", "oscar-tiny,bpg"], "unknown ['bpg']")):
        assert archive.main(["--input", str(KODAK), "--output", "/tmp/never-written", *argv, "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_the_audit_report_reads_a_mixed_archive(mixed):
    from jobs import audit

    _, out = mixed
    assert audit.main(["--report-only", "--output", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "the mix</td>" in page and "oscar-tiny alone" in page
