"""The redecode job: archived bitstreams -> one-step decode (-> PNG) (-> re-encode at new
rates + metrics against the decoded image: transcoding) -> write.

It reads the archive through its Delta table (the latest version, or ``archive_version``).
Its work units are the data files of that version's bitstreams table: each is one read task
and one line in ``work_units``, so resuming costs what reading the log costs, not one request
per stream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from oscar_model.model_info import ModelInfo

from .batch import COLUMNS, Batch, column, error_of, table_of
from .config import JobConfig
from .inputs.units import WorkUnit
from .runner import Job, Plan, Step, encode_steps, levels_of, run_job
from .stages.oscar import ArchiveDecodeStage
from .storage import StorageOptions, resolve
from .tables.delta import delta_storage_options, table_uri
from .tables.rows import bitstream_rows, error_rows, metrics_rows, redecode_rows

__all__ = ["RedecodeConfig", "RedecodeJob", "RedecodeRows", "run_redecode", "read_archive_file", "archive_model",
           "archive_index"]

_STREAM_COLUMNS = ["image_id", "source_uri", "width", "height", "rate_level", "bitstream"]
ARCHIVE_ROW = ("unit_id", "unit_size", "source_uri", "error", "image_id", "width", "height", "rate_level", "bitstream",
               "codec")
"""The in-flight columns of redecode's reader: an archived stream, with its unit and ``error``."""


@dataclass(frozen=True, kw_only=True)
class RedecodeConfig(JobConfig):
    """Attributes (besides :class:`~pipeline.config.JobConfig`'s):
        archive: output URI of an earlier ``archive`` run (its Delta bitstreams table is read).
        archive_version: the table version to read (None: the latest).
        rates: transcode: re-encode each decoded image at these rates (None: decode only).
        from_level: the archived level to decode (default: every level; with ``rates``: the highest).
        images: write the decoded images as PNG under ``<output>/images``.
    """

    archive: str
    archive_version: int | None = None
    rates: tuple[float | int, ...] | None = None
    from_level: int | None = None
    images: bool = False
    metrics: tuple[str, ...] | None = ("psnr", "ms_ssim")


def read_archive_file(batch: pa.Table, storage: StorageOptions, level: int | None) -> Iterator[Batch]:
    """Ray Data generator: a batch of archive-file units -> in-flight rows of their streams at
    ``level`` (:data:`ARCHIVE_ROW`), straight from the file's columns."""
    for uri, unit in zip(column(batch, "uri"), column(batch, "unit_id")):
        try:
            filesystem, path = resolve(uri, storage)
            names = pq.read_schema(path, filesystem=filesystem).names
            table = pq.read_table(path, filesystem=filesystem,
                                  columns=_STREAM_COLUMNS + [c for c in ("chosen", "codec") if c in names])
            if level is not None:
                table = table.filter(pc.equal(table.column("rate_level"), level))
            elif "chosen" in names:  # an archive at a quality target with --keep-all: each image's kept level
                table = table.filter(pc.fill_null(table.column("chosen"), True))
            problem = None if table.num_rows else error_of("read", f"no stream at level {level} in this archive file",
                                                           "ValueError")
        except Exception as e:  # a lost or corrupt archive file: one error row, the job goes on
            problem = error_of("read", e)
        if problem is not None:
            yield table_of([{"unit_id": unit, "unit_size": 1, "source_uri": uri, "error": problem}], ARCHIVE_ROW)
            continue
        n = table.num_rows
        own = {"unit_id": pa.array([unit] * n, pa.string()), "unit_size": pa.array([0] * (n - 1) + [n], pa.int64()),
               "error": pa.nulls(n, COLUMNS["error"])}
        if "codec" not in table.column_names:  # an archive written before codecs were recorded: all the model's
            own["codec"] = pa.nulls(n, pa.string())
        yield pa.table([own[c] if c in own else table.column(c).cast(COLUMNS[c]) for c in ARCHIVE_ROW],
                       schema=pa.schema([(c, COLUMNS[c]) for c in ARCHIVE_ROW]))


def archive_model(archive: str, storage: StorageOptions | None = None) -> str:
    """The model an archive was written by, as ``--model`` would name it: its registered name when
    that name still loads the same model id, else the folder the archive recorded, if it exists.

    Why: redecoding an archive with the default model refused every archive not written by it.
    """
    from .inputs.model_cache import model_info
    from .storage import is_file, read_json

    manifest_uri = f"{archive.rstrip('/')}/run_manifest.json"
    if not is_file(manifest_uri, storage):
        raise FileNotFoundError(f"{manifest_uri} is missing, so the archive's model is unknown: pass --model")
    recorded = read_json(manifest_uri, storage)["model"]
    for candidate in (recorded.get("name"), recorded.get("path")):
        try:
            if candidate and model_info(candidate, storage).model_id == recorded["model_id"]:
                return candidate
        except (FileNotFoundError, ValueError, KeyError):
            continue
    raise FileNotFoundError(f"the archive was written by model {recorded.get('name')} (id {recorded.get('model_id')}, "
                            f"folder {recorded.get('path')}), which is not on this machine: pass --model")


def archived_at_target(dt) -> bool:
    """Whether an archive was written with --target (its streams' levels differ per image), from
    the Delta log's null counts where they are there."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if "null_count.target" in actions.column_names:
        return bool(pc.any(pc.less(actions.column("null_count.target"), actions.column("num_records"))).as_py())
    if "target" not in dt.schema().to_arrow().names:  # written before targets existed
        return False
    targets = dt.to_pyarrow_table(columns=["target"]).column("target")
    return targets.null_count < len(targets)


def archive_index(dt) -> tuple[set[str], int]:
    """(model ids, highest level) of a bitstreams table version, from its data files' statistics
    in the Delta log: a request per commit, not a read of every stream. Files without statistics
    (written by another tool) are read, two columns of them. A mixed archive's classical files
    have neither (null): they need no model."""
    files = pa.table(dt.get_add_actions(flatten=True))
    needed = ("min.model_id", "max.model_id", "max.rate_level")
    if all(c in files.column_names and files.column(c).null_count == 0 for c in needed):
        ids, top = set(column(files, "min.model_id")) | set(column(files, "max.model_id")), pc.max(files.column("max.rate_level"))
    else:
        index = dt.to_pyarrow_table(columns=["model_id", "rate_level"])
        ids, top = set(column(index, "model_id")), pc.max(index.column("rate_level"))
    return ids - {None}, int(top.as_py()) if top.as_py() is not None else -1


@dataclass(frozen=True)
class RedecodeRows:
    """A redecode's rows: a ``redecode`` metrics row per stream decoded, or, when transcoding, the new
    streams in ``bitstreams`` and their measurements against the decoded image in ``metrics``."""

    model: ModelInfo
    transcode: bool

    def __call__(self, batch: Batch) -> dict[str, pa.Table]:
        if not self.transcode:
            return {"errors": error_rows(batch), "metrics": redecode_rows(batch, self.model.name)}
        return {"errors": error_rows(batch), "bitstreams": bitstream_rows(batch, self.model.model_id, self.model.nominal_bpp, self.model.name),
                "metrics": metrics_rows(batch, "oscar_metrics")}


class RedecodeJob(Job):
    name = "redecode"
    config: RedecodeConfig

    def plan(self, model: ModelInfo) -> Plan:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        cfg = self.config
        levels = levels_of(model, cfg.rates)
        uri = table_uri(cfg.archive, "bitstreams")
        try:
            dt = DeltaTable(uri, version=cfg.archive_version, storage_options=delta_storage_options(uri, cfg.storage))
        except TableNotFoundError as e:
            raise FileNotFoundError(f"no Delta table at {uri}: is {cfg.archive} an archive job's output?") from e
        except Exception as e:
            raise ValueError(f"cannot read {uri} at version {cfg.archive_version}: {e}") from e
        files = dt.file_uris()
        if not files:
            raise FileNotFoundError(f"{uri} (version {dt.version()}) holds no bitstreams")
        ids, top_level = archive_index(dt)
        if ids - {model.model_id}:
            raise ValueError(f"archive was written by model id(s) {sorted(ids)}; --model {cfg.model} is {model.model_id}")
        level = cfg.from_level
        if level is None and cfg.rates and not archived_at_target(dt):
            level = top_level  # an archive at a target: each image's chosen level instead
        tag = "all" if level is None else f"L{level}"
        units = [WorkUnit("archive:" + hashlib.sha1(f"{f}|{tag}".encode()).hexdigest()[:24], "delta-file", f)
                 for f in files]
        steps = (Step(read_archive_file, {"storage": cfg.storage, "level": level}, num_cpus=0.1, batch_size=1),
                 Step(ArchiveDecodeStage, {"model": model, "device": cfg.device, "images_uri": cfg.images_uri(cfg.images),
                                           "storage": cfg.storage, "options": cfg.codec}, pool=cfg.decode))
        if cfg.rates:
            steps += encode_steps(cfg, model, levels, verify=True)
        return Plan(units, steps, RedecodeRows(model, transcode=bool(cfg.rates)),
                    manifest={"archive_version": dt.version()})


def run_redecode(cfg: RedecodeConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) a redecode job and writes ``run_manifest.json``; returns the summary."""
    return run_job(RedecodeJob(cfg), progress)
