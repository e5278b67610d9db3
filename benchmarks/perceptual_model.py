"""Two oscar-tiny models compared at every level, the way a user would check them.

Usage:
    python benchmarks/perceptual_model.py --old oscar-tiny-3d13d9f8 --new oscar-tiny \
        --set bsds_val=../shared/datasets/bsds500/val --set bsds_test=../shared/datasets/bsds500/test \
        --set heldout=HELDOUT_FOLDER [--count 6] [--work /tmp/perceptual]

Per set, the first --count photos (sorted by name) are cut to 512x384 (resized so the short side
is 384 with Lanczos, then the centre). Each model archives them at every level
(``jobs.archive``), the archive is decoded to PNG (``jobs.redecode --images``), and every PNG is
scored against its crop by the PyPI ``ssimulacra2`` package (on the files) and by MS-SSIM.
bpp is every byte of each stream over the crop's pixels. Per set: the mean bpp and scores per
level and model, and the BD-rates (pchip, :mod:`pipeline.report.bd_rate`) of the new model
against the old on SSIMULACRA2 and MS-SSIM (negative: fewer bits for the same quality).
Writes benchmarks/results/perceptual_model.json and prints a table.

The held-out set used for the results: six outdoor photographs from Debian's
``plasma-workspace-wallpapers`` (Autumn, BytheWater, EveningGlow, FallenLeaf, Path,
summer_1am; their 1920x1080 files), which no model here was trained or tuned on:
``apt-get download plasma-workspace-wallpapers`` and ``dpkg -x`` it (``--wallpapers DIR`` picks
those six from the unpacked tree).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.report.bd_rate import bd_rate  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb  # noqa: E402

WALLPAPERS = ("Autumn", "BytheWater", "EveningGlow", "FallenLeaf", "Path", "summer_1am")
SIZE = (512, 384)


def crop(path: Path, out: Path) -> None:
    image = Image.open(path).convert("RGB")
    scale = max(SIZE[0] / image.width, SIZE[1] / image.height)
    image = image.resize((max(SIZE[0], round(image.width * scale)), max(SIZE[1], round(image.height * scale))),
                         Image.Resampling.LANCZOS)
    left, top = (image.width - SIZE[0]) // 2, (image.height - SIZE[1]) // 2
    image.crop((left, top, left + SIZE[0], top + SIZE[1])).save(out)


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", *args, "--quiet"], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def measure(model: str, crops: Path, work: Path) -> list[dict]:
    """Per image and level: bpp, SSIMULACRA2 (the PyPI package, on files) and MS-SSIM of the redecoded PNG."""
    from deltalake import DeltaTable
    from ssimulacra2 import compute_ssimulacra2

    archive, decoded = work / "archive", work / "decoded"
    if not (archive / "run_manifest.json").exists():
        run(["jobs.archive", "--input", str(crops), "--output", str(archive), "--model", model, "--metrics", "psnr"])
    if not (decoded / "run_manifest.json").exists():
        run(["jobs.redecode", "--archive", str(archive), "--output", str(decoded), "--model", model, "--images",
             "--metrics", "psnr"])
    streams = DeltaTable(str(archive / "bitstreams")).to_pyarrow_table(
        columns=["image_id", "source_uri", "rate_level", "bpp"]).to_pylist()
    rows = []
    for s in streams:
        source = Path(s["source_uri"].removeprefix("file://"))
        png = decoded / "images" / f"{s['image_id']}_level{s['rate_level']}.png"
        original = np.asarray(Image.open(source).convert("RGB"))
        rows.append({"image": source.name, "level": s["rate_level"], "bpp": s["bpp"],
                     "ssimulacra2": float(compute_ssimulacra2(str(source), str(png))),
                     "ms_ssim": ms_ssim_rgb(original, np.asarray(Image.open(png).convert("RGB")))})
    return rows


def mean_curve(rows: list[dict]) -> list[dict]:
    levels = sorted({r["level"] for r in rows})
    return [{"level": lv, **{k: float(np.mean([r[k] for r in rows if r["level"] == lv]))
                             for k in ("bpp", "ssimulacra2", "ms_ssim")}} for lv in levels]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--set", action="append", default=[], help="NAME=FOLDER (repeatable)")
    p.add_argument("--wallpapers", default=None, help="an unpacked plasma-workspace-wallpapers tree: the held-out set")
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--work", default="/tmp/perceptual-model")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "perceptual_model.json"))
    args = p.parse_args()
    sets = dict(s.split("=", 1) for s in args.set)
    work = Path(args.work)
    if args.wallpapers:
        held = work / "heldout-sources"
        held.mkdir(parents=True, exist_ok=True)
        for name in WALLPAPERS:
            src = Path(args.wallpapers) / "usr/share/wallpapers" / name / "contents/images/1920x1080.jpg"
            shutil.copy(src, held / f"{name}.jpg")
        sets["heldout"] = str(held)
    result = {"command": "python benchmarks/perceptual_model.py " + " ".join(sys.argv[1:]), "old": args.old,
              "new": args.new, "sets": []}
    for name, folder in sets.items():
        crops = work / name / "crops"
        crops.mkdir(parents=True, exist_ok=True)
        sources = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.count]
        for f in sources:
            crop(f, crops / f"{f.stem}.png")
        curves = {}
        for role, model in (("old", args.old), ("new", args.new)):
            curves[role] = mean_curve(measure(model, crops, work / name / role))
        entry = {"set": name, "images": len(sources), "curves": curves}
        for metric in ("ssimulacra2", "ms_ssim"):
            value, overlap = bd_rate(curves["old"], curves["new"], metric)
            entry[f"bd_rate_{metric}"] = None if value is None else round(value, 2)
            entry[f"overlap_{metric}"] = overlap
        result["sets"].append(entry)
        Path(args.out).write_text(json.dumps(result, indent=1))  # after every set: a stopped run keeps what it measured
        print(f"{name}: BD-rate of {args.new} against {args.old}: SSIMULACRA2 {entry['bd_rate_ssimulacra2']}%, "
              f"MS-SSIM {entry['bd_rate_ms_ssim']}%")
        for role in ("old", "new"):
            for c in curves[role]:
                print(f"  {role} L{c['level']}: {c['bpp']:.4f} bpp  SSIMULACRA2 {c['ssimulacra2']:7.2f}  "
                      f"MS-SSIM {c['ms_ssim']:.4f}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
