"""The ``oscar`` command: one image at a time (corpora go through ``python -m jobs.archive``).

    oscar encode IN.png -o OUT.osc --bpp 0.0625 [--model NAME]
    oscar decode IN.osc -o OUT.png [--timestep T]
    oscar info IN.osc
    oscar models [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _load_codec(model: str):
    from .codec import OscarCodec

    return OscarCodec.from_pretrained(model)


def _cmd_encode(args: argparse.Namespace) -> int:
    from .images import to_rgb_array

    codec = _load_codec(args.model)
    if args.level is not None:
        point = codec.ladder.get(args.level)
    else:
        point = codec.ladder.nearest(args.bpp)
    image = to_rgb_array(Path(args.input))
    t0 = time.perf_counter()
    (stream,) = codec.encode([image], point.index, refine_steps=args.refine)
    seconds = time.perf_counter() - t0
    out = Path(args.output or Path(args.input).with_suffix(".osc"))
    out.write_bytes(stream)
    h, w = image.shape[:2]
    asked = f"asked {args.bpp} bpp, " if args.level is None else ""
    print(
        f"{args.input} ({w}x{h}) -> {out}: {asked}used level {point.index} "
        f"(typical {point.expected_bpp:.4f} bpp), {len(stream)} bytes = {8 * len(stream) / (h * w):.4f} bpp "
        f"in {seconds:.2f} s"
    )
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from PIL import Image

    from .bitstream import unpack

    data = Path(args.input).read_bytes()
    unpack(data)  # a malformed file fails before the model is loaded
    codec = _load_codec(args.model)
    t0 = time.perf_counter()
    (image,) = codec.decode([data], timestep=args.timestep)
    seconds = time.perf_counter() - t0
    out = Path(args.output or Path(args.input).with_suffix(".png"))
    Image.fromarray(image).save(out)
    print(f"{args.input} -> {out} ({image.shape[1]}x{image.shape[0]}) in {seconds:.2f} s")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .bitstream import unpack

    data = Path(args.input).read_bytes()
    c = unpack(data)
    info = {
        "file": args.input,
        "bytes": len(data),
        "bpp": round(8 * len(data) / (c.height * c.width), 6),
        **c.header_dict(),
    }
    print(json.dumps(info, indent=2))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .config import CodecConfig
    from .registry import CONFIG_NAME, MODELS, ModelWeightsMissing, resolve_model_path

    rows = []
    for name, entry in MODELS.items():
        row: dict = {"name": name, "description": entry.description}
        try:
            path = resolve_model_path(name)
            cfg = CodecConfig.from_json((path / CONFIG_NAME).read_text())
            row.update(available=True, path=str(path), ladder=cfg.ladder.to_dicts())
        except ModelWeightsMissing as e:
            row.update(available=False, missing=str(e), ladder=[])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = f"available at {row['path']}" if row["available"] else "weights missing"
        print(f"{row['name']}: {row['description']}\n  {state}")
        if not row["available"]:
            print("  " + row["missing"].replace("\n", "\n  "))
        for p in row["ladder"]:
            print(
                f"  level {p['index']}: typical {_typical(p)} bpp  (nominal {p['nominal_bpp']:.4f}; down-sample x{p['downsample']}, "
                f"K={p['codebook_size']}, groups={p['groups']}, t={p['timestep']})"
            )
    return 0


def _typical(point: dict) -> str:
    bpp = point.get("typical_bpp")
    return "   ?  " if bpp is None else f"{bpp:.4f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oscar", description="OSCAR one-step diffusion image codec")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="encode one image at the ladder level nearest a bpp")
    e.add_argument("input")
    e.add_argument("-o", "--output", help="output .osc file (default: input with .osc)")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, default=0.0625, help="target bits per pixel (the level whose typical bpp is nearest)")
    rate.add_argument("--level", type=int, help="ladder level index instead of --bpp")
    e.add_argument("--model", default="oscar-tiny", help="registered name or model folder")
    e.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="search the indices through the decoder for STEPS steps: better image, slower encode, same decoder")
    e.set_defaults(func=_cmd_encode)
    d = sub.add_parser("decode", help="decode an .osc stream to PNG")
    d.add_argument("input")
    d.add_argument("-o", "--output", help="output image (default: input with .png)")
    d.add_argument("--model", default="oscar-tiny")
    d.add_argument("--timestep", type=int, help="override the level's pseudo-timestep (fidelity/realism knob)")
    d.set_defaults(func=_cmd_decode)
    i = sub.add_parser("info", help="print a stream's header as JSON")
    i.add_argument("input")
    i.set_defaults(func=_cmd_info)
    m = sub.add_parser("models", help="list models and their rate ladders")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    from .bitstream import BitstreamError
    from .registry import ModelWeightsMissing

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BitstreamError, ModelWeightsMissing, FileNotFoundError, ValueError) as e:
        print(f"oscar {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
