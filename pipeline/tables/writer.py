"""The write stage: table rows -> Parquet data files in the Delta tables' folders, plus a receipt
the driver commits from (:class:`~pipeline.tables.delta.DeltaOutput`).

It knows tables, never jobs. Each block's in-flight rows are first turned into table rows by
the job's row builder (:func:`table_rows`, which puts them under one schema, :data:`FLAT`); a
write task then takes a large batch of those (``JobConfig.rows_per_file``, thousands), so each
table gets files sized for analytics, not one per actor batch. The files are invisible until
the driver commits them; a retried task writes new names (the orphan of a dead attempt is never
committed, and vacuum deletes it).

The receipt is one typed row per write task (:data:`RECEIPT`): the files it wrote with their
Delta statistics, the in-flight rows it saw per unit (and a unit's size when its last row was
here), and the counters the driver's summary adds up. Nothing per image goes back to the driver.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..batch import Batch, column
from ..faults import inject_fault
from ..storage import StorageOptions, resolve
from .rows import RowBuilder
from .schema import FLAT, FLAT_OWN, ROW_GROUP_ROWS, TABLES, UNCOMPRESSED_COLUMNS

__all__ = ["table_rows", "write_files", "write_table_file", "RECEIPT", "receipts_of"]

_FILE = pa.struct([("table", pa.string()), ("path", pa.string()), ("size", pa.int64()), ("rows", pa.int64()),
                   ("stats", pa.string()), ("mtime_ms", pa.int64())])
RECEIPT = pa.schema([
    ("files", pa.list_(_FILE)),
    ("seen", pa.list_(pa.struct([("unit_id", pa.string()), ("rows", pa.int64()), ("expected", pa.int64()),
                                 ("written", pa.int64())]))),
    ("sizes", pa.list_(pa.struct([("unit_id", pa.string()), ("size", pa.int64())]))),
    ("counts", pa.list_(pa.struct([("unit_id", pa.string()), ("ok", pa.int64()), ("failed", pa.int64()),
                                   ("bytes", pa.int64())]))),
    ("bpp", pa.list_(pa.struct([("unit_id", pa.string()), ("rate_level", pa.int16()), ("total", pa.float64()),
                                ("n", pa.int64())]))),
    ("quality", pa.list_(pa.struct([("unit_id", pa.string()), ("rate_level", pa.int16()), ("psnr", pa.float64()),
                                    ("psnr_n", pa.int64()), ("ms_ssim", pa.float64()), ("ms_ssim_n", pa.int64())]))),
])
"""A write task's one output row. ``files[].stats`` is the add action's statistics in the JSON
form the Delta protocol itself stores them in (``numRecords``, ``minValues``, ...). The summary's
counters (images, bytes, bpp and quality per level) come per unit, so that the driver counts a
unit once it is committed, and a unit redone after a worker died is not counted twice."""

_STATS_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string)


def _stats(table: pa.Table) -> str:
    """Delta's per-file statistics: row count, min/max and null counts of the scalar columns (for pruning)."""
    mins, maxs, nulls = {}, {}, {}
    for name in table.column_names:
        col = table.column(name)
        nulls[name] = col.null_count
        if any(check(col.type) for check in _STATS_TYPES) and col.null_count < len(col):
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if isinstance(lo, float) and (np.isnan(lo) or np.isnan(hi)):
                continue
            if isinstance(lo, str):  # Delta truncates string stats; keep them short
                lo, hi = lo[:32], hi[:32] + ("\uffff" if len(hi) > 32 else "")
            mins[name], maxs[name] = lo, hi
    return json.dumps({"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


def write_table_file(table: pa.Table, name: str, output_uri: str, storage: StorageOptions | None) -> dict[str, Any]:
    """One Parquet data file in table ``name``'s folder; returns its add action's fields."""
    filesystem, base = resolve(output_uri, storage)
    path = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:16]}.parquet"
    folder = f"{base}/{name}"
    filesystem.create_dir(folder, recursive=True)
    compression = {c: ("none" if c in UNCOMPRESSED_COLUMNS else "zstd") for c in table.column_names}
    use_dict = [c for c in table.column_names if c not in UNCOMPRESSED_COLUMNS]
    with filesystem.open_output_stream(f"{folder}/{path}") as f:
        pq.write_table(table, f, compression=compression, use_dictionary=use_dict, row_group_size=ROW_GROUP_ROWS)
        size = f.tell()  # the bytes written: no second request to ask the store
    return {"table": name, "path": path, "size": int(size), "rows": table.num_rows, "stats": _stats(table),
            "mtime_ms": int(time.time() * 1000)}


def _flat(table: pa.Table, name: str) -> pa.Table:
    """``table``'s rows under :data:`FLAT`, tagged as table ``name``'s (a table's rows count no image)."""
    n = table.num_rows
    defaults = {"table": pa.array([name] * n, pa.string()), "unit_size": pa.array([0] * n, pa.int64()),
                "image_rows": pa.array([0] * n, pa.int32())}
    return pa.table([table.column(f.name) if f.name in table.column_names else defaults.get(f.name, pa.nulls(n, f.type))
                     for f in FLAT], schema=FLAT)


def table_rows(batch: Batch, build: RowBuilder) -> pa.Table:
    """Per block: the job's table rows of ``batch`` (``build``), and one count row per in-flight row
    (``table = ""``, never written; the first of each unit says how many table rows the block
    holds for it), all under :data:`FLAT`."""
    n = batch.num_rows
    parts = []
    for name, rows in build(batch).items():
        if name not in TABLES:
            raise KeyError(f"row builder made rows of {name!r}, which is not a table ({', '.join(TABLES)})")
        if rows.num_rows:
            parts.append(_flat(rows, name))
    unit_rows = [0] * n
    if parts:
        per_unit = pa.table({"unit_id": pa.chunked_array([p.column("unit_id") for p in parts])}).group_by(
            "unit_id").aggregate([("unit_id", "count")])
        units = batch.column("unit_id")
        for unit, count in zip(column(per_unit, "unit_id"), column(per_unit, "unit_id_count")):
            unit_rows[pc.index(units, unit).as_py()] = count
    counts = pa.table({"table": pa.array([""] * n, pa.string()), "unit_id": batch.column("unit_id"),
                       "unit_size": batch.column("unit_size"), "image_rows": pa.array([1] * n, pa.int32()),
                       "image_failed": batch.column("error").is_valid(), "unit_rows": pa.array(unit_rows, pa.int64())},
                      schema=FLAT_OWN)
    parts = ([_flat(counts, "")] if n else []) + parts
    return pa.concat_tables(parts) if parts else FLAT.empty_table()


def write_files(batch: pa.Table, output_uri: str, storage: StorageOptions | None = None) -> pa.Table:
    """Write stage: a large batch of :data:`FLAT` rows -> one data file per table; returns one receipt row."""
    files = []
    for name, schema in TABLES.items():
        rows = batch.filter(pc.equal(batch.column("table"), name))
        if rows.num_rows:
            files.append(write_table_file(rows.select(schema.names).cast(schema), name, output_uri, storage))
    if files:  # test hook: a crash here leaves files no commit names (a batch of count rows alone writes none)
        inject_fault("write", batch.num_rows)
    return _receipt(batch, files)


def _receipt(batch: pa.Table, files: list[dict[str, Any]]) -> pa.Table:
    """What the driver needs from a write: files, rows per unit, unit sizes, summary counters."""
    counts = batch.filter(pc.equal(batch.column("image_rows"), 1))
    written = batch.filter(pc.not_equal(batch.column("table"), ""))
    zeros, ones = pa.array([0] * written.num_rows, pa.int64()), pa.array([1] * written.num_rows, pa.int64())
    seen = pa.table({
        "unit_id": pa.concat_arrays([counts.column("unit_id").combine_chunks(), written.column("unit_id").combine_chunks()]),
        "rows": pa.concat_arrays([pc.cast(counts.column("image_rows"), pa.int64()).combine_chunks(), zeros]),
        "expected": pa.concat_arrays([counts.column("unit_rows").combine_chunks(), zeros]),
        "written": pa.concat_arrays([pa.array([0] * counts.num_rows, pa.int64()), ones]),
    }).group_by("unit_id").aggregate([("rows", "sum"), ("expected", "sum"), ("written", "sum")]) \
        .rename_columns(["unit_id", "rows", "expected", "written"])
    sized = counts.filter(pc.greater(counts.column("unit_size"), 0))
    images = pa.table({"unit_id": counts.column("unit_id"),
                       "failed": pc.cast(counts.column("image_failed"), pa.int64())}).group_by("unit_id").aggregate(
        [("failed", "count"), ("failed", "sum")]).rename_columns(["unit_id", "images", "failed"])
    written = batch.filter(pc.equal(batch.column("table"), "bitstreams"))
    sizes = pa.table({"unit_id": written.column("unit_id"), "bytes": pc.cast(written.column("n_bytes"), pa.int64())}) \
        .group_by("unit_id").aggregate([("bytes", "sum")]).rename_columns(["unit_id", "bytes"])
    per_unit = images.join(sizes, "unit_id", join_type="full outer")
    zero = pa.scalar(0, pa.int64())
    unit_counts = pa.table({
        "unit_id": per_unit.column("unit_id"),
        "ok": pc.subtract(pc.fill_null(per_unit.column("images"), zero), pc.fill_null(per_unit.column("failed"), zero)),
        "failed": pc.fill_null(per_unit.column("failed"), zero), "bytes": pc.fill_null(per_unit.column("bytes"), zero),
    })
    streams = written.filter(pc.is_valid(written.column("rate_level")))  # the model's (not a mixed archive's classical files)
    bpp = pa.table({"unit_id": streams.column("unit_id"), "rate_level": streams.column("rate_level"),
                    "bpp": streams.column("bpp")}).group_by(["unit_id", "rate_level"]).aggregate(
        [("bpp", "sum"), ("bpp", "count")]).rename_columns(["unit_id", "rate_level", "total", "n"])
    levels = batch.filter(pc.and_(pc.is_in(batch.column("mode"), pa.array(["sweep", "target"])),
                                  pc.is_valid(batch.column("rate_level"))))  # the model's own levels' measurements
    quality = pa.table({"unit_id": levels.column("unit_id"), "rate_level": levels.column("rate_level"),
                        "psnr": levels.column("psnr"), "ms_ssim": levels.column("ms_ssim")}).group_by(
        ["unit_id", "rate_level"]).aggregate([("psnr", "sum"), ("psnr", "count"), ("ms_ssim", "sum"),
                                              ("ms_ssim", "count")]) \
        .rename_columns(["unit_id", "rate_level", "psnr", "psnr_n", "ms_ssim", "ms_ssim_n"])
    receipt = {
        "files": [files], "seen": [seen], "quality": [quality], "counts": [unit_counts], "bpp": [bpp],
        "sizes": [pa.table({"unit_id": sized.column("unit_id"), "size": sized.column("unit_size")})],
    }
    return _one_row(receipt)


def _one_row(receipt: dict[str, list[Any]]) -> pa.Table:
    """The receipt's one row, its list columns built from the small tables above."""
    arrays = []
    for field in RECEIPT:
        (value,) = receipt[field.name]
        if isinstance(value, pa.Table):
            value = value.cast(pa.schema(list(field.type.value_type))).to_struct_array().combine_chunks()
            arrays.append(pa.ListArray.from_arrays(pa.array([0, len(value)], pa.int32()), value))
        else:
            arrays.append(pa.array([value], field.type))
    return pa.table(arrays, schema=RECEIPT)


def receipts_of(batch: pa.Table) -> list[dict[str, Any]]:
    """Receipt rows -> what :class:`~pipeline.tables.windows.CommitWindows` and the tally add up:
    ``seen`` (in-flight rows per unit), ``rows`` (per unit: table rows announced, table rows
    written), ``sizes``, and ``units``: per unit its images ok and failed, stream bytes, and per
    level its bpp and quality sums. ``ok`` and ``failed`` are the receipt's totals."""
    out = []
    for r in batch.to_pylist():
        units: dict[str, dict[str, Any]] = {c["unit_id"]: {"ok": c["ok"], "failed": c["failed"], "bytes": c["bytes"],
                                                           "bpp": {}, "quality": {}} for c in r["counts"]}
        for b in r["bpp"]:
            units.setdefault(b["unit_id"], _no_counts())["bpp"][b["rate_level"]] = (b["total"], b["n"])
        for q in r["quality"]:
            units.setdefault(q["unit_id"], _no_counts())["quality"][q["rate_level"]] = (
                q["psnr"] or 0.0, q["psnr_n"], q["ms_ssim"] or 0.0, q["ms_ssim_n"])
        out.append({"files": r["files"], "seen": {s["unit_id"]: s["rows"] for s in r["seen"]},
                    "rows": {s["unit_id"]: (s["expected"], s["written"]) for s in r["seen"]},
                    "sizes": {s["unit_id"]: s["size"] for s in r["sizes"]}, "units": units,
                    "ok": sum(u["ok"] for u in units.values()), "failed": sum(u["failed"] for u in units.values())})
    return out


def _no_counts() -> dict[str, Any]:
    return {"ok": 0, "failed": 0, "bytes": 0, "bpp": {}, "quality": {}}
