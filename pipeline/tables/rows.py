"""The pieces every job's row builder is made of: an in-flight batch -> one table's rows, in Arrow.

A job says which tables its batch becomes (its :data:`RowBuilder`, in the job's own module);
these functions do the shared work, column-wise, with no Python row in between:

* :func:`error_rows` - each failed row -> an ``errors`` row;
* :func:`bitstream_rows` - each image's ``streams`` -> a ``bitstreams`` row per stream (with its
  target columns when the batch has ``target``);
* :func:`metrics_rows` - a ``list<MEASUREMENT>`` column -> a ``metrics`` row per measurement;
* :func:`redecode_rows` - each decoded archive stream -> a ``metrics`` row of mode ``redecode``.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from ..batch import Batch
from .schema import BITSTREAMS, ERRORS, METRICS

__all__ = ["RowBuilder", "error_rows", "bitstream_rows", "metrics_rows", "redecode_rows", "ok_images"]

RowBuilder = Callable[[Batch], dict[str, pa.Table]]
"""A job's map from its in-flight batch to rows of each table it writes (table name -> rows of
that table's schema); it runs in the write stage, once per block."""

_IMAGE = ("image_id", "source_uri", "width", "height", "unit_id")


def _col(batch: Batch, name: str, type_: pa.DataType) -> pa.ChunkedArray | pa.Array:
    """``batch``'s column, or nulls where the batch never got it (a unit lost before it was read)."""
    return batch.column(name) if name in batch.column_names else pa.nulls(batch.num_rows, type_)


def _shaped(columns: dict[str, pa.Array | pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table([columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema],
                    schema=schema)


def ok_images(batch: Batch) -> Batch:
    """The rows no stage failed."""
    return batch.filter(batch.column("error").is_null())


def error_rows(batch: Batch) -> pa.Table:
    """An ``errors`` row per failed in-flight row."""
    failed = batch.filter(batch.column("error").is_valid())
    error = failed.column("error")
    return _shaped({"source_uri": failed.column("source_uri"), "image_id": _col(failed, "image_id", pa.string()),
                    "stage": pc.struct_field(error, "stage"), "error_type": pc.struct_field(error, "type"),
                    "message": pc.struct_field(error, "message"), "unit_id": failed.column("unit_id")}, ERRORS)


def _explode(batch: Batch, name: str, also: tuple[str, ...] = ()) -> tuple[pa.Table, pa.StructArray]:
    """(the image columns and ``also`` repeated once per item, the items) of a list column over the ok rows."""
    ok = ok_images(batch)
    lists = ok.column(name).combine_chunks() if ok.num_rows else pa.array([], type=batch.schema.field(name).type)
    parents = pc.list_parent_indices(lists)
    return ok.select([*_IMAGE, *also]).take(parents), pc.list_flatten(lists)


def bitstream_rows(batch: Batch, model_id: str, nominal_bpp: dict[int, float], model_name: str) -> pa.Table:
    """A ``bitstreams`` row per stream of each ok image (``streams``), with the target columns
    where the batch was archived at a target (``target``), null otherwise. A classical codec's
    file (a mixed archive's) has its codec and setting, and no model id or level."""
    if "streams" not in batch.column_names:  # a batch of failures only (a lost unit's)
        return BITSTREAMS.empty_table()
    targeted = "target" in batch.column_names
    images, streams = _explode(batch, "streams", ("target",) if targeted else ())
    level = pc.struct_field(streams, "rate_level")
    stream = pc.struct_field(streams, "bitstream")
    n_bytes = pc.cast(pc.binary_length(stream), pa.int64())
    pixels = pc.multiply(pc.cast(images.column("width"), pa.float64()), pc.cast(images.column("height"), pa.float64()))
    lookup = pa.array([nominal_bpp.get(i) for i in range(max(nominal_bpp, default=-1) + 1)], type=pa.float64())
    columns = {name: images.column(name) for name in _IMAGE}
    classical = pc.struct_field(streams, "codec")
    own = pc.is_null(classical)
    n = len(streams)
    level_words = pc.binary_join_element_wise(pa.array(["level"] * n, pa.string()), pc.cast(level, pa.string()), " ")
    columns.update(model_id=pc.if_else(own, pa.array([model_id] * n, pa.string()), pa.nulls(n, pa.string())),
                   codec=pc.fill_null(classical, model_name),
                   setting=pc.if_else(own, level_words, pc.struct_field(streams, "setting")), rate_level=level,
                   nominal_bpp=pc.take(lookup, level), n_bytes=n_bytes,
                   bpp=pc.divide(pc.multiply(pc.cast(n_bytes, pa.float64()), 8.0), pixels), bitstream=stream,
                   encode_ms=pc.struct_field(streams, "encode_ms"))
    if targeted:
        target = images.column("target")
        chosen = pc.struct_field(streams, "chosen")
        columns.update(target=pc.struct_field(target, "spec"), target_met=pc.struct_field(target, "met"),
                       chosen=pc.if_else(pc.is_null(chosen), pc.equal(level, pc.struct_field(target, "chosen_level")),
                                         chosen))
    return _shaped(columns, BITSTREAMS)


def metrics_rows(batch: Batch, name: str) -> pa.Table:
    """A ``metrics`` row per measurement in the ``list<MEASUREMENT>`` column ``name`` of each ok image."""
    if name not in batch.column_names:
        return METRICS.empty_table()
    images, measured = _explode(batch, name)
    columns = {c: images.column(c) for c in _IMAGE}
    columns.update({f.name: pc.struct_field(measured, f.name) for f in measured.type})
    return _shaped(columns, METRICS)


def redecode_rows(batch: Batch, model_name: str) -> pa.Table:
    """A ``metrics`` row per archived stream decoded (and not transcoded): its level and decode time."""
    if "from_level" not in batch.column_names:  # a batch of failures only (a lost unit's)
        return METRICS.empty_table()
    ok = ok_images(batch)
    n = ok.num_rows
    columns = {c: ok.column(c) for c in _IMAGE}
    codec = ok.column("codec") if "codec" in ok.column_names else pa.nulls(n, pa.string())
    columns.update(codec=pc.fill_null(codec, model_name), rate_level=ok.column("from_level"),
                   setting=pa.array(["redecode"] * n, pa.string()), mode=pa.array(["redecode"] * n, pa.string()),
                   decode_ms=ok.column("archive_decode_ms"), reference=pa.array(["none"] * n, pa.string()))
    return _shaped(columns, METRICS)
