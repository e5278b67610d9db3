"""Thin images cost what their pixels cost: encode and decode time of strips against a square.

Usage:
    python benchmarks/thin_images.py [--model oscar-tiny] [--level 3] [--repeats 3] [--no-fold]

Every shape holds the same 200,704 pixels, those of a 448x448 crop of a Kodak photo
(../shared/datasets/kodak/kodim01.png) read in raster order: 448x448 itself, a 1x200,704 strip,
its transpose, and 8- and 56-row bands. Each is encoded and decoded in this process with the
codec's API (the median of --repeats runs, one torch thread for encoding as the codec always
does); the ratio column is against the square. ``--no-fold`` codes every shape unfolded, as
before oscar_model.folding existed. Prints a table and writes thin_images[-nofold].json to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import oscar_model.codec as codec_module  # noqa: E402
from oscar_model.codec import OscarCodec  # noqa: E402
from pipeline.stages.metrics import psnr  # noqa: E402

SIDE = 448
SHAPES = [(SIDE, SIDE), (1, SIDE * SIDE), (SIDE * SIDE, 1), (8, SIDE * SIDE // 8), (56, SIDE * SIDE // 56)]


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="oscar-tiny")
    ap.add_argument("--level", type=int, default=3, help="ladder level to code at")
    ap.add_argument("--repeats", type=int, default=3, help="runs per shape; the median is reported")
    ap.add_argument("--no-fold", action="store_true", help="code thin images unfolded (the behaviour before folding)")
    ap.add_argument("--kodak", type=Path, default=ROOT.parent / "shared/datasets/kodak")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    if args.no_fold:
        codec_module.fold_layout = lambda *a: None
    codec = OscarCodec.from_pretrained(args.model)
    photo = np.asarray(Image.open(args.kodak / "kodim01.png").convert("RGB"))[:SIDE, :SIDE]
    raster = photo.reshape(-1, 3)
    rows = []
    for h, w in SHAPES:
        image = np.ascontiguousarray(raster.reshape(h, w, 3))
        codec.encode([image], args.level)  # warm-up
        enc_s, stream = timed(lambda image=image: codec.encode([image], args.level)[0], args.repeats)
        dec_s, decoded = timed(lambda stream=stream: codec.decode([stream])[0], args.repeats)
        container, _ = codec.parse(stream)
        rows.append({"shape": f"{h}x{w}", "folded": container.folded, "coded": "x".join(map(str, codec.coded_size(container))),
                     "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3), "bpp": round(OscarCodec.bpp(stream), 4),
                     "psnr": round(psnr(image, decoded), 2)})
    square = rows[0]
    print(f"{args.model} level {args.level}, {SIDE * SIDE} pixels each{' (unfolded)' if args.no_fold else ''}")
    print(f"{'shape':>12} {'coded as':>10} {'encode s':>9} {'x sq':>6} {'decode s':>9} {'x sq':>6} {'bpp':>7} {'PSNR':>6}")
    for r in rows:
        r["encode_x"] = round(r["encode_s"] / square["encode_s"], 2)
        r["decode_x"] = round(r["decode_s"] / square["decode_s"], 2)
        print(f"{r['shape']:>12} {r['coded']:>10} {r['encode_s']:>9.3f} {r['encode_x']:>6.2f} {r['decode_s']:>9.3f} "
              f"{r['decode_x']:>6.2f} {r['bpp']:>7.4f} {r['psnr']:>6.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "thin_images-nofold.json" if args.no_fold else "thin_images.json"
    (args.out / name).write_text(json.dumps({"model": args.model, "level": args.level, "repeats": args.repeats,
                                             "folding": not args.no_fold, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
