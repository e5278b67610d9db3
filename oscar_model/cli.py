"""The ``oscar`` command: one image at a time (corpora go through ``python -m jobs.archive``).

    oscar encode IN.png -o OUT.osc --bpp 0.0625 [--model NAME]
    oscar decode IN.osc -o OUT.png [--timestep T]
    oscar info IN.osc
    oscar models [--json]
    oscar convert-official --sd21 DIR --checkpoint FILE --out DIR [--copy-base]
    oscar fit-tables --model DIR --images DIR [--limit N]
    oscar export-onnx [--model NAME] [--into-model]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .options import CodecOptions, add_codec_arguments

__all__ = ["main", "one_line"]

_STARTED = time.perf_counter()  # the command's start, so reported times include imports and loading


def _load_codec(args: argparse.Namespace):
    """``--model`` run with ``--max-pixels``, ``--tile``, ``--threads``, ``--runtime`` and (decode
    only) ``--precision``; bad options fail before the model loads. With the ONNX Runtime (the
    default on a CPU) the command never imports torch."""
    from .runtimes import open_codec

    return open_codec(args.model, options=CodecOptions.from_args(args), gradients=getattr(args, "refine", 0) > 0)


def _existing(paths: list[str]) -> list[Path]:
    """The input files, checked before any model is loaded: a missing one fails in a fraction of a second."""
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such file" if not Path(p).exists() else f"{p} is not a file")
    return [Path(p) for p in paths]


def _cmd_encode(args: argparse.Namespace) -> int:
    from .images import open_image, to_rgb_array

    _existing([args.input])
    CodecOptions.from_args(args)  # bad options fail before the model loads, too
    codec = _load_codec(args)
    if args.level is not None:
        point = codec.ladder.get(args.level)
    else:
        point = codec.ladder.nearest(args.bpp)
    image = to_rgb_array(open_image(Path(args.input), max_pixels=args.max_pixels))
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
    """Decodes one or many streams with one model load; times include the start-up.

    Why many: one process per file cost about 38 s each on a busy 2-core box (imports and the
    model load) while the line reported only the ~9 s of decoding.
    """
    from PIL import Image

    from .bitstream import BitstreamError, unpack
    from .images import classical_format, decode_classical_file

    inputs = _existing(args.input)
    CodecOptions.from_args(args)
    classical = {p: fmt for p in inputs if (fmt := classical_format(p.read_bytes()[:32]))}
    many = len(inputs) > 1 or (args.output is not None and args.output.endswith("/"))
    out_dir = Path(args.output) if many and args.output else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    elif len(inputs) > 1 and args.output:
        raise ValueError("with several inputs, -o must be a folder (end it with /)")
    if not many and not classical:
        unpack(inputs[0].read_bytes())  # a malformed file fails before the model is loaded
    t_load = time.perf_counter()
    codec = _load_codec(args) if len(classical) < len(inputs) else None  # a mixed archive's classical files need none
    load_s = time.perf_counter() - t_load
    failed = 0
    for path in inputs:
        target = (out_dir / path.with_suffix(".png").name) if out_dir else Path(args.output or path.with_suffix(".png"))
        t0 = time.perf_counter()
        try:
            if path in classical:
                image = decode_classical_file(path.read_bytes(), classical[path])
            else:
                (image,) = codec.decode([path.read_bytes()], timestep=args.timestep)
        except (BitstreamError, OSError, ValueError) as e:
            if not many:
                raise
            failed += 1
            print(f"oscar decode: error: {path}: {one_line(e)}", file=sys.stderr)
            continue
        Image.fromarray(image).save(target)
        kind = f" ({classical[path]} file, decoded by Pillow)" if path in classical else ""
        print(f"{path} -> {target} ({image.shape[1]}x{image.shape[0]}){kind} in {time.perf_counter() - t0:.2f} s")
    total = time.perf_counter() - _STARTED
    print(f"{len(inputs) - failed} of {len(inputs)} decoded in {total:.1f} s since the command started "
          f"(imports and model load {load_s + (t_load - _STARTED):.1f} s)")
    return 2 if failed else 0


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
    from .config import read_model_config
    from .registry import MODELS, ModelWeightsMissing

    rows = []
    for name, entry in MODELS.items():
        row: dict = {"name": name, "description": entry.description}
        try:
            path, cfg = read_model_config(name)
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


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_official

    t0 = time.perf_counter()
    model = convert_official(args.sd21, args.checkpoint, args.out, copy_base=args.copy_base, name=args.name)
    print(
        f"{args.out}: {model.config.name} with {len(model.ladder)} levels (model id {model.model_id}), "
        f"SD 2.1 {'copied' if args.copy_base else 'referenced at ' + str(args.sd21)}, in {time.perf_counter() - t0:.1f} s.\n"
        f"Streams are fixed-length until you fit entropy tables: oscar fit-tables --model {args.out} --images PHOTOS"
    )
    return 0


def _cmd_fit_tables(args: argparse.Namespace) -> int:
    from .train.tables import fit_tables

    t0 = time.perf_counter()
    result = fit_tables(args.model, args.images, limit=args.limit, device=args.device)
    for level, s in result["levels"].items():
        print(f"  {level}: typical {s['typical_bpp']:.4f} bpp, {s['entropy_bits']:.2f} of {s['fixed_bits']:.0f} bits per index"
              + (f", context {s['context_bits_held_out']:.2f} held out" if "context_bits_held_out" in s else ""))
    print(f"{args.model}: tables fitted on {result['images']} photos in {time.perf_counter() - t0:.1f} s; "
          f"model id is now {result['model_id']}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from .config import read_model_config
    from .onnx_codec import build_onnx_graphs, export_key, onnx_graphs

    t0 = time.perf_counter()
    path, config = read_model_config(args.model)
    if args.into_model:
        folder = path / "onnx"
        build_onnx_graphs(path, export_key(path, config), folder)
    else:
        folder, _ = onnx_graphs(path, config)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    print(f"{config.name} (model id {config.model_hash[:8]}): ONNX Runtime graphs in {folder}, {size:.0f} MB, "
          f"ready in {time.perf_counter() - t0:.1f} s")
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
    add_codec_arguments(e, precision=False)
    e.set_defaults(func=_cmd_encode)
    d = sub.add_parser("decode", help="decode .osc streams to PNG (one model load for all of them)")
    d.add_argument("input", nargs="+", help="one or more .osc files")
    d.add_argument("-o", "--output", help="output image, or with several inputs a folder ending in / "
                                          "(default: each input with .png)")
    d.add_argument("--model", default="oscar-tiny", help="registered name or model folder (the stream's model)")
    d.add_argument("--timestep", type=int, help="override the level's pseudo-timestep (fidelity/realism knob)")
    add_codec_arguments(d, refine=False)
    d.set_defaults(func=_cmd_decode)
    i = sub.add_parser("info", help="print a stream's header as JSON")
    i.add_argument("input")
    i.set_defaults(func=_cmd_info)
    m = sub.add_parser("models", help="list models and their rate ladders")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=_cmd_models)
    c = sub.add_parser("convert-official", help="SD 2.1 + the authors' OSCAR checkpoint -> a model folder")
    c.add_argument("--sd21", required=True, help="Stable Diffusion 2.1 in diffusers layout (vae/, unet/, scheduler/; safetensors)")
    c.add_argument("--checkpoint", required=True, help="the released OSCAR checkpoint (read with weights_only=True)")
    c.add_argument("--out", required=True, help="model folder to write")
    c.add_argument("--copy-base", action="store_true", help="copy SD 2.1's VAE and UNet into the folder (default: refer to --sd21)")
    c.add_argument("--name", default="oscar-sd21")
    c.set_defaults(func=_cmd_convert)
    f = sub.add_parser("fit-tables", help="fit a model folder's entropy tables and typical bpp on a folder of photos")
    f.add_argument("--model", required=True, help="model folder (or registered name)")
    f.add_argument("--images", required=True, help="folder of photos (searched recursively); at least 3, a few hundred for real tables")
    f.add_argument("--limit", type=int, default=None, help="use the first N photos (sorted by path)")
    f.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    f.set_defaults(func=_cmd_fit_tables)
    x = sub.add_parser("export-onnx", help="build a model's ONNX Runtime graphs now (else built on first use and cached)")
    x.add_argument("--model", default="oscar-tiny", help="registered name or model folder")
    x.add_argument("--into-model", action="store_true",
                   help="write them into the model folder (onnx/), so that every node that fetches the folder has them")
    x.set_defaults(func=_cmd_export_onnx)
    return p


def main(argv: list[str] | None = None) -> int:
    from .bitstream import BitstreamError
    from .registry import ModelWeightsMissing

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (BitstreamError, ModelWeightsMissing, ValueError, OSError, MemoryError) as e:
        # Bad input (ImageError, BitstreamError, CheckpointRefused are ValueErrors), missing or
        # unreadable files: one line, never a traceback.
        print(f"oscar {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug of ours: still one line, with the type so it can be reported
        if os.environ.get("OSCAR_DEBUG"):
            raise
        print(f"oscar {args.command}: internal error ({type(e).__name__}): {one_line(e)} "
              "(set OSCAR_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def one_line(e: BaseException, limit: int = 400) -> str:
    """An exception as one line of at most ``limit`` characters: what every CLI error prints."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
