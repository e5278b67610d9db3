"""The CPU runtimes side by side: whole ``oscar`` commands, the codec per megapixel, memory.

Usage:
    python benchmarks/cpu_runtime.py [--image kodim23.png] [--level 3] [--large-mpx 24] [--repeats 2]

Measured, each runtime in its own fresh processes, one after the other:

1. **Whole commands** (what a user waits for): ``oscar encode`` and ``oscar decode`` of one
   photo, from process start to exit, best of ``--repeats``, with ``--runtime onnxruntime`` and
   ``--runtime torch``; the ratio of the two is the issue's bar (decode <= 0.4, encode <= 0.5).
   The ONNX graphs are built beforehand; their one-time export is timed separately.
2. **The codec alone**, in a worker process per runtime and size: start-up (imports and model
   load), encode and decode in s/Mpx (the photo: best of three calls, since ONNX Runtime loads
   its graphs on the first and reaches its pace by the third), and the process's peak RSS, at
   the photo's size and at
   ``--large-mpx`` (the photo enlarged: the tiled path).
3. **The candidates per network**: ONNX Runtime and, where installed, OpenVINO running the same
   exported graphs at the photo's size (decode graphs on 2 threads, encode graphs on 1), with
   each package's installed size.
4. **The reference line**: AVIF and JPEG XL decoding the photo at about the same bytes.

Writes ``benchmarks/results/cpu_runtime.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUNTIMES = ("onnxruntime", "torch")


def _command(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall s, peak RSS MB) of one ``oscar`` command in a fresh process."""
    wrapper = ("import resource, sys\nfrom oscar_model.cli import main\nrc = main(sys.argv[1:])\n"
               "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"oscar {' '.join(args)} failed: {done.stderr[-2000:]}")
    rss = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS"))
    return wall, rss // 1024


def whole_commands(image: Path, level: int, repeats: int, env: dict[str, str], work: Path) -> dict:
    out: dict = {}
    for _ in range(repeats):
        for runtime in RUNTIMES:  # interleaved: both see the same machine
            stream = work / f"{runtime}.osc"
            enc = _command(["encode", str(image), "-o", str(stream), "--level", str(level), "--runtime", runtime], env)
            dec = _command(["decode", str(stream), "-o", str(work / f"{runtime}.png"), "--runtime", runtime], env)
            for name, (wall, rss) in (("encode", enc), ("decode", dec)):
                entry = out.setdefault(runtime, {}).setdefault(name, {"runs_s": [], "peak_rss_mb": 0})
                entry["runs_s"].append(round(wall, 3))
                entry["peak_rss_mb"] = max(entry["peak_rss_mb"], rss)
    for runtime in RUNTIMES:
        for name in ("encode", "decode"):
            out[runtime][name]["best_s"] = min(out[runtime][name]["runs_s"])
    for name in ("encode", "decode"):
        out[f"{name}_ratio_onnx_over_torch"] = round(out["onnxruntime"][name]["best_s"] / out["torch"][name]["best_s"], 3)
    same = (work / "onnxruntime.osc").read_bytes() == (work / "torch.osc").read_bytes()
    out["streams_identical"] = same
    return out


def worker(runtime: str, image_path: str, level: int, mpx: float | None) -> dict:
    """The codec alone, in this process: start-up, encode, decode, peak RSS."""
    t0 = time.perf_counter()
    from oscar_model.options import CodecOptions
    from oscar_model.runtimes import open_codec

    codec = open_codec("oscar-tiny", device="cpu", options=CodecOptions(runtime=runtime, threads=2))
    startup = time.perf_counter() - t0
    image = Image.open(image_path).convert("RGB")
    if mpx:
        scale = (mpx * 1e6 / (image.width * image.height)) ** 0.5
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    pixels = np.asarray(image)
    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    encodes, decodes = [], []
    for _ in range(3 if megapixels < 2 else 1):  # a photo: the first calls also load and warm the graphs; best of 3
        t0 = time.perf_counter()
        (stream,) = codec.encode([pixels], level)
        encodes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.decode([stream])
        decodes.append(time.perf_counter() - t0)
    encode_s, decode_s = min(encodes), min(decodes)
    return {"runtime": runtime, "size": f"{pixels.shape[1]}x{pixels.shape[0]}", "megapixels": round(megapixels, 2),
            "tiled": not codec.fits_one_tile(*pixels.shape[:2]), "startup_s": round(startup, 2),
            "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2),
            "encode_s_per_mpx": round(encode_s / megapixels, 3), "decode_s_per_mpx": round(decode_s / megapixels, 3),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def codec_alone(image: Path, level: int, large_mpx: float, env: dict[str, str]) -> list[dict]:
    rows = []
    for mpx in (None, large_mpx):
        for runtime in RUNTIMES:
            done = subprocess.run([sys.executable, __file__, "--worker", runtime, "--image", str(image), "--level",
                                   str(level), *(["--large-mpx", str(mpx)] if mpx else [])],
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(f"worker {runtime} failed: {done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _installed_mb(distribution: str) -> float | None:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    return round(sum(f.locate().stat().st_size for f in files if f.locate().exists()) / 1e6, 1)


def per_network(graphs: Path, image: Path, level: int, repeats: int = 3) -> dict:
    """Each exported graph at the photo's size, in ONNX Runtime and (when installed) OpenVINO."""
    import onnxruntime as ort

    from oscar_model.codec import OscarCodec

    codec = OscarCodec.from_pretrained("oscar-tiny", device="cpu")
    stream = codec.encode([Image.open(image).convert("RGB")], level)[0]
    c, point = codec.parse(stream)
    indices = codec._indices(c, point)[None].astype(np.int64)
    h, w = c.height, c.width
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
    z = np.random.default_rng(1).standard_normal((1, 4, h // 8, w // 8)).astype(np.float32)
    feeds = {
        "autoencoder_encoder": ({"images": x}, 1), f"level_{level}_encoder": ({"latents": z}, 1),
        f"level_{level}_decoder": ({"indices": indices}, 2),
        "denoiser": ({"z_t": z, "timesteps": np.array([point.timestep], dtype=np.int64)}, 2),
        "autoencoder_decoder": ({"latents": z}, 2),
    }
    runners = {}

    def ort_runner(name: str, threads: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(str(graphs / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, inputs)

    runners["onnxruntime"] = ort_runner
    try:
        import openvino as ov

        core = ov.Core()

        def ov_runner(name: str, threads: int):
            compiled = core.compile_model(str(graphs / f"{name}.onnx"), "CPU",
                                          {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            return lambda inputs: request.infer(inputs)

        runners["openvino"] = ov_runner
    except ImportError:
        pass
    out: dict = {"size": f"{w}x{h}", "graphs": {}, "installed_mb": {r: _installed_mb(r) for r in runners}}
    for name, (inputs, threads) in feeds.items():
        for runtime, make in runners.items():
            t0 = time.perf_counter()
            run = make(name, threads)
            load = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run(inputs)
                times.append(time.perf_counter() - t0)
            out["graphs"].setdefault(name, {})[runtime] = {"threads": threads, "load_s": round(load, 3),
                                                           "best_s": round(min(times), 3)}
    return out


def reference_decoders(image: Path, target_bytes: int, mpx: float) -> list[dict]:
    """AVIF and JPEG XL: the highest quality at or under ``target_bytes``, decode time best of 5."""
    import pillow_jxl  # noqa: F401 - registers JPEG XL with Pillow

    photo = Image.open(image).convert("RGB")
    rows = []
    for label, fmt in (("AVIF", "AVIF"), ("JPEG XL", "JXL")):
        for size_label, im in (("photo", photo), ("large", None)):
            if im is None:
                scale = (mpx * 1e6 / (photo.width * photo.height)) ** 0.5
                im = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
            budget = target_bytes * (im.width * im.height) / (photo.width * photo.height)
            data = b""
            for quality in range(5, 96, 5):
                buf = io.BytesIO()
                im.save(buf, fmt, quality=quality)
                if buf.tell() > budget and data:
                    break
                data = buf.getvalue()
            times = []
            for _ in range(5 if size_label == "photo" else 2):
                t0 = time.perf_counter()
                Image.open(io.BytesIO(data)).load()
                times.append(time.perf_counter() - t0)
            mp = im.width * im.height / 1e6
            rows.append({"codec": label, "size": f"{im.width}x{im.height}", "bytes": len(data),
                         "decode_s": round(min(times), 4), "decode_s_per_mpx": round(min(times) / mp, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=str(ROOT.parent / "shared" / "datasets" / "kodak" / "kodim23.png"))
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--large-mpx", type=float, default=24.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        mpx = args.large_mpx if "--large-mpx" in (argv if argv is not None else sys.argv) else None
        print(json.dumps(worker(args.worker, args.image, args.level, mpx)))
        return 0

    from oscar_model.config import read_model_config
    from oscar_model.onnx_codec import ONNX_CACHE_ENV, onnx_graphs

    work = Path(tempfile.mkdtemp(prefix="oscar-cpu-runtime-"))
    env = {**os.environ, ONNX_CACHE_ENV: str(work / "onnx-cache"), "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "oscar_model.cli", "export-onnx"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    export_s = time.perf_counter() - t0
    os.environ[ONNX_CACHE_ENV] = env[ONNX_CACHE_ENV]
    graphs, _ = onnx_graphs(*read_model_config("oscar-tiny"))
    commands = whole_commands(Path(args.image), args.level, args.repeats, env, work)
    target_bytes = (work / "torch.osc").stat().st_size
    result = {
        "image": Path(args.image).name, "level": args.level, "cpus": os.cpu_count(),
        "one_time_export_s": round(export_s, 2),
        "export_mb": round(sum(f.stat().st_size for f in graphs.iterdir()) / 1e6, 1),
        "whole_commands": commands,
        "codec": codec_alone(Path(args.image), args.level, args.large_mpx, env),
        "per_network": per_network(graphs, Path(args.image), args.level),
        "reference_decoders": reference_decoders(Path(args.image), target_bytes, args.large_mpx),
        "gpu": None,
        "command": "python benchmarks/cpu_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "cpu_runtime.json").write_text(json.dumps(result, indent=1))
    print(f"one-time export {result['one_time_export_s']} s, {result['export_mb']} MB of graphs")
    print("\n| whole command | onnxruntime best s | torch best s | ratio | peak RSS MB (onnx / torch) |\n|---|---|---|---|---|")
    for name in ("encode", "decode"):
        o, t = commands["onnxruntime"][name], commands["torch"][name]
        print(f"| oscar {name} | {o['best_s']} | {t['best_s']} | {commands[f'{name}_ratio_onnx_over_torch']} | "
              f"{o['peak_rss_mb']} / {t['peak_rss_mb']} |")
    print("\n| runtime | size | tiled | start-up s | encode s/Mpx | decode s/Mpx | peak RSS MB |\n|---|---|---|---|---|---|---|")
    for row in result["codec"]:
        print(f"| {row['runtime']} | {row['size']} | {row['tiled']} | {row['startup_s']} | {row['encode_s_per_mpx']} | "
              f"{row['decode_s_per_mpx']} | {row['peak_rss_mb']} |")
    print("\n| graph | " + " | ".join(result["per_network"]["installed_mb"]) + " (best s) |")
    for name, by in result["per_network"]["graphs"].items():
        print(f"| {name} | " + " | ".join(f"{v['best_s']}" for v in by.values()) + " |")
    print("\n| reference | size | bytes | decode s/Mpx |\n|---|---|---|---|")
    for row in result["reference_decoders"]:
        print(f"| {row['codec']} | {row['size']} | {row['bytes']} | {row['decode_s_per_mpx']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
