"""How the stages are wired into a Ray Dataset: the pieces every job's plan is made of.

    read_images:        work units -> raw bytes (shards.read_units) -> decode_images (light tasks, no torch)
    encode_and_verify:  -> EncodeVerifyStage actors (or EncodeStage -> VerifyStage pools)
    write_results:      -> flatten (per block) -> write_files (a data file per table per large batch; a receipt each)
"""

from __future__ import annotations

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

__all__ = ["work_items", "spread", "read_images", "map_actors", "encode_and_verify", "write_results", "LIGHT_TASK_CPUS"]

LIGHT_TASK_CPUS = 0.5
MAX_READ_BLOCKS = 10_000
"""What the read, decode and write tasks need left over once the actor pools hold their CPUs."""


def work_items(units: list[WorkUnit]) -> ray.data.Dataset:
    """One row per work unit, one unit per block (so units spread over read tasks)."""
    import ray

    return ray.data.from_items([u.to_item() for u in units], override_num_blocks=max(1, min(len(units), MAX_READ_BLOCKS)))


def spread(ds: ray.data.Dataset, rows_per_block: int) -> ray.data.Dataset:
    """Blocks of at most ``rows_per_block`` rows (a streaming repartition).

    Why: everything one read task yields for a unit becomes one block, and an actor pool
    hands a whole block to one actor; a 250-image shard kept one actor busy while the other
    waited. Small blocks spread a unit over the pool.
    """
    return ds.repartition(target_num_rows_per_block=max(1, rows_per_block))


def read_images(units: list[WorkUnit], storage: StorageOptions, batch_size: int = 2,
                rows_per_block: int = 8) -> ray.data.Dataset:
    """Work units -> raw bytes -> decoded, validated RGB rows (bad inputs become error rows)."""
    ds = work_items(units).map_batches(read_units, fn_kwargs={"storage": storage}, batch_size=1, num_cpus=0.25)
    return spread(ds, rows_per_block).map_batches(decode_images, batch_size=batch_size, num_cpus=0.1)


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
    """Rows with pixels -> OSCAR bitstreams at ``rates`` (+ one-step decode and metrics)."""
    common = {"model": model, "device": cfg.device}
    verify_kwargs = {"images_uri": images_uri, "storage": cfg.storage, "keep_pixels": keep_pixels}
    if verify and cfg.fused:
        return map_actors(ds, EncodeVerifyStage, cfg.encode, **common, rates=rates, batch_size=cfg.encode.batch_size,
                          refine_steps=cfg.refine_steps, **verify_kwargs)
    ds = map_actors(ds, EncodeStage, cfg.encode, **common, rates=rates, batch_size=cfg.encode.batch_size,
                    refine_steps=cfg.refine_steps, keep_pixels=verify or keep_pixels)
    if verify:
        ds = map_actors(ds, VerifyStage, cfg.decode, **common, batch_size=cfg.decode.batch_size, **verify_kwargs)
    return ds


def write_results(ds: ray.data.Dataset, cfg: JobConfig, model: ModelInfo, progress: Any = None) -> ray.data.Dataset:
    """-> table rows per block (:func:`~pipeline.sinks.flatten`) -> one receipt row per write task."""
    flat = ds.map_batches(flatten, fn_kwargs={"model": model, "progress": progress}, batch_size=None, num_cpus=0.1)
    return flat.map_batches(
        write_files, fn_kwargs={"output_uri": cfg.output, "storage": cfg.storage}, batch_size=cfg.rows_per_file,
        batch_format="pyarrow", num_cpus=0.1,
    )
