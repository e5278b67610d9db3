"""Issue 19's acceptance run, as a slow test: 8 WebDataset shards of 250 small JPEGs (plus 3
broken members) on moto S3, archived at L0 without verification; the driver SIGKILLed after
its first commit and rerun; a third, finished run changes nothing; at most 30 data files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.moto_s3 import moto_s3
from tests.shard_fixtures import webdataset_tar

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "corpus"
SHARDS, PER_SHARD = 8, 250


def small_photos(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:48]
    return [np.clip(np.stack([x * 5, y * 5, (x + y) * 2], -1) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


def archive_cmd(out: str) -> list[str]:
    return [sys.executable, "-m", "jobs.archive", "--input", f"s3://{BUCKET}/shards/", "--output", out, "--rates", "L0",
            "--no-verify", "--quiet", "--commit-units", "2", "--rows-per-file", "500"]


def versions(client, prefix: str) -> dict[str, int]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    out: dict[str, int] = {}
    for k in keys:
        if "/_delta_log/" in k and k.endswith(".json") and not k.endswith("_last_checkpoint"):
            table = k[len(prefix):].split("/")[0]
            out[table] = max(out.get(table, -1), int(k.rsplit("/", 1)[1].split(".")[0]))
    return out


@pytest.mark.slow
def test_eight_shards_killed_after_the_first_commit_then_rerun():
    import duckdb

    from pipeline.tables.delta import delta_storage_options, read_delta, table_uri

    with moto_s3(BUCKET) as s3:
        for s in range(SHARDS):
            body = webdataset_tar(small_photos(PER_SHARD, s), start=s * 1000, broken_member=s < 3)
            s3.put_object(Bucket=BUCKET, Key=f"shards/{s:05d}.tar", Body=body)
        out = f"s3://{BUCKET}/archive"
        env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp/oscar-ray-tests")}
        job = subprocess.Popen(archive_cmd(out), cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 600
        while time.time() < deadline and versions(s3, "archive/").get("work_units", 0) < 1:
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        first = read_delta(out, "work_units").num_rows
        assert 0 < first < SHARDS, f"the kill must land after the first commit and before the last ({first} units)"

        rerun = subprocess.run(archive_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        bits = read_delta(out, "bitstreams", columns=["source_uri", "rate_level"])
        keys = list(zip(bits.column("source_uri").to_pylist(), bits.column("rate_level").to_pylist()))
        assert len(keys) == len(set(keys)) == SHARDS * PER_SHARD
        errors = read_delta(out, "errors").to_pylist()
        assert len(errors) >= 3 and all("000250" in e["source_uri"] or e["stage"] for e in errors)

        before = versions(s3, "archive/")
        third = subprocess.run(archive_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert third.returncode == 0 and "0 work units done" in third.stdout
        assert versions(s3, "archive/") == before  # nothing committed

        data_files = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="archive/")["Contents"]
                      if o["Key"].endswith(".parquet") and "/_delta_log/" not in o["Key"]]
        assert len(data_files) <= 30, data_files
        from deltalake import DeltaTable

        uri = table_uri(out, "bitstreams")
        bitstreams = DeltaTable(uri, storage_options=delta_storage_options(uri, None)).to_pyarrow_dataset()  # noqa: F841
        assert duckdb.sql("SELECT count(DISTINCT source_uri) FROM bitstreams").fetchall() == [(SHARDS * PER_SHARD,)]
