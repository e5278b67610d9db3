"""The Ray Data stages. Each takes and returns a batch ``dict[str, np.ndarray]``.

A row that fails a stage is not dropped and does not fail the batch: it gets
``status = "error"`` and the stage, exception type and message, travels on untouched and
lands in the errors table. Image pixels travel as raw RGB bytes plus height and width.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from typing import Any

import numpy as np

from oscar_model.images import DEFAULT_MAX_PIXELS, open_image, to_rgb_array

__all__ = [
    "decode_images", "EncodeStage", "ReconstructStage", "EncodeVerifyStage", "ArchiveDecodeStage", "BaselineStage",
    "Batch", "rows_of", "batch_of",
]

Batch = dict[str, np.ndarray]
ERROR_FIELDS = ("error_stage", "error_type", "error_message")


def rows_of(batch: Batch) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def batch_of(rows: list[dict[str, Any]], columns: list[str]) -> Batch:
    """Rows -> a numpy batch. Error columns hold "" (never None) on ok rows.

    Why: Ray types an all-None column of one block as null or float, and then cannot
    concatenate it with another block whose same column holds strings (an actor's bundle of
    an all-ok block and a block with an error row failed with "string vs float").
    """
    out: Batch = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        if c in ERROR_FIELDS:
            values = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        out[c] = arr
    return out


def _fail(row: dict[str, Any], stage: str, exc: BaseException) -> dict[str, Any]:
    return {**row, "status": "error", "error_stage": stage, "error_type": type(exc).__name__, "error_message": str(exc)[:2000]}


def to_uri(path: str, scheme: str | None) -> str:
    return f"{scheme}://{path}" if scheme else path


DECODED_COLUMNS = ["image_id", "source_uri", "width", "height", "pixels", "status", *ERROR_FIELDS]


def decode_images(batch: Batch, scheme: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Batch:
    """Raw file bytes -> RGB pixels, with EXIF orientation applied.

    image_id is the SHA-256 of the file's bytes (first 32 hex digits). Empty, truncated,
    non-image and over-sized (decompression bomb) files become error rows.
    """
    out = []
    for raw, path in zip(batch["bytes"], batch["path"]):
        raw = bytes(raw)
        row: dict[str, Any] = {
            "image_id": hashlib.sha256(raw).hexdigest()[:32],
            "source_uri": to_uri(str(path), scheme),
            "width": 0, "height": 0, "pixels": b"", "status": "ok",
            "error_stage": None, "error_type": None, "error_message": None,
        }
        try:
            if not raw:
                raise ValueError("empty file (0 bytes)")
            pixels = to_rgb_array(open_image(raw, max_pixels=max_pixels))
            row.update(height=pixels.shape[0], width=pixels.shape[1], pixels=pixels.tobytes())
        except Exception as e:  # any decoder failure is this row's error, not the job's
            row = _fail(row, "read", e)
        out.append(row)
    return batch_of(out, DECODED_COLUMNS)


def pixels_of(row: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(int(row["height"]), int(row["width"]), 3)


def load_codec(model: Any, device: str | None):
    """One model per actor, single-threaded torch: Ray gives each actor its share of the cores.

    ``model`` is a registered name or folder, or an already loaded codec (shared by stages
    fused into one actor).
    """
    import torch

    from oscar_model.codec import OscarCodec

    torch.set_num_threads(1)
    return model if isinstance(model, OscarCodec) else OscarCodec.from_pretrained(model, device=device)


class EncodeStage:
    """Actor: loads the codec once, encodes every ok row at every requested rate.

    Adds list columns ``rate_levels``, ``bitstreams`` and ``encode_ms`` (autoencoder time +
    that rate's own time: the cost of encoding at that rate alone). ``refine_steps`` > 0
    searches the indices through the decoder (slower encode, better images, same format).
    """

    def __init__(
        self, model: Any, rates: tuple[float | int, ...] | None = None, device: str | None = None, batch_size: int = 8,
        refine_steps: int = 0,
    ) -> None:
        self.codec = load_codec(model, device)
        self.points = self.codec.ladder.resolve_many(rates)
        self.batch_size = batch_size
        self.refine_steps = refine_steps

    def __call__(self, batch: Batch) -> Batch:
        rows = rows_of(batch)
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
                    rows[i] = _fail(rows[i], "encode", e)
        return batch_of(rows, list(rows[0]) if rows else [])

    def _encode(self, rows: list[dict[str, Any]], which: list[int]) -> None:
        if not which:
            return
        streams, ae_ms, rate_ms = self.codec.encode_arrays_timed(
            [pixels_of(rows[i]) for i in which], self.points, self.batch_size, self.refine_steps
        )
        for k, i in enumerate(which):
            rows[i].update(
                rate_levels=[p.index for p in self.points],
                bitstreams=streams[k],
                encode_ms=[ae_ms[k] + t for t in rate_ms[k]],
            )


class ReconstructStage:
    """Actor: decodes every bitstream of a row in one step and measures it against the row's own pixels.

    Adds list columns ``psnr``, ``ms_ssim``, ``lpips``, ``decode_ms``; optionally writes the
    reconstructions as PNG under ``images_uri``. Drops the pixels afterwards.
    """

    def __init__(
        self, model: Any, device: str | None = None, images_uri: str | None = None, storage: Any = None,
        batch_size: int = 8, keep_pixels: bool = False,
    ) -> None:
        self.codec = load_codec(model, device)
        self.images_uri = images_uri
        self.storage = storage
        self.batch_size = batch_size
        self.keep_pixels = keep_pixels

    def __call__(self, batch: Batch) -> Batch:
        rows = rows_of(batch)
        jobs: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
        for i, r in enumerate(rows):
            r.update(psnr=[], ms_ssim=[], lpips=[], decode_ms=[])
            if r["status"] != "ok":
                continue
            for j, level in enumerate(r["rate_levels"]):
                jobs[(int(r["height"]), int(r["width"]), int(level))].append((i, j))
                r["psnr"].append(None)
                r["ms_ssim"].append(None)
                r["lpips"].append(None)
                r["decode_ms"].append(None)
        for members in jobs.values():
            self._decode_group(rows, members)
        if not self.keep_pixels:
            for r in rows:
                r.pop("pixels", None)
        return batch_of(rows, list(rows[0]) if rows else [])

    def _decode_group(self, rows: list[dict[str, Any]], members: list[tuple[int, int]]) -> None:
        # Imported here: metrics pulls in torch, which read tasks (same module) must not pay for.
        from .metrics import ms_ssim_rgb, perceptual_metrics, psnr

        for start in range(0, len(members), self.batch_size):
            chunk = members[start : start + self.batch_size]
            t0 = time.perf_counter()
            try:
                images = self.codec.decode([bytes(rows[i]["bitstreams"][j]) for i, j in chunk])
            except Exception as e:
                for i, _ in chunk:
                    rows[i] = _fail(rows[i], "decode", e)
                continue
            ms = (time.perf_counter() - t0) * 1000 / len(chunk)
            for (i, j), image in zip(chunk, images):
                r = rows[i]
                original = pixels_of(r)
                r["psnr"][j] = psnr(original, image)
                r["ms_ssim"][j] = ms_ssim_rgb(original, image)
                r["lpips"][j] = perceptual_metrics(original, image)["lpips"]
                r["decode_ms"][j] = ms
                if self.images_uri:
                    from .writer import write_png

                    write_png(self.images_uri, f"{r['image_id']}_level{r['rate_levels'][j]}.png", image, self.storage)


class EncodeVerifyStage:
    """Actor: :class:`EncodeStage` then :class:`ReconstructStage` in one process, sharing one model.

    Why fused: on a CPU box a pool of identical actors keeps every core busy on whole images,
    with no hand-off of pixels between pools and no pool left idle while the other is the
    bottleneck (decode + metrics cost about 3x encode). Separate pools remain the choice when
    encode and decode want different hardware.
    """

    def __init__(
        self, model: Any, rates: tuple[float | int, ...] | None = None, device: str | None = None,
        images_uri: str | None = None, storage: Any = None, batch_size: int = 8, keep_pixels: bool = False,
        refine_steps: int = 0,
    ) -> None:
        self.encode = EncodeStage(model, rates, device, batch_size, refine_steps)
        self.reconstruct = ReconstructStage(self.encode.codec, device, images_uri, storage, batch_size, keep_pixels)

    def __call__(self, batch: Batch) -> Batch:
        return self.reconstruct(self.encode(batch))


class ArchiveDecodeStage:
    """Actor: decodes archived bitstream rows (one per image and level) back to pixels.

    Output rows look like ``decode_images``'s (pixels = the decoded image), so they can be
    re-encoded (transcoding) by :class:`EncodeStage`; PNGs are written when ``images_uri``
    is set. Adds ``from_level`` and ``archive_decode_ms``.
    """

    def __init__(self, model: Any, device: str | None = None, images_uri: str | None = None, storage: Any = None) -> None:
        self.codec = load_codec(model, device)
        self.images_uri = images_uri
        self.storage = storage

    def __call__(self, batch: Batch) -> Batch:
        out = []
        for r in rows_of(batch):
            row = {
                "image_id": r["image_id"], "source_uri": r["source_uri"], "width": int(r["width"]),
                "height": int(r["height"]), "from_level": int(r["rate_level"]), "pixels": b"", "status": "ok",
                "archive_decode_ms": None, "error_stage": None, "error_type": None, "error_message": None,
            }
            try:
                t0 = time.perf_counter()
                (image,) = self.codec.decode([bytes(r["bitstream"])])
                row["archive_decode_ms"] = (time.perf_counter() - t0) * 1000
                row["pixels"] = image.tobytes()
                if self.images_uri:
                    from .writer import write_png

                    write_png(self.images_uri, f"{r['image_id']}_level{int(r['rate_level'])}.png", image, self.storage)
            except Exception as e:
                row = _fail(row, "archive-decode", e)
            out.append(row)
        return batch_of(out, list(out[0]) if out else [])


class BaselineStage:
    """Task: each classical codec at the bpp OSCAR actually reached on this image, per level.

    Adds ``baselines``: one JSON string per (codec, level) with the metrics row. Drops pixels.
    """

    def __init__(self, codecs: tuple[str, ...]) -> None:
        self.codecs = codecs

    def __call__(self, batch: Batch) -> Batch:
        import json

        from .baselines import decode_classic, match_bpp
        from .metrics import ms_ssim_rgb, psnr

        rows = rows_of(batch)
        for r in rows:
            found = []
            if r["status"] == "ok":
                original = pixels_of(r)
                for j, level in enumerate(r["rate_levels"]):
                    target = 8 * len(bytes(r["bitstreams"][j])) / (original.shape[0] * original.shape[1])
                    for codec in self.codecs:
                        res = match_bpp(original, codec, target)
                        t0 = time.perf_counter()
                        decoded = decode_classic(res.data)
                        decode_ms = (time.perf_counter() - t0) * 1000
                        found.append(json.dumps({
                            "codec": codec, "rate_level": int(level), "setting": f"quality {res.quality}",
                            "n_bytes": len(res.data), "bpp": res.bpp, "psnr": psnr(original, decoded),
                            "ms_ssim": ms_ssim_rgb(original, decoded), "encode_ms": res.encode_ms,
                            "decode_ms": decode_ms, "reached": res.reached, "target_bpp": target,
                        }))
            r["baselines"] = found
            r.pop("pixels", None)
        return batch_of(rows, list(rows[0]) if rows else [])
