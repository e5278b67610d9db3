"""Rate-distortion of an OSCAR model on Kodak against JPEG, WebP and AVIF at matched bpp.

Usage:
    python benchmarks/rd_kodak.py [--model oscar-tiny] [--kodak ../shared/datasets/kodak] [--out benchmarks/results]

For every ladder level and every Kodak image: actual bpp (every container byte), RGB PSNR,
MS-SSIM, encode and decode seconds on this machine; the same level decoded without the
denoiser (ablation) and the autoencoder alone (the quality ceiling). Each classical codec is
searched per image for the highest quality whose file is at or below OSCAR's bpp on that
image; images where it cannot go that low are counted and excluded from its mean (said in
the table). Writes rd_kodak.json, rd_kodak.png (with CompressAI's published curves from
../shared/anchors/kodak) and side_by_side.png; prints a Markdown table.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oscar_model.codec import OscarCodec  # noqa: E402
from pipeline.report.figures import rd_plot_png  # noqa: E402
from pipeline.stages.classic import available_codecs, decode_classic, match_bpp  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, perceptual_available, psnr  # noqa: E402

ANCHOR_FILES = {"JPEG (CompressAI)": "jpeg.json", "WebP (CompressAI)": "webp.json", "AV1 (CompressAI)": "av1.json",
                "BPG 4:4:4": "bpg_444_x265_ycbcr.json", "VTM": "vtm.json"}


def anchors(folder: Path, max_bpp: float) -> dict[str, list[tuple[float, float, float]]]:
    out = {}
    for name, file in ANCHOR_FILES.items():
        path = folder / file
        if not path.exists():
            continue
        r = json.loads(path.read_text())["results"]
        pts = [(b, p, m) for b, p, m in zip(r["bpp"], r["psnr-rgb"], r["ms-ssim-rgb"]) if b <= max_bpp * 1.3]
        if pts:
            out[name] = pts
    return out


def mean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def side_by_side(codec: OscarCodec, images: dict[str, np.ndarray], levels: list[int], out: Path, refine_steps: int = 0) -> None:
    """original | oscar | AVIF at the same bpp, full frame on top and a 3x crop below, per image and level."""
    from PIL import ImageDraw

    tiles = []
    for name, img in images.items():
        for level in levels:
            (stream,) = codec.encode([img], level, refine_steps=refine_steps)
            (rec,) = codec.decode([stream])
            bpp = 8 * len(stream) / (img.shape[0] * img.shape[1])
            avif = match_bpp(img, "avif", bpp)
            avif_img = decode_classic(avif.data)
            row = []
            for label, im in ((f"{name} original", img), (f"oscar L{level} {bpp:.3f} bpp", rec),
                              (f"AVIF q{avif.quality} {avif.bpp:.3f} bpp" + ("" if avif.reached else " (floor)"), avif_img)):
                h, w = im.shape[:2]
                small = Image.fromarray(im).resize((w // 2, h // 2), Image.Resampling.LANCZOS)
                cy, cx = h // 2 - 64, w // 2 - 96
                crop = Image.fromarray(im[cy : cy + 128, cx : cx + 192]).resize((w // 2, h // 3), Image.Resampling.NEAREST)
                tile = Image.new("RGB", (w // 2, h // 2 + h // 3 + 18), "white")
                tile.paste(small, (0, 18))
                tile.paste(crop, (0, 18 + h // 2))
                ImageDraw.Draw(tile).text((4, 3), label, fill="black")
                row.append(tile)
            strip = Image.new("RGB", (sum(t.width for t in row) + 8 * 2, row[0].height), "white")
            x = 0
            for t in row:
                strip.paste(t, (x, 0))
                x += t.width + 8
            tiles.append(strip)
    sheet = Image.new("RGB", (max(t.width for t in tiles), sum(t.height + 8 for t in tiles)), "white")
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height + 8
    sheet.save(out)


def compare_on_reached_images(per_image: list[dict], model: str, classic: list[str], levels: list[int]) -> list[dict]:
    """Each classical codec against the model on exactly the images that codec could reach.

    Why: a codec's mean over the images it can reach is a mean over the easy ones (the images
    it can squeeze to ~0.1 bpp are the smooth ones); the model must be compared on the same set.
    """
    ours = {(r["image"], r["level"]): r for r in per_image if r["codec"] == model}
    out = []
    for c in classic:
        for lv in levels:
            rows = [r for r in per_image if r["codec"] == c and r["level"] == lv and r.get("reached")]
            if not rows:
                continue
            mine = [ours[(r["image"], lv)] for r in rows]
            out.append({
                "codec": c, "level": lv, "images": len(rows),
                "bpp": mean([r["bpp"] for r in rows]), "oscar_bpp": mean([m["bpp"] for m in mine]),
                "ms_ssim": mean([r["ms_ssim"] for r in rows]), "oscar_ms_ssim": mean([m["ms_ssim"] for m in mine]),
                "psnr": mean([r["psnr"] for r in rows]), "oscar_psnr": mean([m["psnr"] for m in mine]),
                "oscar_wins_ms_ssim": sum(m["ms_ssim"] > r["ms_ssim"] for m, r in zip(mine, rows)),
            })
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--kodak", default=str(ROOT.parent / "shared" / "datasets" / "kodak"))
    p.add_argument("--anchors", default=str(ROOT.parent / "shared" / "anchors" / "kodak"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--limit", type=int, default=None, help="first N images only (quick check)")
    p.add_argument("--codecs", default="jpeg,webp,avif")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="encoder-side index search through the decoder, STEPS Adam steps per image and level (0: greedy)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    codec = OscarCodec.from_pretrained(args.model, device="cpu")
    files = sorted(Path(args.kodak).glob("*.png"))[: args.limit]
    if not files:
        raise SystemExit(f"no PNGs under {args.kodak}")
    images = {f.stem: np.asarray(Image.open(f).convert("RGB")) for f in files}
    classic = [c for c in args.codecs.split(",") if c in available_codecs()]
    levels = [p_.index for p_ in codec.ladder]

    # warm-up (first-call allocations), not timed
    codec.decode(codec.encode([images[files[0].stem]], [levels[0]])[0])

    per_image: list[dict] = []
    for name, img in images.items():
        h, w = img.shape[:2]
        x = codec.model.to_model_input([img])
        with torch.inference_mode():
            ae = codec.model.decode_latents(codec.model.encode_latents(x))[:, :, :h, :w]
        ae_img = ((ae.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        per_image.append({"image": name, "codec": "autoencoder only", "level": None, "bpp": None,
                          "psnr": psnr(img, ae_img), "ms_ssim": ms_ssim_rgb(img, ae_img)})
        streams_all, ae_ms, rate_ms = codec.encode_arrays_timed([img], [codec.ladder.get(lv) for lv in levels], refine_steps=args.refine)
        streams = streams_all[0]
        for lv, stream in zip(levels, streams):
            bpp = 8 * len(stream) / (h * w)
            t0 = time.perf_counter()
            (rec,) = codec.decode([stream])
            dec_s = time.perf_counter() - t0
            (raw,) = codec.decode([stream], denoise=False)
            per_image.append({"image": name, "codec": codec.config.name, "level": lv, "bpp": bpp, "psnr": psnr(img, rec),
                              "ms_ssim": ms_ssim_rgb(img, rec), "encode_s": (ae_ms[0] + rate_ms[0][levels.index(lv)]) / 1000,
                              "decode_s": dec_s, "bytes": len(stream)})
            per_image.append({"image": name, "codec": f"{codec.config.name} without denoiser", "level": lv, "bpp": bpp,
                              "psnr": psnr(img, raw), "ms_ssim": ms_ssim_rgb(img, raw)})
            for c in classic:
                res = match_bpp(img, c, bpp)
                t0 = time.perf_counter()
                dec = decode_classic(res.data)
                dec_s = time.perf_counter() - t0
                per_image.append({"image": name, "codec": c, "level": lv, "bpp": res.bpp, "psnr": psnr(img, dec),
                                  "ms_ssim": ms_ssim_rgb(img, dec), "encode_s": res.encode_ms / 1000,
                                  "decode_s": dec_s, "quality": res.quality, "reached": res.reached,
                                  "target_bpp": bpp})
        print(f"{name} done", file=sys.stderr, flush=True)

    summary = []
    names = ["autoencoder only", codec.config.name, f"{codec.config.name} without denoiser", *classic]
    for cname in names:
        for lv in ([None] if cname == "autoencoder only" else levels):
            rows = [r for r in per_image if r["codec"] == cname and r["level"] == lv]
            reached = [r for r in rows if r.get("reached", True)]
            summary.append({
                "codec": cname, "level": lv, "images": len(rows), "reached": len(reached),
                "bpp": mean([r["bpp"] for r in reached]), "psnr": mean([r["psnr"] for r in reached]),
                "ms_ssim": mean([r["ms_ssim"] for r in reached]),
                "encode_s": mean([r.get("encode_s") for r in reached]), "decode_s": mean([r.get("decode_s") for r in reached]),
            })
    head_to_head = compare_on_reached_images(per_image, codec.config.name, classic, levels)
    perceptual = perceptual_available()
    result = {
        "model": codec.config.name, "model_id": codec.model_id, "images": len(images),
        "ladder": codec.ladder.to_dicts(), "summary": summary, "head_to_head": head_to_head, "per_image": per_image,
        "perceptual_metrics": {k: ("computed" if v else "absent: package or backbone weights not on this machine") for k, v in perceptual.items()},
        "torch_threads": args.threads, "refine_steps": args.refine, "command": "python benchmarks/rd_kodak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "rd_kodak.json").write_text(json.dumps(result, indent=1))
    plot_rows = [{"codec": s["codec"] if s["codec"] in classic else s["codec"] + "", "rate_level": s["level"], "bpp": s["bpp"],
                  "psnr": s["psnr"], "ms_ssim": s["ms_ssim"]} for s in summary if s["level"] is not None and s["bpp"] is not None]
    (out / "rd_kodak.png").write_bytes(rd_plot_png(plot_rows, title=f"Kodak ({len(images)} images): {codec.config.name} vs classical codecs at matched bpp",
                                                    extra=anchors(Path(args.anchors), max(s["bpp"] or 0 for s in summary))))
    pick = [n for n in ("kodim04", "kodim14", "kodim23") if n in images] or list(images)[:3]
    side_by_side(codec, {n: images[n] for n in pick}, [levels[1], levels[-1]], out / "side_by_side.png", args.refine)

    print(f"\nKodak, {len(images)} images, model {codec.config.name} (id {codec.model_id}), refine steps {args.refine}; LPIPS/DISTS: "
          + ", ".join(f"{k} {v}" for k, v in result["perceptual_metrics"].items()))
    print("| codec | level | bpp | PSNR dB | MS-SSIM | encode s | decode s | images at/below target |")
    print("|---|---|---|---|---|---|---|---|")

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for s in summary:
        lvl = "-" if s["level"] is None else s["level"]
        print(f"| {s['codec']} | {lvl} | {fmt(s['bpp'], '.4f')} | {fmt(s['psnr'], '.2f')} | {fmt(s['ms_ssim'], '.4f')} | "
              f"{fmt(s['encode_s'], '.3f')} | {fmt(s['decode_s'], '.3f')} | {s['reached']}/{s['images']} |")
    print(f"\nHead to head on the images each codec can reach (bpp at or below {codec.config.name}'s):")
    print(f"| codec | level | images | its bpp | {codec.config.name} bpp | its MS-SSIM | {codec.config.name} MS-SSIM | "
          f"its PSNR | {codec.config.name} PSNR | {codec.config.name} higher MS-SSIM on |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for h in head_to_head:
        print(f"| {h['codec']} | {h['level']} | {h['images']} | {h['bpp']:.4f} | {h['oscar_bpp']:.4f} | {h['ms_ssim']:.4f} | "
              f"{h['oscar_ms_ssim']:.4f} | {h['psnr']:.2f} | {h['oscar_psnr']:.2f} | {h['oscar_wins_ms_ssim']}/{h['images']} |")
    print(f"\nwrote {out / 'rd_kodak.json'}, {out / 'rd_kodak.png'}, {out / 'side_by_side.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
