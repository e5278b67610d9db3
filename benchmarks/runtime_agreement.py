"""How closely the two runtimes agree: the same streams decoded by torch and by ONNX Runtime.

Usage:
    python benchmarks/runtime_agreement.py [--images DIR] [--count 6]

For each photo and every level: the stream each runtime writes (are the bytes the same?), the
PSNR between the two runtimes' decodes of one stream (the bar: 40 dB or more; null where the
two decodes are identical), and each
decode's MS-SSIM against the original (the bar: within 0.005). Defaults to the first photos of
BSDS500's test split. Writes benchmarks/results/runtime_agreement.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oscar_model.codec import OscarCodec  # noqa: E402
from oscar_model.onnx_codec import OnnxCodec  # noqa: E402
from oscar_model.options import CodecOptions  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, psnr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(ROOT.parent / "shared" / "datasets" / "bsds500" / "test"))
    p.add_argument("--count", type=int, default=6)
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    files = sorted(f for f in Path(args.images).rglob("*") if f.suffix.lower() in (".png", ".jpg"))[: args.count]
    torch_codec = OscarCodec.from_pretrained(args.model, device="cpu")
    onnx_codec = OnnxCodec.from_pretrained(args.model, options=CodecOptions(threads=2))
    levels = [pt.index for pt in torch_codec.ladder]
    rows = []
    for f in files:
        image = np.asarray(Image.open(f).convert("RGB"))
        by_torch, by_onnx = torch_codec.encode([image], levels)[0], onnx_codec.encode([image], levels)[0]
        for level, a, b in zip(levels, by_torch, by_onnx):
            (t,), (o,) = torch_codec.decode([a]), onnx_codec.decode([a])
            (t2,), (o2,) = torch_codec.decode([b]), onnx_codec.decode([b])
            between = min(psnr(t, o), psnr(t2, o2))
            rows.append({"image": f.name, "level": level, "same_bytes": a == b,
                         "psnr_between_decodes": None if between == float("inf") else round(between, 2),
                         "ms_ssim_torch": round(ms_ssim_rgb(image, t), 5), "ms_ssim_onnx": round(ms_ssim_rgb(image, o), 5)})
    worst_psnr = min((r["psnr_between_decodes"] for r in rows if r["psnr_between_decodes"] is not None), default=None)
    worst_ms_ssim = max(abs(r["ms_ssim_torch"] - r["ms_ssim_onnx"]) for r in rows)
    result = {
        "images": len(files), "levels": len(levels), "streams": len(rows),
        "streams_with_the_same_bytes": sum(r["same_bytes"] for r in rows),
        "lowest_psnr_between_decodes": worst_psnr, "largest_ms_ssim_difference": round(worst_ms_ssim, 5),
        "rows": rows,
        "command": "python benchmarks/runtime_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "runtime_agreement.json").write_text(json.dumps(result, indent=1))
    print(f"{len(rows)} streams ({len(files)} photos x {len(levels)} levels): {result['streams_with_the_same_bytes']} with "
          f"the same bytes in both runtimes; decodes of one stream agree to {worst_psnr} dB or more; MS-SSIM differs by "
          f"{worst_ms_ssim:.5f} at most")
    return 0


if __name__ == "__main__":
    sys.exit(main())
