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
