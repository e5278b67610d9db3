"""Several Ray nodes on this machine (ray.cluster_utils.Cluster, as Ray's own tests do), a node
removed mid-job, and a job submitted through the Ray Jobs API to a `ray start --head` cluster.
Slow (a minute or more each): run with `python -m pytest -q -m slow tests/test_cluster.py`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_reliability import check_exactly_once, make_photos

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_photos(tmp_path)


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """A head (1 CPU) and two worker nodes (1 CPU each) on this machine; the trace hook on."""
    import ray
    from ray.cluster_utils import Cluster

    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("OSCAR_TRACE", str(trace))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=c.address, runtime_env={"env_vars": {"OSCAR_TRACE": str(trace)}}, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers, trace
    ray.shutdown()
    c.shutdown()


def _archive(photos: Path, out: Path, model: Path) -> dict:
    from pipeline.archive import ArchiveConfig, run_archive
    from pipeline.config import ActorConfig

    pool = ActorConfig(min_actors=2, max_actors=2, num_cpus=0.5, batch_size=1)
    cfg = ArchiveConfig(input=str(photos), output=str(out), rates=(0, 5), model=str(model), verify=False,
                        encode=pool, decode=pool, read_batch_size=1)
    return run_archive(cfg, progress=False)


def test_the_archive_job_spreads_over_several_nodes(cluster, photos, tmp_path, tiny_model_dir):
    c, _, trace = cluster
    summary = _archive(photos, tmp_path / "out", tiny_model_dir)
    assert summary["images_ok"] == 10 and summary["images_failed"] == 1
    nodes = {json.loads(line)["node"] for line in trace.read_text().splitlines()}
    assert len(nodes) >= 2, f"every batch ran on one node: {nodes}"
    check_exactly_once(tmp_path / "out", photos)


def test_a_node_removed_mid_job_still_ends_with_every_image_exactly_once(cluster, photos, tmp_path, tiny_model_dir,
                                                                          monkeypatch):
    c, workers, trace = cluster
    out = tmp_path / "out"

    def remove_a_node_once_work_has_started():
        deadline = time.time() + 120
        while time.time() < deadline:
            if trace.exists() and trace.read_text().count("\n") >= 2:
                busy = {json.loads(line)["node"] for line in trace.read_text().splitlines()}
                victim = next((w for w in workers if w.node_id in busy), workers[0])
                c.remove_node(victim, allow_graceful=False)
                removed.append(victim.node_id)
                return
            time.sleep(0.2)

    removed: list[str] = []
    thread = threading.Thread(target=remove_a_node_once_work_has_started)
    thread.start()
    _archive(photos, out, tiny_model_dir)
    thread.join()
    assert removed, "the node was not removed during the job"
    check_exactly_once(out, photos)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_job_submitted_through_the_ray_jobs_api_succeeds(photos, tmp_path, tiny_model_dir):
    """`ray start --head` on 127.0.0.1, then `ray job submit` of the archive job, as on a cluster."""
    import secrets

    ray_bin = str(Path(sys.executable).with_name("ray"))
    port, dashboard = _free_port(), _free_port()
    # Ray 2.59+ guards a local cluster's dashboard with a token; the head and the client share one.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=180)
    try:
        out = tmp_path / "out"
        submit = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--submission-id", "oscar-test",
             "--", sys.executable, "-m", "jobs.archive", "--input", str(photos), "--output", str(out),
             "--rates", "L0,L5", "--model", str(tiny_model_dir), "--actors", "1", "--quiet"],
            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        status = subprocess.run([ray_bin, "job", "status", "--address", f"http://127.0.0.1:{dashboard}", "oscar-test"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert "succeeded" in (status.stdout + status.stderr).lower()  # JobStatus.SUCCEEDED
        check_exactly_once(out, photos)
        unauthorised = subprocess.run([ray_bin, "job", "list", "--address", f"http://127.0.0.1:{dashboard}"],
                                      env={**env, "RAY_AUTH_TOKEN": "wrong"}, capture_output=True, text=True, timeout=60)
        assert unauthorised.returncode != 0  # the Jobs API is not open to anyone on the machine
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
