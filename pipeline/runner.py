"""The one resumable runner every job runs on.

    read the model's info (no weights) -> refuse an output holding another model's results
    -> list the work (one key per image, or per archived stream) -> delete parts without a
    commit marker (an interrupted run) -> skip committed keys -> run the job's dataset on Ray
    -> record work that never came back as error rows -> write run_manifest.json -> summary

A job says what its work is and how its dataset is built (:class:`Job`); everything above is
here, once.
"""

from __future__ import annotations

import json
import os
import platform
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import asdict
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from oscar_model.model_info import ModelInfo

from .config import ActorConfig, JobConfig
from .dataflow import LIGHT_TASK_CPUS
from .faults import FAULT_ENV, TRACE_ENV
from .rows import batch_of, missing_rows
from .sinks import clean_uncommitted, committed_keys, committed_model_ids, write_tables
from .sources import source_uris
from .storage import write_json

if TYPE_CHECKING:
    import ray.data

__all__ = ["Job", "ImagesJob", "run_job", "init_ray", "check_actor_budget", "refuse_other_model", "package_versions"]


class Job(ABC):
    """A job: its name, its config, its work keys, its actor pools and its dataset."""

    name: ClassVar[str]

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    def check(self, model: ModelInfo) -> None:
        """Refuses a plan that cannot work, before anything runs (default: nothing to check)."""
        return None

    @abstractmethod
    def work(self, model: ModelInfo) -> list[str]:
        """Every work key of the job (:func:`~pipeline.rows.job_key`), done or not."""

    @abstractmethod
    def pools(self) -> list[ActorConfig]:
        """The actor pools :meth:`build` creates (checked against the cluster's CPUs)."""

    @abstractmethod
    def build(self, todo: list[str], model: ModelInfo) -> ray.data.Dataset:
        """The dataset that does ``todo`` and whose rows are the sink's summary rows."""

    def finish(self, summary: dict[str, Any], model: ModelInfo) -> None:
        """After the manifest is written (the audit writes its report here)."""
        return None


class ImagesJob(Job):
    """A job over source images: its work is the input listing (a prefix or a manifest)."""

    def work(self, model: ModelInfo) -> list[str]:
        return source_uris(self.config.input, self.config.storage)


def run_job(job: Job, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) ``job`` and writes ``run_manifest.json``; returns the summary."""
    t0 = time.time()
    cfg = job.config
    model = ModelInfo.read(cfg.model)
    job.check(model)
    refuse_other_model(cfg.output, model, cfg.storage)
    keys = job.work(model)
    removed = clean_uncommitted(cfg.output, cfg.storage)
    done = committed_keys(cfg.output, cfg.storage)
    todo = [k for k in keys if k not in done]
    rows: list[dict[str, Any]] = []
    if todo:
        init_ray()
        check_actor_budget(job.pools())
        rows, seen = _execute(job.build(todo, model), todo, job.name, progress)
        missing = sorted(set(todo) - seen)
        if missing:
            out = write_tables(batch_of(missing_rows(missing)), cfg.output, model, cfg.storage)
            rows.extend(dict(zip(out, vals)) for vals in zip(*out.values()))
    summary = summarize(rows, skipped=len(keys) - len(todo), wall_s=time.time() - t0)
    summary["incomplete_parts_removed"] = removed
    manifest = {
        "job": job.name, "config": json.loads(json.dumps(asdict(cfg), default=str)), "model": model.to_dict(),
        "versions": package_versions(), "counts": summary, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(cfg.output, "run_manifest.json", manifest, cfg.storage)
    job.finish(summary, model)
    return summary


def init_ray(num_cpus: int | None = None) -> None:
    """Joins RAY_ADDRESS's cluster when set, else starts a local Ray."""
    import ray

    if ray.is_initialized():
        return
    # The test hooks (OSCAR_FAULT, OSCAR_TRACE) reach the workers through the runtime env.
    env = {k: v for k, v in os.environ.items() if k in (FAULT_ENV, TRACE_ENV)}
    runtime_env = {"env_vars": env} if env else None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    ray.data.DataContext.get_current().enable_progress_bars = True


def check_actor_budget(pools: list[ActorConfig]) -> None:
    """Refuses a plan whose actor pools leave no CPU for the read and write tasks.

    Why: Ray Data reserves each pool's CPUs for the whole run; if nothing is left, the read
    task is never scheduled and the job hangs silently instead of failing.
    """
    import ray

    total = float(ray.cluster_resources().get("CPU", 0))
    held = sum(p.max_actors * p.num_cpus for p in pools)
    if held > total - LIGHT_TASK_CPUS:
        raise ValueError(
            f"actor pools would hold {held:g} of the cluster's {total:g} CPUs; leave at least {LIGHT_TASK_CPUS} "
            f"for reading and writing: lower --actors or --actor-cpus (fractional CPUs are fine)"
        )


def refuse_other_model(output: str, model: ModelInfo, storage) -> None:
    """Raises when ``output`` already holds committed results of another model.

    Why: a rerun resumes, skipping every committed image. With another model (retrained
    weights, new entropy tables) the tables would silently hold two models' rows under one
    run manifest, and the old bitstreams would not decode with the new model.
    """
    others = committed_model_ids(output, storage) - {model.model_id}
    if others:
        raise ValueError(
            f"{output} already holds results of model id(s) {', '.join(sorted(others))}; this run's model "
            f"{model.name} is id {model.model_id}. Resuming would mix two models in one table: "
            "write to a new --output, or delete the old one first"
        )


def _execute(ds: ray.data.Dataset, todo: list[str], desc: str, progress: bool) -> tuple[list[dict[str, Any]], set[str]]:
    """Streams the dataset to completion with a progress bar over work keys."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            new = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
            rows.extend(new)
            fresh = {str(r["job_key"]) for r in new} - seen
            seen |= fresh
            bar.update(len(fresh))
    return rows, seen


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("oscar-transcoder", "torch", "diffusers", "ray", "pyarrow", "numpy", "pillow", "constriction"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def summarize(rows: list[dict[str, Any]], skipped: int, wall_s: float) -> dict[str, Any]:
    ok_images = {r["source_uri"] for r in rows if r["status"] == "ok"}
    failed = {r["source_uri"] for r in rows if r["status"] == "error"} - ok_images
    per_rate: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and not np.isnan(float(r["bpp"])):
            per_rate[int(r["rate_level"])].append(float(r["bpp"]))
    return {
        "images_ok": len(ok_images),
        "images_failed": len(failed),
        "images_skipped_already_done": skipped,
        "bitstream_bytes": int(sum(int(r["n_bytes"]) for r in rows)),
        "mean_bpp_per_level": {lvl: round(float(np.mean(v)), 5) for lvl, v in sorted(per_rate.items())},
        "wall_seconds": round(wall_s, 2),
    }
