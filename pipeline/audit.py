"""The audit job: read -> decode -> OSCAR encode + one-step decode -> classical codecs over their
quality sweeps and at the bpp OSCAR reached -> write, then the report (:mod:`pipeline.report`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .classic_codecs import CLASSIC_CODECS, available_codecs
from .config import ActorConfig, ImagesConfig
from .dataflow import encode_and_verify, map_actors, read_images, write_results
from .report import write_report
from .runner import ImagesJob, run_job
from .stages import ClassicCodecStage

__all__ = ["AuditConfig", "AuditJob", "run_audit", "rebuild_report"]


@dataclass(frozen=True, kw_only=True)
class AuditConfig(ImagesConfig):
    """Attributes (besides :class:`~pipeline.config.ImagesConfig`'s):
        codecs: the --model's name and any of "jpeg", "webp", "avif"; each classical codec is run
            over its quality sweep and matched per image to the bpp OSCAR reached at each level.
        rates: OSCAR levels as bpp or level index; None = the whole ladder.
        classic_cpus: CPUs of the one classical-codec actor.
    """

    codecs: tuple[str, ...] = ("oscar-tiny", "jpeg", "webp", "avif")
    rates: tuple[float | int, ...] | None = None
    classic_cpus: float = 0.5


class AuditJob(ImagesJob):
    name = "audit"
    config: AuditConfig

    def check(self, model) -> None:
        super().check(model)
        cfg = self.config
        unknown = [c for c in cfg.codecs if c not in CLASSIC_CODECS and c != cfg.model and not c.startswith("oscar")]
        if unknown:
            raise ValueError(f"unknown codecs {unknown}; choose from {[cfg.model, *CLASSIC_CODECS]}")
        missing = [c for c in cfg.codecs if c in CLASSIC_CODECS and c not in available_codecs()]
        if missing:
            raise ValueError(f"this Pillow build cannot encode {missing}")

    def _classic_pool(self) -> ActorConfig:
        """One CPU actor for the classical codecs (they are fast; Pillow holds no model)."""
        return ActorConfig(num_cpus=self.config.classic_cpus, batch_size=self.config.encode.batch_size)

    def pools(self) -> list[ActorConfig]:
        return [*self.config.verify_pools(), self._classic_pool()]

    def build(self, todo, model):
        cfg = self.config
        classic = tuple(c for c in cfg.codecs if c in CLASSIC_CODECS)
        ds = read_images(todo, cfg.storage, cfg.read_batch_size, cfg.encode.max_actors, cfg.codec.max_pixels)
        ds = encode_and_verify(ds, cfg, model, cfg.rates, verify=True, images_uri=None, keep_pixels=True)
        ds = map_actors(ds, ClassicCodecStage, self._classic_pool(), codecs=classic)
        return write_results(ds, cfg, model, self.progress)

    def finish(self, summary: dict[str, Any], model) -> None:
        summary["report"] = write_report(self.config.output, self.config.storage, model)


def run_audit(cfg: AuditConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an audit and writes its report; returns the summary (with the report's URI)."""
    return run_job(AuditJob(cfg), progress)


def rebuild_report(cfg: AuditConfig) -> str:
    """The report again from the committed tables, without encoding anything; refuses an output
    whose streams another model wrote (their crops could not be decoded)."""
    from .delta import DeltaOutput
    from .models import model_info

    out = DeltaOutput(cfg.output, cfg.storage)
    if not out.exists():
        raise ValueError(f"{cfg.output} holds no audit tables: run the audit first")
    model = model_info(cfg.model, cfg.storage)
    _, models = out.done_and_models()
    if models and models != {model.model_id}:
        raise ValueError(f"{cfg.output} was written by model id {', '.join(sorted(models))}, --model {cfg.model} is "
                         f"{model.model_id}: pass the model that wrote it")
    return write_report(cfg.output, cfg.storage, model)
