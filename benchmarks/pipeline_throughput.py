"""Throughput of the archive job against a bare single-process loop over the same codec calls.

Usage:
    python benchmarks/pipeline_throughput.py [--model oscar-tiny] [--rates 0.03,0.125] [--cpus 2]
        [--runtimes onnxruntime,torch]

Both sides do the same work per image: read the PNG, encode at every rate (autoencoder once),
decode every stream in one step, PSNR + MS-SSIM against the original; the archive job also
writes its Delta tables. Each runtime of ``--runtimes`` is measured in turn, in one run: the
bare loop with --cpus decoder threads in one process, then the job on a local Ray with --cpus
CPUs (Ray started before timing; actor start-up is inside the timing). Throughput is given in
images/s and in s/Mpx.
Prints a table and writes pipeline_throughput.json. The fused pool's actors record when their
start-up (imports + model load) and each batch began and ended, so the job's wall time is
reported in two parts: start-up (job start until the last actor has loaded its model) and
steady state (the rest), with the ratio of the bare loop's time to the steady state's. The
bare loop's own model load is outside its timing, so the steady-state ratio is the like-for-
like one; the whole-job ratio also pays Ray's and the actors' start-up once per job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline.runner  # noqa: E402
from jobs.common import parse_rates  # noqa: E402
from oscar_model.images import open_image, to_rgb_array  # noqa: E402
from oscar_model.options import CodecOptions  # noqa: E402
from oscar_model.runtimes import open_codec  # noqa: E402
from pipeline.archive import ArchiveConfig, run_archive  # noqa: E402
from pipeline.config import ActorConfig  # noqa: E402
from pipeline.stages.metrics import ms_ssim_rgb, psnr  # noqa: E402
from pipeline.stages.oscar import EncodeVerifyStage  # noqa: E402


class TimedEncodeVerifyStage(EncodeVerifyStage):
    """EncodeVerifyStage that appends wall-clock events to ``OSCAR_TIMELINE`` (one JSON per line)."""

    def __init__(self, *args, **kwargs) -> None:
        t0 = time.time()
        super().__init__(*args, **kwargs)
        self._log({"event": "start-up", "t0": t0, "t1": time.time()})

    def __call__(self, batch):
        t0 = time.time()
        out = super().__call__(batch)
        self._log({"event": "batch", "images": batch.num_rows, "t0": t0, "t1": time.time()})
        return out

    def _log(self, event: dict) -> None:
        with open(os.environ["OSCAR_TIMELINE"], "a") as f:  # one small line per write: safe to append
            f.write(json.dumps({"pid": os.getpid(), **event}) + "\n")


def summarize_timeline(path: Path, job_t0: float) -> list[dict]:
    """Per actor: when its start-up began and ended, its busy time, its last batch's end (s from job start)."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    actors = []
    for pid in sorted({e["pid"] for e in events}):
        mine = [e for e in events if e["pid"] == pid]
        startup = next(e for e in mine if e["event"] == "start-up")
        batches = [e for e in mine if e["event"] == "batch"]
        actors.append({
            "startup_begins_s": round(startup["t0"] - job_t0, 2), "startup_ends_s": round(startup["t1"] - job_t0, 2),
            "batches": len(batches), "images": sum(e["images"] for e in batches),
            "busy_s": round(sum(e["t1"] - e["t0"] for e in batches), 2),
            "last_batch_ends_s": round(max((e["t1"] for e in batches), default=startup["t1"]) - job_t0, 2),
        })
    return actors


def split(actors: list[dict] | None, job_s: float, bare_s: float) -> dict:
    """Start-up = job start until the last actor finished loading; steady state = the rest."""
    if not actors:
        return {}
    startup = max(a["startup_ends_s"] for a in actors)
    steady = job_s - startup
    return {"startup_s": round(startup, 2), "steady_s": round(steady, 2), "steady_ratio": round(bare_s / steady, 3)}


def bare_loop(model: str, files: list[Path], rates, runtime: str, cpus: int) -> float:
    codec = open_codec(model, device="cpu", options=CodecOptions(runtime=runtime, threads=cpus))
    points = codec.ladder.resolve_many(rates)
    t0 = time.perf_counter()
    for f in files:
        img = to_rgb_array(open_image(f.read_bytes()))
        streams = codec.encode([img], [p.index for p in points])[0]
        for rec in codec.decode(streams):
            psnr(img, rec)
            ms_ssim_rgb(img, rec)
    return time.perf_counter() - t0


def measure(args, files: list[Path], rates, runtime: str, timeline: Path | None) -> dict:
    """One runtime: the bare loop, then the archive job (fused pool, or separate pools)."""
    bare_s = bare_loop(args.model, files, rates, runtime, args.cpus)
    if timeline:
        timeline.write_text("")  # this runtime's events only
    out_dir = Path(tempfile.mkdtemp(prefix="oscar-throughput-"))
    if args.separate_pools:  # decode + metrics costs ~3x encode: one encode actor feeds two decode actors
        encode = ActorConfig(min_actors=1, max_actors=1, num_cpus=0.4, batch_size=2)
        decode = ActorConfig(min_actors=2, max_actors=2, num_cpus=0.4, batch_size=2)
    else:  # one fused encode+verify pool, one single-threaded actor per core
        encode = decode = ActorConfig(min_actors=args.cpus, max_actors=args.cpus, num_cpus=0.5, batch_size=2)
    cfg = ArchiveConfig(input=args.kodak, output=str(out_dir), rates=rates, model=args.model, encode=encode, decode=decode,
                        fused=not args.separate_pools, codec=CodecOptions(runtime=runtime))
    t0, wall_t0 = time.perf_counter(), time.time()
    summary = run_archive(cfg, progress=False)
    job_s = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    actors = summarize_timeline(timeline, wall_t0) if timeline else None
    if summary["images_ok"] != len(files):
        raise SystemExit(f"archive job processed {summary['images_ok']} of {len(files)} images: {summary}")
    mpx = sum(Image.open(f).width * Image.open(f).height for f in files) / 1e6
    return {
        "runtime": runtime, "megapixels": round(mpx, 2),
        "bare_loop_s": round(bare_s, 2), "bare_images_per_s": round(len(files) / bare_s, 3),
        "bare_s_per_mpx": round(bare_s / mpx, 3),
        "archive_job_s": round(job_s, 2), "job_images_per_s": round(len(files) / job_s, 3),
        "job_s_per_mpx": round(job_s / mpx, 3),
        "ratio_job_over_bare": round(bare_s / job_s, 3),
        **split(actors, job_s, bare_s),
        "actors": actors,
    }


def main(argv: list[str] | None = None) -> int:
    import ray

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="oscar-tiny")
    p.add_argument("--kodak", default=str(ROOT.parent / "shared" / "datasets" / "kodak"))
    p.add_argument("--rates", default="0.03,0.125")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--runtimes", default="onnxruntime,torch", help="the runtimes measured in turn")
    p.add_argument("--separate-pools", action="store_true", help="encode and decode in separate pools (1 + 2 actors)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--no-timeline", action="store_true", help="do not time the actors (no start-up / steady split)")
    args = p.parse_args(argv)
    files = sorted(Path(args.kodak).glob("*.png"))
    rates = parse_rates(args.rates)
    open_codec(args.model, device="cpu", options=CodecOptions(runtime="onnxruntime"))  # its graphs, built once first
    timeline = None
    if not args.no_timeline and not args.separate_pools:  # the timeline times the fused pool only
        timeline = Path(tempfile.mkdtemp(prefix="oscar-timeline-")) / "events.jsonl"
        os.environ["OSCAR_TIMELINE"] = str(timeline)  # set before Ray starts: its workers inherit it
        pipeline.runner.EncodeVerifyStage = TimedEncodeVerifyStage
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    measured = [measure(args, files, rates, runtime, timeline) for runtime in args.runtimes.split(",")]
    ray.shutdown()
    if timeline:
        shutil.rmtree(timeline.parent, ignore_errors=True)
    result = {
        "images": len(files), "rates": args.rates, "cpus": args.cpus,
        "pools": "separate encode (1) + decode (2)" if args.separate_pools else f"fused encode+verify ({args.cpus})",
        "runtimes": measured,
        "command": "python benchmarks/pipeline_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "pipeline_throughput.json").write_text(json.dumps(result, indent=1))
    print("| runtime | path | wall s | images/s | s/Mpx |\n|---|---|---|---|---|")
    for m in measured:
        print(f"| {m['runtime']} | bare single-process loop ({args.cpus} threads) | {m['bare_loop_s']:.1f} | "
              f"{m['bare_images_per_s']:.3f} | {m['bare_s_per_mpx']:.2f} |")
        print(f"| {m['runtime']} | archive job, local Ray, {args.cpus} CPUs | {m['archive_job_s']:.1f} | "
              f"{m['job_images_per_s']:.3f} | {m['job_s_per_mpx']:.2f} |")
    for m in measured:
        if "startup_s" in m:
            print(f"{m['runtime']}: job / bare = {m['ratio_job_over_bare']:.3f}; start-up {m['startup_s']:.1f} s (until "
                  f"the last actor had loaded its model), steady state {m['steady_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
