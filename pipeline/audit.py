"""The audit job: read -> decode -> OSCAR encode + one-step decode -> classical codecs over their
quality sweeps and at the bpp OSCAR reached -> write (with each image's BD-rates), then the
report (:mod:`pipeline.report.page`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from oscar_model.model_info import ModelInfo

from .batch import Batch
from .config import ActorConfig, ImagesConfig
from .report.bd_rate import bd_rate_rows
from .report.page import write_report
from .runner import ImagesJob, Plan, Step, encode_steps, levels_of, read_image_steps, run_job
from .stages.classic import (
    CLASSIC_CODECS,
    ClassicCodecStage,
    available_codecs,
    is_classic,
    parse_codec,
)
from .stages.metrics import chosen_metrics
from .tables.rows import bitstream_rows, error_rows, metrics_rows

__all__ = ["AuditConfig", "AuditJob", "AuditRows", "run_audit", "rebuild_report"]


@dataclass(frozen=True, kw_only=True)
class AuditConfig(ImagesConfig):
    """Attributes (besides :class:`~pipeline.config.ImagesConfig`'s):
        codecs: the --model's name and any of "jpeg", "webp", "avif", "jxl", each also downscaled as
            "avif@1/4" (resized to 1/K of each side, upscaled back with Lanczos); each classical codec
            is run over its quality sweep and matched per image to the bpp OSCAR reached at each level.
        rates: OSCAR levels as bpp or level index; None = the whole ladder.
        classic_cpus: CPUs of the one classical-codec actor.
    """

    codecs: tuple[str, ...] = ("oscar-tiny", "jpeg", "webp", "avif", "jxl")
    rates: tuple[float | int, ...] | None = None
    classic_cpus: float = 0.5


@dataclass(frozen=True)
class AuditRows:
    """An audit's rows: OSCAR's streams, every measurement (OSCAR's levels, each classical codec's
    sweep and matched settings), and each image's BD-rates against each classical codec, computed
    here from that image's own metrics rows so the report never groups the metrics table by image."""

    model: ModelInfo

    def __call__(self, batch: Batch) -> dict[str, pa.Table]:
        metrics = pa.concat_tables([metrics_rows(batch, "oscar_metrics"), metrics_rows(batch, "classic_metrics")])
        return {"errors": error_rows(batch), "bitstreams": bitstream_rows(batch, self.model.model_id, self.model.nominal_bpp, self.model.name),
                "metrics": metrics, "bd_rates": bd_rate_rows(metrics, self.model.name)}


class AuditJob(ImagesJob):
    name = "audit"
    config: AuditConfig

    def plan(self, model: ModelInfo) -> Plan:
        cfg = self.config
        levels = levels_of(model, cfg.rates)
        unknown = [c for c in cfg.codecs if not is_classic(c) and c != cfg.model and not c.startswith("oscar")]
        if unknown:
            raise ValueError(f"unknown codecs {unknown}; choose from {[cfg.model, *CLASSIC_CODECS]}, each classical "
                             "one optionally downscaled as CODEC@1/K (avif@1/2, jxl@1/4)")
        classic = tuple(c for c in cfg.codecs if is_classic(c))
        missing = sorted({parse_codec(c)[0] for c in classic} - set(available_codecs()))
        if missing:
            raise ValueError(f"this Pillow build cannot encode {missing} (jxl needs the pillow-jxl-plugin package)")
        # One CPU actor for the classical codecs (they are fast; Pillow holds no model).
        classic_pool = ActorConfig(num_cpus=cfg.classic_cpus, batch_size=cfg.encode.batch_size)
        steps = (*read_image_steps(cfg), *encode_steps(cfg, model, levels, verify=True, keep_pixels=True),
                 Step(ClassicCodecStage, {"codecs": classic, "metrics": chosen_metrics(cfg.metrics)}, pool=classic_pool))
        return Plan(self.units(), steps, AuditRows(model), read_batch_size=cfg.read_batch_size)

    def finish(self, summary: dict[str, Any], model: ModelInfo) -> None:
        summary["report"] = write_report(self.config.output, self.config.storage, model)


def run_audit(cfg: AuditConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an audit and writes its report; returns the summary (with the report's URI)."""
    return run_job(AuditJob(cfg), progress)


def rebuild_report(cfg: AuditConfig) -> str:
    """The report again from the committed tables, without encoding anything; refuses an output
    whose streams another model wrote (their crops could not be decoded)."""
    from .inputs.model_cache import model_info
    from .tables.delta import DeltaOutput

    out = DeltaOutput(cfg.output, cfg.storage)
    if not out.exists():
        raise ValueError(f"{cfg.output} holds no audit tables: run the audit first")
    model = model_info(cfg.model, cfg.storage)
    _, models = out.done_and_models()
    if models and models != {model.model_id}:
        raise ValueError(f"{cfg.output} was written by model id {', '.join(sorted(models))}, --model {cfg.model} is "
                         f"{model.model_id}: pass the model that wrote it")
    return write_report(cfg.output, cfg.storage, model)
