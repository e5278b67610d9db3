"""The cheapest codec per image: a mixed archive against the model alone and each classical codec alone.

Usage:
    python benchmarks/mixed_archive.py --set kodak=../shared/datasets/kodak \
        --set bsds_test=../shared/datasets/bsds500/test [--count 6] \
        [--targets "ms_ssim>=0.85,ms_ssim>=0.9,ssimulacra2>=50"] [--codecs oscar-tiny,avif,jxl]

Per set and target, the first --count photos (sorted by name) are archived whole with
``jobs.archive --target T --codecs C``. One run gives all three answers: the job records, per
image, each codec's cheapest setting meeting the target (the kept one and the ``candidate``
rows), so the bytes and the images met of the mix, of the model alone and of each classical
codec alone come from the same encodes. Writes benchmarks/results/mixed_archive.json and prints
a table.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], help="NAME=FOLDER (repeatable)")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--targets", default="ms_ssim>=0.85,ms_ssim>=0.9,ssimulacra2>=50")
    p.add_argument("--codecs", default="oscar-tiny,avif,jxl")
    p.add_argument("--work", default="/tmp/mixed-archive")
    args = p.parse_args()
    work = Path(args.work)
    rows = []
    for name, folder in (s.split("=", 1) for s in args.set):
        photos = work / name / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for f in sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in (".png", ".jpg"))[: args.count]:
            shutil.copy(f, photos / f.name)
        for target in args.targets.split(","):
            out = work / name / target.replace(">=", "_ge_").replace("<=", "_le_")
            metric = target.split(">")[0].split("<")[0]
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jobs.archive", "--input", str(photos), "--output", str(out),
                            "--target", target, "--codecs", args.codecs, "--metrics", metric, "--quiet"],
                           cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            seconds = time.perf_counter() - t0
            t = json.loads((out / "run_manifest.json").read_text())["counts"]["target"]
            mix = t["codecs"]
            row = {"set": name, "target": target, "images": t["images"], "mix_bytes": t["bytes"], "mix_met": t["met"],
                   "kept": mix["kept"], "met_only_thanks_to_the_mix": mix["met_only_thanks_to_the_mix"],
                   "decodes_per_image": t["decodes_per_image"], "wall_s": round(seconds, 1)}
            for codec, e in mix["alone"].items():
                row[f"{codec}_alone_bytes"], row[f"{codec}_alone_met"] = e["bytes"], e["met"]
            rows.append(row)
            alone = "  ".join(f"{c}: {e['bytes']:,} B, {e['met']} met" for c, e in mix["alone"].items())
            print(f"{name} {target}: mix {t['bytes']:,} B, {t['met']}/{t['images']} met (kept {mix['kept']}); {alone}")
    out = {"command": "python benchmarks/mixed_archive.py " + " ".join(sys.argv[1:]), "codecs": args.codecs,
           "rows": rows}
    (ROOT / "benchmarks" / "results" / "mixed_archive.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
