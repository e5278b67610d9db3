"""The archive job: read -> decode -> encode at every rate -> decode in one step + metrics -> write
(with a quality target: encode every level -> decode the levels a bisection visits -> keep the
cheapest that meets it, :mod:`pipeline.target`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ActorConfig, ImagesConfig
from .dataflow import encode_and_verify, levels_of, map_actors, read_images, write_results
from .metrics import perceptual_available
from .runner import ImagesJob, run_job
from .target import QualityTarget, TargetStage, target_summary

__all__ = ["ArchiveConfig", "ArchiveJob", "run_archive"]


@dataclass(frozen=True, kw_only=True)
class ArchiveConfig(ImagesConfig):
    """Attributes (besides :class:`~pipeline.config.ImagesConfig`'s):
        rates: ladder levels as bpp (float) or level index (int); None = the whole ladder.
        verify: decode every stream and measure PSNR / MS-SSIM against the source.
        images: also write the reconstructions as PNG under ``<output>/images``.
        target: keep each image at the cheapest level whose decode meets this quality target
            (``ms_ssim>=0.9``, ``psnr>=30``, ``lpips<=0.2``, ``dists<=0.15``; :mod:`pipeline.target`);
            ``rates`` then names the candidate levels (None: the whole ladder).
        max_bpp: with ``target``, only levels at or below this bpp (per image) are candidates.
        keep_all: with ``target``, also keep the other levels' streams (``chosen`` says which is kept).
    """

    rates: tuple[float | int, ...] | None = None
    verify: bool = True
    images: bool = False
    target: str | None = None
    max_bpp: float | None = None
    keep_all: bool = False


class ArchiveJob(ImagesJob):
    name = "archive"
    config: ArchiveConfig

    def check(self, model) -> None:
        super().check(model)
        cfg = self.config
        if cfg.target is None:
            if cfg.max_bpp is not None or cfg.keep_all:
                raise ValueError("--max-bpp and --keep-all go with --target")
            return
        target = QualityTarget.parse(cfg.target)
        if not cfg.verify or cfg.images or cfg.refine_steps:
            raise ValueError("--target decodes and measures each image itself: drop --no-verify, --images and --refine")
        if target.metric in ("lpips", "dists") and not perceptual_available()[target.metric]:
            raise ValueError(f"--target {cfg.target}: {target.metric} cannot be measured here (install the 'perceptual' "
                             "extra and put its backbone weights on every node)")

    def pools(self) -> list[ActorConfig]:
        return [self.config.encode] if self.config.target else self.config.verify_pools(self.config.verify)

    def build(self, todo, model):
        cfg = self.config
        ds = read_images(todo, cfg.storage, cfg.read_batch_size, cfg.encode.max_actors, cfg.codec.max_pixels)
        if cfg.target:
            ds = map_actors(ds, TargetStage, cfg.encode, model=model, target=cfg.target, rates=levels_of(model, cfg.rates),
                            device=cfg.device,
                            max_bpp=cfg.max_bpp, keep_all=cfg.keep_all, batch_size=cfg.encode.batch_size,
                            options=cfg.codec)
        else:
            ds = encode_and_verify(ds, cfg, model, cfg.rates, cfg.verify, cfg.images_uri(cfg.images))
        return write_results(ds, cfg, model, self.progress)

    def summary_extra(self, model) -> dict[str, Any]:
        cfg = self.config
        return {"target": target_summary(cfg.output, cfg.storage)} if cfg.target else {}


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an archive job and writes ``run_manifest.json``; returns the summary."""
    return run_job(ArchiveJob(cfg), progress)
