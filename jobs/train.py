"""Train oscar-tiny from scratch, resumably, on a CPU or a GPU.

Usage:
    python -m jobs.train --data ../shared/datasets/bsds500 --workdir runs/oscar-tiny \
        --export oscar_model/weights/oscar-tiny

Stages run in order (``--stages`` picks a subset): 0 autoencoder, 1 hyper-encoders,
calib (rate -> pseudo-timestep), 2 denoiser, 2b refine (stage 2 at a lower learning rate,
weighted to the levels and the metric users compare), 2c polish (weighted harder still to the
top levels), stats (entropy tables), export. Every stage
checkpoints into ``--workdir`` every few minutes; running the same command again resumes
where it stopped and skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from oscar_model.autoencoder import CompactAutoencoder
from oscar_model.codec import OscarCodec
from oscar_model.factory import build_codec
from oscar_model.train.data import CropSampler, LatentCropSampler, list_images, read_images
from oscar_model.train.loop import autocast
from oscar_model.train.stages import (
    AutoencoderStageConfig,
    DenoiserStageConfig,
    HyperEncoderStageConfig,
    calibrate_timesteps,
    index_statistics,
    polish_config,
    refine_config,
    train_autoencoder,
    train_denoiser,
    train_hyper_encoders,
)

log = logging.getLogger("oscar.train")
ALL_STAGES = ("0", "1", "calib", "2", "2b", "2c", "stats", "export")
DENOISER_STAGES = ("stage2c", "stage2b", "stage2")  # latest first


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["../shared/datasets/bsds500"], help="training image folders")
    p.add_argument("--workdir", default="runs/oscar-tiny", help="checkpoints, logs and stage outputs")
    p.add_argument("--stages", default=",".join(ALL_STAGES), help=f"comma-separated subset of {ALL_STAGES}")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ae-minutes", type=float, default=35.0)
    p.add_argument("--ae-steps", type=int, default=7000)
    p.add_argument("--he-minutes", type=float, default=6.0, help="stage 1 wall budget per level")
    p.add_argument("--he-steps", type=int, default=5000, help="stage 1 steps per level")
    p.add_argument("--dn-minutes", type=float, default=30.0)
    p.add_argument("--dn-steps", type=int, default=2000)
    p.add_argument("--rf-minutes", type=float, default=60.0, help="stage 2b (refine) wall budget")
    p.add_argument("--rf-steps", type=int, default=8000)
    p.add_argument("--po-minutes", type=float, default=80.0, help="stage 2c (high-rate polish) wall budget")
    p.add_argument("--po-steps", type=int, default=12000)
    p.add_argument("--export", default="oscar_model/weights/oscar-tiny", help="where the final model is written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(ALL_STAGES))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; choose from {ALL_STAGES}")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log.info("config %s", json.dumps(vars(args)))
    summaries_path = workdir / "summaries.json"
    summaries = json.loads(summaries_path.read_text()) if summaries_path.exists() else {}

    paths = list_images(args.data)

    def record(key: str, summary: dict, t0: float) -> None:
        summary = {**summary, "device": str(device), "stage_wall_minutes": round((time.time() - t0) / 60, 2)}
        summaries[key] = summary
        summaries_path.write_text(json.dumps(summaries, indent=1))
        log.info("%s done: %s", key, json.dumps(summary))

    def load(folder: str) -> OscarCodec:
        path = workdir / folder
        if not path.exists():
            raise SystemExit(f"{path} is missing: run the earlier stages first")
        return OscarCodec.from_pretrained(path, device=device)

    def finished(folder: str, key: str) -> bool:
        done = (workdir / folder).exists() and key in summaries
        if done:
            log.info("%s: %s already exists, skipping (delete it to redo the stage)", key, workdir / folder)
        return done

    if "0" in stages and not finished("autoencoder", "stage0"):
        t0 = time.time()
        cfg = AutoencoderStageConfig()
        cfg.loop.steps, cfg.loop.max_minutes = args.ae_steps, args.ae_minutes
        ae, summary = train_autoencoder(cfg, CropSampler(paths, cfg.crop, seed=args.seed), workdir, device)
        ae.save_pretrained(workdir / "autoencoder")
        record("stage0", summary, t0)

    if "1" in stages and not finished("codec_stage1", "stage1"):
        t0 = time.time()
        ae = CompactAutoencoder.from_pretrained(str(workdir / "autoencoder"), low_cpu_mem_usage=False)
        codec = build_codec(autoencoder=ae).to(device)
        torch.nn.init.zeros_(codec.denoiser.conv_out.weight)  # start as x0 = sqrt(abar) z_t
        torch.nn.init.zeros_(codec.denoiser.conv_out.bias)
        cfg1 = HyperEncoderStageConfig()
        cfg1.loop.steps, cfg1.loop.max_minutes = args.he_steps, args.he_minutes
        with torch.no_grad(), autocast(cfg1.loop.bf16, device):
            latents = LatentCropSampler(
                read_images(paths), lambda x: codec.autoencoder.encode(x.to(device)), cfg1.crop,
                factor=int(codec.autoencoder.downscale), seed=args.seed + 1,
            )
        summary = train_hyper_encoders(cfg1, codec, latents, workdir, device)
        codec.save_pretrained(workdir / "codec_stage1")
        record("stage1", summary, t0)

    sampler_full = None
    if "calib" in stages and not finished("codec_calibrated", "calibration"):
        t0 = time.time()
        codec = load("codec_stage1")
        sampler_full = CropSampler(paths, 32, seed=args.seed)
        summary = calibrate_timesteps(codec, sampler_full, device)
        codec.save_pretrained(workdir / "codec_calibrated")
        record("calibration", summary, t0)

    def denoiser_stage(key: str, source: str, cfg: DenoiserStageConfig, steps: int, minutes: float, seed: int) -> None:
        if key[len("stage"):] not in stages or finished(f"codec_{key}", key):
            return
        t0 = time.time()
        codec = load(source)
        cfg.loop.steps, cfg.loop.max_minutes = steps, minutes
        summary = train_denoiser(cfg, codec, CropSampler(paths, cfg.crop, seed=seed), workdir, device)
        codec.save_pretrained(workdir / f"codec_{key}")
        record(key, summary, t0)

    denoiser_stage("stage2", "codec_calibrated", DenoiserStageConfig(), args.dn_steps, args.dn_minutes, args.seed + 2)
    denoiser_stage("stage2b", "codec_stage2", refine_config(), args.rf_steps, args.rf_minutes, args.seed + 3)
    denoiser_stage("stage2c", "codec_stage2b", polish_config(), args.po_steps, args.po_minutes, args.seed + 4)

    if "stats" in stages and not finished("codec_final", "index_statistics"):
        t0 = time.time()
        # The latest denoiser stage that finished; with none, load() says which folder is missing.
        latest = next((f"codec_{k}" for k in DENOISER_STAGES if (workdir / f"codec_{k}").exists()), "codec_stage2")
        codec = load(latest)
        summary = index_statistics(codec, sampler_full or CropSampler(paths, 32, seed=args.seed), device)
        codec.save_pretrained(workdir / "codec_final")
        record("index_statistics", summary, t0)

    if "export" in stages:
        codec = load("codec_final")
        codec.config.info = {
            "trained_on": [str(d) for d in args.data],
            "training": summaries,
            "command": "python -m jobs.train " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch": torch.__version__,
        }
        codec.to("cpu").save_pretrained(args.export)
        log.info("exported %s (model id %s) to %s", codec.config.name, codec.model_id.hex(), args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
