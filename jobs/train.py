"""Train oscar-tiny from scratch, resumably, on a CPU or a GPU.

Usage:
    python -m jobs.train --data ../shared/datasets/bsds500 --workdir runs/oscar-tiny \
        --export oscar_model/weights/oscar-tiny

Stages run in order (``--stages`` picks a subset): 0 autoencoder, 1 hyper-encoders,
calib (rate -> pseudo-timestep), 2 denoiser, 2b tune (stage 2 at a lower learning rate,
weighted to the levels and the metric users compare), 2c polish (weighted harder still to the
top levels), stats (entropy tables), 2p perceptual (the denoiser alone against washed-out
colour; ``--start-from`` a finished model to fine-tune it), 2d decoder (the autoencoder's decoder
alone, on the codec's own latents), export. 2p and 2d are experimental and run only when
``--stages`` names them. Every stage checkpoints into ``--workdir`` every
few minutes; running the same command again resumes where it stopped and skips finished
stages. The recipe itself is :mod:`oscar_model.train.recipe`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from oscar_model.train.recipe import DEFAULT_STAGES, STAGE_NAMES, Budgets, TrainingRun, run_training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", default=["../shared/datasets/bsds500"], help="training image folders")
    p.add_argument("--workdir", default="runs/oscar-tiny", help="checkpoints, logs and stage outputs")
    p.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                   help=f"comma-separated subset of {STAGE_NAMES} (default: all but the experimental 2p and 2d)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    b = Budgets()
    p.add_argument("--ae-minutes", type=float, default=b.ae_minutes)
    p.add_argument("--ae-steps", type=int, default=b.ae_steps)
    p.add_argument("--he-minutes", type=float, default=b.he_minutes, help="stage 1 wall budget per level")
    p.add_argument("--he-steps", type=int, default=b.he_steps, help="stage 1 steps per level")
    p.add_argument("--dn-minutes", type=float, default=b.dn_minutes)
    p.add_argument("--dn-steps", type=int, default=b.dn_steps)
    p.add_argument("--tune-minutes", "--rf-minutes", type=float, default=b.tune_minutes, help="stage 2b (tune) wall budget")
    p.add_argument("--tune-steps", "--rf-steps", type=int, default=b.tune_steps)
    p.add_argument("--polish-minutes", "--po-minutes", type=float, default=b.polish_minutes, help="stage 2c (polish) wall budget")
    p.add_argument("--polish-steps", "--po-steps", type=int, default=b.polish_steps)
    p.add_argument("--perceptual-minutes", type=float, default=b.perceptual_minutes, help="stage 2p (perceptual) wall budget")
    p.add_argument("--perceptual-steps", type=int, default=b.perceptual_steps)
    p.add_argument("--perceptual-ssimulacra2-weight", type=float, default=None,
                   help="stage 2p: the weight of the SSIMULACRA2 loss (default: the recipe's; 0 turns it off)")
    p.add_argument("--decoder-minutes", type=float, default=b.decoder_minutes, help="stage 2d (decoder) wall budget")
    p.add_argument("--decoder-steps", type=int, default=b.decoder_steps)
    p.add_argument("--decoder-ssimulacra2-weight", type=float, default=None,
                   help="stage 2d: the weight of the SSIMULACRA2 loss (default: the recipe's)")
    p.add_argument("--decoder-colour-weight", type=float, default=None,
                   help="stage 2d: the weight of the CIELAB colour loss (default: the recipe's)")
    p.add_argument("--start-from", default=None,
                   help="a finished model folder that stage 2p or 2d fine-tunes (instead of this run's codec_final)")
    p.add_argument("--export", default="oscar_model/weights/oscar-tiny", help="where the final model is written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGE_NAMES))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; choose from {STAGE_NAMES}")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    logging.getLogger("oscar.train").info("config %s", json.dumps(vars(args)))
    budgets = Budgets(**{k: getattr(args, k) for k in vars(Budgets())})
    run = TrainingRun(
        data=args.data, workdir=Path(args.workdir), export=Path(args.export),
        device=torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")), seed=args.seed,
        start_from=Path(args.start_from) if args.start_from else None,
        perceptual_overrides={} if args.perceptual_ssimulacra2_weight is None else
        {"ssimulacra2_weight": args.perceptual_ssimulacra2_weight},
        decoder_overrides={k: v for k, v in (("ssimulacra2_weight", args.decoder_ssimulacra2_weight),
                                             ("colour_weight", args.decoder_colour_weight)) if v is not None},
        budgets=budgets, command="python -m jobs.train " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    run_training(run, stages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
