"""The typed configuration every job shares: its output, model, device, storage and actor pools.

Resource sizes (actors, CPUs, GPUs per actor) come from here, never from code. Each job's own
config (``ArchiveConfig``, ``RedecodeConfig``, ``AuditConfig``) extends :class:`JobConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oscar_model.options import CodecOptions

from .storage import StorageOptions

__all__ = ["ActorConfig", "JobConfig", "ImagesConfig"]


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


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """What every job needs.

    Attributes:
        output: URI under which tables, images and the run manifest are written.
        model: registered model name or model folder.
        device: "cpu", "cuda" or None (CUDA when the actor has one).
        fused: encode and verify in one actor pool (sized by ``encode``); False gives separate
            encode and decode pools, for when they want different hardware.
        refine_steps: encoder effort: Adam steps of index search through the decoder per
            image and level (:mod:`oscar_model.refine`); 0 = greedy. Same decoder, same format.
        encode, decode: the actor pools.
        storage: object-store settings (default: the AWS_* environment variables).
        commit_units, commit_minutes: a commit window closes after this many complete work units
            or this long, whichever comes first; a killed driver loses at most the open window.
        rows_per_file: table rows (streams, metrics rows, error rows) per write task; each task
            writes one data file per table, so this sizes the files (thousands of rows).
        ray_address: the cluster ("host:port", "ray://..."), "local" for a fresh local Ray; None:
            $RAY_ADDRESS, else local.
        verbose: Ray Data's own progress bars and logs too.
        slice_images: the plan runs as a sequence of Ray datasets of about this many images each
            (whole units; a shard counts as 1,024): Ray Data keeps per-block statistics on the driver
            until a dataset ends, so this bounds what they cost. Each slice starts its actor
            pools anew (a model load per actor), so keep it large.
        metrics: the quality metrics measured on every decode (``psnr``, ``ms_ssim``, ``ssimulacra2``,
            ``flip``, ``butteraugli``, ``lpips``, ``dists``); None: every one that runs here (the
            audit's default). The perceptual ones cost about a second per megapixel each on one core,
            so the archive and redecode jobs measure PSNR and MS-SSIM unless told otherwise.
        codec: how every actor runs the codec (:class:`~oscar_model.options.CodecOptions`): the
            largest image an input or a stream may claim (``--max-pixels``, also applied when
            input images are read), ``--tile`` and ``--precision``.
    """

    output: str
    model: str = "oscar-tiny"
    device: str | None = None
    fused: bool = True
    refine_steps: int = 0
    encode: ActorConfig = field(default_factory=ActorConfig)
    decode: ActorConfig = field(default_factory=ActorConfig)
    storage: StorageOptions = field(default_factory=StorageOptions)
    commit_units: int = 64
    commit_minutes: float = 10.0
    rows_per_file: int = 16384
    slice_images: int = 16384
    ray_address: str | None = None
    verbose: bool = False
    metrics: tuple[str, ...] | None = None
    codec: CodecOptions = field(default_factory=CodecOptions)

    def images_uri(self, wanted: bool) -> str | None:
        """Where reconstructions go as PNG, when ``wanted``."""
        return f"{self.output.rstrip('/')}/images" if wanted else None


@dataclass(frozen=True, kw_only=True)
class ImagesConfig(JobConfig):
    """A job over source images (archive, audit). Attributes besides :class:`JobConfig`'s:
        input: a prefix (loose files, WebDataset .tar shards, Parquet with image bytes), a .tar
            list or ``{000..007}`` range, or a .parquet/.csv manifest with a ``uri`` column.
        image_column, key_column: Parquet inputs' image and key columns (None: detect).
        group_size: loose files (or manifest entries) per work unit, on average.
        read_batch_size: images per decode task.
        allow_empty: succeed on an input that holds no file (else a one-line error).
    """

    input: str
    image_column: str | None = None
    key_column: str | None = None
    group_size: int = 64
    read_batch_size: int = 2
    allow_empty: bool = False
