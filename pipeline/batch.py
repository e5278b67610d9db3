"""The in-flight batch: one Arrow table, one row per image, from the read stage to the write stage.

Every stage is a function (or an actor's ``__call__``) from such a table to the same table with
its own columns added, each of the type written here: nested lists and structs, never JSON
text. Its rows become Python values only inside a stage that loops over its images
(:func:`column`), and the stage's results go back in as typed columns (:func:`with_columns`).

The columns, in the order the stages add them::

    a reader            unit_id, unit_size, source_uri, bytes, error
    decode_images       image_id, width, height, pixels (raw RGB bytes), reference   (drops bytes)
    read_archive_file   image_id, width, height, rate_level, bitstream, codec     (redecode's reader)
    ArchiveDecodeStage  pixels, reference, from_level, archive_decode_ms          (drops bitstream)
    EncodeStage         streams: list<STREAM>, refine_steps
    VerifyStage         oscar_metrics: list<MEASUREMENT>                           (drops pixels)
    TargetStage         streams (the kept ones), oscar_metrics (its probes), target: TARGET
    ClassicCodecStage   classic_metrics: list<MEASUREMENT>                         (drops pixels)

``error`` is the one way a failure is spelled: null on a row that is fine, else a struct of the
stage that failed, the exception's type and its message. A failed row is never dropped: later
stages pass it over and the job's row builder turns it into an ``errors`` row. ``unit_size``
is 0 but on the last row a reader emits for a unit, which carries the unit's row count: that
is how the driver knows a unit is complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from oscar_model.images import without_reprs

__all__ = ["ERROR", "STREAM", "MEASUREMENT", "TARGET", "COLUMNS", "MEASURED", "Batch", "column", "with_columns",
           "table_of", "error_of", "ok_rows", "empty_batch", "measurement"]

ERROR = pa.struct([("stage", pa.string()), ("type", pa.string()), ("message", pa.string())])
"""Why a row failed: the stage, the exception's type, its message (object addresses taken out)."""
STREAM = pa.struct([("rate_level", pa.int16()), ("bitstream", pa.large_binary()), ("encode_ms", pa.float64()),
                    ("codec", pa.string()), ("setting", pa.string()), ("chosen", pa.bool_())])
"""One stream of an image: its OSCAR level, its bytes, and the time encoding at that level alone
costs. ``codec`` and ``setting`` are null for the model's own streams; a classical codec's file
kept by a mixed archive (``--codecs``) names its codec (``avif``, ``jxl@1/2``) and setting
(``quality 37``) and has no level. ``chosen``: at a target, whether it is the stream kept."""
MEASURED = ("n_bytes", "bpp", "psnr", "ms_ssim", "ssimulacra2", "flip", "butteraugli", "lpips", "dists", "encode_ms",
            "decode_ms")
"""A measurement's measured fields (the metrics table's): all null where a setting did not reach its target."""
MEASUREMENT = pa.struct([
    ("codec", pa.string()), ("rate_level", pa.int16()), ("setting", pa.string()), ("mode", pa.string()),
    ("reached", pa.bool_()), ("n_bytes", pa.int64()), ("bpp", pa.float64()), ("psnr", pa.float64()),
    ("ms_ssim", pa.float64()), ("ssimulacra2", pa.float64()), ("flip", pa.float64()), ("butteraugli", pa.float64()),
    ("lpips", pa.float64()), ("dists", pa.float64()), ("encode_ms", pa.float64()),
    ("decode_ms", pa.float64()), ("reference", pa.string()),
])
"""One codec setting on one image, as the metrics table records it: which codec and setting, how
it was chosen (``mode``: sweep, matched, target, probe), and what it cost and measured."""
TARGET = pa.struct([("spec", pa.string()), ("met", pa.bool_()), ("chosen_level", pa.int16()), ("decodes", pa.int16()),
                    ("chosen_codec", pa.string())])
"""An image archived at a quality target: the target, whether any candidate met it, the level
kept (null when a classical codec's file was kept), how many decodes the search cost, and the
codec kept (the model's name, or a classical codec's with ``--codecs``)."""

COLUMNS: dict[str, pa.DataType] = {
    "unit_id": pa.string(), "unit_size": pa.int64(), "source_uri": pa.string(), "bytes": pa.large_binary(),
    "error": ERROR,
    "image_id": pa.string(), "width": pa.int32(), "height": pa.int32(), "pixels": pa.large_binary(),
    "reference": pa.string(),
    "rate_level": pa.int16(), "bitstream": pa.large_binary(), "codec": pa.string(), "from_level": pa.int16(),
    "archive_decode_ms": pa.float64(),
    "streams": pa.list_(STREAM), "refine_steps": pa.int16(),
    "oscar_metrics": pa.list_(MEASUREMENT), "classic_metrics": pa.list_(MEASUREMENT), "target": TARGET,
}
"""Every in-flight column and its type: a column is always built with its type, so blocks of
different tasks concatenate whatever their rows hold (an all-null column is typed too)."""

Batch = pa.Table


def column(batch: Batch, name: str) -> list[Any]:
    """A column's values as Python objects, for a stage's per-image loop."""
    return batch.column(name).to_pylist()


def with_columns(batch: Batch, **values: Sequence[Any] | pa.Array) -> Batch:
    """``batch`` with each named column set (added, or replaced in place) from ``values``, typed by :data:`COLUMNS`."""
    for name, data in values.items():
        array = data if isinstance(data, pa.Array | pa.ChunkedArray) else pa.array(data, type=COLUMNS[name])
        if name in batch.column_names:
            batch = batch.set_column(batch.column_names.index(name), pa.field(name, COLUMNS[name]), array)
        else:
            batch = batch.append_column(pa.field(name, COLUMNS[name]), array)
    return batch


def table_of(rows: Iterable[dict[str, Any]], names: Sequence[str]) -> Batch:
    """Rows made one at a time (a reader's, as it streams its unit) -> a batch of ``names``' columns."""
    rows = list(rows)
    return pa.table({c: pa.array([r.get(c) for r in rows], type=COLUMNS[c]) for c in names},
                    schema=pa.schema([(c, COLUMNS[c]) for c in names]))


def empty_batch(names: Sequence[str]) -> Batch:
    return pa.schema([(c, COLUMNS[c]) for c in names]).empty_table()


def error_of(stage: str, exc: BaseException | str, error_type: str | None = None) -> dict[str, str]:
    """The ``error`` value of a row that failed at ``stage``; object reprs (memory addresses) are
    taken out of the message so that equal errors group together in the errors table."""
    if isinstance(exc, BaseException):
        return {"stage": stage, "type": type(exc).__name__, "message": without_reprs(exc)[:2000]}
    return {"stage": stage, "type": error_type or "Error", "message": str(exc)[:2000]}


def ok_rows(errors: Sequence[dict[str, str] | None]) -> list[int]:
    """Indices of the rows no stage has failed (``errors``: the ``error`` column's values)."""
    return [i for i, e in enumerate(errors) if e is None]


def measurement(codec: str, rate_level: int | None, setting: str, mode: str, reached: bool | None,
                reference: str = "source", **measured: Any) -> dict[str, Any]:
    """One :data:`MEASUREMENT`: ``measured`` fills its :data:`MEASURED` fields, None where not
    measured (NaN too) and all None where the setting did not reach its target (an ``AVG()`` over
    the metrics table must not mix them in)."""
    out: dict[str, Any] = {"codec": codec, "rate_level": rate_level, "setting": setting, "mode": mode,
                           "reached": reached, "reference": reference}
    for name in MEASURED:
        value = measured.get(name)
        out[name] = None if reached is False or value is None or value != value else value
    return out
