"""The OSCAR stages: actors that hold the codec and encode, decode and measure whole images.

Each takes the in-flight batch (:mod:`pipeline.batch`) and returns it with its columns added;
a row that fails is marked in ``error`` and travels on, never dropped and never failing the
batch. The codec is reached only through its public API.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

import numpy as np

from oscar_model.options import CodecOptions

from ..batch import Batch, column, error_of, measurement, ok_rows, with_columns
from ..faults import inject_fault
from ..inputs.model_cache import is_remote, local_model_folder
from ..storage import StorageOptions, write_png
from .classic import decode_classic
from .images import pixels_of

__all__ = ["load_codec", "EncodeStage", "VerifyStage", "EncodeVerifyStage", "ArchiveDecodeStage"]


def load_codec(model: Any, device: str | None, options: CodecOptions | None = None, gradients: bool = False):
    """One model per actor, single-threaded: Ray gives each actor its share of the cores.

    ``model``: a :class:`~oscar_model.ModelInfo` (the weights loaded must hash to its id), a
    registered name or folder, or an already loaded codec (shared by stages fused into one actor).
    ``options``: how it runs (limits, tiles, precision, runtime): the job's ``JobConfig.codec``.
    ``gradients``: the encoder searches its indices through the decoder (``--refine``), which
    only torch can run. The runtime is :func:`oscar_model.runtimes.open_codec`'s choice.
    """
    from oscar_model import ModelInfo
    from oscar_model.runtimes import open_codec
    from oscar_model.streams import StreamCodec

    if isinstance(model, StreamCodec):
        return model
    options = options or CodecOptions()
    options = dataclasses.replace(options, threads=options.threads or 1)
    path = model.path if isinstance(model, ModelInfo) else model
    if isinstance(model, ModelInfo) and is_remote(path):  # s3://...: fetched once per node, checked below
        path = local_model_folder(model)
    codec = open_codec(path, device=device, options=options, gradients=gradients)
    if isinstance(model, ModelInfo):
        model.check(codec.model_hash)
    return codec


class EncodeStage:
    """Actor: loads the codec once, encodes every ok row at every level of ``levels``.

    Adds ``streams`` (per level: the level, the stream, and the time encoding at that level alone
    costs: autoencoder + that level) and ``refine_steps``: > 0 searches the indices through the
    decoder (slower encode, better images, same format). Drops the pixels unless ``keep_pixels``
    (a later stage measures against them). ``levels`` are the ladder's indices, resolved once on
    the driver (None: the whole ladder).
    """

    def __init__(
        self, model: Any, levels: tuple[int, ...] | None = None, device: str | None = None, batch_size: int = 8,
        refine_steps: int = 0, keep_pixels: bool = True, options: CodecOptions | None = None,
    ) -> None:
        self.codec = load_codec(model, device, options, gradients=refine_steps > 0)
        self.points = list(self.codec.ladder) if levels is None else [self.codec.ladder.get(lv) for lv in levels]
        self.batch_size = batch_size
        self.refine_steps = refine_steps
        self.keep_pixels = keep_pixels

    def __call__(self, batch: Batch) -> Batch:
        inject_fault("encode", batch.num_rows)
        errors = column(batch, "error")
        images = [pixels_of(p, h, w) if e is None else None for p, h, w, e in
                  zip(column(batch, "pixels"), column(batch, "height"), column(batch, "width"), errors)]
        streams: list[list[dict[str, Any]]] = [[] for _ in errors]
        ok = ok_rows(errors)
        try:
            self._encode(images, ok, streams)
        except Exception:
            for i in ok:  # isolate the failing image(s): one at a time
                try:
                    self._encode(images, [i], streams)
                except Exception as e:
                    errors[i] = error_of("encode", e)
                    streams[i] = []
        out = with_columns(batch, streams=streams, refine_steps=[self.refine_steps] * batch.num_rows, error=errors)
        return out if self.keep_pixels else out.drop_columns(["pixels"])

    def _encode(self, images: list[np.ndarray | None], which: list[int], streams: list[list[dict[str, Any]]]) -> None:
        if not which:
            return
        coded, ae_ms, rate_ms = self.codec.encode_arrays_timed(
            [images[i] for i in which], self.points, self.batch_size, self.refine_steps
        )
        for k, i in enumerate(which):
            streams[i] = [{"rate_level": p.index, "bitstream": s, "encode_ms": ae_ms[k] + t}
                          for p, s, t in zip(self.points, coded[k], rate_ms[k])]


class VerifyStage:
    """Actor: decodes each stream of a row in one step and measures it against the row's own pixels.

    Adds ``oscar_metrics``: a sweep measurement per stream (size, the chosen quality ``metrics``,
    encode and decode time); writes the reconstructions as PNG under ``images_uri`` when set.
    Drops the pixels afterwards unless ``keep_pixels`` (a later stage needs them).
    """

    def __init__(
        self, model: Any, device: str | None = None, images_uri: str | None = None,
        storage: StorageOptions | None = None, batch_size: int = 8, keep_pixels: bool = False,
        options: CodecOptions | None = None, metrics: tuple[str, ...] = ("psnr", "ms_ssim"),
    ) -> None:
        self.codec = load_codec(model, device, options)
        self.images_uri = images_uri
        self.storage = storage
        self.batch_size = batch_size
        self.metrics = metrics
        self.keep_pixels = keep_pixels

    def __call__(self, batch: Batch) -> Batch:
        inject_fault("verify", batch.num_rows)
        errors = column(batch, "error")
        rows = {name: column(batch, name) for name in ("streams", "pixels", "height", "width", "image_id",
                                                       "reference", "refine_steps")}
        measured: list[list[dict[str, Any] | None]] = [[None] * len(s) if e is None else []
                                                       for s, e in zip(rows["streams"], errors)]
        groups: dict[tuple[int, int, int], list[tuple[int, int]]] = defaultdict(list)
        for i in ok_rows(errors):
            for j, s in enumerate(rows["streams"][i]):
                groups[(rows["height"][i], rows["width"][i], s["rate_level"])].append((i, j))
        for members in groups.values():
            self._decode_group(rows, members, measured, errors)
        oscar_metrics = [m if errors[i] is None else [] for i, m in enumerate(measured)]
        out = with_columns(batch, oscar_metrics=oscar_metrics, error=errors)
        return out if self.keep_pixels else out.drop_columns(["pixels"])

    def _decode_group(self, rows: dict[str, list[Any]], members: list[tuple[int, int]],
                      measured: list[list[dict[str, Any] | None]], errors: list[dict[str, str] | None]) -> None:
        from .metrics import quality_of

        name = self.codec.config.name
        for start in range(0, len(members), self.batch_size):
            chunk = members[start : start + self.batch_size]
            t0 = time.perf_counter()
            try:
                images = self.codec.decode([rows["streams"][i][j]["bitstream"] for i, j in chunk])
            except Exception as e:
                for i, _ in chunk:
                    errors[i] = error_of("decode", e)
                continue
            ms = (time.perf_counter() - t0) * 1000 / len(chunk)
            for (i, j), image in zip(chunk, images):
                h, w, stream = rows["height"][i], rows["width"][i], rows["streams"][i][j]
                level, refined = stream["rate_level"], rows["refine_steps"][i] or 0
                effort = f", refine {refined}" if refined else ""  # so refined rows never pass for greedy ones
                n_bytes = len(stream["bitstream"])
                measured[i][j] = measurement(
                    name, level, f"level {level}{effort}", "sweep", True, rows["reference"][i] or "source",
                    n_bytes=n_bytes, bpp=8 * n_bytes / (w * h), encode_ms=stream["encode_ms"], decode_ms=ms,
                    **quality_of(pixels_of(rows["pixels"][i], h, w), image, self.metrics),
                )
                if self.images_uri:
                    write_png(self.images_uri, f"{rows['image_id'][i]}_level{level}.png", image, self.storage)


class EncodeVerifyStage:
    """Actor: :class:`EncodeStage` then :class:`VerifyStage` in one process, sharing one model.

    Why fused: on a CPU box a pool of identical actors keeps every core busy on whole images,
    with no hand-off of pixels between pools and no pool left idle while the other is the
    bottleneck (decode + metrics cost about 3x encode). Separate pools remain the choice when
    encode and decode want different hardware.
    """

    def __init__(
        self, model: Any, levels: tuple[int, ...] | None = None, device: str | None = None,
        images_uri: str | None = None, storage: StorageOptions | None = None, batch_size: int = 8,
        keep_pixels: bool = False, refine_steps: int = 0, options: CodecOptions | None = None,
        metrics: tuple[str, ...] = ("psnr", "ms_ssim"),
    ) -> None:
        self.encode = EncodeStage(model, levels, device, batch_size, refine_steps, options=options)
        self.verify = VerifyStage(self.encode.codec, device, images_uri, storage, batch_size, keep_pixels,
                                  metrics=metrics)

    def __call__(self, batch: Batch) -> Batch:
        return self.verify(self.encode(batch))


class ArchiveDecodeStage:
    """Actor: decodes archived streams (redecode's reader's rows, one per image and level) back to
    pixels; a mixed archive's classical files are decoded by Pillow and resized to the image's size.

    Adds ``pixels`` (the decoded image), ``reference`` (``archive level L``: what a transcode's
    metrics compare against), ``from_level`` and ``archive_decode_ms``; drops ``bitstream`` and
    ``rate_level``. Its rows can then be re-encoded (transcoding) by :class:`EncodeStage`; PNGs
    are written when ``images_uri`` is set.
    """

    def __init__(
        self, model: Any, device: str | None = None, images_uri: str | None = None,
        storage: StorageOptions | None = None, options: CodecOptions | None = None,
    ) -> None:
        self.codec = load_codec(model, device, options)
        self.images_uri = images_uri
        self.storage = storage

    def __call__(self, batch: Batch) -> Batch:
        errors = column(batch, "error")
        levels = column(batch, "rate_level")
        ids = column(batch, "image_id")
        codecs = column(batch, "codec") if "codec" in batch.column_names else [None] * batch.num_rows
        sizes = list(zip(column(batch, "width"), column(batch, "height")))
        mine = self.codec.config.name
        pixels, decode_ms = [b""] * batch.num_rows, [None] * batch.num_rows
        for i, stream in enumerate(column(batch, "bitstream")):
            if errors[i] is not None:  # the archive file could not be read: its error row goes on
                continue
            classical = codecs[i] not in (None, mine)  # a mixed archive's classical file
            try:
                t0 = time.perf_counter()
                image = decode_classic(stream, sizes[i]) if classical else self.codec.decode([stream])[0]
                decode_ms[i] = (time.perf_counter() - t0) * 1000
                pixels[i] = image.tobytes()
                if self.images_uri:
                    name = f"{ids[i]}_{codecs[i].replace('@', '_').replace('/', '-')}" if classical else \
                        f"{ids[i]}_level{levels[i]}"
                    write_png(self.images_uri, f"{name}.png", image, self.storage)
            except Exception as e:
                errors[i] = error_of("archive-decode", e)
        origin = [f"archive {c}" if c not in (None, mine) else f"archive level {lv}" if lv is not None else None
                  for c, lv in zip(codecs, levels)]
        out = with_columns(batch.drop_columns(["bitstream", "rate_level"]),
                           pixels=pixels, reference=origin, from_level=levels, archive_decode_ms=decode_ms)
        return with_columns(out, error=errors)
