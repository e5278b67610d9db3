"""The one resumable runner every job runs on.

    read the model's info (no weights) -> take the output's lease (one writer) -> delete the rows
    of units committed but not finished -> refuse an output holding another model's results -> plan the work units
    (shards, file groups, archive files) -> skip the units ``work_units`` records as committed
    -> run the job's dataset on Ray, committing a window every N units or T minutes -> commit
    the rest -> write run_manifest.json -> summary

A job says what its work units are and how its dataset is built (:class:`Job`); everything
above is here, once. Driver memory holds the plan (one entry per unit, not per image), what is
in flight and one window; the summary is added up from write receipts.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from oscar_model.model_info import ModelInfo

from .config import ActorConfig, ImagesConfig, JobConfig
from .dataflow import LIGHT_TASK_CPUS
from .delta import DeltaOutput
from .faults import FAULT_ENV, TRACE_ENV
from .legacy import is_marker_layout
from .models import model_info
from .progress import follow
from .rows import batch_of, error_row
from .sinks import RECEIPT, flatten, write_files
from .sources import ImageColumns, WorkUnit, plan_units
from .storage import write_json
from .windows import CommitWindows, Tally

if TYPE_CHECKING:
    import ray.data

__all__ = ["Job", "ImagesJob", "run_job", "init_ray", "check_reachable", "check_actor_budget", "refuse_other_model",
           "package_versions"]

log = logging.getLogger("oscar.jobs")


class Job(ABC):
    """A job: its name, its config, its work units, its actor pools and its dataset."""

    name: ClassVar[str]

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.progress: Any = None  # the run's ProgressCounter actor, set by run_job before build

    def check(self, model: ModelInfo) -> None:
        """Refuses a plan that cannot work, before anything runs: by default, rates the model's
        ladder does not have (on the driver, not in the actors)."""
        rates = getattr(self.config, "rates", None)
        if rates:
            model.ladder.resolve_many(rates)

    @abstractmethod
    def units(self, model: ModelInfo) -> list[WorkUnit]:
        """Every work unit of the job, done or not, in a stable order."""

    @abstractmethod
    def pools(self) -> list[ActorConfig]:
        """The actor pools :meth:`build` creates (checked against the cluster's CPUs)."""

    @abstractmethod
    def build(self, todo: list[WorkUnit], model: ModelInfo) -> ray.data.Dataset:
        """The dataset that does ``todo`` and whose rows are write receipts."""

    def manifest_extra(self) -> dict[str, Any]:
        """What the job adds to run_manifest.json (redecode: the archive version it read)."""
        return {}

    def summary_extra(self, model: ModelInfo) -> dict[str, Any]:
        """What the job adds to the summary (and run_manifest.json) once its tables are committed:
        the archive's target figures."""
        return {}

    def finish(self, summary: dict[str, Any], model: ModelInfo) -> None:
        """After the manifest is written (the audit writes its report here)."""
        return None


class ImagesJob(Job):
    """A job over source images: its units come from the input (shards, Parquet files, file groups)."""

    config: ImagesConfig

    def units(self, model: ModelInfo) -> list[WorkUnit]:
        cfg = self.config
        return plan_units(cfg.input, cfg.storage, ImageColumns(cfg.image_column, cfg.key_column), cfg.group_size)


def run_job(job: Job, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) ``job`` and writes ``run_manifest.json``; returns the summary."""
    t0 = time.time()
    cfg = job.config
    model = model_info(cfg.model, cfg.storage)
    job.check(model)
    out = DeltaOutput(cfg.output, cfg.storage)
    if is_marker_layout(cfg.output, cfg.storage) and not out.exists():
        raise ValueError(f"{cfg.output} holds results in the old marker layout: convert it first with "
                         f"`python -m jobs.maintain --output {cfg.output} --convert-markers`, or write to a new --output")
    out.acquire_lease()
    try:
        out.create_tables()
        done, models = out.done_and_models()
        healed = out.heal(done)
        refuse_other_model(cfg.output, model, models)
        units = job.units(model)
        todo = [u for u in units if u.unit_id not in done]
        if len(todo) < len(units):
            log.info("resuming %s: %d of %d work units already committed, %d left", cfg.output,
                     len(units) - len(todo), len(units), len(todo))
        tally = Tally()
        if todo:
            init_ray(cfg.ray_address, cfg.verbose)
            check_actor_budget(job.pools())
            job.progress = _progress_counter() if progress else None
            _execute(job.build(todo, model), cfg, todo, out, model, tally, job.progress, progress, job.name)
    finally:
        out.release_lease()
    summary = {
        "images_ok": tally.ok, "images_failed": tally.failed, "units_done": len(todo), "units_skipped_already_done":
        len(units) - len(todo), "bitstream_bytes": tally.bytes, "mean_bpp_per_level": tally.mean_bpp(),
        "wall_seconds": round(time.time() - t0, 2), "rows_of_unfinished_units_deleted": healed,
        "windows_committed": out.next_window,
    }
    summary.update(job.summary_extra(model))
    manifest = {
        "job": job.name, "config": json.loads(json.dumps(asdict(cfg), default=str)), "model": model.to_dict(),
        "versions": package_versions(), "counts": summary, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **job.manifest_extra(),
    }
    write_json(cfg.output, "run_manifest.json", manifest, cfg.storage)
    job.finish(summary, model)
    return summary


def init_ray(address: str | None = None, verbose: bool = False, num_cpus: int | None = None) -> None:
    """Joins ``address`` (default $RAY_ADDRESS) when given, else starts a fresh local Ray.

    Never a plain ``ray.init()``: that joins whatever cluster a ``ray start`` left behind, and a
    dead one was retried for 13 minutes. A remote address is checked with a TCP connect first.
    """
    import ray

    if ray.is_initialized():
        return
    # The test hooks (OSCAR_FAULT, OSCAR_TRACE) reach the workers through the runtime env.
    env = {k: v for k, v in os.environ.items() if k in (FAULT_ENV, TRACE_ENV)}
    runtime_env = {"env_vars": env} if env else None
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    level = logging.INFO if verbose else logging.WARNING  # Ray's own INFO lines only with --verbose
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose,
                 runtime_env=runtime_env, logging_level=level)
    else:
        check_reachable(address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose, logging_level=level)
    import ray.data  # configures its logger on import: set the level after that

    logging.getLogger("ray.data").setLevel(level)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose  # one bar, this job's, unless --verbose
    ctx.enable_operator_progress_bars = verbose


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises ConnectionError, in one line, when ``address``'s host:port does not answer."""
    import socket

    if address in ("auto",):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=timeout_s):
            return
    except (OSError, ValueError) as e:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({e}): start it, fix RAY_ADDRESS or --ray-address, "
            "or pass --ray-address local to run on this machine"
        ) from None


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


def refuse_other_model(output: str, model: ModelInfo, committed: set[str]) -> None:
    """Raises when ``output`` already holds committed results of another model.

    Why: a rerun resumes, skipping every committed unit. With another model (retrained
    weights, new entropy tables) the tables would silently hold two models' rows under one
    run manifest, and the old bitstreams would not decode with the new model.
    """
    others = committed - {model.model_id}
    if others:
        raise ValueError(
            f"{output} already holds results of model id(s) {', '.join(sorted(others))}; this run's model "
            f"{model.name} is id {model.model_id}. Resuming would mix two models in one table: "
            "write to a new --output, or delete the old one first"
        )


def _progress_counter() -> Any:
    import ray

    from .progress import ProgressCounter

    return ray.remote(num_cpus=0)(ProgressCounter).remote()


def _execute(ds: ray.data.Dataset, cfg: JobConfig, todo: list[WorkUnit], out: DeltaOutput, model: ModelInfo,
             tally: Tally, counter: Any, progress: bool, desc: str) -> None:
    """Streams the dataset's receipts, committing a window whenever one is due.

    At the end every unit is committed: one whose rows never all came back (lost beyond Ray's
    retries) is committed with an error row saying so, never dropped.
    """
    from tqdm.auto import tqdm

    windows = CommitWindows(every_units=max(1, cfg.commit_units), every_s=60 * cfg.commit_minutes)
    remaining = {u.unit_id: (u.kind, u.uri) for u in todo}  # _commit takes each unit out as it commits
    known = sum(len(u.members) for u in todo) if all(u.kind == "files" for u in todo) else None
    stop = threading.Event()
    with tqdm(total=known, desc=desc, unit="img", disable=not progress) as bar:
        bar.set_postfix_str(f"units 0/{len(todo)}")
        if counter is not None:
            follow(counter, bar, stop)
        # prefetch_batches=0: with prefetching, a receipt is handed over only once the next one
        # exists, which held every window back until the job was nearly done.
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for text in batch[RECEIPT]:
                r = json.loads(text)
                windows.add(r)
                tally.add(r)
                if counter is None:
                    bar.update(r["ok"] + r["failed"])
            if windows.due():
                _commit(out, windows, remaining, model)
                bar.set_postfix_str(f"units {len(todo) - len(remaining)}/{len(todo)}, {out.next_window} windows")
        _commit(out, windows, remaining, model)
        if remaining:  # an error row completes each lost unit, whatever part of it arrived before
            rows = [error_row(uri, u, "read", "LostWork", "the unit's rows never all came back; rerun after "
                              "deleting its rows to retry", unit_size=windows.seen.get(u, 0) + 1)
                    for u, (_, uri) in sorted(remaining.items())]
            flat = flatten(batch_of(rows), model)
            r = json.loads(write_files(flat, out.output_uri, out.storage)[RECEIPT][0])
            windows.add(r)
            tally.add(r)
            _commit(out, windows, remaining, model)
        stop.set()
        bar.update(max(0, tally.ok + tally.failed - bar.n))
        bar.set_postfix_str(f"units {len(todo) - len(remaining)}/{len(todo)}, {out.next_window} windows")


def _commit(out: DeltaOutput, windows: CommitWindows, remaining: dict[str, tuple[str, str]], model: ModelInfo) -> None:
    """Commits the open window (if it holds anything), taking the units it made done out of ``remaining``."""
    files, units, touched, partial = windows.take()
    if not files and not units:
        return
    rows = []
    for u, n in units.items():
        kind, uri = remaining.pop(u)
        rows.append({"unit_id": u, "kind": kind, "uri": uri, "images": n})
    out.commit_window(files, rows, model.model_id, touched, partial)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("oscar-transcoder", "torch", "diffusers", "ray", "pyarrow", "numpy", "pillow", "constriction"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
