"""Readers: one work unit (a file group, a WebDataset tar, a Parquet file) -> rows of raw bytes.

Each reader streams its unit (a tar member or a Parquet batch at a time) and yields in-flight
batches (:mod:`pipeline.batch`) of ``unit_id, unit_size, source_uri, bytes, error``;
:func:`pipeline.stages.images.decode_images` decodes them. Nothing is lost quietly: an object that is missing, a tar member that is not an image,
a tar that breaks off, a null cell, each becomes an error row naming where it was. The last
row of a unit carries ``unit_size`` (the number of rows the unit produced), which is how the
driver knows the unit is complete; every unit produces at least one row.

WebDataset: members are grouped by key (the name up to the first dot of its base name, as
webdataset does). The member with an image extension is the image; ``.json``/``.txt``/``.cls``
sidecars are not carried. A key whose members hold no image becomes an error row.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ..batch import Batch, column, error_of, table_of
from ..storage import StorageOptions, resolve

__all__ = ["read_units", "READERS", "RAW_COLUMNS", "IMAGE_EXTENSIONS"]

RAW_COLUMNS = ("unit_id", "unit_size", "source_uri", "bytes", "error")
IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "avif", "ppm", "pgm", "jp2", "heic"}
SIDECARS = {"json", "txt", "cls", "caption", "id", "meta"}
_CHUNK = 16


def _row(raw: bytes, uri: str, unit: str) -> dict[str, Any]:
    return {"bytes": raw, "source_uri": uri, "unit_id": unit, "unit_size": 0, "error": None}


def _error(uri: str, unit: str, exc_type: str, message: str) -> dict[str, Any]:
    return {**_row(b"", uri, unit), "error": error_of("read", message, exc_type)}


def _batch(rows: list[dict[str, Any]]) -> Batch:
    return table_of(rows, RAW_COLUMNS)


def _sized(rows: Iterator[dict[str, Any]], unit: dict[str, Any]) -> Iterator[Batch]:
    """Batches of ``rows``, the very last row carrying the unit's size (one held back to know it).
    A unit with no rows at all (an empty tar) yields one error row, so it still completes. A
    part of a file group knows its group's size already: every row carries it."""
    if unit.get("unit_size"):
        rows = [{**r, "unit_size": int(unit["unit_size"])} for r in rows]
        for start in range(0, len(rows), _CHUNK):
            yield _batch(rows[start : start + _CHUNK])
        return
    pending: list[dict[str, Any]] = []
    total = 0
    for r in rows:
        pending.append(r)
        total += 1
        if len(pending) > _CHUNK:
            yield _batch(pending[:-1])
            pending = pending[-1:]
    if not pending:
        pending, total = [_error(unit["uri"], unit["unit_id"], "ValueError", f"{unit['kind']} unit holds no files")], 1
    pending[-1]["unit_size"] = total
    yield _batch(pending)


def _files(unit: dict[str, Any], storage: StorageOptions) -> Iterator[dict[str, Any]]:
    for uri in unit["members"]:
        try:
            filesystem, path = resolve(uri, storage)
            if isinstance(filesystem, pafs.LocalFileSystem):  # a FIFO would block the read forever
                kind = filesystem.get_file_info(path).type
                if kind not in (pafs.FileType.File, pafs.FileType.NotFound):
                    yield _error(uri, unit["unit_id"], "NotAFileError", f"not a regular file ({kind.name.lower()})")
                    continue
            with filesystem.open_input_file(path) as f:
                yield _row(f.read(), uri, unit["unit_id"])
        except FileNotFoundError:
            yield _error(uri, unit["unit_id"], "FileNotFoundError", "no such object")
        except Exception as e:  # a directory, a special file, a permission: this file's error only
            yield _error(uri, unit["unit_id"], type(e).__name__, str(e) or "unreadable")


def _member_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar(unit: dict[str, Any], storage: StorageOptions) -> Iterator[dict[str, Any]]:
    shard, uid = unit["uri"], unit["unit_id"]
    group_key, group = None, {}
    count, current = 0, None

    def flush() -> Iterator[dict[str, Any]]:
        images = {e: d for e, d in group.items() if e.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS}
        others = {e: d for e, d in group.items() if e.rsplit(".", 1)[-1] not in SIDECARS}
        pick = images or others
        if not pick:
            yield _error(f"{shard}#{group_key}", uid, "ValueError", f"member {group_key} has no image (only {sorted(group)})")
            return
        ext = sorted(pick)[0]
        yield _row(pick[ext], f"{shard}#{group_key}.{ext}", uid)

    try:
        filesystem, path = resolve(shard, storage)
        with filesystem.open_input_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                current = member.name
                key, ext = _member_key(member.name)
                if key != group_key and group:
                    yield from flush()
                    group = {}
                group_key = key
                f = tar.extractfile(member)
                data = f.read() if f else b""
                if len(data) != member.size:  # stream mode returns a short read, not an error
                    raise tarfile.ReadError(f"member {member.name} holds {len(data)} of its {member.size} bytes")
                group[ext] = data
                count += 1
        if group:
            yield from flush()
    except FileNotFoundError:
        yield _error(shard, uid, "FileNotFoundError", "no such shard")
    except (tarfile.TarError, EOFError, OSError) as e:
        if group:
            yield from flush()
        where = f"inside member {current}, after {count} whole members" if current else "before its first member"
        yield _error(shard, uid, type(e).__name__, f"tar shard broke off {where}: {e}")


def _parquet(unit: dict[str, Any], storage: StorageOptions) -> Iterator[dict[str, Any]]:
    uri, uid, image, key = unit["uri"], unit["unit_id"], unit["image_column"], unit["key_column"]
    try:
        filesystem, path = resolve(uri, storage)
        columns = [image] + ([key] if key else [])
        row_number = 0
        for batch in pq.ParquetFile(path, filesystem=filesystem).iter_batches(batch_size=256, columns=columns):
            cells = batch.column(image)
            if pa.types.is_struct(cells.type):  # a Hugging Face {bytes, path} struct
                cells = cells.field("bytes")
            keys = column(batch, key) if key else range(row_number, row_number + batch.num_rows)
            for raw, k in zip(column(pa.table({"image": cells}), "image"), keys):
                name = f"{uri}#{k}"
                yield _row(raw, name, uid) if raw else _error(name, uid, "ValueError", "null or empty image cell")
            row_number += batch.num_rows
    except FileNotFoundError:
        yield _error(uri, uid, "FileNotFoundError", "no such Parquet file")
    except Exception as e:  # a corrupt file: the rows read so far stay, this row says where it broke
        yield _error(uri, uid, type(e).__name__, f"Parquet shard unreadable: {e}")


READERS = {"files": _files, "tar": _tar, "parquet": _parquet}


def read_units(batch: pa.Table, storage: StorageOptions) -> Iterator[Batch]:
    """Ray Data generator: a batch of read items (``WorkUnit.to_items``) -> in-flight batches of raw rows."""
    items = {name: column(batch, name) for name in batch.column_names}
    for i in range(batch.num_rows):
        unit = {name: values[i] for name, values in items.items()}
        yield from _sized(READERS[unit["kind"]](unit, storage), unit)
