"""Archiving at a quality target against the best fixed level: bytes saved, decodes per image.

Usage:
    python benchmarks/target_levels.py [--model oscar-tiny] [--targets ms_ssim>=0.9,psnr>=25]
        [--sets kodak,bsds500-test] [--limit N]

For each photo of each set, every level is encoded and decoded once with the codec's API
(in-process, one torch thread for encoding as always) and measured: the full ladder. Then, per
target, the archive job's own search (pipeline.target.cheapest_meeting, bisection) is replayed
on those measurements, counting the decodes it asks for, and compared with:
  * the exhaustive answer (the lowest level meeting the target, every level looked at): how
    often bisection's answer differs (it assumes quality rises with the level);
  * the cheapest single fixed level meeting the target on at least as many photos: its bytes.
Prints a table and writes target_levels.json to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oscar_model.codec import OscarCodec  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, psnr  # noqa: E402
from pipeline.stages.target import QualityTarget, cheapest_meeting  # noqa: E402

SETS = {"kodak": ROOT.parent / "shared/datasets/kodak", "bsds500-test": ROOT.parent / "shared/datasets/bsds500/test"}


def ladder_measurements(codec: OscarCodec, paths: list[Path]) -> list[dict]:
    """Per photo: bytes and metrics at every level."""
    levels = list(range(len(codec.ladder)))
    out = []
    for i, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        streams = codec.encode([image], levels)[0]
        decoded = codec.decode(streams)
        out.append({"name": path.name, "pixels": image.shape[0] * image.shape[1],
                    "bytes": [len(s) for s in streams],
                    "psnr": [psnr(image, d) for d in decoded], "ms_ssim": [ms_ssim_rgb(image, d) for d in decoded]})
        print(f"\r{path.parent.name}: {i + 1}/{len(paths)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def replay(photos: list[dict], target: QualityTarget) -> dict:
    levels = list(range(len(photos[0]["bytes"])))
    spent = decodes = disagree = met = 0
    first_met = []
    for p in photos:
        calls = []
        chosen, ok = cheapest_meeting(levels, lambda lv, p=p, calls=calls: calls.append(lv) or p[target.metric][lv], target)
        exhaustive = next((lv for lv in levels if target.met(p[target.metric][lv])), None)
        disagree += (chosen if ok else None) != exhaustive
        decodes += len(calls)
        spent += p["bytes"][chosen]
        met += ok
        first_met.append(chosen if ok else None)
    share = met / len(photos)
    fixed = None
    for lv in levels:
        meeting = sum(target.met(p[target.metric][lv]) for p in photos)
        if meeting >= met:
            fixed = {"level": lv, "photos_meeting": meeting, "bytes": sum(p["bytes"][lv] for p in photos)}
            break
    pixels = sum(p["pixels"] for p in photos)
    return {"target": str(target), "photos": len(photos), "met": met, "share_met": round(share, 4),
            "bpp_target": round(8 * spent / pixels, 4), "bytes_target": spent,
            "fixed_level": fixed, "bpp_fixed": round(8 * fixed["bytes"] / pixels, 4) if fixed else None,
            "saving": round(1 - spent / fixed["bytes"], 4) if fixed else None,
            "decodes_per_image": round(decodes / len(photos), 2), "disagree_with_exhaustive": disagree,
            "chosen_levels": {str(lv): first_met.count(lv) for lv in levels if first_met.count(lv)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="oscar-tiny")
    ap.add_argument("--targets", default="ms_ssim>=0.9,psnr>=25")
    ap.add_argument("--sets", default="kodak,bsds500-test")
    ap.add_argument("--limit", type=int, default=None, help="photos per set (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    codec = OscarCodec.from_pretrained(args.model)
    targets = [QualityTarget.parse(t) for t in args.targets.split(",")]
    result = {"model": args.model, "model_id": codec.model_id, "command": "python benchmarks/target_levels.py "
              + " ".join(sys.argv[1:]), "sets": {}}
    print("| set | target | photos meeting | mean bpp, target | cheapest fixed level on as many | its mean bpp | saving | "
          "decodes per image | bisection != exhaustive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        paths = sorted(p for p in SETS[name].iterdir() if p.suffix.lower() in (".png", ".jpg"))[: args.limit]
        t0 = time.time()
        photos = ladder_measurements(codec, paths)
        rows = [replay(photos, t) for t in targets]
        result["sets"][name] = {"seconds": round(time.time() - t0, 1), "rows": rows}
        for r in rows:
            f = r["fixed_level"]
            print(f"| {name} ({r['photos']}) | {r['target']} | {r['met']} ({100 * r['share_met']:.0f}%) | {r['bpp_target']:.4f} | "
                  f"{'L' + str(f['level']) if f else '-'} ({f['photos_meeting'] if f else '-'}) | {r['bpp_fixed'] or '-'} | "
                  f"{100 * r['saving']:.1f}% | {r['decodes_per_image']} | {r['disagree_with_exhaustive']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "target_levels.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
