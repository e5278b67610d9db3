"""How the stages are wired into a Ray Dataset: the pieces every job's plan is made of.

    read_images:        work units -> raw bytes (shards.read_units) -> decode_images (light tasks, no torch)
    encode_and_verify:  -> EncodeVerifyStage actors (or EncodeStage -> VerifyStage pools)
    write_results:      -> flatten (per block) -> write_files (a data file per table per large batch; a receipt each)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .config import ActorConfig, JobConfig
from .shards import read_units
from .sinks import flatten, write_files
from .sources import WorkUnit
from .stages import EncodeStage, EncodeVerifyStage, VerifyStage, decode_images
from .storage import StorageOptions

if TYPE_CHECKING:
    import ray.data

    from oscar_model import ModelInfo

__all__ = ["work_items", "read_images", "map_actors", "encode_and_verify", "write_results", "LIGHT_TASK_CPUS"]

LIGHT_TASK_CPUS = 0.5
MAX_READ_BLOCKS = 10_000
"""What the read, decode and write tasks need left over once the actor pools hold their CPUs."""


def work_items(units: list[WorkUnit], files_per_item: int = 2) -> ray.data.Dataset:
    """One row per read item (a unit, or a few files of a file group), one item per block."""
    import ray

    items = [item for u in units for item in u.to_items(files_per_item)]
    return ray.data.from_items(items, override_num_blocks=max(1, min(len(items), MAX_READ_BLOCKS)))


def read_images(units: list[WorkUnit], storage: StorageOptions, batch_size: int = 2, actors: int = 2,
                max_pixels: int | None = None) -> ray.data.Dataset:
    """Work units -> raw bytes -> decoded, validated RGB rows (bad inputs become error rows).

    A read item's output is one block and a block goes to one actor, so small jobs split their
    file groups into about 4 items per actor (never under ``batch_size`` files). Large jobs keep
    one item per group: Ray Data keeps driver memory per block (10,000 two-file items, or a
    streaming repartition into small blocks, grew the driver by 56-178 MB at 20,000 images).
    """
    files = sum(len(u.members) for u in units)
    per_item = max(batch_size, math.ceil(files / (4 * max(1, actors))))
    ds = work_items(units, per_item).map_batches(read_units, fn_kwargs={"storage": storage}, batch_size=1,
                                                 num_cpus=0.25)
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    return ds.map_batches(decode_images, fn_kwargs=kwargs, batch_size=batch_size, num_cpus=0.1)


def map_actors(ds: ray.data.Dataset, stage: type, actors: ActorConfig, **kwargs: Any) -> ray.data.Dataset:
    """``stage`` as an actor pool of ``actors``' size, constructed with ``kwargs``."""
    import ray

    return ds.map_batches(
        stage, fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
        num_cpus=actors.num_cpus, num_gpus=actors.num_gpus, batch_size=actors.batch_size,
    )


def encode_and_verify(
    ds: ray.data.Dataset, cfg: JobConfig, model: ModelInfo, rates, verify: bool, images_uri: str | None,
    keep_pixels: bool = False,
) -> ray.data.Dataset:
    """Rows with pixels -> OSCAR bitstreams at ``rates`` (+ one-step decode and metrics).

    ``rates`` are resolved to level indices here, on the driver, against the model's ladder:
    the actors receive exact levels, so a bpp is never matched to a level in two places."""
    rates = levels_of(model, rates)
    common = {"model": model, "device": cfg.device, "options": cfg.codec}
    verify_kwargs = {"images_uri": images_uri, "storage": cfg.storage, "keep_pixels": keep_pixels}
    if verify and cfg.fused:
        return map_actors(ds, EncodeVerifyStage, cfg.encode, **common, rates=rates, batch_size=cfg.encode.batch_size,
                          refine_steps=cfg.refine_steps, **verify_kwargs)
    ds = map_actors(ds, EncodeStage, cfg.encode, **common, rates=rates, batch_size=cfg.encode.batch_size,
                    refine_steps=cfg.refine_steps, keep_pixels=verify or keep_pixels)
    if verify:
        ds = map_actors(ds, VerifyStage, cfg.decode, **common, batch_size=cfg.decode.batch_size, **verify_kwargs)
    return ds


def levels_of(model: ModelInfo, rates) -> tuple[int, ...] | None:
    """``rates`` (bpp or level indices; None: the whole ladder) as the model's level indices."""
    return None if rates is None else tuple(p.index for p in model.ladder.resolve_many(rates))


def write_results(ds: ray.data.Dataset, cfg: JobConfig, model: ModelInfo, progress: Any = None) -> ray.data.Dataset:
    """-> table rows per block (:func:`~pipeline.sinks.flatten`) -> one receipt row per write task."""
    flat = ds.map_batches(flatten, fn_kwargs={"model": model, "progress": progress}, batch_size=None, num_cpus=0.1)
    return flat.map_batches(
        write_files, fn_kwargs={"output_uri": cfg.output, "storage": cfg.storage}, batch_size=cfg.rows_per_file,
        batch_format="pyarrow", num_cpus=0.1,
    )
