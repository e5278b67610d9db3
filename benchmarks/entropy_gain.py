"""What context rANS buys: payload bytes of each level's Kodak indices under every coding.

Usage: python benchmarks/entropy_gain.py [--model oscar-tiny] [--kodak ../shared/datasets/kodak]

Codes the same indices three ways (fixed-length, rANS under the order-0 table, context rANS)
and times the context decode; prints a table, writes benchmarks/results/entropy_gain.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from oscar_model.codec import OscarCodec  # noqa: E402
from oscar_model.entropy import _decode_context, _encode_context, _encode_fixed, _encode_rans  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--kodak", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"))
    args = p.parse_args()
    codec = OscarCodec.from_pretrained(args.model, device="cpu")
    files = sorted(Path(args.kodak).glob("*.png"))
    if not files:
        raise SystemExit(f"no PNGs in {args.kodak}")
    totals = {q.index: {"fixed": 0, "order0": 0, "context": 0, "pixels": 0, "decode_s": 0.0} for q in codec.ladder}
    for f in files:
        x = codec.model.to_model_input([np.asarray(Image.open(f).convert("RGB"))])
        with torch.inference_mode():
            z = codec.model.encode_latents(x)
        for q in codec.ladder:
            with torch.inference_mode():
                grid = codec.model.hyper_encoders[q.index].encode(z)[0].numpy()
            flat = grid.reshape(q.groups, -1)
            t = totals[q.index]
            t["pixels"] += x.shape[-1] * x.shape[-2]
            t["fixed"] += len(_encode_fixed(flat, q.codebook_size))
            order0 = len(_encode_rans(flat, codec.model.entropy_tables[q.index]))
            model = codec.model.context_models.get(q.index)
            t["order0"] += order0
            if model is None:
                t["context"] += order0
                continue
            payload = _encode_context(grid, model)
            t["context"] += len(payload)
            start = time.perf_counter()
            _decode_context(payload, q.groups, *grid.shape[1:], model)
            t["decode_s"] += time.perf_counter() - start
    rows = []
    print("| level | fixed bpp | order-0 rANS bpp | context rANS bpp | saving vs order-0 | context decode ms/image |")
    print("|---|---|---|---|---|---|")
    for k, t in totals.items():
        bpp = {c: 8 * t[c] / t["pixels"] for c in ("fixed", "order0", "context")}
        saving = 1 - t["context"] / t["order0"]
        decode_ms = 1000 * t["decode_s"] / len(files)
        rows.append({"level": k, **{f"{c}_payload_bpp": round(v, 5) for c, v in bpp.items()}, "saving": round(saving, 4),
                     "context_decode_ms": round(decode_ms, 2)})
        ctx = f"{bpp['context']:.4f}" if k in codec.model.context_models else "(no context model)"
        print(f"| {k} | {bpp['fixed']:.4f} | {bpp['order0']:.4f} | {ctx} | {100 * saving:.1f}% | {decode_ms:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    out = {"model": args.model, "model_id": codec.model_id, "images": len(files), "payload_only": True,
           "levels": rows, "command": "python benchmarks/entropy_gain.py"}
    (RESULTS / "entropy_gain.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'entropy_gain.json'}")


if __name__ == "__main__":
    main()
