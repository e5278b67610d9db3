"""Is the driver's growth Ray Data's or ours? (issue 29)

    python benchmarks/ray_data_driver.py [--images 10000,80000] [--slice-images 16384]

``benchmarks/corpus_scale.py rss`` measures the archive job's driver. This measures a bare Ray
Data pipeline of the same shape, in a fresh process per size, with none of our stages and no
Delta commits: read items of 64 "images" (as the plan's file groups) -> a task stage -> an actor
pool in batches of 8 -> a task stage that turns a block into one small receipt -> the driver
iterating receipts, in slices of ``--slice-images`` images as the runner does. Each row carries a
32-byte payload, so the data in flight is as small as the archive of 32x32 JPEGs at L0. If its
driver grows as the job's does, the growth is Ray Data's; if it stays flat, it is ours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = 64

_CHILD = r'''
import json, os, resource, sys
import numpy as np
import ray

images, slice_images, group = (int(a) for a in sys.argv[1:4])
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
ray.data.DataContext.get_current().enable_progress_bars = False


def read(batch):
    n = sum(len(m) for m in batch["members"])
    keys = [f"{u}#{i}" for u, m in zip(batch["unit_id"], batch["members"]) for i in range(len(m))]
    return {"key": np.array(keys), "payload": np.frombuffer(os.urandom(32 * n), dtype=np.uint8).reshape(n, 32)}


class Encode:
    def __call__(self, batch):
        return {"key": batch["key"], "bytes": batch["payload"].sum(axis=1)}


def receipt(batch):
    return {"rows": np.array([len(batch["key"])]), "bytes": np.array([int(batch["bytes"].sum())])}


def statm_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


units = [{"unit_id": f"u{u:07d}", "members": [f"/corpus/{u * group + i:09d}.jpg" for i in range(group)]}
         for u in range(images // group)]
after_init = statm_mb()
rows = 0
per_slice = max(1, slice_images // group)
for start in range(0, len(units), per_slice):
    part = units[start:start + per_slice]
    ds = ray.data.from_items(part, override_num_blocks=min(len(part), 200))
    ds = ds.map_batches(read, batch_size=1, num_cpus=0.1)
    ds = ds.map_batches(Encode, batch_size=8, num_cpus=0.5, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2))
    ds = ds.map_batches(receipt, batch_size=None, num_cpus=0.1)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        rows += int(batch["rows"].sum())
print(json.dumps({"images": images, "rows_seen": rows, "after_init_rss_mb": round(after_init, 1),
                  "end_rss_mb": round(statm_mb(), 1),
                  "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
'''


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default="10000,80000")
    p.add_argument("--slice-images", type=int, default=16384)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_data_driver.json"))
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ray_data_driver_") as tmp:
        for n in (int(x) for x in args.images.split(",")):
            env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", tmp)}
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(args.slice_images), str(GROUP)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"bare pipeline on {n} images failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            assert row["rows_seen"] == n // GROUP * GROUP, row
            row["slice_images"] = args.slice_images
            print(json.dumps(row), flush=True)
            results.append(row)
    out = {"command": "python benchmarks/ray_data_driver.py " + " ".join(sys.argv[1:]), "rows": results}
    if len(results) > 1:
        out["growth_mb"] = round(results[-1]["driver_peak_rss_mb"] - results[0]["driver_peak_rss_mb"], 1)
        print(f"driver growth {results[0]['images']} -> {results[-1]['images']}: {out['growth_mb']} MB")
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
