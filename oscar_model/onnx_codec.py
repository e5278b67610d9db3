"""OnnxCodec: the codec with its networks run by ONNX Runtime; no torch in the process.

Why: on a CPU, most of the time of one ``oscar decode`` was starting up: importing torch and
diffusers and loading the model took several times the decode itself. ONNX Runtime imports
in a fraction of a second and runs these convolutional networks as fast as torch does
(``benchmarks/cpu_runtime.py``). The graphs (:mod:`oscar_model.onnx_export`) come from the same
weights; everything around them (batches, tiles, folds, streams) is :class:`StreamCodec`'s, the
torch codec's own code, so a stream written by one runtime decodes with the other.

Where the graphs come from, first found wins:

1. ``<model folder>/onnx/``: shipped with the model (``oscar export-onnx --into-model``); a
   cluster's nodes then fetch them with the folder, as they fetch the weights.
2. ``$OSCAR_ONNX_CACHE/<hash>/`` (default ``~/.cache/oscar/onnx``): built once from the weights
   on first use (a few seconds, and the one time torch is imported), under a file lock so that
   the actors of one node build it once.

Either is used only when its ``runtime.json`` names the model hash of the folder's
``oscar.json``: graphs of other weights are never run under this model's id.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import CodecConfig, read_model_config
from .entropy import ENTROPY_TABLES_NAME, load_entropy_tables
from .options import ENCODE_THREADS, CodecOptions, free_cores
from .rates import RateLadder, RatePoint
from .streams import StreamCodec
from .tiling import assemble_cores, blend_tiles, pad_array_to_stride

__all__ = ["OnnxCodec", "onnx_graphs", "build_onnx_graphs", "export_key", "exportable", "ONNX_CACHE_ENV", "RUNTIME_MANIFEST", "EXPORT_FORMAT"]

ONNX_CACHE_ENV = "OSCAR_ONNX_CACHE"
"""Where graphs built on first use go (default ``~/.cache/oscar/onnx``)."""
RUNTIME_MANIFEST = "runtime.json"
EXPORT_FORMAT = 1
"""Bumped when the set of graphs or their inputs change: an export of another format is rebuilt."""

log = logging.getLogger(__name__)


def exportable(config: CodecConfig) -> bool:
    """Whether a model's networks are the compact ones the exporter knows (oscar-tiny's design)."""
    return (config.autoencoder_type, config.denoiser_type, config.hyper_encoder_type) == ("compact", "unet2d", "compact")


def _export_of(folder: Path, model_hash: str) -> dict[str, Any] | None:
    """``folder``'s manifest when it holds a complete export of this format for ``model_hash``."""
    try:
        manifest = json.loads((folder / RUNTIME_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = manifest.get("format") == EXPORT_FORMAT and manifest.get("model_hash") == model_hash
    return manifest if ok else None


def export_key(path: Path, config: CodecConfig) -> str:
    """The model hash a folder's graphs are found and checked by; a one-line ValueError for a model
    whose networks do not export, or whose ``oscar.json`` records no hash."""
    if not exportable(config):
        raise ValueError(f"{config.name}: only oscar-tiny's compact networks run in ONNX Runtime; use --runtime torch")
    if not config.model_hash:
        raise ValueError(f"{path}: oscar.json records no model_hash, so its ONNX graphs cannot be matched to "
                         "its weights; save the folder again with save_pretrained, or use --runtime torch")
    return config.model_hash


def onnx_graphs(path: Path, config: CodecConfig) -> tuple[Path, dict[str, Any]]:
    """The model folder ``path``'s graphs and manifest: shipped, cached, or built now (see above)."""
    model_hash = export_key(path, config)
    for folder in (path / "onnx", _cache_root() / model_hash[:32]):
        if (manifest := _export_of(folder, model_hash)) is not None:
            return folder, manifest
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / model_hash[:32]
    with open(root / f"{model_hash[:32]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other actors wait, then find it built
        if _export_of(target, model_hash) is None:
            build_onnx_graphs(path, model_hash, target)
    manifest = _export_of(target, model_hash)
    assert manifest is not None
    return target, manifest


def _cache_root() -> Path:
    return Path(os.environ.get(ONNX_CACHE_ENV) or Path.home() / ".cache" / "oscar" / "onnx")


def build_onnx_graphs(path: Path, model_hash: str, target: Path) -> None:
    """Exports the model folder ``path`` (whose weights must hash to ``model_hash``) into ``target``,
    replaced whole and atomically: a reader sees the old export or the new one, never half of one."""
    log.warning("oscar: exporting %s to ONNX Runtime graphs once, into %s (a few seconds; later runs reuse them)",
                path.name, target)
    from .model import OscarModel  # torch: only here, once per model and machine
    from .onnx_export import export_onnx

    model = OscarModel.from_pretrained(path, device="cpu")
    if model.model_hash != model_hash:
        raise ValueError(f"{path}: oscar.json records model hash {model_hash[:16]}..., the weights there hash to "
                         f"{model.model_hash[:16]}...: the folder was changed after it was saved; save it again")
    partial, old = (target.with_name(f"{target.name}.{kind}-{os.getpid()}") for kind in ("partial", "old"))
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    manifest = {"format": EXPORT_FORMAT, **export_onnx(model, partial)}
    (partial / RUNTIME_MANIFEST).write_text(json.dumps(manifest, indent=1))
    if target.exists():
        target.rename(old)
    partial.rename(target)
    shutil.rmtree(old, ignore_errors=True)


class OnnxCodec(StreamCodec):
    """The codec of a model folder, its networks run by ONNX Runtime on the CPU. Build it with
    :meth:`from_pretrained`; it encodes and decodes exactly as :class:`~oscar_model.codec.OscarCodec`
    does (the same :class:`StreamCodec`), and its streams are that codec's format."""

    runtime = "onnxruntime"
    device = "cpu"

    def __init__(self, config: CodecConfig, graphs: Path, manifest: dict[str, Any],
                 entropy_tables: dict[int, np.ndarray], context_models: dict, options: CodecOptions | None = None) -> None:
        factor = int(manifest["latent_factor"])
        if any(p.latent_factor != factor for p in config.ladder):  # as OscarModel: the bpp follow the autoencoder
            config = dataclasses.replace(config, ladder=RateLadder(tuple(dataclasses.replace(p, latent_factor=factor)
                                                                         for p in config.ladder)))
        self.config = config
        self.graphs = graphs
        self.manifest = manifest
        self.model_hash = str(manifest["model_hash"])
        self.stride = int(manifest["stride"])
        self.latent_factor = factor
        self.latent_channels = int(manifest["latent_channels"])
        self.entropy_tables = entropy_tables
        self.context_models = context_models
        self.options = options or CodecOptions()
        self._sessions: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, options: CodecOptions | None = None) -> OnnxCodec:
        """A registered name or a model folder; its graphs are found or built (see the module)."""
        path, config = read_model_config(name_or_path)
        graphs, manifest = onnx_graphs(path, config)
        tables, contexts = load_entropy_tables(path / ENTROPY_TABLES_NAME, config.ladder)
        return cls(config, graphs, manifest, tables, contexts, options)

    def with_options(self, **changes) -> OnnxCodec:
        """The same graphs and tables run with some options changed (sessions are made anew)."""
        return OnnxCodec(self.config, self.graphs, self.manifest, self.entropy_tables, self.context_models,
                         dataclasses.replace(self.options, **changes))

    # ------------------------------------------------------------------ the graphs
    def _run(self, graph: str, encoding: bool, **inputs: np.ndarray) -> np.ndarray:
        """Runs one graph. Its session is made on first use: a decode of one level loads only the
        graphs it needs. Encoding graphs run :data:`ENCODE_THREADS` threads, as torch does.

        Decoding graphs run without ONNX Runtime's memory arena, which keeps the largest
        activations of any call for the session's life (a Ray actor lives long and shares its
        node): a 6 Mpx photo's decode peaked at 395 MB instead of 945 MB, for 6-9% more time.
        Encoding graphs keep it: the hyper-encoders' attention allocates a matrix of the latent's
        size squared per call, and without the arena the level-3 encoder of a 768x512 photo took
        0.49 s instead of 0.28 s (torch: 0.56 s, each on one thread)."""
        session = self._sessions.get(graph)
        if session is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = ENCODE_THREADS if encoding else (self.options.threads or free_cores())
            so.inter_op_num_threads = 1
            so.enable_cpu_mem_arena = encoding
            so.log_severity_level = 3  # errors only: its notes on unused initialisers are not the user's concern
            session = ort.InferenceSession(str(self.graphs / f"{graph}.onnx"), so, providers=["CPUExecutionProvider"])
            self._sessions[graph] = session
        return session.run(None, inputs)[0]

    def _encode_latents(self, batch: np.ndarray) -> np.ndarray:
        return self._run("autoencoder_encoder", True, images=_model_range(batch))

    def _level_encode(self, latents: np.ndarray, point: RatePoint) -> np.ndarray:
        return self._run(f"level_{point.index}_encoder", True, latents=np.ascontiguousarray(latents))

    def _level_decode(self, indices: np.ndarray, point: RatePoint) -> np.ndarray:
        return self._run(f"level_{point.index}_decoder", False, indices=np.ascontiguousarray(indices, dtype=np.int64))

    def _denoise(self, z_t: np.ndarray, point: RatePoint, timestep: int | None) -> np.ndarray:
        t = point.timestep if timestep is None else int(timestep)
        self.config.schedule._check(t)
        steps = np.full((z_t.shape[0],), t, dtype=np.int64)
        return self._run("denoiser", False, z_t=np.ascontiguousarray(z_t), timesteps=steps)

    def _decode_latents(self, latents: np.ndarray) -> np.ndarray:
        return self._run("autoencoder_decoder", False, latents=np.ascontiguousarray(latents))

    # ------------------------------------------------------------------ StreamCodec's steps
    def _latents(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        z = self._encode_latents(pad_array_to_stride(np.stack(arrays), self.stride))
        return z, _channel_rms(z)

    def _level_indices(self, latents: np.ndarray, point: RatePoint, rms: np.ndarray, refine_steps: int,
                       size: tuple[int, int]) -> np.ndarray:
        if refine_steps > 0:
            raise ValueError("--refine searches the indices through the decoder's gradients: run it with --runtime torch")
        return self._level_encode(latents, point)

    def _encode_tiled(self, array: np.ndarray, points: Sequence[RatePoint]) -> tuple[list[np.ndarray], np.ndarray]:
        f, tiling = self.latent_factor, self.tiling
        padded = pad_array_to_stride(array, self.stride)
        lh, lw = padded.shape[0] // f, padded.shape[1] // f
        z = blend_tiles(lambda y0, y1, x0, x1: self._encode_latents(padded[None, y0 * f : y1 * f, x0 * f : x1 * f]),
                        lh, lw, tiling.for_autoencoder().aligned(self.stride // f))
        codes = [assemble_cores(lambda y0, y1, x0, x1, p=p: self._level_encode(z[:, :, y0:y1, x0:x1], p),
                                lh, lw, tiling, p.downsample)[0] for p in points]
        return codes, _channel_rms(z)[0]

    def _decode_whole(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        z_t = _rescale(self._level_decode(indices, point), rms)
        if denoise:
            z_t = self._denoise(z_t, point, timestep)
        return _to_uint8(self._decode_latents(z_t)[:, :, : size[0], : size[1]])

    def _decode_tiled(self, indices: np.ndarray, point: RatePoint, rms: np.ndarray, size: tuple[int, int],
                      timestep: int | None, denoise: bool) -> np.ndarray:
        f, s, tiling = self.latent_factor, point.downsample, self.tiling
        lh, lw = indices.shape[1] * s, indices.shape[2] * s
        idx = indices[None]
        z_tilde = blend_tiles(lambda y0, y1, x0, x1: self._level_decode(idx[:, :, y0 // s : y1 // s, x0 // s : x1 // s], point),
                              lh, lw, tiling)
        z_t = _rescale(z_tilde, rms[None])
        del z_tilde
        if denoise:
            z_t = blend_tiles(lambda y0, y1, x0, x1: self._denoise(z_t[:, :, y0:y1, x0:x1], point, timestep), lh, lw, tiling)
        pixels = blend_tiles(lambda y0, y1, x0, x1: self._decode_latents(z_t[:, :, y0:y1, x0:x1]),
                             lh, lw, tiling.for_autoencoder().aligned(self.stride // f), scale=f)
        return np.ascontiguousarray(_to_uint8(pixels)[0, : size[0], : size[1]])


# The arithmetic of oscar_model.pixels and OscarModel (to_model_range, channel_rms, rescale,
# to_uint8), in numpy: the same float32 operations in the same order.
def _model_range(batch: np.ndarray) -> np.ndarray:
    """RGB uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    x = batch.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _channel_rms(latents: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(latents, dtype=np.float32), axis=(2, 3), dtype=np.float32))


def _rescale(z_tilde: np.ndarray, target_rms: np.ndarray) -> np.ndarray:
    scale = target_rms.astype(np.float32) / np.maximum(_channel_rms(z_tilde), np.float32(1e-6))
    return z_tilde * scale[:, :, None, None]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) float in about [-1, 1] -> RGB uint8 (B, H, W, 3), in place."""
    np.clip(images, -1, 1, out=images)
    images += 1
    images *= np.float32(127.5)
    np.round(images, out=images)
    return images.astype(np.uint8).transpose(0, 2, 3, 1)
