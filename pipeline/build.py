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
from .stages import (
    ArchiveDecodeStage,
    BaselineStage,
    EncodeStage,
    EncodeVerifyStage,
    ReconstructStage,
    decode_images,
)
from .writer import (
    clean_uncommitted,
    committed_files,
    committed_model_ids,
    committed_uris,
    read_parts,
    write_json,
    write_tables,
)

__all__ = [
    "ActorConfig", "ArchiveConfig", "RedecodeConfig", "AuditConfig",
    "build_archive", "build_redecode", "build_audit", "run_archive", "run_redecode", "run_audit",
    "init_ray", "package_versions",
]


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
        fused: encode and verify in one actor pool (sized by ``encode``); False gives separate
            encode and decode pools, for when they want different hardware.
        refine_steps: encoder effort: Adam steps of index search through the decoder per
            image and level (:mod:`oscar_model.refine`); 0 = greedy. Same decoder, same format.
    """

    input: str
    output: str
    rates: tuple[float | int, ...] | None = None
    model: str = "oscar-tiny"
    verify: bool = True
    images: bool = False
    device: str | None = None
    fused: bool = True
    refine_steps: int = 0
    encode: ActorConfig = field(default_factory=ActorConfig)
    decode: ActorConfig = field(default_factory=ActorConfig)
    read_batch_size: int = 2
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


LIGHT_TASK_CPUS = 0.5


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


def _pools(cfg, verify: bool) -> list[ActorConfig]:
    """The actor pools encode_and_verify will create."""
    return [cfg.encode] if not verify or cfg.fused else [cfg.encode, cfg.decode]


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


MAX_READ_BLOCKS = 10_000


def read_images(uris: list[str], storage: StorageOptions, batch_size: int = 2):
    """Raw files -> decoded, validated RGB rows (bad files become error rows).

    ``batch_size`` files per read task and per block: small blocks are what spreads the work
    evenly over the actor pool (an actor task takes a whole block; 12 Kodak images in one
    block kept one actor busy for 24 s while the other waited).
    """
    import math

    import ray

    filesystem, _ = resolve(uris[0], storage)
    scheme = urlparse(uris[0]).scheme or None
    paths = [u.split("://", 1)[1] if "://" in u else u for u in uris]
    ds = ray.data.read_binary_files(
        paths, filesystem=filesystem, include_paths=True, ignore_missing_paths=True,
        override_num_blocks=max(1, min(math.ceil(len(paths) / batch_size), MAX_READ_BLOCKS)), num_cpus=0.25,
    )
    return ds.map_batches(decode_images, fn_kwargs={"scheme": scheme}, batch_size=batch_size, num_cpus=0.1)


def _actor_map(ds, stage, actors: ActorConfig, **kwargs):
    import ray

    return ds.map_batches(
        stage, fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
        num_cpus=actors.num_cpus, num_gpus=actors.num_gpus, batch_size=actors.batch_size,
    )


def encode_and_verify(ds, cfg, model: dict[str, Any], rates, verify: bool, images_uri: str | None, keep_pixels: bool = False):
    """Rows with pixels -> OSCAR bitstreams at ``rates`` (+ one-step decode and metrics)."""
    if verify and cfg.fused:
        return _actor_map(ds, EncodeVerifyStage, cfg.encode, model=model["path"], rates=rates, device=cfg.device,
                          images_uri=images_uri, storage=cfg.storage, batch_size=cfg.encode.batch_size, keep_pixels=keep_pixels,
                          refine_steps=cfg.refine_steps)
    ds = _actor_map(ds, EncodeStage, cfg.encode, model=model["path"], rates=rates, device=cfg.device, batch_size=cfg.encode.batch_size,
                    refine_steps=cfg.refine_steps)
    if verify:
        ds = _actor_map(ds, ReconstructStage, cfg.decode, model=model["path"], device=cfg.device, images_uri=images_uri,
                        storage=cfg.storage, batch_size=cfg.decode.batch_size, keep_pixels=keep_pixels)
    return ds


def write_results(ds, cfg, model: dict[str, Any], reference: str = "source"):
    return ds.map_batches(
        write_tables,
        fn_kwargs={"output_uri": cfg.output, "codec_name": model["name"], "model_id": model["model_id"],
                   "nominal_bpp": model["nominal_bpp"], "storage": cfg.storage, "reference": reference},
        batch_size=cfg.encode.batch_size, num_cpus=0.1,
    )


def build_archive(cfg: ArchiveConfig, uris: list[str], model: dict[str, Any]):
    """read -> decode -> encode at every rate -> decode in one step + metrics -> write."""
    images_uri = f"{cfg.output.rstrip('/')}/images" if cfg.images else None
    ds = read_images(uris, cfg.storage, cfg.read_batch_size)
    ds = encode_and_verify(ds, cfg, model, cfg.rates, cfg.verify, images_uri)
    return write_results(ds, cfg, model)


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


def _execute(ds, todo: list[str], desc: str, progress: bool) -> tuple[list[dict[str, Any]], set[str]]:
    """Streams the dataset to completion with a progress bar over input images."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            new = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
            rows.extend(new)
            fresh = {str(r["source_uri"]) for r in new} - seen
            seen |= fresh
            bar.update(len(fresh))
    return rows, seen


def _finish(job: str, cfg, model: dict[str, Any], rows: list[dict[str, Any]], total: int, todo: int, removed: int, t0: float) -> dict[str, Any]:
    summary = summarize(rows, skipped=total - todo, wall_s=time.time() - t0)
    summary["incomplete_parts_removed"] = removed
    manifest = {
        "job": job,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "model": {k: model[k] for k in ("name", "path", "model_id", "model_hash", "ladder")},
        "versions": package_versions(),
        "counts": summary,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(cfg.output, "run_manifest.json", manifest, cfg.storage)
    return summary


def refuse_other_model(output: str, model: dict[str, Any], storage) -> None:
    """Raises when ``output`` already holds committed results of another model.

    Why: a rerun resumes, skipping every committed image. With another model (retrained
    weights, new entropy tables) the tables would silently hold two models' rows under one
    run manifest, and the old bitstreams would not decode with the new model.
    """
    others = committed_model_ids(output, storage) - {model["model_id"]}
    if others:
        raise ValueError(
            f"{output} already holds results of model id(s) {', '.join(sorted(others))}; this run's model "
            f"{model['name']} is id {model['model_id']}. Resuming would mix two models in one table: "
            "write to a new --output, or delete the old one first"
        )


def _images_job(
    job: str, cfg, build, pools: list[ActorConfig], progress: bool, model: dict[str, Any] | None = None
) -> dict[str, Any]:
    t0 = time.time()
    model = model or _model_info(cfg.model)
    refuse_other_model(cfg.output, model, cfg.storage)
    uris = source_uris(cfg.input, cfg.storage)
    removed = clean_uncommitted(cfg.output, cfg.storage)
    done = committed_uris(cfg.output, cfg.storage)
    todo = [u for u in uris if u not in done]
    rows: list[dict[str, Any]] = []
    if todo:
        init_ray()
        check_actor_budget(pools)
        rows, seen = _execute(build(cfg, todo, model), todo, job, progress)
        missing = sorted(set(todo) - seen)
        if missing:
            rows.extend(_missing_rows(cfg, missing, model))
    return _finish(job, cfg, model, rows, len(uris), len(todo), removed, t0)


def run_archive(cfg: ArchiveConfig, progress: bool = True) -> dict[str, Any]:
    """Runs (or resumes) an archive job and writes ``run_manifest.json``; returns the summary."""
    return _images_job("archive", cfg, build_archive, _pools(cfg, cfg.verify), progress)


# ---------------------------------------------------------------------------- redecode
@dataclass(frozen=True)
class RedecodeConfig:
    """Everything ``redecode`` needs.

    Attributes:
        archive: output URI of an earlier ``archive`` run (its committed bitstreams are read).
        output: where images, new bitstreams and metrics go.
        rates: transcode: re-encode each decoded image at these rates (None: decode only).
        from_level: the archived level to decode (default: every level; with ``rates``: the highest).
        images: write the decoded images as PNG under ``<output>/images``.
        fused: transcoding encodes and verifies in one actor pool (see ArchiveConfig).
    """

    archive: str
    output: str
    rates: tuple[float | int, ...] | None = None
    from_level: int | None = None
    images: bool = False
    model: str = "oscar-tiny"
    device: str | None = None
    fused: bool = True
    refine_steps: int = 0
    encode: ActorConfig = field(default_factory=ActorConfig)
    decode: ActorConfig = field(default_factory=ActorConfig)
    storage: StorageOptions = field(default_factory=StorageOptions)


def _add_job_key(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keys = [f"{u}#L{int(lvl)}" for u, lvl in zip(batch["source_uri"], batch["from_level"])]
    return {**batch, "job_key": np.array(keys, dtype=object)}


def _skip_done(batch: dict[str, np.ndarray], done: frozenset) -> dict[str, np.ndarray]:
    keep = np.array([f"{u}#L{int(lvl)}" not in done for u, lvl in zip(batch["source_uri"], batch["rate_level"])], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


def build_redecode(cfg: RedecodeConfig, files: list[str], model: dict[str, Any], level: int | None, done: frozenset):
    """archived bitstreams -> one-step decode (-> PNG) (-> re-encode at new rates + metrics) -> write."""
    import ray

    # Not ray.data.read_parquet: its file-listing task asks for a whole CPU, which never gets
    # scheduled once actor pools hold the rest of a small machine (a deadlock seen on 2 CPUs).
    # The commit markers already name every part, so each part is one light read task.
    ds = ray.data.from_items([{"part": f} for f in files], override_num_blocks=max(1, min(len(files), 1000)))
    ds = ds.map_batches(read_parts, fn_kwargs={"output_uri": cfg.archive, "table": "bitstreams", "storage": cfg.storage},
                        batch_size=1, num_cpus=0.1)
    if level is not None:
        ds = ds.filter(lambda r: int(r["rate_level"]) == level)
    ds = ds.map_batches(_skip_done, fn_kwargs={"done": done}, batch_size=64, num_cpus=0.1)
    images_uri = f"{cfg.output.rstrip('/')}/images" if cfg.images else None
    ds = _actor_map(ds, ArchiveDecodeStage, cfg.decode, model=model["path"], device=cfg.device, images_uri=images_uri, storage=cfg.storage)
    ds = ds.map_batches(_add_job_key, batch_size=64, num_cpus=0.1)
    if cfg.rates:
        ds = encode_and_verify(ds, cfg, model, cfg.rates, verify=True, images_uri=None)
    return write_results(ds, cfg, model, reference="archive level {from_level}")


def run_redecode(cfg: RedecodeConfig, progress: bool = True) -> dict[str, Any]:
    import pyarrow.parquet as pq

    t0 = time.time()
    model = _model_info(cfg.model)
    files = committed_files(cfg.archive, "bitstreams", cfg.storage)
    if not files:
        raise FileNotFoundError(f"no committed bitstreams under {cfg.archive}/bitstreams: is it an archive job's output?")
    filesystem, _ = resolve(cfg.archive, cfg.storage)
    index = pq.ParquetDataset(files, filesystem=filesystem).read(columns=["source_uri", "rate_level", "model_id"])
    ids = set(index.column("model_id").to_pylist())
    if ids - {model["model_id"]}:
        raise ValueError(f"archive was written by model id(s) {sorted(ids)}; --model {cfg.model} is {model['model_id']}")
    level = cfg.from_level
    if level is None and cfg.rates:
        level = max(index.column("rate_level").to_pylist())
    keys = [f"{u}#L{int(lvl)}" for u, lvl in zip(index.column("source_uri").to_pylist(), index.column("rate_level").to_pylist())
            if level is None or int(lvl) == level]
    refuse_other_model(cfg.output, model, cfg.storage)
    removed = clean_uncommitted(cfg.output, cfg.storage)
    done = frozenset(committed_uris(cfg.output, cfg.storage))
    todo = [k for k in keys if k not in done]
    rows: list[dict[str, Any]] = []
    if todo:
        init_ray()
        check_actor_budget([cfg.decode, *(_pools(cfg, True) if cfg.rates else [])])
        rows, _ = _execute(build_redecode(cfg, files, model, level, done), todo, "redecode", progress)
    return _finish("redecode", cfg, model, rows, len(keys), len(todo), removed, t0)


# ---------------------------------------------------------------------------- audit
@dataclass(frozen=True)
class AuditConfig:
    """Everything ``audit`` needs.

    Attributes:
        input: URI prefix or manifest of images.
        output: where metrics, the summary, RD plots and report.html go.
        codecs: "oscar-tiny" (the --model) and any of "jpeg", "webp", "avif"; the classical
            codecs are matched per image to the bpp OSCAR reached at each level.
        rates: OSCAR levels as bpp or L<i>; None = the whole ladder.
        fused: encode and verify in one actor pool (see ArchiveConfig).
    """

    input: str
    output: str
    codecs: tuple[str, ...] = ("oscar-tiny", "jpeg", "webp", "avif")
    rates: tuple[float | int, ...] | None = None
    model: str = "oscar-tiny"
    device: str | None = None
    fused: bool = True
    refine_steps: int = 0
    encode: ActorConfig = field(default_factory=ActorConfig)
    decode: ActorConfig = field(default_factory=ActorConfig)
    baseline_cpus: float = 0.5
    read_batch_size: int = 2
    storage: StorageOptions = field(default_factory=StorageOptions)


def build_audit(cfg: AuditConfig, uris: list[str], model: dict[str, Any]):
    """read -> decode -> OSCAR encode + one-step decode -> classical codecs at OSCAR's bpp -> write."""
    from .baselines import CLASSIC_CODECS

    classic = tuple(c for c in cfg.codecs if c in CLASSIC_CODECS)
    ds = read_images(uris, cfg.storage, cfg.read_batch_size)
    ds = encode_and_verify(ds, cfg, model, cfg.rates, verify=True, images_uri=None, keep_pixels=True)
    ds = _actor_map(ds, BaselineStage, _baseline_pool(cfg), codecs=classic)
    return write_results(ds, cfg, model)


def _baseline_pool(cfg: AuditConfig) -> ActorConfig:
    """One CPU actor for the classical codecs (they are fast; Pillow holds no model)."""
    return ActorConfig(num_cpus=cfg.baseline_cpus, batch_size=cfg.encode.batch_size)


def run_audit(cfg: AuditConfig, progress: bool = True) -> dict[str, Any]:
    from .baselines import CLASSIC_CODECS, available_codecs
    from .report import write_report

    unknown = [c for c in cfg.codecs if c not in CLASSIC_CODECS and c != cfg.model and not c.startswith("oscar")]
    if unknown:
        raise ValueError(f"unknown codecs {unknown}; choose from {[cfg.model, *CLASSIC_CODECS]}")
    missing = [c for c in cfg.codecs if c in CLASSIC_CODECS and c not in available_codecs()]
    if missing:
        raise ValueError(f"this Pillow build cannot encode {missing}")
    model = _model_info(cfg.model)
    summary = _images_job("audit", cfg, build_audit, [*_pools(cfg, True), _baseline_pool(cfg)], progress, model)
    summary["report"] = write_report(cfg.output, cfg.storage, codecs=cfg.codecs, model_name=model["name"])
    return summary
