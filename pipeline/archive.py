"""The archive job: read -> decode -> encode at every rate -> decode in one step + metrics -> write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ActorConfig, ImagesConfig
from .dataflow import encode_and_verify, read_images, write_results
from .runner import ImagesJob, run_job

__all__ = ["ArchiveConfig", "ArchiveJob", "run_archive"]


@dataclass(frozen=True, kw_only=True)
class ArchiveConfig(ImagesConfig):
    """Attributes (besides :class:`~pipeline.config.ImagesConfig`'s):
        rates: ladder levels as bpp (float) or level index (int); None = the whole ladder.
        verify: decode every stream and measure PSNR / MS-SSIM against the source.
        images: also write the reconstructions as PNG under ``<output>/images``.
    """

    rates: tuple[float | int, ...] | None = None
    verify: bool = True
    images: bool = False


class ArchiveJob(ImagesJob):
    name = "archive"
    config: ArchiveConfig

    def pools(self) -> list[ActorConfig]:
        return self.config.verify_pools(self.config.verify)

    def build(self, todo, model):
        cfg = self.config
        ds = read_images(todo, cfg.storage, cfg.read_batch_size, cfg.encode.max_actors, cfg.max_pixels)
        ds = encode_and_verify(ds, cfg, model, cfg.rates, cfg.verify, cfg.images_uri(cfg.images))
        return write_results(ds, cfg, model, self.progress)


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an archive job and writes ``run_manifest.json``; returns the summary."""
    return run_job(ArchiveJob(cfg), progress)
