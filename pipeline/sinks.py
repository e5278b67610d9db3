"""The write stage: in-flight rows -> Parquet data files in the Delta tables' folders, plus a
receipt the driver commits from (:class:`~pipeline.delta.DeltaOutput`).

Each actor block is first flattened (:func:`flatten`) into its table rows under one schema;
a write task then takes a large batch of them (``JobConfig.rows_per_file``, thousands), so
each table gets files sized for analytics, not one per actor batch. The files are invisible
until the driver commits them; a retried task writes new names (the orphan of a dead attempt
is never committed and vacuum deletes it).

The receipt is one row per write task (JSON): the files it wrote with their Delta stats, the
rows it saw per unit (and a unit's size when its last row was here), and the counters the
driver's summary adds up. Nothing per image goes back to the driver.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .bd_rate import image_bd_rates
from .faults import inject_fault
from .progress import bump
from .rows import FLAT, ROW_GROUP_ROWS, TABLES, UNCOMPRESSED_COLUMNS, rows_of, table_rows
from .storage import StorageOptions, resolve

if TYPE_CHECKING:
    from oscar_model import ModelInfo

__all__ = ["flatten", "write_files", "write_table_file", "receipt", "RECEIPT"]

RECEIPT = "receipt"
"""The write stage's one output column."""

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


def flatten(batch: dict[str, np.ndarray], model: ModelInfo, progress: Any = None) -> pa.Table:
    """Per block: in-flight rows -> their table rows under :data:`~pipeline.rows.FLAT` (see there);
    bumps the job's progress counter (:mod:`pipeline.progress`) by the block's images."""
    flat: list[dict[str, Any]] = []
    rows = rows_of(batch)
    bump(progress, len(rows))
    for r in rows:
        own = table_rows([r], model)
        own["bd_rates"] = image_bd_rates(own["metrics"], model.name)  # an audit's; [] for other jobs
        first = len(flat)
        for name in TABLES:
            flat.extend({**row, "table": name, "unit_size": 0, "image_rows": 0} for row in own[name])  # rows carry unit_id
        if len(flat) == first:  # nothing to write, but the image still counts for its unit
            flat.append({"table": "", "unit_id": str(r["unit_id"]), "source_uri": str(r.get("source_uri", ""))})
        flat[first].update(image_rows=1, unit_size=int(r.get("unit_size") or 0))
    return pa.Table.from_pylist(flat, schema=FLAT)


def write_files(batch: pa.Table, output_uri: str, storage: StorageOptions | None = None) -> dict[str, np.ndarray]:
    """Write stage: a large batch of flat rows -> one data file per table; returns one receipt row."""
    files = []
    for name in TABLES:
        rows = batch.filter(pc.equal(batch.column("table"), name))
        if rows.num_rows:
            files.append(write_table_file(rows.select(TABLES[name].names).cast(TABLES[name]), name, output_uri, storage))
    inject_fault("write", batch.num_rows)  # test hook: a crash here leaves files no commit names
    return {RECEIPT: np.array([json.dumps(receipt(batch, files))], dtype=object)}


def receipt(batch: pa.Table, files: list[dict[str, Any]]) -> dict[str, Any]:
    """What the driver needs from a write: files, rows per unit, unit sizes, summary counters."""
    cols = batch.select(["table", "unit_id", "unit_size", "image_rows", "rate_level", "n_bytes", "bpp"]).to_pydict()
    seen: dict[str, int] = defaultdict(int)
    sizes: dict[str, int] = {}
    bpp: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    ok = failed = n_bytes = 0
    for table, unit, size, first, level, n, rate in zip(*cols.values()):
        if first:
            seen[unit] += 1
            failed += table == "errors"
            ok += table != "errors"
        if size:
            sizes[unit] = size
        if table == "bitstreams":
            n_bytes += n
            bpp[level][0] += rate
            bpp[level][1] += 1
    return {"files": files, "seen": dict(seen), "sizes": sizes, "ok": ok, "failed": failed, "bytes": n_bytes,
            "bpp": {str(k): v for k, v in bpp.items()}}
