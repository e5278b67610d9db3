"""Archiving at a quality target: each image at the cheapest level whose decode meets it, checked
against a full-ladder archive of the same photos; the saving against the best fixed level;
redecode keeping each image's chosen level."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pipeline.stages.target import QualityTarget, cheapest_meeting

TARGET = 0.88


def test_targets_parse_and_refuse_the_wrong_direction_in_one_line():
    assert str(QualityTarget.parse("ms_ssim>=0.9")) == "ms_ssim>=0.9"
    assert QualityTarget.parse(" psnr >= 30 ").met(30.0) and not QualityTarget.parse("psnr>=30").met(29.99)
    assert QualityTarget.parse("lpips<=0.2").met(0.1) and not QualityTarget.parse("lpips<=0.2").met(float("nan"))
    with pytest.raises(ValueError, match="better when higher; write ms_ssim>=0.9"):
        QualityTarget.parse("ms_ssim<=0.9")
    with pytest.raises(ValueError, match="METRIC>=VALUE"):
        QualityTarget.parse("ssim>=0.9")


@pytest.mark.parametrize("first", [0, 1, 3, 6, None])
def test_bisection_finds_the_first_level_that_meets_with_few_decodes(first):
    levels = list(range(7))
    quality = {lv: 0.80 + 0.02 * lv for lv in levels}
    threshold = 0.99 if first is None else quality[first] - 1e-9
    calls = []

    def measure(level):
        calls.append(level)
        return quality[level]

    chosen, met = cheapest_meeting(levels, measure, QualityTarget("ms_ssim", threshold))
    assert (chosen, met) == ((6, False) if first is None else (first, True))
    assert len(calls) <= 3 and len(set(calls)) == len(calls)  # ceil(log2(7)) decodes, none twice
    if met and chosen > 0:
        assert chosen - 1 in calls  # the level below was measured, and failed


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Six photos (in neither Kodak nor BSDS500), archived at ms_ssim>=0.88 and at the full ladder."""
    import ray
    from skimage import data

    from jobs import archive

    base = tmp_path_factory.mktemp("target")
    photos = base / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        Image.fromarray(getattr(data, name)()[:192, :256]).save(photos / f"{name}.png")
    started = not ray.is_initialized()  # an earlier module's in-process job may have left one up
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = {k: base / k for k in ("target", "full", "keep")}
        assert archive.main(["--input", str(photos), "--output", str(out["target"]), "--target", f"ms_ssim>={TARGET}",
                             "--quiet"]) == 0
        assert archive.main(["--input", str(photos), "--output", str(out["full"]), "--quiet"]) == 0
        assert archive.main(["--input", str(photos), "--output", str(out["keep"]), "--target", f"ms_ssim>={TARGET}",
                             "--keep-all", "--quiet"]) == 0
        yield out
    finally:
        if started:
            ray.shutdown()


def test_each_image_keeps_the_cheapest_level_that_meets_the_target(archives):
    from pipeline.tables.delta import read_delta

    bits = read_delta(str(archives["target"]), "bitstreams").to_pylist()
    assert len(bits) == 6 and len({b["image_id"] for b in bits}) == 6  # one stream per image
    metrics = read_delta(str(archives["target"]), "metrics").to_pylist()
    full = read_delta(str(archives["full"]), "metrics").to_pylist()
    for b in bits:
        assert b["target"] == f"ms_ssim>={TARGET}" and b["chosen"] is True
        kept = next(m for m in metrics if m["image_id"] == b["image_id"] and m["mode"] == "target")
        assert kept["rate_level"] == b["rate_level"] and kept["n_bytes"] == b["n_bytes"]
        ladder = {m["rate_level"]: m["ms_ssim"] for m in full if m["image_id"] == b["image_id"]}
        if b["target_met"]:
            assert kept["ms_ssim"] >= TARGET
            assert kept["ms_ssim"] == pytest.approx(ladder[b["rate_level"]], abs=1e-5)  # same stream (batched decode: 1e-7 apart)
        else:
            assert b["rate_level"] == max(ladder)
        lower = [lv for lv, v in ladder.items() if lv < b["rate_level"] and v >= TARGET]
        assert lower == [], (b["source_uri"], b["rate_level"], ladder)
    probes = [m for m in metrics if m["mode"] == "probe"]
    assert all(m["n_bytes"] for m in probes)  # every level's size, decoded or not
    assert {m["rate_level"] for m in metrics if m["image_id"] == bits[0]["image_id"]} == set(range(7))


def test_the_summary_reports_the_share_the_bytes_and_the_saving(archives):
    from pipeline.tables.delta import read_delta

    t = json.loads((archives["target"] / "run_manifest.json").read_text())["counts"]["target"]
    bits = read_delta(str(archives["target"]), "bitstreams").to_pylist()
    assert t["images"] == 6 and t["met"] == sum(b["target_met"] for b in bits)
    assert t["bytes"] == sum(b["n_bytes"] for b in bits)
    assert 1 <= t["decodes_per_image"] <= 4
    # Recomputed from the full ladder: the cheapest fixed level meeting the target on as many images.
    full = read_delta(str(archives["full"]), "metrics").to_pylist()
    for level in range(7):
        at = [m for m in full if m["rate_level"] == level]
        if sum(m["ms_ssim"] >= TARGET for m in at) >= t["met"]:
            assert t["fixed_level"] == {"level": level, "bytes": sum(m["n_bytes"] for m in at)}
            break
    assert t["saving"] == pytest.approx(1 - t["bytes"] / t["fixed_level"]["bytes"], abs=1e-4)


def test_keep_all_marks_the_chosen_stream_and_redecode_keeps_it(archives, tmp_path):
    import ray

    from jobs import redecode
    from pipeline.tables.delta import read_delta

    keep = read_delta(str(archives["keep"]), "bitstreams").to_pylist()
    assert len(keep) == 6 * 7 and sum(b["chosen"] for b in keep) == 6
    chosen = {(b["image_id"], b["rate_level"]) for b in keep if b["chosen"]}
    assert ray.is_initialized()  # the fixture's local Ray
    out = tmp_path / "redecoded"
    assert redecode.main(["--archive", str(archives["keep"]), "--output", str(out), "--images", "--quiet"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 6
    rows = read_delta(str(out), "metrics").to_pylist()
    assert {(m["image_id"], m["rate_level"]) for m in rows} == chosen
    trans = tmp_path / "transcoded"  # --rates: re-encoded from each image's chosen level, not the top one
    assert redecode.main(["--archive", str(archives["target"]), "--output", str(trans), "--rates", "L0", "--quiet"]) == 0
    refs = {m["image_id"]: m["reference"] for m in read_delta(str(trans), "metrics").to_pylist()}
    assert refs == {i: f"archive level {lv}" for i, lv in chosen}


def test_target_flags_refuse_what_cannot_work(capsys):
    from jobs import archive

    for argv, expected in [(["--target", "ms_ssim<=0.9"], "better when higher"), (["--keep-all"], "go with --target"),
                           (["--target", "ms_ssim>=0.9", "--no-verify"], "drop --no-verify")]:
        assert archive.main(["--output", "/tmp/never-written", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_the_report_of_a_target_archive_shows_the_chosen_levels(archives):
    from jobs import audit

    assert audit.main(["--report-only", "--output", str(archives["target"])]) == 0
    page = (archives["target"] / "report.html").read_text()
    assert "Quality target ms_ssim&gt;=0.88" in page and 'alt="chosen levels"' in page


def test_an_archive_at_a_target_holds_no_json_text(archives):
    from conftest import json_text_cells

    for output in archives.values():
        assert json_text_cells(output) == {}
