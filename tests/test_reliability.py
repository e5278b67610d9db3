"""Nothing lost, nothing twice: an actor killed mid-job, a write task killed after its files,
the driver SIGKILLed between two commits and killed in the middle of one, each then rerun.
Faults come from pipeline/faults.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RATES = "L0,L5"


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_photos(tmp_path)


def make_photos(tmp_path: Path) -> Path:
    """Ten distinct small photos and one broken file."""
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(10):
        crop = sources[i % 4][20 * i : 20 * i + 64, 30 * i : 30 * i + 96]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"p{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def inputs(folder: Path) -> set[str]:
    return {str(p) for p in folder.iterdir()}


def check_exactly_once(out: Path, folder: Path, levels: int = 2) -> None:
    """Every input is in the output once: one bitstream row per rate, or one error row; every work
    unit committed once."""
    from pipeline.tables.delta import read_delta

    bits = read_delta(str(out), "bitstreams").to_pylist()
    errors = read_delta(str(out), "errors").to_pylist()
    keys = [(r["source_uri"], r["rate_level"]) for r in bits]
    assert len(keys) == len(set(keys)), "duplicate bitstream rows"
    assert len(errors) == len({e["source_uri"] for e in errors}), "duplicate error rows"
    ok = {u for u, _ in keys}
    assert ok | {e["source_uri"] for e in errors} == inputs(folder) and not ok & {e["source_uri"] for e in errors}
    assert all(sum(1 for u, _ in keys if u == uri) == levels for uri in ok)
    units = read_delta(str(out), "work_units").column("unit_id").to_pylist()
    assert len(units) == len(set(units)), "a work unit committed twice"


def committed_units(out: Path) -> int:
    from pipeline.tables.delta import read_delta

    return read_delta(str(out), "work_units").num_rows


def archive_cmd(folder: Path, out: Path, model: Path) -> list[str]:
    """Small units and windows, so a job of a dozen photos makes several commits."""
    return [sys.executable, "-m", "jobs.archive", "--input", str(folder), "--output", str(out), "--rates", RATES,
            "--model", str(model), "--actors", "2", "--batch-size", "2", "--no-verify", "--quiet",
            "--group-size", "2", "--commit-units", "1", "--rows-per-file", "4"]


def run_archive(folder: Path, out: Path, model: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The job in its own process (its own local Ray), as a user runs it."""
    return subprocess.run(archive_cmd(folder, out, model), cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, tiny_model_dir):
    """One archive job over ten photos and the bad-input corpus (tests/bad_inputs.py), during which
    an encode actor is killed on its second batch and a sink task after writing its parts but
    before its marker. Returns (input folder, output folder, crash markers, expectations)."""
    from tests.bad_inputs import write_corpus

    base = tmp_path_factory.mktemp("faulty")
    folder = make_photos(base)
    expectations = write_corpus(folder)
    markers = (base / "actor-crashed", base / "write-crashed")
    out = base / "out"
    run = run_archive(folder, out, tiny_model_dir,
                      {"OSCAR_FAULT": f"crash:encode:2:{markers[0]},crash:write:1:{markers[1]}"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "a worker died" in run.stderr  # the job took its run up again, and said so
    return folder, out, markers, expectations


def test_bad_inputs_and_killed_workers_lose_nothing_and_duplicate_nothing(faulty_run):
    from pipeline.tables.delta import read_delta as read_table

    folder, out, markers, expectations = faulty_run
    assert all(m.exists() for m in markers)  # an encode actor and a sink task really died mid-job
    check_exactly_once(out, folder)
    # The summary counts each image once, though the units caught half-way by the crash were redone.
    counts = json.loads((out / "run_manifest.json").read_text())["counts"]
    bits = read_table(str(out), "bitstreams").to_pylist()
    assert counts["images_ok"] == len({b["source_uri"] for b in bits})
    assert counts["images_failed"] == read_table(str(out), "errors").num_rows
    assert counts["bitstream_bytes"] == sum(b["n_bytes"] for b in bits)
    errors = {Path(e["source_uri"]).name: e for e in read_table(str(out), "errors").to_pylist()}
    sizes = {Path(b["source_uri"]).name: (b["width"], b["height"]) for b in read_table(str(out), "bitstreams").to_pylist()}
    for name, (kind, what) in expectations.items():
        if kind == "ok":
            assert sizes.get(name) == what, name
        else:
            assert name in errors and what in errors[name]["message"], (name, errors.get(name))
            assert errors[name]["stage"] == "read"


def test_files_of_a_killed_write_task_are_invisible_and_vacuumed(faulty_run, tmp_path):
    import shutil

    from pipeline.tables.delta import read_delta
    from pipeline.tables.maintain import maintain

    _, first, _, _ = faulty_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    on_disk = {p.name for table in ("bitstreams", "metrics", "errors") for p in (out / table).glob("*.parquet")}
    from deltalake import DeltaTable

    committed = {Path(f).name for t in ("bitstreams", "metrics", "errors") for f in DeltaTable(str(out / t)).file_uris()}
    orphans = on_disk - committed
    assert orphans, "the killed write task's files should be on disk"  # written, then the task died
    rows = {t: read_delta(str(out), t).num_rows for t in ("bitstreams", "errors")}
    report = maintain(str(out), retention_hours=0, compact=False)
    assert sum(report[t]["vacuumed"] for t in ("bitstreams", "metrics", "errors")) == len(orphans)
    left = {p.name for table in ("bitstreams", "metrics", "errors") for p in (out / table).glob("*.parquet")}
    assert left == committed
    assert {t: read_delta(str(out), t).num_rows for t in ("bitstreams", "errors")} == rows


def test_a_sigkilled_driver_then_the_same_command_again_completes_exactly_once(photos, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    from pipeline.inputs.units import plan_units

    total = len(plan_units(str(photos), group_size=2))
    env = {**os.environ, "OSCAR_FAULT": "sleep:encode:1,sleep:write:2"}  # slow enough to be killed mid-run
    job = subprocess.Popen(archive_cmd(photos, out, tiny_model_dir), cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    first_commit = out / "work_units" / "_delta_log" / f"{1:020d}.json"
    while time.time() < deadline and not first_commit.exists():
        assert job.poll() is None, job.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and everything it started, no goodbyes
    job.wait()
    committed = committed_units(out)
    assert 0 < committed < total, f"the kill must land between two commits ({committed} of {total} units)"
    rerun = run_archive(photos, out, tiny_model_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_exactly_once(out, photos)
    again = run_archive(photos, out, tiny_model_dir)  # finished: nothing to do, no table changes
    assert again.returncode == 0 and "0 work units done" in again.stdout


def test_a_driver_killed_inside_a_commit_leaves_a_torn_window_the_rerun_deletes(photos, tmp_path, tiny_model_dir):

    out, marker = tmp_path / "out", tmp_path / "died-in-commit"
    crashed = run_archive(photos, out, tiny_model_dir, {"OSCAR_FAULT": f"crash:commit:2:{marker}"})
    assert crashed.returncode != 0 and marker.exists()  # results of window 2 committed, its work units not
    rerun = run_archive(photos, out, tiny_model_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((out / "run_manifest.json").read_text())["counts"]["rows_of_unfinished_units_deleted"] >= 1
    check_exactly_once(out, photos)
