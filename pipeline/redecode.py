"""The redecode job: archived bitstreams -> one-step decode (-> PNG) (-> re-encode at new
rates + metrics against the decoded image: transcoding) -> write.

Its work is one key per archived stream (:func:`~pipeline.rows.job_key` with the level), read
from the archive's committed bitstreams table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ActorConfig, JobConfig
from .dataflow import encode_and_verify, map_actors, write_results
from .rows import job_key
from .runner import Job, run_job
from .sinks import committed_files, read_parts
from .stages import ArchiveDecodeStage
from .storage import resolve

__all__ = ["RedecodeConfig", "RedecodeJob", "run_redecode"]


@dataclass(frozen=True, kw_only=True)
class RedecodeConfig(JobConfig):
    """Attributes (besides :class:`~pipeline.config.JobConfig`'s):
        archive: output URI of an earlier ``archive`` run (its committed bitstreams are read).
        rates: transcode: re-encode each decoded image at these rates (None: decode only).
        from_level: the archived level to decode (default: every level; with ``rates``: the highest).
        images: write the decoded images as PNG under ``<output>/images``.
    """

    archive: str
    rates: tuple[float | int, ...] | None = None
    from_level: int | None = None
    images: bool = False


def _keep_todo(batch: dict[str, np.ndarray], todo: frozenset[str]) -> dict[str, np.ndarray]:
    """Only the streams still to do: at the chosen level, not committed by an earlier run."""
    keep = np.array([job_key(u, lvl) in todo for u, lvl in zip(batch["source_uri"], batch["rate_level"])], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


class RedecodeJob(Job):
    name = "redecode"
    config: RedecodeConfig

    def check(self, model) -> None:
        import pyarrow.parquet as pq

        cfg = self.config
        self.files = committed_files(cfg.archive, "bitstreams", cfg.storage)
        if not self.files:
            raise FileNotFoundError(f"no committed bitstreams under {cfg.archive}/bitstreams: is it an archive job's output?")
        filesystem, _ = resolve(cfg.archive, cfg.storage)
        self.index = pq.ParquetDataset(self.files, filesystem=filesystem).read(columns=["source_uri", "rate_level", "model_id"])
        ids = set(self.index.column("model_id").to_pylist())
        if ids - {model.model_id}:
            raise ValueError(f"archive was written by model id(s) {sorted(ids)}; --model {cfg.model} is {model.model_id}")
        self.level = cfg.from_level
        if self.level is None and cfg.rates:
            self.level = max(self.index.column("rate_level").to_pylist())

    def work(self, model) -> list[str]:
        levels = self.index.column("rate_level").to_pylist()
        return [job_key(u, lvl) for u, lvl in zip(self.index.column("source_uri").to_pylist(), levels)
                if self.level is None or int(lvl) == self.level]

    def pools(self) -> list[ActorConfig]:
        return [self.config.decode, *(self.config.verify_pools() if self.config.rates else [])]

    def build(self, todo, model):
        import ray

        cfg = self.config
        # Not ray.data.read_parquet: its file-listing task asks for a whole CPU, which never gets
        # scheduled once actor pools hold the rest of a small machine (a deadlock seen on 2 CPUs).
        # The commit markers already name every part, so each part is one light read task.
        ds = ray.data.from_items([{"part": f} for f in self.files], override_num_blocks=max(1, min(len(self.files), 1000)))
        ds = ds.map_batches(read_parts, fn_kwargs={"output_uri": cfg.archive, "table": "bitstreams", "storage": cfg.storage},
                            batch_size=1, num_cpus=0.1)
        ds = ds.map_batches(_keep_todo, fn_kwargs={"todo": frozenset(todo)}, batch_size=64, num_cpus=0.1)
        ds = map_actors(ds, ArchiveDecodeStage, cfg.decode, model=model, device=cfg.device,
                        images_uri=cfg.images_uri(cfg.images), storage=cfg.storage)
        if cfg.rates:
            ds = encode_and_verify(ds, cfg, model, cfg.rates, verify=True, images_uri=None)
        return write_results(ds, cfg, model)


def run_redecode(cfg: RedecodeConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) a redecode job and writes ``run_manifest.json``; returns the summary."""
    return run_job(RedecodeJob(cfg), progress)
