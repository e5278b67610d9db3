"""What each training stage's model gives on Kodak, decoded directly (no denoiser) and in full.

Usage:
    python benchmarks/stage_outputs.py [--workdir runs/oscar-tiny] [--stages codec_stage1 ...]

Why: the training issue asks that every stage beat a CPU trial's figures, and the shipped
model's hyper-encoders have been fine-tuned jointly with the denoiser since stage 1, so the
stage-1 hyper-encoders can only be judged from the stage's own saved output. For each saved
stage folder (``codec_stage1`` and later) and every level this measures actual bpp (every
container byte; a stage saved before the statistics stage codes fixed-length indices), RGB
PSNR and MS-SSIM, decoded with and without the one-step denoiser. A stage saved before the
denoiser was trained (``codec_stage1``) is reported only for the direct decode. Prints a
Markdown table and writes benchmarks/results/stage_outputs.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oscar_model.codec import OscarCodec  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, psnr  # noqa: E402

UNTRAINED_DENOISER = {"codec_stage1", "codec_calibrated"}


def measure(model_dir: Path, images: list[np.ndarray], with_denoiser: bool) -> list[dict]:
    codec = OscarCodec.from_pretrained(model_dir, device="cpu")
    modes = [False, True] if with_denoiser else [False]
    rows = []
    for p in codec.ladder:
        per: dict[bool, list[tuple[float, float, float]]] = {m: [] for m in modes}
        for img in images:
            (stream,) = codec.encode([img], p.index)
            bpp = 8 * len(stream) / (img.shape[0] * img.shape[1])
            for m in modes:
                (rec,) = codec.decode([stream], denoise=m)
                per[m].append((bpp, psnr(img, rec), ms_ssim_rgb(img, rec)))
        for m in modes:
            bpp, db, ms = np.mean(per[m], axis=0)
            rows.append({"stage": model_dir.name, "level": p.index, "denoiser": m,
                         "bpp": round(float(bpp), 5), "psnr": round(float(db), 3), "ms_ssim": round(float(ms), 5)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "oscar-tiny"))
    ap.add_argument("--stages", nargs="+", default=["codec_stage1", "codec_final"])
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "datasets" / "kodak"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stage_outputs.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    files = sorted(Path(args.kodak).glob("*.png"))
    if not files:
        raise SystemExit(f"no Kodak PNGs under {args.kodak}")
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    rows = []
    for stage in args.stages:
        folder = Path(args.workdir) / stage
        if not folder.exists():
            raise SystemExit(f"{folder} does not exist (run the training stages, or pick --stages)")
        rows += measure(folder, images, with_denoiser=stage not in UNTRAINED_DENOISER)
    print(f"Kodak, {len(images)} images; bpp counts every container byte")
    print("| stage | level | denoiser | bpp | PSNR dB | MS-SSIM |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['level']} | {'yes' if r['denoiser'] else 'no'} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} |")
    Path(args.out).write_text(json.dumps({"images": len(images), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
