"""The audit report at corpus scale: what the driver pays to rebuild it as the corpus grows.

    python benchmarks/report_scale.py --images 10000,100000,1000000 [--code DIR]

For N images, writes an audit output with the real tables' schemas (``create_tables``): a
``metrics/`` table of 64 rows per image (oscar-tiny's 7 levels; JPEG, WebP and AVIF each over
their 12-quality sweeps and matched at the 7 levels), synthetic but shaped like the real ones,
and ``bd_rates/`` with 6 rows per image (3 codecs x PSNR, MS-SSIM), in data files of 1.28M
metrics rows with the job's row groups (``ROW_GROUP_ROWS``; ``--row-group`` changes it). Then runs ``jobs.audit --report-only`` on it in a child process and reports its
wall time and peak RSS (RUSAGE of that process: the driver, which is all the report uses).
``--code DIR`` runs another checkout's report on the same output (the "before" column).

Prints a table and writes ``benchmarks/results/report_scale[-LABEL].json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

CHUNK = 20_000
"""Images per data file (64 metrics rows each: 1.28M rows a file)."""
LEVELS = 7
CLASSIC = ("jpeg", "webp", "avif")
SWEEP = 12


def write_chunk(output: str, start: int, n: int, seed: int, row_group: int) -> None:
    """Metrics and bd_rates rows of images start..start+n, appended as one file per table."""
    import numpy as np
    import pyarrow as pa
    from deltalake import WriterProperties, write_deltalake

    from pipeline.tables.schema import BD_RATES, METRICS

    props = WriterProperties(max_row_group_size=row_group)

    rng = np.random.default_rng(seed)
    ids = np.array([f"img{start + i:09d}" for i in range(n)], dtype=object)
    uris = np.array([f"s3://corpus/shards/{(start + i) // 1000:06d}.tar#{start + i:09d}.jpg" for i in range(n)], dtype=object)
    units = np.array([f"s3://corpus/shards/{(start + i) // 1000:06d}.tar" for i in range(n)], dtype=object)
    parts = []

    def rows(codec: str, mode: str, settings: list[str], levels: list[int | None], base_bpp: np.ndarray) -> None:
        k = len(settings)
        bpp = (base_bpp[None, :] * rng.lognormal(0, 0.3, (n, k))).reshape(-1)
        psnr = 20 + 4 * np.log2(bpp * 100) + rng.normal(0, 1.5, n * k)
        reached = rng.random(n * k) > (0.2 if mode == "matched" else 0.0)
        col = lambda v: pa.array(v, mask=~reached)  # noqa: E731 - unreached rows have null measurements
        parts.append(pa.table({
            "image_id": np.repeat(ids, k), "source_uri": np.repeat(uris, k), "codec": [codec] * (n * k),
            "rate_level": pa.array(np.tile(np.array(levels, dtype=object), n), pa.int16()),
            "setting": np.tile(np.array(settings, dtype=object), n), "mode": [mode] * (n * k), "reached": reached,
            "width": np.full(n * k, 768, np.int32), "height": np.full(n * k, 512, np.int32),
            "n_bytes": col(np.round(bpp * 768 * 512 / 8).astype(np.int64)),
            "bpp": col(bpp), "psnr": col(psnr), "ms_ssim": col(1 - 0.3 * np.exp(-bpp * 8)), "lpips": col(0.5 / (1 + bpp * 10)),
            "dists": col(0.3 / (1 + bpp * 10)), "encode_ms": rng.gamma(2, 20, n * k), "decode_ms": rng.gamma(2, 30, n * k),
            "reference": ["original"] * (n * k), "unit_id": np.repeat(units, k),
        }).cast(METRICS))

    level_bpp = np.array([0.01, 0.03, 0.06, 0.12, 0.14, 0.25, 0.37])
    rows("oscar-tiny", "sweep", [f"level {i}" for i in range(LEVELS)], list(range(LEVELS)), level_bpp)
    for codec in CLASSIC:
        rows(codec, "sweep", [f"quality {q}" for q in range(SWEEP)], [None] * SWEEP, np.geomspace(0.05, 2.0, SWEEP))
        rows(codec, "matched", [f"quality {q}" for q in range(LEVELS)], list(range(LEVELS)), level_bpp * 0.9)
    write_deltalake(f"{output}/metrics", pa.concat_tables(parts), mode="append", writer_properties=props)
    k = len(CLASSIC) * 2
    bd = pa.table({
        "image_id": np.repeat(ids, k), "source_uri": np.repeat(uris, k), "codec": np.tile(np.repeat(CLASSIC, 2), n),
        "metric": np.tile(["psnr", "ms_ssim"] * len(CLASSIC), n), "bd_rate": rng.normal(-30, 40, n * k),
        "overlap_lo": rng.uniform(20, 25, n * k), "overlap_hi": rng.uniform(28, 32, n * k),
        "matched_gap": rng.normal(-0.5, 1.0, n * k), "unit_id": np.repeat(units, k),
    }).cast(BD_RATES)
    write_deltalake(f"{output}/bd_rates", bd, mode="append", writer_properties=props)


def build(output: Path, images: int, row_group: int) -> None:
    from pipeline.tables.delta import DeltaOutput

    DeltaOutput(str(output)).create_tables()
    for start in range(0, images, CHUNK):
        write_chunk(str(output), start, min(CHUNK, images - start), seed=start, row_group=row_group)
        print(f"\r  wrote {min(start + CHUNK, images):,} of {images:,} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def report(output: Path, code: Path) -> dict:
    """``jobs.audit --report-only`` in a child: its wall time and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.audit", "--report-only", "--output", str(output), "--quiet"],
                            cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return {"ok": False, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "error": err[-300:]}
    return {"ok": True, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="10000,100000,1000000")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose report runs (default: this one)")
    ap.add_argument("--label", default="main")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "oscar-report-scale")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (rerun with another --code)")
    ap.add_argument("--row-group", type=int, default=None,
                    help="rows per Parquet row group (default: the job's, pipeline.tables.schema.ROW_GROUP_ROWS)")
    args = ap.parse_args()
    from pipeline.tables.schema import ROW_GROUP_ROWS

    row_group = args.row_group or ROW_GROUP_ROWS
    results = []
    print("| images | metrics rows | table MB | report s | driver peak RSS MB |")
    print("|---|---|---|---|---|")
    for n in (int(v) for v in args.images.split(",")):
        output = args.work / f"audit-{n}"
        if not (output / "metrics" / "_delta_log").exists():
            shutil.rmtree(output, ignore_errors=True)
            # In a child of its own: a child's peak RSS counts the parent it was forked from (before
            # exec), so building in this process added the build's ~300 MB to the first report's peak.
            builder = multiprocessing.get_context("spawn").Process(target=build, args=(output, n, row_group))
            builder.start()
            builder.join()
            if builder.exitcode:
                raise SystemExit(f"building the {n}-image output failed")
        size_mb = sum(f.stat().st_size for f in output.rglob("*.parquet")) / 2**20
        row = {"images": n, "row_group_rows": row_group, "metrics_rows": n * (LEVELS + len(CLASSIC) * (SWEEP + LEVELS)), "table_mb": round(size_mb),
               **report(output, args.code)}
        results.append(row)
        shown = f"{row['seconds']}" if row["ok"] else f"failed after {row['seconds']} ({row['error'][-80:]!r})"
        print(f"| {n:,} | {row['metrics_rows']:,} | {row['table_mb']:,} | {shown} | {row['peak_rss_mb']:,} |", flush=True)
        if not args.keep:
            shutil.rmtree(output, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"report_scale-{args.label}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
