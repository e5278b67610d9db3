"""Which JPEG XL binding the audit uses: pillow-jxl-plugin against imagecodecs, side by side.

Usage:
    pip install imagecodecs   # only for this comparison; the project depends on pillow-jxl-plugin
    python benchmarks/jxl_binding.py [--images ../shared/datasets/kodak] [--count 4]

Both wrap libjxl. Per binding and quality (imagecodecs' ``level`` is the same 0-100 quality
scale, mapped to a distance by libjxl), over the first --count images: mean bpp, mean encode
and decode milliseconds (best of 3), and the installed size of the package. Writes
benchmarks/results/jxl_binding.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = (0, 10, 30, 60, 90)


def best_ms(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, out


def package_mb(module) -> float:
    folder = Path(module.__file__).parent
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(ROOT.parent / "shared" / "datasets" / "kodak"))
    p.add_argument("--count", type=int, default=4)
    args = p.parse_args()
    import imagecodecs
    import pillow_jxl

    paths = sorted(Path(args.images).glob("*.png"))[: args.count]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in paths]

    def pillow_encode(a: np.ndarray, q: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JXL", quality=q, effort=7)
        return buf.getvalue()

    bindings = {
        "pillow-jxl-plugin": (pillow_encode, lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")), pillow_jxl),
        "imagecodecs": (lambda a, q: imagecodecs.jpegxl_encode(a, level=q, effort=7), imagecodecs.jpegxl_decode,
                        imagecodecs),
    }
    rows = []
    for name, (encode, decode, module) in bindings.items():
        for q in QUALITIES:
            bpp, enc, dec = [], [], []
            for a in images:
                ms, data = best_ms(lambda a=a, q=q, encode=encode: encode(a, q))
                enc.append(ms)
                bpp.append(8 * len(data) / (a.shape[0] * a.shape[1]))
                ms, decoded = best_ms(lambda data=data, decode=decode: decode(data))
                dec.append(ms)
                assert decoded.shape == a.shape
            rows.append({"binding": name, "quality": q, "bpp": round(float(np.mean(bpp)), 4),
                         "encode_ms": round(float(np.mean(enc)), 1), "decode_ms": round(float(np.mean(dec)), 1),
                         "package_mb": package_mb(module)})
    print(f"{'binding':<18} {'q':>3} {'bpp':>7} {'enc ms':>7} {'dec ms':>7} {'MB':>6}")
    for r in rows:
        print(f"{r['binding']:<18} {r['quality']:>3} {r['bpp']:>7.4f} {r['encode_ms']:>7.1f} {r['decode_ms']:>7.1f} "
              f"{r['package_mb']:>6.1f}")
    out = {"command": "python benchmarks/jxl_binding.py --count " + str(args.count), "images": len(images),
           "rows": rows}
    (ROOT / "benchmarks" / "results" / "jxl_binding.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
