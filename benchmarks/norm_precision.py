"""What the stream's u8 latent norms cost: decodes with the sent norms against exact ones.

Usage:
    python benchmarks/norm_precision.py [--model oscar-tiny] [--kodak ../shared/datasets/kodak]

Each stream carries the original latent's per-channel RMS as u8 codes on a log2 grid (1/20
octave, so up to 1.75% off). The release rescales with exact norms. Every Kodak photo is
encoded at every level; each stream is decoded twice, once as a user does (the sent norms)
and once with the exact norms of the photo's latent; both are measured against the photo.
Prints a table per level (mean PSNR and MS-SSIM both ways, the difference, and the largest
PSNR loss of any one photo) and writes norm_precision.json to --out.
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

from oscar_model.bitstream import unpack  # noqa: E402
from oscar_model.codec import OscarCodec  # noqa: E402
from oscar_model.pixels import to_uint8  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, psnr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="oscar-tiny")
    ap.add_argument("--kodak", type=Path, default=ROOT.parent / "shared/datasets/kodak")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    codec = OscarCodec.from_pretrained(args.model)
    levels = list(range(len(codec.ladder)))
    sums = {lv: np.zeros(4) for lv in levels}  # psnr sent, psnr exact, ms-ssim sent, ms-ssim exact
    worst_loss = {lv: (0.0, "") for lv in levels}  # the largest PSNR loss of one photo, and which
    worst_scale = 0.0
    paths = sorted(args.kodak.glob("*.png"))
    for k, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w = image.shape[:2]
        streams = codec.encode([image], levels)[0]
        with torch.inference_mode():
            x = codec.model.to_model_input([image])
            exact = codec.model.channel_rms(codec.model.encode_latents(x))
        for lv, stream, sent_decode in zip(levels, streams, codec.decode(streams)):
            c, point = codec.parse(stream)
            sent = torch.from_numpy(np.exp2((np.asarray(unpack(stream).rms_codes) - 128) / 20)).float()
            worst_scale = max(worst_scale, float((sent / exact[0] - 1).abs().max()))
            idx = torch.from_numpy(codec._indices(c, point))[None]
            with torch.inference_mode():
                pixels = to_uint8(codec.model.decode_latents(codec.model.reconstruct_latents(idx, point, exact))[:, :, :h, :w])[0]
            measured = [psnr(image, sent_decode), psnr(image, pixels), ms_ssim_rgb(image, sent_decode),
                        ms_ssim_rgb(image, pixels)]
            sums[lv] += measured
            worst_loss[lv] = max(worst_loss[lv], (measured[1] - measured[0], path.name))
        print(f"\r{k + 1}/{len(paths)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    rows = []
    print("| level | PSNR, sent u8 norms | PSNR, exact norms | difference dB | MS-SSIM, sent | MS-SSIM, exact | difference "
          "| largest loss of one photo, dB |")
    print("|---|---|---|---|---|---|---|---|")
    for lv in levels:
        ps, pe, ms, me = sums[lv] / len(paths)
        loss, name = worst_loss[lv]
        rows.append({"level": lv, "psnr_sent": ps, "psnr_exact": pe, "ms_ssim_sent": ms, "ms_ssim_exact": me,
                     "largest_psnr_loss": loss, "largest_psnr_loss_image": name})
        print(f"| {lv} | {ps:.3f} | {pe:.3f} | {ps - pe:+.4f} | {ms:.4f} | {me:.4f} | {ms - me:+.5f} | {loss:.4f} ({name}) |")
    print(f"largest norm error: {100 * worst_scale:.2f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "norm_precision.json").write_text(json.dumps(
        {"model": args.model, "images": len(paths), "largest_norm_error": worst_scale, "levels": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
