"""The archive job: read -> decode -> encode at every rate -> decode in one step + metrics -> write
(with a quality target: encode every level -> decode the levels a bisection visits -> keep the
cheapest that meets it, :mod:`pipeline.stages.target`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from oscar_model.model_info import ModelInfo

from .batch import Batch
from .config import ImagesConfig
from .runner import ImagesJob, Plan, Step, encode_steps, levels_of, read_image_steps, run_job
from .stages.metrics import chosen_metrics
from .stages.target import QualityTarget, TargetStage
from .tables.rows import bitstream_rows, error_rows, metrics_rows

__all__ = ["ArchiveConfig", "ArchiveJob", "ArchiveRows", "run_archive"]


@dataclass(frozen=True, kw_only=True)
class ArchiveConfig(ImagesConfig):
    """Attributes (besides :class:`~pipeline.config.ImagesConfig`'s):
        rates: ladder levels as bpp (float) or level index (int); None = the whole ladder.
        verify: decode every stream and measure PSNR / MS-SSIM against the source.
        images: also write the reconstructions as PNG under ``<output>/images``.
        target: keep each image at the cheapest level whose decode meets this quality target
            (``ms_ssim>=0.9``, ``psnr>=30``, ``ssimulacra2>=60``, ``flip<=0.1``, ``butteraugli<=3``,
            ``lpips<=0.2``, ``dists<=0.15``; :mod:`pipeline.stages.target`);
            ``rates`` then names the candidate levels (None: the whole ladder).
        max_bpp: with ``target``, only levels at or below this bpp (per image) are candidates.
        keep_all: with ``target``, also keep the other levels' streams (``chosen`` says which is kept).
        codecs: with ``target``, classical codecs that compete with the model per image (``avif``,
            ``jxl``, ``avif@1/2``, ...): each image keeps the smallest file that meets the target,
            whichever codec wrote it (:class:`~pipeline.stages.target.TargetStage`). Empty: the
            model alone.
    """

    rates: tuple[float | int, ...] | None = None
    verify: bool = True
    images: bool = False
    target: str | None = None
    max_bpp: float | None = None
    keep_all: bool = False
    codecs: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = ("psnr", "ms_ssim")


@dataclass(frozen=True)
class ArchiveRows:
    """An archive's rows: its streams in ``bitstreams`` (with the target columns at a target), their
    measurements (the sweep's, or a target search's probes) in ``metrics``, failures in ``errors``."""

    model_id: str
    nominal_bpp: dict[int, float]
    model_name: str

    def __call__(self, batch: Batch) -> dict[str, pa.Table]:
        return {"errors": error_rows(batch), "bitstreams": bitstream_rows(batch, self.model_id, self.nominal_bpp, self.model_name),
                "metrics": metrics_rows(batch, "oscar_metrics")}


class ArchiveJob(ImagesJob):
    name = "archive"
    config: ArchiveConfig

    def plan(self, model: ModelInfo) -> Plan:
        cfg = self.config
        levels = levels_of(model, cfg.rates)
        if cfg.target is None:
            if cfg.max_bpp is not None or cfg.keep_all or cfg.codecs:
                raise ValueError("--max-bpp, --keep-all and --codecs go with --target")
            work = encode_steps(cfg, model, levels, cfg.verify, cfg.images_uri(cfg.images))
        else:
            target = QualityTarget.parse(cfg.target)
            if not cfg.verify or cfg.images or cfg.refine_steps:
                raise ValueError("--target decodes and measures each image itself: drop --no-verify, --images and --refine")
            try:
                metrics = chosen_metrics(cfg.metrics, (target.metric,))
            except ValueError as e:
                raise ValueError(f"--target {cfg.target}: {e}") from None
            work = (Step(TargetStage, {"model": model, "target": cfg.target, "levels": levels, "device": cfg.device,
                                       "max_bpp": cfg.max_bpp, "keep_all": cfg.keep_all, "metrics": metrics,
                                       "codecs": classical_rivals(cfg.codecs, model.name),
                                       "batch_size": cfg.encode.batch_size, "options": cfg.codec}, pool=cfg.encode),)
        return Plan(self.units(), read_image_steps(cfg) + work, ArchiveRows(model.model_id, model.nominal_bpp, model.name),
                    read_batch_size=cfg.read_batch_size)

    def summary_extra(self, model: ModelInfo) -> dict[str, Any]:
        from .report.targets import target_summary

        cfg = self.config
        return {"target": target_summary(cfg.output, cfg.storage)} if cfg.target else {}


def classical_rivals(codecs: tuple[str, ...], model_name: str) -> tuple[str, ...]:
    """The classical codecs of ``--codecs`` (which must name the model too, as the audit's does),
    each checked: known, and encodable by this Pillow."""
    from .stages.classic import available_codecs, is_classic, parse_codec

    if not codecs:
        return ()
    unknown = [c for c in codecs if c != model_name and not is_classic(c)]
    if unknown:
        raise ValueError(f"--codecs: unknown {unknown}; give the model ({model_name}) and any of jpeg, webp, avif, jxl, "
                         "each optionally downscaled as CODEC@1/K")
    if model_name not in codecs:
        raise ValueError(f"--codecs {','.join(codecs)}: name the model too ({model_name},{','.join(codecs)}); its "
                         "levels are always candidates")
    rivals = tuple(c for c in codecs if c != model_name)
    missing = sorted({parse_codec(c)[0] for c in rivals} - set(available_codecs()))
    if missing:
        raise ValueError(f"--codecs: this Pillow cannot encode {missing} (jxl needs the pillow-jxl-plugin package)")
    return rivals


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an archive job and writes ``run_manifest.json``; returns the summary."""
    return run_job(ArchiveJob(cfg), progress)
