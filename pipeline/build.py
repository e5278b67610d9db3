"""Pipelines that read like a sentence: read -> decode -> encode -> reconstruct -> write.

``build_archive`` returns the lazy Ray Dataset; ``run_archive`` adds resume, the summary and
the run manifest around it. Resource sizes (actors, CPUs, GPUs per actor) come from the
config, never from code.
"""

from __future__ import annotations

import json
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .sources import StorageOptions, resolve, source_uris
from .stages import EncodeStage, ReconstructStage, decode_images
from .writer import clean_uncommitted, committed_uris, write_json, write_tables

__all__ = ["ActorConfig", "ArchiveConfig", "build_archive", "run_archive", "init_ray", "package_versions"]


@dataclass(frozen=True)
class ActorConfig:
    """An actor pool: between ``min_actors`` and ``max_actors``, each holding these resources.

    Fractional CPUs keep read tasks from starving on small machines; ``num_gpus=0`` runs on CPU.
    """

    min_actors: int = 1
    max_actors: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    batch_size: int = 8


@dataclass(frozen=True)
class ArchiveConfig:
    """Everything ``archive`` needs.

    Attributes:
        input: URI prefix (s3://bucket/photos, gs://..., /local/dir) or a .parquet/.csv manifest.
        output: URI under which tables, images and the run manifest are written.
        rates: ladder levels as bpp (float) or level index (int); None = the whole ladder.
        model: registered model name or model folder.
        verify: decode every stream and measure PSNR / MS-SSIM against the source.
        images: also write the reconstructions as PNG under ``<output>/images``.
        device: "cpu", "cuda" or None (CUDA when the actor has one).
    """

    input: str
    output: str
    rates: tuple[float | int, ...] | None = None
    model: str = "oscar-tiny"
    verify: bool = True
    images: bool = False
    device: str | None = None
    encode: ActorConfig = field(default_factory=ActorConfig)
    decode: ActorConfig = field(default_factory=ActorConfig)
    read_batch_size: int = 16
    storage: StorageOptions = field(default_factory=StorageOptions)


def init_ray(num_cpus: int | None = None) -> None:
    """Joins RAY_ADDRESS's cluster when set, else starts a local Ray."""
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


def _model_info(model: str) -> dict[str, Any]:
    from oscar_model.codec import OscarCodec
    from oscar_model.registry import resolve_model_path

    path = resolve_model_path(model)
    codec = OscarCodec.from_pretrained(path, device="cpu")
    return {
        "name": codec.config.name,
        "path": str(path),
        "model_id": codec.model_id.hex(),
        "model_hash": codec.model_hash,
        "nominal_bpp": {p.index: p.nominal_bpp for p in codec.ladder},
        "ladder": codec.ladder.to_dicts(),
    }


def build_archive(cfg: ArchiveConfig, uris: list[str], model: dict[str, Any]):
    """The archive dataset: one output row per table row written."""
    import ray

    filesystem, _ = resolve(cfg.input if not cfg.input.endswith((".parquet", ".csv")) else uris[0], cfg.storage)
    scheme = urlparse(uris[0]).scheme or None
    paths = [u.split("://", 1)[1] if "://" in u else u for u in uris]
    ds = ray.data.read_binary_files(
        paths, filesystem=filesystem, include_paths=True, ignore_missing_paths=True,
        override_num_blocks=max(1, min(len(paths), 200)),
    )
    ds = ds.map_batches(decode_images, fn_kwargs={"scheme": scheme}, batch_size=cfg.read_batch_size, num_cpus=0.25)
    ds = ds.map_batches(
        EncodeStage,
        fn_constructor_kwargs={"model": model["path"], "rates": cfg.rates, "device": cfg.device, "batch_size": cfg.encode.batch_size},
        compute=ray.data.ActorPoolStrategy(min_size=cfg.encode.min_actors, max_size=cfg.encode.max_actors),
        num_cpus=cfg.encode.num_cpus, num_gpus=cfg.encode.num_gpus, batch_size=cfg.encode.batch_size,
    )
    if cfg.verify:
        images_uri = f"{cfg.output.rstrip('/')}/images" if cfg.images else None
        ds = ds.map_batches(
            ReconstructStage,
            fn_constructor_kwargs={"model": model["path"], "device": cfg.device, "images_uri": images_uri,
                                   "storage": cfg.storage, "batch_size": cfg.decode.batch_size},
            compute=ray.data.ActorPoolStrategy(min_size=cfg.decode.min_actors, max_size=cfg.decode.max_actors),
            num_cpus=cfg.decode.num_cpus, num_gpus=cfg.decode.num_gpus, batch_size=cfg.decode.batch_size,
        )
    return ds.map_batches(
        write_tables,
        fn_kwargs={"output_uri": cfg.output, "codec_name": model["name"], "model_id": model["model_id"],
                   "nominal_bpp": model["nominal_bpp"], "storage": cfg.storage},
        batch_size=cfg.encode.batch_size, num_cpus=0.25,
    )


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
        if r["status"] == "ok":
            per_rate[int(r["rate_level"])].append(float(r["bpp"]))
    return {
        "images_ok": len(ok_images),
        "images_failed": len(failed),
        "images_skipped_already_done": skipped,
        "bitstream_bytes": int(sum(int(r["n_bytes"]) for r in rows)),
        "mean_bpp_per_level": {lvl: round(float(np.mean(v)), 5) for lvl, v in sorted(per_rate.items())},
        "wall_seconds": round(wall_s, 2),
    }


def _missing_rows(cfg: ArchiveConfig, missing: list[str], model: dict[str, Any]) -> list[dict[str, Any]]:
    """Manifest entries that do not exist become error rows too."""
    batch = {
        "source_uri": np.array(missing, dtype=object),
        "image_id": np.array([None] * len(missing), dtype=object),
        "status": np.array(["error"] * len(missing), dtype=object),
        "error_stage": np.array(["read"] * len(missing), dtype=object),
        "error_type": np.array(["FileNotFoundError"] * len(missing), dtype=object),
        "error_message": np.array(["no such object"] * len(missing), dtype=object),
    }
    out = write_tables(batch, cfg.output, model["name"], model["model_id"], model["nominal_bpp"], cfg.storage)
    return [dict(zip(out, vals)) for vals in zip(*out.values())]


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an archive job and writes ``run_manifest.json``; returns the summary."""
    from tqdm.auto import tqdm

    t0 = time.time()
    model = _model_info(cfg.model)
    uris = source_uris(cfg.input, cfg.storage)
    removed = clean_uncommitted(cfg.output, cfg.storage)
    done = committed_uris(cfg.output, cfg.storage)
    todo = [u for u in uris if u not in done]
    rows: list[dict[str, Any]] = []
    if todo:
        init_ray()
        ds = build_archive(cfg, todo, model)
        seen: set[str] = set()
        with tqdm(total=len(todo), desc="archive", unit="img", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                new = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
                rows.extend(new)
                fresh = {r["source_uri"] for r in new} - seen
                seen |= fresh
                bar.update(len(fresh))
        missing = sorted(set(todo) - seen)
        if missing:
            rows.extend(_missing_rows(cfg, missing, model))
    summary = summarize(rows, skipped=len(uris) - len(todo), wall_s=time.time() - t0)
    summary["incomplete_parts_removed"] = removed
    manifest = {
        "job": "archive",
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "model": {k: model[k] for k in ("name", "path", "model_id", "model_hash", "ladder")},
        "versions": package_versions(),
        "counts": summary,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(cfg.output, "run_manifest.json", manifest, cfg.storage)
    return summary
