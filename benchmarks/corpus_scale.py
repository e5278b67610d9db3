"""Corpus scale: what the driver pays as a corpus grows (issue 19).

Two measurements, each printed as a table row and saved as JSON:

    python benchmarks/corpus_scale.py rss --images 2000,20000 [--code DIR]
        driver peak RSS of the real archive job (--no-verify --rates L0) on N small synthetic
        JPEGs (32x32 noise; they are the driver's worst case: most rows per second). The
        driver's own peak (RUSAGE_SELF at exit), not its Ray children's. --code runs another
        checkout's job (the "before" column came from landed main in /tmp/before).
    python benchmarks/corpus_scale.py resume --keys 1000000 --window 1000 [--s3]
        the resume check on an output holding KEYS committed work units, built through the real
        commit code (pipeline.tables.delta.DeltaOutput.commit_window, pipeline.tables.writer.write_table_file)
        with synthetic streams: one bitstreams row of 32 random bytes per unit, WINDOW units per
        commit. The check is what run_job does before it plans: create_tables (no-op),
        done_and_models, then heal with that done set.

Objects per 10,000 images come from the rss runs' outputs (every object under --output).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"


def make_jpegs(folder: Path, n: int, size: int = 32) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        target = folder / f"{i:07d}.jpg"
        if not target.exists():
            Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(target, quality=90)


_PEAK = (
    "import atexit, resource, runpy, sys\n"
    "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
    "sys.argv = ['jobs.archive'] + sys.argv[1:]\n"
    "runpy.run_module('jobs.archive', run_name='__main__')\n"
)


def count_objects(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def measure_rss(n: int, code: Path, work: Path, extra: list[str]) -> dict:
    images = work / f"jpegs{n}"
    make_jpegs(images, n)
    output = work / f"out-{code.name}-{n}"
    shutil.rmtree(output, ignore_errors=True)  # a leftover output would resume and measure nothing
    env = {**os.environ, "RAY_TMPDIR": str(work / "ray"), "PYTHONPATH": str(code)}
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, "--input", str(images), "--output", str(output), "--rates", "L0", "--no-verify",
         "--quiet", *extra], cwd=code, env=env, capture_output=True, text=True,
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"archive on {n} images failed:\n{proc.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB"))
    return {"images": n, "code": str(code), "driver_peak_rss_mb": round(peak / 1024, 1), "wall_s": round(wall, 1),
            "objects": count_objects(output), "objects_per_10k_images": round(count_objects(output) * 10_000 / n)}


@contextlib.contextmanager
def _store(s3: bool, work: Path):
    """The output's base URI: a moto bucket on loopback, or a local folder."""
    if not s3:
        yield str(work)
        return
    sys.path.insert(0, str(ROOT))
    from tests.moto_s3 import moto_s3

    with moto_s3("bench"):
        yield "s3://bench"


def measure_resume(keys: int, window: int, base: str) -> dict:
    import numpy as np
    import pyarrow as pa

    from pipeline.tables.delta import DeltaOutput
    from pipeline.tables.schema import BITSTREAMS
    from pipeline.tables.writer import write_table_file

    output = f"{base}/resume-{keys}"
    out = DeltaOutput(output)
    out.create_tables()
    out.done_and_models()
    rng = np.random.default_rng(0)
    t0 = time.time()
    for start in range(0, keys, window):
        ids = [f"shard-{i:09d}.tar" for i in range(start, min(keys, start + window))]
        streams = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in ids]
        rows = [{"image_id": f"{i:032x}", "source_uri": f"{u}#000", "width": 64, "height": 64, "model_id": "bench",
                 "rate_level": 0, "nominal_bpp": 0.0625, "bpp": 0.0625, "n_bytes": 32, "bitstream": b, "encode_ms": 1.0}
                for i, (u, b) in enumerate(zip(ids, streams))]
        f = write_table_file(pa.Table.from_pylist(rows, schema=BITSTREAMS), "bitstreams", output, None)
        out.commit_window({"bitstreams": [f]}, [{"unit_id": u, "kind": "tar", "uri": u, "images": 1} for u in ids], "bench")
    build_s = time.time() - t0
    t0 = time.time()
    check = DeltaOutput(output)  # what run_job does before it plans
    check.create_tables()
    done, models = check.done_and_models()
    check.heal(done)
    resume_s = time.time() - t0
    assert len(done) == keys and models == {"bench"}, (len(done), models)
    return {"layout": "delta", "work_units": keys, "commits": -(-keys // window), "build_s": round(build_s, 1),
            "resume_check_s": round(resume_s, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["rss", "resume"])
    p.add_argument("--images", default="2000,20000", help="rss: corpus sizes")
    p.add_argument("--code", default=str(ROOT), help="rss: the checkout whose archive job runs")
    p.add_argument("--job-args", default="", help="rss: extra archive flags, space-separated")
    p.add_argument("--keys", type=int, default=1_000_000, help="resume: committed work units")
    p.add_argument("--window", type=int, default=1000, help="resume: work units per commit")
    p.add_argument("--s3", action="store_true", help="resume: on moto S3 on loopback (else local disk)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="corpus_scale_"))
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    if args.what == "rss":
        for n in (int(x) for x in args.images.split(",")):
            r = measure_rss(n, Path(args.code), work, args.job_args.split())
            print(json.dumps(r), flush=True)
            results.append(r)
    else:
        with _store(args.s3, work) as base:
            results.append(measure_resume(args.keys, args.window, base))
        for r in results:
            r["store"] = "moto S3 on 127.0.0.1" if args.s3 else "local disk"
            print(json.dumps(r), flush=True)
    tag = f"{args.what}{'-s3' if args.s3 else ''}-{Path(args.code).name if args.what == 'rss' else 'main'}"
    (OUT / f"corpus_scale_{tag}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
