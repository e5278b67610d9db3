"""The order of oscar-tiny's training stages and their resume bookkeeping.

Each stage reads the folder the stage before it wrote and writes its own under the work
directory; a stage whose folder exists and whose summary is recorded in ``summaries.json`` is
skipped, so running the same command again resumes where it stopped (the stages themselves
also checkpoint every few minutes inside ``run_loop``). ``python -m jobs.train`` is the CLI.

    0 autoencoder -> 1 hyper-encoders -> calib -> 2 denoiser -> 2b tune -> 2c polish
      -> stats (entropy tables, typical bpp) -> 2p perceptual (denoiser only)
      -> 2d decoder (the autoencoder's decoder only) -> export

Stage 2p comes after the entropy tables because it leaves the hyper-encoders, so the indices
and the tables, as they are. It can also start from a finished model (``start_from``, the CLI's
``--start-from``): ``--stages 2p,export --start-from <model folder>`` fine-tunes a released
model's denoiser alone, and the new model decodes the old one's streams. Stage 2d, the
autoencoder's decoder alone, does the same (``--stages 2d,export --start-from <model folder>``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..autoencoder import CompactAutoencoder
from ..factory import build_model
from ..model import OscarModel
from .autoencoder_stage import AutoencoderStageConfig, train_autoencoder
from .data import CropSampler, LatentCropSampler, list_images, read_images
from .decoder_stage import DecoderStageConfig, train_decoder
from .denoiser_stage import (
    DenoiserStageConfig,
    perceptual_config,
    polish_config,
    train_denoiser,
    tune_config,
)
from .hyper_encoder_stage import HyperEncoderStageConfig, calibrate_timesteps, train_hyper_encoders
from .loop import autocast
from .tables import index_statistics

__all__ = ["Budgets", "TrainingRun", "STAGES", "STAGE_NAMES", "DEFAULT_STAGES", "run_training"]

log = logging.getLogger("oscar.train")


@dataclass
class Budgets:
    """Steps and wall minutes per stage (whichever runs out first ends it); stage 1's are per level."""

    ae_steps: int = 7000
    ae_minutes: float = 35.0
    he_steps: int = 5000
    he_minutes: float = 6.0
    dn_steps: int = 2000
    dn_minutes: float = 30.0
    tune_steps: int = 8000
    tune_minutes: float = 60.0
    polish_steps: int = 12000
    polish_minutes: float = 80.0
    perceptual_steps: int = 3000
    perceptual_minutes: float = 60.0
    decoder_steps: int = 2000
    decoder_minutes: float = 60.0


@dataclass
class TrainingRun:
    """One training run: its data, work directory, device and budgets."""

    data: list[str]
    workdir: Path
    export: Path
    device: torch.device
    seed: int = 0
    start_from: Path | None = None
    perceptual_overrides: dict = field(default_factory=dict)
    """Stage 2p's config fields set otherwise than the recipe (an ablation, e.g. ``ssimulacra2_weight``)."""
    decoder_overrides: dict = field(default_factory=dict)
    """Stage 2d's config fields set otherwise than the recipe (an ablation)."""
    budgets: Budgets = field(default_factory=Budgets)
    command: str = ""
    summaries: dict = field(default_factory=dict)
    _paths: list[Path] | None = None

    @property
    def paths(self) -> list[Path]:
        if self._paths is None:
            self._paths = list_images(self.data)
        return self._paths

    def load(self, folder: str) -> OscarModel:
        path = self.workdir / folder
        if not path.exists():
            raise SystemExit(f"{path} is missing: run the earlier stages first")
        return OscarModel.from_pretrained(path, device=self.device)


@dataclass(frozen=True)
class Stage:
    """``run`` trains and saves into ``workdir / output``; it returns the stage's summary."""

    name: str
    key: str
    output: str
    run: Callable[[TrainingRun], dict]


def _autoencoder(run: TrainingRun) -> dict:
    cfg = AutoencoderStageConfig()
    cfg.loop.steps, cfg.loop.max_minutes = run.budgets.ae_steps, run.budgets.ae_minutes
    ae, summary = train_autoencoder(cfg, CropSampler(run.paths, cfg.crop, seed=run.seed), run.workdir, run.device)
    ae.save_pretrained(run.workdir / "autoencoder")
    return summary


def _hyper_encoders(run: TrainingRun) -> dict:
    ae = CompactAutoencoder.from_pretrained(str(run.workdir / "autoencoder"), low_cpu_mem_usage=False)
    model = build_model(autoencoder=ae).to(run.device)
    torch.nn.init.zeros_(model.denoiser.conv_out.weight)  # the denoiser starts as x0 = sqrt(abar) z_t
    torch.nn.init.zeros_(model.denoiser.conv_out.bias)
    cfg = HyperEncoderStageConfig()
    cfg.loop.steps, cfg.loop.max_minutes = run.budgets.he_steps, run.budgets.he_minutes
    with torch.no_grad(), autocast(cfg.loop.bf16, run.device):
        latents = LatentCropSampler(
            read_images(run.paths), lambda x: model.autoencoder.encode(x.to(run.device)), cfg.crop,
            factor=int(model.autoencoder.downscale), seed=run.seed + 1,
        )
    summary = train_hyper_encoders(cfg, model, latents, run.workdir, run.device)
    model.save_pretrained(run.workdir / "codec_stage1")
    return summary


def _calibration(run: TrainingRun) -> dict:
    model = run.load("codec_stage1")
    summary = calibrate_timesteps(model, CropSampler(run.paths, 32, seed=run.seed), run.device)
    model.save_pretrained(run.workdir / "codec_calibrated")
    return summary


def _denoiser(source: str, output: str, make_cfg: Callable[[], DenoiserStageConfig], budget: str, seed_offset: int,
              may_start_from: bool = False):
    def run_stage(run: TrainingRun) -> dict:
        if may_start_from and run.start_from is not None:
            model = OscarModel.from_pretrained(run.start_from, device=run.device)
        else:
            model = run.load(source)
        cfg = make_cfg()
        if budget == "perceptual":
            for key, value in run.perceptual_overrides.items():
                setattr(cfg, key, value)
        cfg.loop.steps = getattr(run.budgets, f"{budget}_steps")
        cfg.loop.max_minutes = getattr(run.budgets, f"{budget}_minutes")
        sampler = CropSampler(run.paths, cfg.crop, seed=run.seed + seed_offset)
        summary = train_denoiser(cfg, model, sampler, run.workdir, run.device)
        model.save_pretrained(run.workdir / output)
        return summary

    return run_stage


DENOISER_OUTPUTS = ("codec_stage2c", "codec_stage2b", "codec_stage2")
"""Latest first: the stats stage starts from whichever finished last."""


def _statistics(run: TrainingRun) -> dict:
    latest = next((f for f in DENOISER_OUTPUTS if (run.workdir / f).exists()), DENOISER_OUTPUTS[-1])
    model = run.load(latest)
    summary = index_statistics(model, CropSampler(run.paths, 32, seed=run.seed).images, run.device)
    model.save_pretrained(run.workdir / "codec_final")
    return summary


def _decoder(run: TrainingRun) -> dict:
    if (run.workdir / "codec_perceptual").exists():
        model = run.load("codec_perceptual")
    elif run.start_from is not None:
        model = OscarModel.from_pretrained(run.start_from, device=run.device)
    else:
        model = run.load("codec_final")
    cfg = DecoderStageConfig()
    for key, value in run.decoder_overrides.items():
        setattr(cfg, key, value)
    cfg.loop.steps, cfg.loop.max_minutes = run.budgets.decoder_steps, run.budgets.decoder_minutes
    sampler = CropSampler(run.paths, cfg.crop, seed=run.seed + 6)
    summary = train_decoder(cfg, model, sampler, run.workdir, run.device)
    model.save_pretrained(run.workdir / "codec_decoder")
    return summary


FINAL_OUTPUTS = ("codec_decoder", "codec_perceptual", "codec_final")
"""Latest first: the export takes whichever finished last."""


def _export(run: TrainingRun) -> dict:
    model = run.load(next((f for f in FINAL_OUTPUTS if (run.workdir / f).exists()), FINAL_OUTPUTS[-1]))
    model.config.info = {
        "trained_on": [str(d) for d in run.data], "training": run.summaries, "command": run.command,
        "torch": torch.__version__,
    }
    model.to("cpu").save_pretrained(run.export)
    log.info("exported %s (model id %s) to %s", model.config.name, model.model_id, run.export)
    return {"model_id": model.model_id}


STAGES: tuple[Stage, ...] = (
    Stage("0", "stage0", "autoencoder", _autoencoder),
    Stage("1", "stage1", "codec_stage1", _hyper_encoders),
    Stage("calib", "calibration", "codec_calibrated", _calibration),
    Stage("2", "stage2", "codec_stage2", _denoiser("codec_calibrated", "codec_stage2", DenoiserStageConfig, "dn", 2)),
    Stage("2b", "stage2b", "codec_stage2b", _denoiser("codec_stage2", "codec_stage2b", tune_config, "tune", 3)),
    Stage("2c", "stage2c", "codec_stage2c", _denoiser("codec_stage2b", "codec_stage2c", polish_config, "polish", 4)),
    Stage("stats", "index_statistics", "codec_final", _statistics),
    Stage("2p", "stage2p", "codec_perceptual",
          _denoiser("codec_final", "codec_perceptual", perceptual_config, "perceptual", 5, may_start_from=True)),
    Stage("2d", "stage2d", "codec_decoder", _decoder),
    Stage("export", "export", "", _export),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
EXPERIMENTAL_STAGES = ("2p", "2d")
"""The perceptual fine-tunes, still ablations (``docs/training.md``): run only when asked for."""
DEFAULT_STAGES = tuple(n for n in STAGE_NAMES if n not in EXPERIMENTAL_STAGES)
"""What ``python -m jobs.train`` runs by default: the recipe of the shipped oscar-tiny."""


def run_training(run: TrainingRun, names: list[str] | tuple[str, ...] = DEFAULT_STAGES) -> dict:
    """Runs the named stages in recipe order, skipping finished ones; returns all summaries."""
    unknown = sorted(set(names) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {STAGE_NAMES}")
    run.workdir.mkdir(parents=True, exist_ok=True)
    summaries_path = run.workdir / "summaries.json"
    run.summaries = json.loads(summaries_path.read_text()) if summaries_path.exists() else {}
    for stage in STAGES:
        if stage.name not in names:
            continue
        if stage.output and (run.workdir / stage.output).exists() and stage.key in run.summaries:
            log.info("%s: %s already exists, skipping (delete it to redo the stage)", stage.key, run.workdir / stage.output)
            continue
        t0 = time.time()
        summary = stage.run(run)
        if not stage.output:  # export: nothing to resume
            continue
        summary = {**summary, "device": str(run.device), "stage_wall_minutes": round((time.time() - t0) / 60, 2)}
        run.summaries[stage.key] = summary
        summaries_path.write_text(json.dumps(run.summaries, indent=1))
        log.info("%s done: %s", stage.key, json.dumps(summary))
    return run.summaries
