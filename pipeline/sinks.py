"""Parquet sinks with a commit marker per part, so a rerun resumes without duplicates.

Layout under the output URI::

    bitstreams/part-<id>.parquet   metrics/part-<id>.parquet   errors/part-<id>.parquet
    _committed/part-<id>.json      (written LAST: the work keys the part holds, row counts, model id)
    run_manifest.json              (config, model id and hash, versions, counts, wall time)

``<id>`` is a hash of the batch's work keys (:func:`~pipeline.rows.job_key`), so a retried
task rewrites the same files. The marker's list is called ``source_uris`` for the outputs
written before re-decoding keys existed; for an image it is the image's URI.
A part without its marker is an interrupted write: it is deleted on the next run and its
images are processed again. Readers only read committed parts. A rerun with another model is
refused (:func:`committed_model_ids`): resuming would mix two models' results in one table.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from .faults import inject_fault
from .rows import TABLES, UNCOMPRESSED_COLUMNS, job_key, rows_of, summary_batch, table_rows
from .storage import StorageOptions, is_file, read_json, resolve, write_bytes

if TYPE_CHECKING:
    from oscar_model import ModelInfo

__all__ = [
    "write_tables", "committed_parts", "committed_keys", "committed_model_ids", "clean_uncommitted",
    "committed_files", "read_table", "read_parts",
]

MARKERS = "_committed"


def _write_parquet(filesystem: pafs.FileSystem, path: str, table: pa.Table) -> None:
    compression = {c: ("none" if c in UNCOMPRESSED_COLUMNS else "zstd") for c in table.column_names}
    use_dict = [c for c in table.column_names if c not in UNCOMPRESSED_COLUMNS]
    with filesystem.open_output_stream(path) as f:
        pq.write_table(table, f, compression=compression, use_dictionary=use_dict)


def write_tables(
    batch: dict[str, np.ndarray], output_uri: str, model: ModelInfo, storage: StorageOptions | None = None
) -> dict[str, np.ndarray]:
    """Sink stage: writes this batch's parts, then its marker; returns :func:`~pipeline.rows.summary_batch`."""
    rows = rows_of(batch)
    if not rows:
        return summary_batch([])
    keys = sorted(str(r.get("job_key") or job_key(r["source_uri"])) for r in rows)
    part = "part-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:20]
    tables = table_rows(rows, model)
    filesystem, base = resolve(output_uri, storage)
    for name in ("metrics", "errors", "bitstreams"):  # bitstreams last: the data the marker vouches for
        if tables[name]:
            filesystem.create_dir(f"{base}/{name}", recursive=True)
            table = pa.Table.from_pylist(tables[name], schema=TABLES[name])
            _write_parquet(filesystem, f"{base}/{name}/{part}.parquet", table)
    inject_fault("write", len(rows))  # test hook: a crash here leaves parts without their marker
    marker = {"part": part, "source_uris": keys, "rows": {k: len(v) for k, v in tables.items()}, "model_id": model.model_id}
    write_bytes(f"{output_uri.rstrip('/')}/{MARKERS}", f"{part}.json", json.dumps(marker).encode(), storage)
    return summary_batch(rows)


def _markers(output_uri: str, storage: StorageOptions | None) -> list[dict]:
    filesystem, base = resolve(output_uri, storage)
    if filesystem.get_file_info(f"{base}/{MARKERS}").type != pafs.FileType.Directory:
        return []
    out = []
    for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{MARKERS}")):
        if info.path.endswith(".json"):
            with filesystem.open_input_file(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def committed_parts(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    return {m["part"] for m in _markers(output_uri, storage)}


def committed_keys(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    """Work keys already fully written (ok or error) by an earlier run."""
    return {u for m in _markers(output_uri, storage) for u in m["source_uris"]}


def committed_model_ids(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    """Model ids of the committed parts under ``output_uri``. Markers written before they
    recorded one fall back to the run manifest's model id (absent if that run never finished)."""
    markers = _markers(output_uri, storage)
    ids = {m["model_id"] for m in markers if "model_id" in m}
    manifest = f"{output_uri.rstrip('/')}/run_manifest.json"
    if any("model_id" not in m for m in markers) and is_file(manifest, storage):
        ids.add(read_json(manifest, storage)["model"]["model_id"])
    return ids


def clean_uncommitted(output_uri: str, storage: StorageOptions | None = None) -> int:
    """Deletes parts whose marker is missing (an interrupted earlier run); returns how many."""
    filesystem, base = resolve(output_uri, storage)
    done = committed_parts(output_uri, storage)
    removed = 0
    for name in TABLES:
        if filesystem.get_file_info(f"{base}/{name}").type != pafs.FileType.Directory:
            continue
        for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{name}")):
            stem = info.base_name.rsplit(".", 1)[0]
            if info.base_name.endswith(".parquet") and stem not in done:
                filesystem.delete_file(info.path)
                removed += 1
    return removed


def committed_files(output_uri: str, table: str, storage: StorageOptions | None = None) -> list[str]:
    filesystem, base = resolve(output_uri, storage)
    done = committed_parts(output_uri, storage)
    if filesystem.get_file_info(f"{base}/{table}").type != pafs.FileType.Directory:
        return []
    return sorted(
        i.path for i in filesystem.get_file_info(pafs.FileSelector(f"{base}/{table}"))
        if i.base_name.endswith(".parquet") and i.base_name[: -len(".parquet")] in done
    )


def read_table(output_uri: str, table: str, storage: StorageOptions | None = None) -> pa.Table:
    """A whole committed table (small tables: metrics, errors; or bitstreams of a test corpus)."""
    filesystem, _ = resolve(output_uri, storage)
    files = committed_files(output_uri, table, storage)
    if not files:
        return TABLES[table].empty_table()
    return _concat_parts(files, filesystem, table)


def read_parts(batch: dict[str, np.ndarray], output_uri: str, table: str, storage: StorageOptions | None = None) -> pa.Table:
    """A batch of committed part paths -> their rows (a Ray Data map over part paths)."""
    filesystem, _ = resolve(output_uri, storage)
    return _concat_parts([str(f) for f in batch["part"]], filesystem, table)


def _concat_parts(paths: list[str], filesystem: pafs.FileSystem, table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, filesystem=filesystem, schema=TABLES[table]) for p in paths])
