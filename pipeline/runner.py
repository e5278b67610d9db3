"""The one resumable runner every job runs on, and the plan a job hands it.

A job is a :class:`Plan` and nothing else: its work units, its stages in order (:class:`Step`:
a light task, or an actor pool), and its row builder (in-flight batch -> table rows). The
runner does the rest, once for every job::

    read the model's info (no weights) -> the job's plan (rates resolved there, once) -> take the
    output's lease (one writer) -> delete the rows of units committed but not finished -> refuse
    an output holding another model's results -> skip the units ``work_units`` records as
    committed -> run the plan on Ray Data (read items -> each step -> table rows -> data files),
    committing a window every N units or T minutes -> commit the rest -> run_manifest.json -> summary

Driver memory holds the plan (one entry per unit; a file group's lists its files), what is in
flight, one window and one slice's Ray Data bookkeeping: the plan runs as a sequence of datasets of at most
``JobConfig.slice_images`` images each (:func:`slices`), because Ray Data keeps statistics for
every block a dataset's operators produce on the driver until that dataset ends. The summary
is added up from write receipts.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from oscar_model.model_info import ModelInfo

from .batch import table_of
from .cluster import check_actor_budget, handled_actor_deaths_quiet, init_ray, return_freed_memory
from .config import ActorConfig, ImagesConfig, JobConfig
from .inputs.model_cache import model_info
from .inputs.readers import read_units
from .inputs.units import ImageColumns, WorkUnit, plan_units
from .stages.images import decode_images
from .stages.metrics import chosen_metrics
from .stages.oscar import EncodeStage, EncodeVerifyStage, VerifyStage
from .storage import check_output, write_json
from .tables.delta import DeltaOutput
from .tables.rows import RowBuilder
from .tables.windows import CommitWindows, Tally
from .tables.writer import receipts_of, table_rows, write_files

if TYPE_CHECKING:
    import ray.data

__all__ = ["Step", "Plan", "Job", "ImagesJob", "run_job", "refuse_other_model", "package_versions",
           "read_image_steps", "encode_steps", "levels_of", "ProgressCounter", "apply_step", "slices"]

log = logging.getLogger("oscar.jobs")

MAX_READ_BLOCKS = 10_000
UNKNOWN_UNIT_IMAGES = 1024
"""What a shard, a Parquet file or an archive data file counts for when a plan is cut into slices:
its images are not known before it is read (a file group's are its members)."""


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Step:
    """One stage of a plan: ``stage`` is a function ``batch -> batch`` (or a generator of batches)
    run as light tasks of ``num_cpus``, or, with ``pool``, a class run as an actor pool (its
    ``__init__`` takes ``kwargs`` and loads what it needs once; its ``__call__`` takes a batch)."""

    stage: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    pool: ActorConfig | None = None
    num_cpus: float = 0.1
    batch_size: int | None = None
    """Light tasks: in-flight rows per call (None: a whole block); a pool's comes from the pool."""


@dataclass(frozen=True)
class Plan:
    """Everything a job does, as one value the runner executes: no state is kept anywhere else."""

    units: list[WorkUnit]
    """Every work unit, done or not, in a stable order (the runner skips the committed ones)."""
    steps: tuple[Step, ...]
    """From the read items to the last stage before writing."""
    rows: RowBuilder
    """The job's in-flight batch -> rows of each table it writes."""
    read_batch_size: int = 2
    """At least this many files per read item (a file group is split so its images spread over the pools)."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """What the job adds to run_manifest.json (redecode: the archive version it read)."""

    @property
    def pools(self) -> list[ActorConfig]:
        """The actor pools the plan's steps create (checked against the cluster's CPUs)."""
        return [s.pool for s in self.steps if s.pool is not None]


class Job(ABC):
    """A job: its name, its config, and the plan it makes of them for a model."""

    name: ClassVar[str]

    def __init__(self, config: JobConfig) -> None:
        self.config = config

    @abstractmethod
    def plan(self, model: ModelInfo) -> Plan:
        """The job's plan; raises (ValueError, FileNotFoundError: one line) on a request that cannot
        work, before anything runs."""

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

    def units(self) -> list[WorkUnit]:
        """The input's units; an input holding no file is refused (unless ``allow_empty``): an empty run
        that reports success hides a wrong path."""
        cfg = self.config
        units = plan_units(cfg.input, cfg.storage, ImageColumns(cfg.image_column, cfg.key_column), cfg.group_size)
        if not units and not cfg.allow_empty:
            raise FileNotFoundError(f"no images found in {cfg.input}: looked for image files, WebDataset .tar shards "
                                    "and Parquet files under it (pass --allow-empty if an empty input is fine)")
        return units


def levels_of(model: ModelInfo, rates) -> tuple[int, ...] | None:
    """``rates`` (bpp or level indices; None: the whole ladder) as the model's level indices: the
    one place a job's rates are resolved, on the driver, so the actors receive exact levels."""
    return None if rates is None else tuple(p.index for p in model.ladder.resolve_many(rates))


def read_image_steps(cfg: ImagesConfig) -> tuple[Step, ...]:
    """Read items -> raw bytes (bad inputs: error rows) -> decoded, validated RGB rows (no torch)."""
    return (Step(read_units, {"storage": cfg.storage}, num_cpus=0.25, batch_size=1),
            Step(decode_images, {"max_pixels": cfg.codec.max_pixels}, batch_size=cfg.read_batch_size))


def encode_steps(cfg: JobConfig, model: ModelInfo, levels: tuple[int, ...] | None, verify: bool,
                 images_uri: str | None = None, keep_pixels: bool = False) -> tuple[Step, ...]:
    """Rows with pixels -> OSCAR streams at ``levels`` (+ one-step decode and metrics): one fused
    pool, or an encode pool and a decode pool."""
    common = {"model": model, "device": cfg.device, "options": cfg.codec}
    encode = {**common, "levels": levels, "batch_size": cfg.encode.batch_size, "refine_steps": cfg.refine_steps}
    verify_kwargs = {"images_uri": images_uri, "storage": cfg.storage, "keep_pixels": keep_pixels,
                     "metrics": chosen_metrics(cfg.metrics)}
    if verify and cfg.fused:
        return (Step(EncodeVerifyStage, {**encode, **verify_kwargs}, pool=cfg.encode),)
    steps = (Step(EncodeStage, {**encode, "keep_pixels": verify or keep_pixels}, pool=cfg.encode),)
    if verify:
        steps += (Step(VerifyStage, {**common, "batch_size": cfg.decode.batch_size, **verify_kwargs}, pool=cfg.decode),)
    return steps


# ---------------------------------------------------------------------------- running a plan
def run_job(job: Job, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) ``job`` and writes ``run_manifest.json``; returns the summary."""
    t0 = time.time()
    cfg = job.config
    check_output(cfg.output, cfg.storage)
    model = model_info(cfg.model, cfg.storage)
    plan = job.plan(model)
    out = DeltaOutput(cfg.output, cfg.storage)
    out.acquire_lease()
    try:
        out.create_tables()
        done, models = out.done_and_models()
        healed = out.heal(done)
        refuse_other_model(cfg.output, model, models)
        todo = [u for u in plan.units if u.unit_id not in done]
        if len(todo) < len(plan.units):
            log.info("resuming %s: %d of %d work units already committed, %d left", cfg.output,
                     len(plan.units) - len(todo), len(plan.units), len(todo))
        tally = Tally()
        if todo:
            init_ray(cfg.ray_address, cfg.verbose)
            check_actor_budget(plan.pools)
            counter = _progress_counter() if progress else None
            commits = _Commits(out, model, plan.rows, todo, CommitWindows(max(1, cfg.commit_units), 60 * cfg.commit_minutes), tally)
            _run_rerunning_after_crashes(plan, cfg, commits, counter, progress, job.name)
    finally:
        out.release_lease()
    skipped = len(plan.units) - len(todo)
    summary = {
        "images_ok": tally.ok, "images_failed": tally.failed, "units_done": len(todo), "units_skipped_already_done":
        skipped, "bitstream_bytes": tally.bytes, "mean_bpp_per_level": tally.mean_bpp(),
        "mean_quality_per_level": tally.mean_quality(),
        "wall_seconds": round(time.time() - t0, 2), "rows_of_unfinished_units_deleted": healed,
        "windows_committed": out.next_window,
    }
    summary.update(job.summary_extra(model))
    manifest = {
        "job": job.name, "config": json.loads(json.dumps(asdict(cfg), default=str)), "model": model.to_dict(),
        "versions": package_versions(), "counts": summary, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **plan.manifest,
    }
    write_json(cfg.output, "run_manifest.json", manifest, cfg.storage)
    job.finish(summary, model)
    return summary


WORKER_CRASH_RERUNS = 3
"""How many times in a row a run is taken up again after a worker died without committing a
unit in between (a crash loop, such as an image that kills its process, stops there)."""


def _run_rerunning_after_crashes(plan: Plan, cfg: JobConfig, commits: _Commits, counter: Any, progress: bool,
                                 name: str) -> None:
    """Runs the plan's units; when an actor dies, takes the run up again, as a rerun of the
    command would: what is complete stays committed, the rows of units caught half-way are
    deleted, and the units not committed run again on fresh actors.

    Why here and not Ray's actor restarts: Ray Data hands every actor its own objects from the
    object store as constructor arguments, and an actor restarted after those are gone fails
    (ray-project/ray#53727; Ray logs an error line for every actor it starts that way). The
    pools therefore start with ``max_restarts=0``, and the job, which can redo any unit not yet
    committed, redoes them.
    """

    with handled_actor_deaths_quiet():
        _rerun_loop(plan, cfg, commits, counter, progress, name)


def _rerun_loop(plan: Plan, cfg: JobConfig, commits: _Commits, counter: Any, progress: bool, name: str) -> None:
    from ray.exceptions import RayActorError

    fruitless = 0
    while True:
        left = [u for u in commits.todo if u.unit_id in commits.remaining]
        receipts = (r for part in slices(left, cfg.slice_images) for r in _receipts(_dataset(plan, part, cfg, counter)))
        committed_before = len(commits.todo) - len(commits.remaining)
        try:
            commits.follow(receipts, counter, progress, name)
            return
        except RayActorError as e:
            redo = commits.after_crash()
            progressed = len(commits.todo) - len(commits.remaining) > committed_before
            fruitless = 0 if progressed else fruitless + 1
            if fruitless > WORKER_CRASH_RERUNS:
                raise
            log.warning("%s: a worker died (%s); %d units not yet committed run again on new workers "
                        "(the rows of %d caught half-way were deleted)", name, type(e).__name__,
                        len(commits.remaining), redo)


def slices(units: list[WorkUnit], max_images: int) -> Iterator[list[WorkUnit]]:
    """``units`` in order, cut into runs of at most ``max_images`` images (a unit is never split; a
    unit larger than that is a slice of its own)."""
    part: list[WorkUnit] = []
    images = 0
    for unit in units:
        size = len(unit.members) if unit.kind == "files" else UNKNOWN_UNIT_IMAGES
        if part and images + size > max_images:
            yield part
            part, images = [], 0
        part.append(unit)
        images += size
    if part:
        yield part


def _dataset(plan: Plan, todo: list[WorkUnit], cfg: JobConfig, counter: Any) -> ray.data.Dataset:
    """The plan's steps over ``todo``'s read items, then table rows and data files (one receipt per file set).

    A read item's output is one block and a block goes to one actor, so small jobs split their
    file groups into about 4 items per actor (never under ``read_batch_size`` files). Large jobs
    keep one item per group: Ray Data keeps driver memory per block.
    """
    import ray

    actors = max((p.max_actors for p in plan.pools), default=1)
    files = sum(len(u.members) for u in todo)
    per_item = max(plan.read_batch_size, math.ceil(files / (4 * max(1, actors))))
    items = [item for u in todo for item in u.to_items(per_item)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), MAX_READ_BLOCKS)))
    last_pool = max((i for i, s in enumerate(plan.steps) if s.pool is not None), default=None)
    for i, step in enumerate(plan.steps):
        if step.pool is not None and all(u.kind == "files" for u in todo):
            # A small job's images would all fit one actor call, and its bar would sit at 0 until the
            # end: its actors take a few images at a time (large jobs keep their batches).
            small = max(1, math.ceil(files / (4 * max(1, step.pool.max_actors))))
            step = replace(step, pool=replace(step.pool, batch_size=min(step.pool.batch_size, small)))
        if i == last_pool and counter is not None:  # the bar moves as each actor call finishes
            step = replace(step, stage=_Counted, kwargs={"stage": step.stage, "counter": counter, **step.kwargs})
        ds = apply_step(ds, step)
    rows = ds.map_batches(table_rows, fn_kwargs={"build": plan.rows}, batch_size=None, num_cpus=0.1,
                          batch_format="pyarrow")
    return rows.map_batches(write_files, fn_kwargs={"output_uri": cfg.output, "storage": cfg.storage},
                            batch_size=cfg.rows_per_file, batch_format="pyarrow", num_cpus=0.1)


def apply_step(ds: ray.data.Dataset, step: Step) -> ray.data.Dataset:
    """``step`` on ``ds``: light tasks (a crashed task is retried by Ray), or an actor pool whose
    actors are not restarted (a crashed actor's work is redone by the job: see
    :func:`_run_rerunning_after_crashes`)."""
    import ray

    if step.pool is None:
        return ds.map_batches(step.stage, fn_kwargs=step.kwargs, batch_size=step.batch_size, num_cpus=step.num_cpus,
                              batch_format="pyarrow")
    with warnings.catch_warnings():
        # Ray Data 2.60 has no named parameter for max_restarts yet and flags every extra remote
        # argument as deprecated (to be replaced before its removal in 2.64): not the user's concern.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            step.stage, fn_constructor_kwargs=step.kwargs, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=step.pool.min_actors, max_size=step.pool.max_actors),
            num_cpus=step.pool.num_cpus, num_gpus=step.pool.num_gpus, batch_size=step.pool.batch_size,
            max_restarts=0,  # a dead actor fails the dataset; the job takes it up again (_run_rerunning_after_crashes)
        )


class _Counted:
    """The plan's last actor stage, bumping the progress counter by each batch it finishes."""

    def __init__(self, stage: type, counter: Any, **kwargs: Any) -> None:
        self.stage = stage(**kwargs)
        self.counter = counter

    def __call__(self, batch):
        out = self.stage(batch)
        if batch.num_rows:
            self.counter.add.remote(batch.num_rows)  # fire and forget: a lost update only slows the bar
        return out


def _receipts(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    # prefetch_batches=0: with prefetching, a receipt is handed over only once the next one
    # exists, which held every window back until the job was nearly done.
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        yield from receipts_of(batch)


@dataclass
class _Commits:
    """The driver's side of a run: receipts in, windows committed, every unit accounted for."""

    out: DeltaOutput
    model: ModelInfo
    rows: RowBuilder
    todo: list[WorkUnit]
    windows: CommitWindows
    tally: Tally
    remaining: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.remaining = {u.unit_id: (u.kind, u.uri) for u in self.todo}  # commit() takes each unit out

    def add(self, receipt: dict[str, Any]) -> None:
        self.windows.add(receipt)
        self.tally.add(receipt)

    def follow(self, receipts: Iterator[dict[str, Any]], counter: Any, progress: bool, desc: str) -> None:
        """Streams the receipts, committing a window whenever one is due. At the end every unit is
        committed: one whose rows never all came back (lost beyond Ray's retries) is committed
        with an error row saying so, never dropped."""
        from tqdm.auto import tqdm

        left = [u for u in self.todo if u.unit_id in self.remaining]
        known = sum(len(u.members) for u in left) if all(u.kind == "files" for u in left) else None
        stop = threading.Event()
        base = _counted(counter)  # a run taken up again after a crash counts from here
        with tqdm(total=known, desc=desc, unit="img", disable=not progress) as bar:
            self._postfix(bar)
            if counter is not None:
                _follow(counter, bar, stop, base)
            try:
                for receipt in receipts:
                    self.add(receipt)
                    if counter is None:
                        bar.update(receipt["ok"] + receipt["failed"])
                    if self.windows.due():
                        self.commit()
                        self._postfix(bar)
            finally:
                stop.set()
            self.commit()
            if self.remaining:
                self._commit_lost()
            bar.update(max(0, (known if known is not None else self.tally.ok + self.tally.failed) - bar.n))
            self._postfix(bar)

    def after_crash(self) -> int:
        """After a worker died: commits what is complete, deletes the rows of the units caught
        half-way (as a rerun would) and forgets their counts; returns how many units those were."""
        self.commit()
        caught = set(self.windows.partial) | set(self.windows.seen)
        self.out.heal()
        self.tally.forget(caught)
        self.windows = CommitWindows(self.windows.every_units, self.windows.every_s)
        return len(caught & set(self.remaining))

    def _postfix(self, bar) -> None:
        bar.set_postfix_str(f"units {len(self.todo) - len(self.remaining)}/{len(self.todo)}, "
                            f"{self.out.next_window} windows")

    def commit(self) -> None:
        """Commits the open window (if it holds anything), taking the units it made done out of ``remaining``."""
        files, units, touched, partial = self.windows.take()
        if not files and not units:
            return
        self.tally.settle(units)
        rows = []
        for u, n in units.items():
            kind, uri = self.remaining.pop(u)
            rows.append({"unit_id": u, "kind": kind, "uri": uri, "images": n})
        self.out.commit_window(files, rows, self.model.model_id, touched, partial)
        return_freed_memory()

    def _commit_lost(self) -> None:
        """An error row completes each lost unit, whatever part of it arrived before."""
        from .batch import error_of

        lost = [{"unit_id": u, "unit_size": self.windows.seen.get(u, 0) + 1, "source_uri": uri,
                 "error": error_of("read", "the unit's rows never all came back; rerun after deleting its rows "
                                   "to retry", "LostWork")} for u, (_, uri) in sorted(self.remaining.items())]
        batch = table_of(lost, ("unit_id", "unit_size", "source_uri", "error"))
        (receipt,) = receipts_of(write_files(table_rows(batch, self.rows), self.out.output_uri, self.out.storage))
        self.add(receipt)
        self.commit()


# ---------------------------------------------------------------------------- progress
class ProgressCounter:
    """Ray actor (0 CPUs): images the write stage has turned into table rows.

    Why not the receipts: a receipt comes back per write task, thousands of rows apart, so a
    small job's bar sat at 0 and then jumped to the end.
    """

    def __init__(self) -> None:
        self.images = 0

    def add(self, n: int) -> None:
        self.images += n

    def value(self) -> int:
        return self.images


def _progress_counter() -> Any:
    import ray

    return ray.remote(num_cpus=0)(ProgressCounter).remote()


def _counted(counter: Any) -> int:
    """The counter's value now (0 without one, or when it does not answer)."""
    import ray

    if counter is None:
        return 0
    try:
        return int(ray.get(counter.value.remote(), timeout=5))
    except Exception:  # the bar is a convenience: never fail the job over it
        return 0


def _follow(counter: Any, bar, stop: threading.Event, base: int = 0, every_s: float = 0.5) -> threading.Thread:
    """A daemon thread moving ``bar`` to the counter's value less ``base`` until ``stop`` is set."""
    import ray

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                seen = ray.get(counter.value.remote(), timeout=5) - base
            except Exception:  # the bar is a convenience: never fail the job over it
                continue
            if seen > bar.n:
                bar.update(min(seen, bar.total or seen) - bar.n)

    thread = threading.Thread(target=loop, name="oscar-progress", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------- the output's guards
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


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("oscar-transcoder", "torch", "onnxruntime", "diffusers", "ray", "pyarrow", "numpy", "pillow",
                "constriction"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
