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

import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import ActorConfig, JobConfig
from .dataflow import encode_and_verify, map_actors, work_items, write_results
from .delta import delta_storage_options, table_uri
from .rows import Batch, batch_of, error_row
from .runner import Job, run_job
from .sources import WorkUnit
from .stages import ArchiveDecodeStage
from .storage import StorageOptions, resolve

__all__ = ["RedecodeConfig", "RedecodeJob", "run_redecode", "read_archive_file", "archive_model", "archive_index"]

_COLUMNS = ["image_id", "source_uri", "width", "height", "rate_level", "bitstream"]


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


def read_archive_file(batch: Batch, storage: StorageOptions, level: int | None) -> Iterator[Batch]:
    """Ray Data generator: a batch of archive-file units -> archived stream rows at ``level``."""
    for i in range(len(batch["unit_id"])):
        uri, unit = str(batch["uri"][i]), str(batch["unit_id"][i])
        try:
            filesystem, path = resolve(uri, storage)
            names = pq.read_schema(path, filesystem=filesystem).names
            table = pq.read_table(path, filesystem=filesystem, columns=_COLUMNS + [c for c in ("chosen",) if c in names])
            if level is not None:
                table = table.filter(pc.equal(table.column("rate_level"), level))
            elif "chosen" in names:  # an archive at a quality target with --keep-all: each image's kept level
                table = table.filter(pc.fill_null(table.column("chosen"), True))
            table = table.select(_COLUMNS)
            rows = table.to_pylist()
        except Exception as e:  # a lost or corrupt archive file: one error row, the job goes on
            rows = [error_row(uri, unit, "read", type(e).__name__, str(e))]
        if not rows:
            rows = [error_row(uri, unit, "read", "ValueError", f"no stream at level {level} in this archive file")]
        for r in rows:
            r.update(unit_id=unit, unit_size=0)
            r.setdefault("status", "ok")
        rows[-1]["unit_size"] = len(rows)
        yield batch_of(rows, sorted({k for r in rows for k in r}))


def archive_model(archive: str, storage: StorageOptions | None = None) -> str:
    """The model an archive was written by, as ``--model`` would name it: its registered name when
    that name still loads the same model id, else the folder the archive recorded, if it exists.

    Why: redecoding an archive with the default model refused every archive not written by it.
    """
    from .models import model_info
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
    actions = dt.get_add_actions(flatten=True)
    if "null_count.target" in actions.column_names:
        return any(nulls < rows for nulls, rows in zip(actions.column("null_count.target").to_pylist(),
                                                       actions.column("num_records").to_pylist()))
    if "target" not in dt.schema().to_arrow().names:  # written before targets existed
        return False
    targets = dt.to_pyarrow_table(columns=["target"]).column("target")
    return targets.null_count < len(targets)


def archive_index(dt) -> tuple[set[str], int]:
    """(model ids, highest level) of a bitstreams table version, from its data files' statistics
    in the Delta log: a request per commit, not a read of every stream. Files without statistics
    (converted from the old layout) are read, two columns of them."""
    import pyarrow as pa

    files = pa.table(dt.get_add_actions(flatten=True))
    needed = ("min.model_id", "max.model_id", "max.rate_level")
    if all(c in files.column_names and files.column(c).null_count == 0 for c in needed):
        ids = set(files.column("min.model_id").to_pylist()) | set(files.column("max.model_id").to_pylist())
        return ids, int(pc.max(files.column("max.rate_level")).as_py())
    index = dt.to_pyarrow_table(columns=["model_id", "rate_level"])
    return set(index.column("model_id").unique().to_pylist()), int(pc.max(index.column("rate_level")).as_py())


class RedecodeJob(Job):
    name = "redecode"
    config: RedecodeConfig

    def check(self, model) -> None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        super().check(model)
        cfg = self.config
        uri = table_uri(cfg.archive, "bitstreams")
        try:
            dt = DeltaTable(uri, version=cfg.archive_version, storage_options=delta_storage_options(uri, cfg.storage))
        except TableNotFoundError as e:
            raise FileNotFoundError(f"no Delta table at {uri}: is {cfg.archive} an archive job's output? (an output of "
                                    "the old marker layout: convert it with python -m jobs.maintain --convert-markers)") from e
        except Exception as e:
            raise ValueError(f"cannot read {uri} at version {cfg.archive_version}: {e}") from e
        self.version = dt.version()
        self.files = dt.file_uris()
        if not self.files:
            raise FileNotFoundError(f"{uri} (version {self.version}) holds no bitstreams")
        ids, top_level = archive_index(dt)
        if ids - {model.model_id}:
            raise ValueError(f"archive was written by model id(s) {sorted(ids)}; --model {cfg.model} is {model.model_id}")
        self.level = cfg.from_level
        if self.level is None and cfg.rates and not archived_at_target(dt):
            self.level = top_level  # an archive at a target: each image's chosen level instead

    def units(self, model) -> list[WorkUnit]:
        tag = "all" if self.level is None else f"L{self.level}"
        return [WorkUnit("archive:" + hashlib.sha1(f"{f}|{tag}".encode()).hexdigest()[:24], "delta-file", f)
                for f in self.files]

    def pools(self) -> list[ActorConfig]:
        return [self.config.decode, *(self.config.verify_pools() if self.config.rates else [])]

    def build(self, todo, model):
        cfg = self.config
        ds = work_items(todo).map_batches(read_archive_file, fn_kwargs={"storage": cfg.storage, "level": self.level},
                                          batch_size=1, num_cpus=0.1)
        ds = map_actors(ds, ArchiveDecodeStage, cfg.decode, model=model, device=cfg.device,
                        images_uri=cfg.images_uri(cfg.images), storage=cfg.storage, options=cfg.codec)
        if cfg.rates:
            ds = encode_and_verify(ds, cfg, model, cfg.rates, verify=True, images_uri=None)
        return write_results(ds, cfg, model, self.progress)

    def manifest_extra(self) -> dict[str, Any]:
        return {"archive_version": self.version}


def run_redecode(cfg: RedecodeConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) a redecode job and writes ``run_manifest.json``; returns the summary."""
    return run_job(RedecodeJob(cfg), progress)

