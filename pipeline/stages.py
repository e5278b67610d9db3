"""The Ray Data stages: pure per-batch functions and actor classes.

Each takes and returns a batch ``dict[str, np.ndarray]`` of :class:`~pipeline.rows.ImageRow`
rows. A row that fails a stage is not dropped and does not fail the batch: it is marked
(:func:`~pipeline.rows.failed`) and travels on to the errors table. Image pixels travel as raw
RGB bytes plus height and width. The codec is reached only through its public API.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from typing import Any

import numpy as np

from oscar_model.images import DEFAULT_MAX_PIXELS, open_image, to_rgb_array
from oscar_model.options import CodecOptions

from .faults import inject_fault
from .metrics import QUALITY_METRICS
from .models import is_remote, local_model_folder
from .rows import Batch, batch_of, failed, rows_of
from .storage import StorageOptions, write_png

__all__ = [
    "decode_images", "load_codec", "EncodeStage", "VerifyStage", "EncodeVerifyStage", "ArchiveDecodeStage",
    "ClassicCodecStage",
]

DECODED_COLUMNS = ["image_id", "source_uri", "unit_id", "unit_size", "width", "height", "pixels", "status", "reference",
                   "error_stage", "error_type", "error_message"]


def decode_images(batch: Batch, max_pixels: int = DEFAULT_MAX_PIXELS) -> Batch:
    """Raw rows of a reader (:mod:`pipeline.shards`) -> RGB pixels, with EXIF orientation applied.

    image_id is the SHA-256 of the file's bytes (first 32 hex digits). Empty, truncated,
    non-image and over-sized (decompression bomb) files become error rows; rows the reader
    already marked as errors pass through.
    """
    out = []
    for i, raw in enumerate(batch["bytes"]):
        raw = bytes(raw)
        row: dict[str, Any] = {
            "image_id": hashlib.sha256(raw).hexdigest()[:32] if raw else None, "source_uri": str(batch["source_uri"][i]),
            "unit_id": str(batch["unit_id"][i]), "unit_size": int(batch["unit_size"][i]),
            "width": 0, "height": 0, "pixels": b"", "status": "ok", "reference": "source",
            "error_stage": None, "error_type": None, "error_message": None,
        }
        if batch["error_type"][i]:
            row.update(status="error", error_stage=str(batch["error_stage"][i]), error_type=str(batch["error_type"][i]),
                       error_message=str(batch["error_message"][i]))
            out.append(row)
            continue
        try:
            if not raw:
                raise ValueError("empty file (0 bytes)")
            pixels = to_rgb_array(open_image(raw, max_pixels=max_pixels))
            row.update(height=pixels.shape[0], width=pixels.shape[1], pixels=pixels.tobytes())
        except Exception as e:  # any decoder failure is this row's error, not the job's
            row = failed(row, "read", e)
        out.append(row)
    return batch_of(out, DECODED_COLUMNS)


def pixels_of(row: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(int(row["height"]), int(row["width"]), 3)


def load_codec(model: Any, device: str | None, options: CodecOptions | None = None):
    """One model per actor, single-threaded torch: Ray gives each actor its share of the cores.

    ``model``: a :class:`~oscar_model.ModelInfo` (the weights loaded must hash to its id), a
    registered name or folder, or an already loaded codec (shared by stages fused into one actor).
    ``options``: how it runs (limits, tiles, precision), the job's :meth:`JobConfig.codec_options`.
    """
    import torch

    from oscar_model import ModelInfo, OscarCodec

    torch.set_num_threads(1)
    if isinstance(model, OscarCodec):
        return model
    path = model.path if isinstance(model, ModelInfo) else model
    if isinstance(model, ModelInfo) and is_remote(path):  # s3://...: fetched once per node, checked below
        path = local_model_folder(model)
    codec = OscarCodec.from_pretrained(path, device=device, options=options)
    if isinstance(model, ModelInfo):
        model.check(codec.model_hash)
    return codec


class EncodeStage:
    """Actor: loads the codec once, encodes every ok row at every requested rate.

    Adds ``rate_levels``, ``bitstreams`` and ``encode_ms`` (autoencoder time + that rate's own
    time: the cost of encoding at that rate alone) and ``refine_steps``: > 0 searches the
    indices through the decoder (slower encode, better images, same format). Drops the pixels
    unless ``keep_pixels`` (a later stage measures against them).
    """

    def __init__(
        self, model: Any, rates: tuple[float | int, ...] | None = None, device: str | None = None, batch_size: int = 8,
        refine_steps: int = 0, keep_pixels: bool = True, options: CodecOptions | None = None,
    ) -> None:
        self.codec = load_codec(model, device, options)
        self.points = self.codec.ladder.resolve_many(rates)
        self.batch_size = batch_size
        self.refine_steps = refine_steps
        self.keep_pixels = keep_pixels

    def __call__(self, batch: Batch) -> Batch:
        rows = rows_of(batch)
        inject_fault("encode", len(rows))
        ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
        for r in rows:
            r.update(rate_levels=[], bitstreams=[], encode_ms=[], refine_steps=self.refine_steps)
        try:
            self._encode(rows, ok)
        except Exception:
            for i in ok:  # isolate the failing image(s): one at a time
                try:
                    self._encode(rows, [i])
                except Exception as e:
                    rows[i] = failed(rows[i], "encode", e)
        if not self.keep_pixels:  # nothing downstream needs them: do not carry them to the writer
            for r in rows:
                r.pop("pixels", None)
        return batch_of(rows)

    def _encode(self, rows: list[dict[str, Any]], which: list[int]) -> None:
        if not which:
            return
        streams, ae_ms, rate_ms = self.codec.encode_arrays_timed(
            [pixels_of(rows[i]) for i in which], self.points, self.batch_size, self.refine_steps
        )
        for k, i in enumerate(which):
            rows[i].update(
                rate_levels=[p.index for p in self.points], bitstreams=streams[k],
                encode_ms=[ae_ms[k] + t for t in rate_ms[k]],
            )


class VerifyStage:
    """Actor: decodes each stream of a row in one step and measures it against the row's own pixels.

    Adds ``psnr``, ``ms_ssim``, ``lpips``, ``dists`` and ``decode_ms`` (one per stream);
    writes the reconstructions as PNG under ``images_uri`` when set. Drops the pixels
    afterwards unless ``keep_pixels`` (a later stage needs them).
    """

    def __init__(
        self, model: Any, device: str | None = None, images_uri: str | None = None,
        storage: StorageOptions | None = None, batch_size: int = 8, keep_pixels: bool = False,
        options: CodecOptions | None = None,
    ) -> None:
        self.codec = load_codec(model, device, options)
        self.images_uri = images_uri
        self.storage = storage
        self.batch_size = batch_size
        self.keep_pixels = keep_pixels

    def __call__(self, batch: Batch) -> Batch:
        rows = rows_of(batch)
        inject_fault("verify", len(rows))
        groups: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
        for i, r in enumerate(rows):
            n = len(r["rate_levels"]) if r["status"] == "ok" else 0
            r.update({name: [None] * n for name in (*QUALITY_METRICS, "decode_ms")})
            for j, level in enumerate(r["rate_levels"][:n]):
                groups[(int(r["height"]), int(r["width"]), int(level))].append((i, j))
        for members in groups.values():
            self._decode_group(rows, members)
        if not self.keep_pixels:
            for r in rows:
                r.pop("pixels", None)
        return batch_of(rows)

    def _decode_group(self, rows: list[dict[str, Any]], members: list[tuple[int, int]]) -> None:
        from .metrics import quality_of

        for start in range(0, len(members), self.batch_size):
            chunk = members[start : start + self.batch_size]
            t0 = time.perf_counter()
            try:
                images = self.codec.decode([bytes(rows[i]["bitstreams"][j]) for i, j in chunk])
            except Exception as e:
                for i, _ in chunk:
                    rows[i] = failed(rows[i], "decode", e)
                continue
            ms = (time.perf_counter() - t0) * 1000 / len(chunk)
            for (i, j), image in zip(chunk, images):
                r = rows[i]
                original = pixels_of(r)
                for name, value in quality_of(original, image).items():
                    r[name][j] = value
                r["decode_ms"][j] = ms
                if self.images_uri:
                    write_png(self.images_uri, f"{r['image_id']}_level{r['rate_levels'][j]}.png", image, self.storage)


class EncodeVerifyStage:
    """Actor: :class:`EncodeStage` then :class:`VerifyStage` in one process, sharing one model.

    Why fused: on a CPU box a pool of identical actors keeps every core busy on whole images,
    with no hand-off of pixels between pools and no pool left idle while the other is the
    bottleneck (decode + metrics cost about 3x encode). Separate pools remain the choice when
    encode and decode want different hardware.
    """

    def __init__(
        self, model: Any, rates: tuple[float | int, ...] | None = None, device: str | None = None,
        images_uri: str | None = None, storage: StorageOptions | None = None, batch_size: int = 8,
        keep_pixels: bool = False, refine_steps: int = 0, options: CodecOptions | None = None,
    ) -> None:
        self.encode = EncodeStage(model, rates, device, batch_size, refine_steps, options=options)
        self.verify = VerifyStage(self.encode.codec, device, images_uri, storage, batch_size, keep_pixels)

    def __call__(self, batch: Batch) -> Batch:
        return self.verify(self.encode(batch))


class ArchiveDecodeStage:
    """Actor: decodes archived bitstream rows (one per image and level) back to pixels.

    Output rows look like ``decode_images``'s (pixels = the decoded image, reference = the
    archived level), so they can be re-encoded (transcoding) by :class:`EncodeStage`; PNGs
    are written when ``images_uri`` is set. Adds ``from_level`` and ``archive_decode_ms``; keeps
    the unit columns.
    """

    def __init__(
        self, model: Any, device: str | None = None, images_uri: str | None = None,
        storage: StorageOptions | None = None, options: CodecOptions | None = None,
    ) -> None:
        self.codec = load_codec(model, device, options)
        self.images_uri = images_uri
        self.storage = storage

    def __call__(self, batch: Batch) -> Batch:
        out = []
        for r in rows_of(batch):
            if r.get("status") == "error":  # the archive file could not be read: its error row goes on
                out.append({**r, "width": 0, "height": 0, "pixels": b"", "from_level": -1, "archive_decode_ms": None})
                continue
            level = int(r["rate_level"])
            row = {
                "image_id": r["image_id"], "source_uri": r["source_uri"], "unit_id": r["unit_id"],
                "unit_size": int(r["unit_size"]),
                "width": int(r["width"]), "height": int(r["height"]), "from_level": level, "pixels": b"",
                "status": "ok", "reference": f"archive level {level}", "archive_decode_ms": None,
                "error_stage": None, "error_type": None, "error_message": None,
            }
            try:
                t0 = time.perf_counter()
                (image,) = self.codec.decode([bytes(r["bitstream"])])
                row["archive_decode_ms"] = (time.perf_counter() - t0) * 1000
                row["pixels"] = image.tobytes()
                if self.images_uri:
                    write_png(self.images_uri, f"{r['image_id']}_level{level}.png", image, self.storage)
            except Exception as e:
                row = failed(row, "archive-decode", e)
            out.append(row)
        return batch_of(out)


class ClassicCodecStage:
    """Actor: each classical codec on each image, two ways: over its quality sweep (its own RD
    curve, the BD-rates' input) and matched to the bpp OSCAR reached at each level.

    Adds ``classic_results``: one JSON object per (codec, mode, setting). A matched codec that
    cannot go as low as OSCAR's bpp is marked unreached and carries no metrics. Drops pixels.
    """

    def __init__(self, codecs: tuple[str, ...]) -> None:
        self.codecs = codecs

    def __call__(self, batch: Batch) -> Batch:
        from .classic_codecs import match_bpp, sweep

        rows = rows_of(batch)
        for r in rows:
            found = []
            if r["status"] == "ok":
                original = pixels_of(r)
                pixels = original.shape[0] * original.shape[1]
                for codec in self.codecs:
                    files: dict[int, bytes] = {}
                    measured: dict[int, dict[str, Any]] = {}  # quality -> metrics, shared by both modes
                    for res in sweep(original, codec):
                        files[res.quality] = res.data
                        found.append(json.dumps(_classic_result(original, res, "sweep", None, None, measured)))
                    for j, level in enumerate(r["rate_levels"]):
                        target = 8 * len(bytes(r["bitstreams"][j])) / pixels
                        res = match_bpp(original, codec, target, files)
                        found.append(json.dumps(_classic_result(original, res, "matched", int(level), target, measured)))
            r["classic_results"] = found
            r.pop("pixels", None)
        return batch_of(rows)


def _classic_result(original: np.ndarray, res, mode: str, level: int | None, target: float | None,
                    measured: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One classical result as the rows builder reads it; metrics only where the target was reached."""
    from .classic_codecs import decode_classic
    from .metrics import quality_of

    out = {"codec": res.codec, "rate_level": level, "setting": f"quality {res.quality}", "mode": mode,
           "reached": res.reached, "target_bpp": target}
    if not res.reached:
        return out
    if res.quality not in measured:
        t0 = time.perf_counter()
        decoded = decode_classic(res.data)
        decode_ms = (time.perf_counter() - t0) * 1000
        measured[res.quality] = {"n_bytes": len(res.data), "bpp": res.bpp, **quality_of(original, decoded),
                                 "encode_ms": res.encode_ms, "decode_ms": decode_ms}
    return {**out, **measured[res.quality]}
