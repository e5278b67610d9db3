"""The audit on named photo sets: oscar-tiny against every classical baseline, with its verdict.

Usage:
    python benchmarks/audit_sets.py --set kodak=../shared/datasets/kodak \
        --set bsds_test=../shared/datasets/bsds500/test [--count 6] \
        [--codecs oscar-tiny,jpeg,webp,avif,jxl,avif@1/2,avif@1/4,jxl@1/4] [--timing kodak]

Per set, the first --count photos (sorted by name) are audited whole with ``jobs.audit`` (every
level, every metric that runs here). The JSON keeps, per set: the verdict sentence, the
BD-rates of the model against each codec on every metric (with the overlap of each), and the
best codec per metric and bpp band. ``--timing SET`` also audits that set again with
``--metrics psnr,ms_ssim`` into another output, and records both wall times: what the
perceptual metrics cost. Writes benchmarks/results/audit_sets.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def audit(photos: Path, out: Path, codecs: str, metrics: str | None, actors: int) -> float:
    argv = [sys.executable, "-m", "jobs.audit", "--input", str(photos), "--output", str(out), "--codecs", codecs,
            "--actors", str(actors), "--quiet"] + (["--metrics", metrics] if metrics else [])
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return round(time.perf_counter() - t0, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], help="NAME=FOLDER (repeatable)")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--codecs", default="oscar-tiny,jpeg,webp,avif,jxl,avif@1/2,avif@1/4,jxl@1/4")
    p.add_argument("--timing", default=None, help="a set to audit again with --metrics psnr,ms_ssim, for the cost")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--work", default="/tmp/audit-sets")
    args = p.parse_args()
    work = Path(args.work)
    result = {"command": "python benchmarks/audit_sets.py " + " ".join(sys.argv[1:]), "codecs": args.codecs, "sets": []}
    for name, folder in (s.split("=", 1) for s in args.set):
        photos = work / name / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for f in sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in (".png", ".jpg"))[: args.count]:
            shutil.copy(f, photos / f.name)
        seconds = audit(photos, work / name / "audit", args.codecs, None, args.actors)
        summary = json.loads((work / name / "audit" / "summary.json").read_text())
        entry = {"set": name, "images": summary["images"], "wall_s_all_metrics": seconds, "verdict": summary["verdict"]}
        if name == args.timing:
            entry["wall_s_psnr_ms_ssim"] = audit(photos, work / name / "audit-fast", args.codecs, "psnr,ms_ssim",
                                                 args.actors)
        entry["bd_rates"] = [{"against": codec, **{m: e.get(m) for m in e if m not in ("overlaps", "overlap_fraction")},
                              "overlap_fraction": e["overlap_fraction"]} for codec, e in summary["bd_rate"].items()]
        entry["band_winners"] = [{k: w[k] for k in ("metric", "band", "bpp", "best", "runner_up", "margin")}
                                 | {"oscar": w["values"].get(summary["model"])} for w in summary["band_winners"]]
        result["sets"].append(entry)
        print(f"{name}: {entry['verdict']}")
    (ROOT / "benchmarks" / "results" / "audit_sets.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
