"""Outputs written before the Delta tables: Parquet parts with one JSON commit marker each.

That layout (``bitstreams/part-<id>.parquet`` ... plus ``_committed/part-<id>.json`` naming the
part's keys and model id) is read here, and converted in place into Delta tables by
:func:`convert_markers` (``python -m jobs.maintain --convert-markers``). Conversion rewrites no
data: the committed parts become the tables' files; parts without a marker are left out (and
deleted by the next vacuum). Its resume check costs one request per marker, which is why the
layout went (benchmarks/corpus_scale.py measures it).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from .delta import DeltaOutput, delta_storage_options, table_uri
from .rows import TABLES
from .storage import StorageOptions, resolve

__all__ = ["MARKERS", "read_markers", "committed_keys", "is_marker_layout", "convert_markers"]

MARKERS = "_committed"


def is_marker_layout(output_uri: str, storage: StorageOptions | None = None) -> bool:
    filesystem, base = resolve(output_uri, storage)
    return filesystem.get_file_info(f"{base}/{MARKERS}").type == pafs.FileType.Directory


def read_markers(output_uri: str, storage: StorageOptions | None = None) -> list[dict[str, Any]]:
    """Every commit marker, one request each (the cost the Delta layout removes)."""
    filesystem, base = resolve(output_uri, storage)
    if not is_marker_layout(output_uri, storage):
        return []
    out = []
    for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{MARKERS}")):
        if info.path.endswith(".json"):
            with filesystem.open_input_file(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def committed_keys(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    """The old resume check: every work key named by any marker."""
    return {k for m in read_markers(output_uri, storage) for k in m["source_uris"]}


def convert_markers(output_uri: str, storage: StorageOptions | None = None, model_id: str | None = None) -> dict[str, int]:
    """Turns a marker-layout output into Delta tables over its committed parts; returns counts.

    ``model_id`` is for markers that predate recording it (else the run manifest's is used).
    """
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    markers = read_markers(output_uri, storage)
    if not markers:
        raise FileNotFoundError(f"{output_uri} has no {MARKERS}/ markers: not an output of the old layout")
    out = DeltaOutput(output_uri, storage or StorageOptions())
    if out.exists():
        raise FileExistsError(f"{output_uri} already holds Delta tables; nothing to convert")
    fallback = model_id or _manifest_model_id(output_uri, storage)
    filesystem, base = resolve(output_uri, storage)
    for name in TABLES:  # the old files have no unit_id column: the tables keep their schema
        uri = table_uri(output_uri, name)
        DeltaTable.create(uri, schema=_old(name), mode="ignore", storage_options=delta_storage_options(uri, storage))
    out.create_tables()
    parts = {m["part"] for m in markers}
    counts: dict[str, int] = {}
    for name in TABLES:
        actions = []
        for info in _parquet_files(filesystem, f"{base}/{name}"):
            if info.base_name[: -len(".parquet")] in parts:
                rows = pq.ParquetFile(info.path, filesystem=filesystem).metadata.num_rows
                actions.append(AddAction(path=info.base_name, size=info.size, partition_values={}, data_change=True,
                                         modification_time=int(info.mtime_ns // 1_000_000) if info.mtime_ns else int(time.time() * 1000),
                                         stats=json.dumps({"numRecords": rows})))
        if actions:
            out.table(name).create_write_transaction(actions, mode="append", schema=_old(name))
        counts[name] = len(actions)
    units = [{"unit_id": f"legacy:{m['part']}", "kind": "legacy-part", "uri": (m["source_uris"] or [""])[0],
              "images": len(m["source_uris"])} for m in markers]
    models = {m.get("model_id") or fallback for m in markers}
    for mid in sorted(x for x in models if x):
        out.commit_window({}, [u for u, m in zip(units, markers) if (m.get("model_id") or fallback) == mid], mid)
    counts["work_units"] = len(units)
    return counts


def _old(name: str):
    """A table's schema as the old layout wrote it (no unit_id)."""
    schema = TABLES[name]
    return schema.remove(schema.get_field_index("unit_id"))


def _parquet_files(filesystem: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    if filesystem.get_file_info(folder).type != pafs.FileType.Directory:
        return []
    return [i for i in filesystem.get_file_info(pafs.FileSelector(folder)) if i.base_name.endswith(".parquet")]


def _manifest_model_id(output_uri: str, storage: StorageOptions | None) -> str | None:
    from .storage import is_file, read_json

    manifest = f"{output_uri.rstrip('/')}/run_manifest.json"
    return read_json(manifest, storage)["model"]["model_id"] if is_file(manifest, storage) else None
