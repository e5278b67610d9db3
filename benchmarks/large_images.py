"""Peak memory and time of `oscar encode` + `oscar decode` against image size (tiling at work).

Usage:
    python benchmarks/large_images.py [--model oscar-tiny] [--sizes 1,4,12,24] [--bpp 0.125]

Each size is a photo mosaic cut from the Kodak images (../shared/datasets/kodak, alternate
photos mirrored), written as PNG; the CLI encodes and decodes it in a fresh process each, and
the peak resident memory of that process (GNU time's %M) and its wall time are recorded.
Prints a table, writes large_images.json and tile_border_crop.png (original | decoded | 4 x
difference, across the first tile border of the largest image) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.stages.metrics import psnr  # noqa: E402

SIZES = {1: (1224, 816), 4: (2448, 1632), 12: (4240, 2832), 24: (6000, 4000)}


def mosaic(kodak: Path, width: int, height: int) -> np.ndarray:
    """Kodak photos side by side (landscape crops, every other one mirrored), cut to size."""
    photos = []
    for p in sorted(kodak.glob("*.png")):
        a = np.asarray(Image.open(p).convert("RGB"))
        photos.append(a if a.shape[1] >= a.shape[0] else a.transpose(1, 0, 2))
    rows, cols = -(-height // 512), -(-width // 768)
    canvas = np.zeros((rows * 512, cols * 768, 3), np.uint8)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        photo = photos[k % len(photos)][:512, :768]
        canvas[r * 512 : (r + 1) * 512, c * 768 : (c + 1) * 768] = photo[:, ::-1] if (r + c) % 2 else photo
    return canvas[:height, :width]


GNU_TIME = "/usr/bin/time"


def peak_of(cmd: list[str]) -> tuple[float, float, str]:
    """Runs ``cmd``; returns (wall seconds, its peak RSS in MB, its stdout).

    The peak is GNU time's ``%M``. Why not this process's own wait4: Linux keeps ru_maxrss
    across exec, so a child forked from this (large) process reports at least this process's
    size; GNU time forks the command from a tiny process. Without GNU time: wait4, an upper bound.
    """
    timed = os.path.exists(GNU_TIME)
    full = [GNU_TIME, "-f", "peak_kb=%M", *cmd] if timed else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    peak_kb = int(err.rsplit("peak_kb=", 1)[1].split()[0]) if timed else usage.ru_maxrss
    return seconds, peak_kb / 1024, out.strip()


def border_crop(original: np.ndarray, decoded: np.ndarray, x: int, y: int, side: int = 256) -> np.ndarray:
    a, b = original[y : y + side, x : x + side], decoded[y : y + side, x : x + side]
    diff = np.clip(np.abs(a.astype(int) - b.astype(int)) * 4, 0, 255).astype(np.uint8)
    gap = np.full((side, 8, 3), 255, np.uint8)
    return np.concatenate([a, gap, b, gap, diff], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--sizes", default="1,4,12,24", help=f"megapixels, from {sorted(SIZES)}")
    p.add_argument("--bpp", default="0.125")
    p.add_argument("--kodak", default=str(ROOT.parent / "shared" / "datasets" / "kodak"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from oscar_model import OscarCodec

    codec = OscarCodec.from_pretrained(args.model, device="cpu")
    tiling, f = codec.tiling, int(codec.model.autoencoder.downscale)
    cli = [sys.executable, "-m", "oscar_model.cli"]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="oscar-large-"))
    for mpx in (int(s) for s in args.sizes.split(",")):
        width, height = SIZES[mpx]
        src, osc, dec = work / f"{mpx}.png", work / f"{mpx}.osc", work / f"{mpx}.dec.png"
        original = mosaic(Path(args.kodak), width, height)
        Image.fromarray(original).save(src, compress_level=1)
        enc_s, enc_mb, _ = peak_of([*cli, "encode", str(src), "-o", str(osc), "--bpp", args.bpp, "--model", args.model])
        dec_s, dec_mb, _ = peak_of([*cli, "decode", str(osc), "-o", str(dec), "--model", args.model])
        decoded = np.asarray(Image.open(dec))
        rows.append({
            "megapixels": round(width * height / 1e6, 2), "width": width, "height": height,
            "tiled": not codec.fits_one_tile(height, width), "bpp": round(8 * osc.stat().st_size / (width * height), 4),
            "encode_s": round(enc_s, 1), "encode_peak_mb": round(enc_mb), "decode_s": round(dec_s, 1),
            "decode_peak_mb": round(dec_mb), "psnr": round(psnr(original, decoded), 2),
        })
        print(rows[-1], flush=True)
        if mpx == max(int(s) for s in args.sizes.split(",")):
            step = (tiling.tile - tiling.overlap) * f  # the second tile starts here; they overlap up to step + overlap
            border = step + tiling.overlap * f // 2
            crop = border_crop(original, decoded, x=border - 128, y=height // 2 - 128)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(Path(args.out) / "tile_border_crop.png")
    result = {"model": args.model, "model_id": codec.model_id, "tiling": vars(tiling), "bpp_asked": args.bpp,
              "rows": rows, "command": "python benchmarks/large_images.py " + " ".join(argv or sys.argv[1:])}
    (Path(args.out) / "large_images.json").write_text(json.dumps(result, indent=1))
    print("\n| Mpx | size | tiled | bpp | encode s | encode peak MB | decode s | decode peak MB | PSNR |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['megapixels']} | {r['width']}x{r['height']} | {'yes' if r['tiled'] else 'no'} | {r['bpp']} | {r['encode_s']} "
              f"| {r['encode_peak_mb']} | {r['decode_s']} | {r['decode_peak_mb']} | {r['psnr']} |")
    per_mpx = [(r["encode_s"] + r["decode_s"]) / r["megapixels"] for r in rows]
    print(f"seconds per megapixel (encode + decode): {', '.join(f'{s:.1f}' for s in per_mpx)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
