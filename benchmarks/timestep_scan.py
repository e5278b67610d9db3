"""Is each level's pseudo-timestep where SSIMULACRA2 wants it? (issue 35)

    python benchmarks/timestep_scan.py [--data ../shared/datasets/bsds500/train] [--count 8]

The calibration stage picks each level's pseudo-timestep from the latent error (docs/training.md).
A perceptual metric may prefer another: a larger timestep lets the denoiser draw more of its own
detail. This decodes the same streams of ``--count`` training photos (512x384 centre crops, every
200/count-th photo of the folder) with each level's timestep scaled by 0.5 to 2, and scores
SSIMULACRA2 (:mod:`oscar_model.ssimulacra2`, which matches the PyPI package to 0.001) and MS-SSIM.
The streams are the same whatever the timestep, so bpp does not move. Training photos only:
choosing a timestep is tuning, and the val and test splits judge.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from perceptual_model import crop  # noqa: E402

FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def main() -> int:
    import torch

    from oscar_model.codec import OscarCodec
    from oscar_model.ssimulacra2 import ssimulacra2
    from pipeline.stages.metrics import ms_ssim_rgb

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "bsds500" / "train"))
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timestep_scan.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sources = sorted(f for f in Path(args.data).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    sources = sources[:: max(1, 200 // args.count)][: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        images = []
        for f in sources:
            crop(f, Path(tmp) / f"{f.stem}.png")
            images.append(np.asarray(Image.open(Path(tmp) / f"{f.stem}.png").convert("RGB")))
    codec = OscarCodec.from_pretrained(args.model, device="cpu")
    levels = list(range(len(codec.ladder)))
    streams = codec.encode(images, levels)
    rows = []
    for level in levels:
        calibrated = codec.ladder.get(level).timestep
        for factor in FACTORS:
            timestep = int(round(calibrated * factor))
            decoded = codec.decode([s[level] for s in streams], timestep=timestep)
            row = {"level": level, "factor": factor, "timestep": timestep,
                   "ssimulacra2": float(np.mean([ssimulacra2(a, b) for a, b in zip(images, decoded)])),
                   "ms_ssim": float(np.mean([ms_ssim_rgb(a, b) for a, b in zip(images, decoded)]))}
            rows.append(row)
            print(f"L{level} timestep {timestep:4d} (x{factor}): SSIMULACRA2 {row['ssimulacra2']:7.2f}  "
                  f"MS-SSIM {row['ms_ssim']:.4f}", flush=True)
    best = {lv: max((r for r in rows if r["level"] == lv), key=lambda r: r["ssimulacra2"])["factor"] for lv in levels}
    result = {"command": "python benchmarks/timestep_scan.py " + " ".join(sys.argv[1:]), "model": args.model,
              "model_id": codec.model_id, "images": [f.name for f in sources], "rows": rows,
              "best_factor_for_ssimulacra2": best}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("best factor per level:", best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
