"""How the stages are wired into a Ray Dataset: the pieces every job's plan is made of.

    read_images:        source URIs -> raw bytes -> decode_images (light tasks, no torch)
    encode_and_verify:  -> EncodeVerifyStage actors (or EncodeStage -> VerifyStage pools)
    write_results:      -> write_tables (Parquet parts + a commit marker per batch)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .config import ActorConfig, JobConfig
from .sinks import write_tables
from .sources import read_files
from .stages import EncodeStage, EncodeVerifyStage, VerifyStage, decode_images
from .storage import StorageOptions

if TYPE_CHECKING:
    import ray.data

    from oscar_model import ModelInfo

__all__ = ["read_images", "map_actors", "encode_and_verify", "write_results", "LIGHT_TASK_CPUS"]

LIGHT_TASK_CPUS = 0.5
"""What the read, decode and write tasks need left over once the actor pools hold their CPUs."""


def read_images(uris: list[str], storage: StorageOptions, batch_size: int = 2) -> ray.data.Dataset:
    """Raw files -> decoded, validated RGB rows (bad files become error rows)."""
    scheme = urlparse(uris[0]).scheme or None
    return read_files(uris, storage, batch_size).map_batches(
        decode_images, fn_kwargs={"scheme": scheme}, batch_size=batch_size, num_cpus=0.1
    )


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
                    refine_steps=cfg.refine_steps)
    if verify:
        ds = map_actors(ds, VerifyStage, cfg.decode, **common, batch_size=cfg.decode.batch_size, **verify_kwargs)
    return ds


def write_results(ds: ray.data.Dataset, cfg: JobConfig, model: ModelInfo) -> ray.data.Dataset:
    return ds.map_batches(
        write_tables, fn_kwargs={"output_uri": cfg.output, "model": model, "storage": cfg.storage},
        batch_size=cfg.encode.batch_size, num_cpus=0.1,
    )
