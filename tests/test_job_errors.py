"""What an operator meets first: one-line errors with exit code 2 (never a traceback), a dead
cluster address that fails fast, and the listing's odd entries as error rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_job(args: list[str], env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(run: subprocess.CompletedProcess, job: str) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{job}: error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(folder / "good.png")
    return folder


@pytest.mark.parametrize("args, expected", [
    (["--input", "/nonexistent/photos"], "input /nonexistent/photos does not exist"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--rates", "abc"], "--rates 'abc': 'abc' is neither a bpp"),
    (["--rates", "5.0"], "5 bpp is beyond this model's ladder"),
    (["--tile", "0"], "--tile '0': expected auto, off or a tile side"),
    (["--target", "ssim>=0.9"], "METRIC>=VALUE"),
])
def test_job_mistakes_are_one_line_and_exit_2(photos, tmp_path, args, expected):
    base = ["--input", str(photos), "--output", str(tmp_path / "out"), "--quiet"]
    base += [] if "--target" in args else ["--no-verify"]
    line = one_line_error(run_job(["jobs.archive", *base, *args]), "archive")
    assert expected in line
    if "5.0" in args:
        assert "L0 " in line and "L6 " in line  # the ladder is printed


def test_a_dead_cluster_address_fails_fast_in_one_line(photos, tmp_path):
    t0 = time.time()
    run = run_job(["jobs.archive", "--input", str(photos), "--output", str(tmp_path / "out"), "--no-verify", "--quiet"],
                  env={"RAY_ADDRESS": "127.0.0.1:1"})
    assert time.time() - t0 < 90
    line = one_line_error(run, "archive")
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line and "--ray-address local" in line


def test_odd_entries_beside_good_photos(tmp_path, tiny_model_dir):
    """A name holding a newline is encoded; a folder named like an image and a FIFO are error rows."""
    from pipeline.tables.delta import read_delta

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("plain.png", "new\nline.png"):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(folder / name)
    (folder / "dir-like.jpg").mkdir()
    os.mkfifo(folder / "pipe.jpg")
    out = tmp_path / "out"
    run = run_job(["jobs.archive", "--input", str(folder), "--output", str(out), "--rates", "L0", "--no-verify",
                   "--model", str(tiny_model_dir), "--quiet"], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    bits = read_delta(str(out), "bitstreams").column("source_uri").to_pylist()
    errors = {Path(e["source_uri"]).name: e for e in read_delta(str(out), "errors").to_pylist()}
    assert sorted(Path(b).name for b in bits) == ["new\nline.png", "plain.png"]
    assert set(errors) == {"dir-like.jpg", "pipe.jpg"}
    assert "not a regular file" in errors["dir-like.jpg"]["message"]
    assert " at 0x" not in " ".join(e["message"] for e in errors.values())


def test_a_bomb_is_refused_in_one_line_without_pillows_warning(tmp_path, tiny_model_dir):
    """100 Mpx is over Pillow's warning threshold (89 Mpx) and our 50 Mpx cap: Pillow's
    DecompressionBombWarning once printed two stray lines before the refusal."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)
    run = run_job(["oscar_model.cli", "encode", str(bomb), "--model", str(tiny_model_dir)])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("oscar encode: error:"), run.stderr
    assert "over the limit" in lines[0]


def test_bad_requests_are_refused_before_any_work(photos, tmp_path):
    """An output that is a file or lies under one, an impossible target and an empty input end
    in one line and exit 2, before a model or Ray is started (well under the 20 s a run would take)."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--input", str(photos), "--output", str(tmp_path / "a-file")], "is a file"),
        (["--input", str(photos), "--output", str(tmp_path / "a-file" / "under")], "which is a file"),
        (["--input", str(photos), "--output", str(tmp_path / "o1"), "--target", "ms_ssim>=1.5"], "between 0 and 1"),
        (["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o2")], "no images found in"),
    ]
    for args, says in cases:
        t0 = time.time()
        line = one_line_error(run_job(["jobs.archive", *args, "--quiet"]), "archive")
        assert says in line and time.time() - t0 < 20, line
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()  # nothing was written


def test_an_empty_input_may_be_allowed(tmp_path):
    from jobs import archive

    (tmp_path / "empty").mkdir()
    assert archive.main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"), "--allow-empty",
                         "--quiet"]) == 0


def test_the_oscar_command_checks_its_files_before_it_imports_torch(tmp_path):
    code = ("import sys; from oscar_model.cli import main; rc = main(['encode', 'nope.png']); "
            "assert rc == 2, rc; assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip() == "oscar encode: error: nope.png: no such file"


def test_the_progress_bar_moves_image_by_image_in_a_job_of_one_unit(tmp_path, tiny_model_dir):
    """8 photos are one work unit: the bar counts images as the actors finish them, so it shows
    counts between 0 and 8 rather than jumping from 0 to 8 at the end (the bar is polled twice a
    second, so the test slows each actor call to a second; the real model takes about that)."""
    import re

    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    done = run_job(["jobs.archive", "--input", str(folder), "--output", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                    "--rates", "L0", "--no-verify"], timeout=300,
                   env={"OSCAR_FAULT": "sleep:encode:1"})  # each actor call takes a second: the bar can be read
    assert done.returncode == 0, done.stderr[-2000:]
    counts = {int(n) for n in re.findall(r"\b(\d+)/8 \[", done.stderr)}
    assert len(counts - {0, 8}) >= 3, sorted(counts)
    assert "8 images ok, 0 failed" in done.stdout
    # A clean run logs no Ray error-level line (glog's "[date time E pid tid]"): the actor pools'
    # "constructor arguments in the object store" line came from restartable actors.
    assert not re.search(r"^\[[^\]]* E \d+ \d+\]", done.stderr, re.MULTILINE), done.stderr[-2000:]


def test_the_summary_says_what_was_written_and_only_that(capsys):
    """An archive's summary gives its bytes and each level; a redecode, which writes no stream,
    prints neither line (it used to say "streams written: 0 bytes" and "per level: -")."""
    from jobs.common import print_summary

    base = {"images_ok": 2, "images_failed": 0, "units_done": 1, "wall_seconds": 1.0}
    print_summary("archive", "out", {**base, "bitstream_bytes": 1234, "mean_bpp_per_level": {0: 0.01},
                                     "mean_quality_per_level": {0: {"psnr": 21.5}}})
    archive = capsys.readouterr().out
    assert "streams written: 1,234 bytes" in archive and "L0 0.0100 bpp, 21.50 dB" in archive
    print_summary("redecode", "out", {**base, "bitstream_bytes": 0, "mean_bpp_per_level": {}})
    redecode = capsys.readouterr().out
    assert "streams written" not in redecode and "per level" not in redecode
    assert redecode.startswith("redecode: 2 images ok, 0 failed; 1 work units done")
