"""What to read: the input URIs of a job, from a listed prefix or a manifest, and the Ray
read of their bytes.

Listing millions of objects is slow (ray #40686), so a Parquet/CSV manifest with a ``uri``
column is accepted too; objects it names that do not exist become error rows, never silent
omissions.
"""

from __future__ import annotations

import csv
import io
import math
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from .storage import StorageOptions, resolve

__all__ = ["list_files", "read_manifest", "source_uris", "read_files", "MAX_READ_BLOCKS"]


def _uri_for(base_uri: str, base_path: str, path: str) -> str:
    """Rebuilds a full URI for a listed path, keeping the input's scheme."""
    parsed = urlparse(base_uri)
    if parsed.scheme in ("", "file"):
        return path
    return f"{parsed.scheme}://{path}"


def list_files(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Every file under a prefix (recursively, sorted), hidden and ``_``-prefixed names skipped.

    Non-image files are kept on purpose: they become error rows, not silent omissions.
    """
    filesystem, path = resolve(uri, options)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [_uri_for(uri, path, path)]
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri} does not exist")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [
        i.path for i in infos
        if i.type == pafs.FileType.File and not any(part.startswith((".", "_")) for part in i.path[len(path):].split("/"))
    ]
    return sorted(_uri_for(uri, path, f) for f in files)


def read_manifest(uri: str, options: StorageOptions | None = None) -> list[str]:
    """A Parquet or CSV manifest with a ``uri`` (or ``path``/``url``) column -> URIs, in order."""
    filesystem, path = resolve(uri, options)
    with filesystem.open_input_file(path) as f:
        raw = f.read()
    if path.endswith(".parquet"):
        table = pq.read_table(pa.BufferReader(raw))
        columns = table.column_names
        rows = None
    else:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        columns = list(rows[0]) if rows else []
    col = next((c for c in ("uri", "path", "url") if c in columns), None)
    if col is None:
        raise ValueError(f"manifest {uri} needs a 'uri' column (or 'path'/'url'); it has {columns}")
    values = table.column(col).to_pylist() if rows is None else [r[col] for r in rows]
    return [v for v in values if v]


def source_uris(input_uri: str, options: StorageOptions | None = None) -> list[str]:
    """A manifest file (.parquet/.csv) or a prefix to list."""
    if input_uri.endswith((".parquet", ".csv")):
        return read_manifest(input_uri, options)
    return list_files(input_uri, options)


MAX_READ_BLOCKS = 10_000


def read_files(uris: list[str], storage: StorageOptions, batch_size: int = 2):
    """The raw bytes of ``uris`` as a Ray Dataset of (bytes, path) rows.

    ``batch_size`` files per read task and per block: small blocks are what spreads the work
    evenly over an actor pool (an actor task takes a whole block; 12 Kodak images in one
    block kept one actor busy for 24 s while the other waited). Missing objects are skipped
    here; the runner turns them into error rows.
    """
    import ray

    filesystem, _ = resolve(uris[0], storage)
    paths = [u.split("://", 1)[1] if "://" in u else u for u in uris]
    return ray.data.read_binary_files(
        paths, filesystem=filesystem, include_paths=True, ignore_missing_paths=True,
        override_num_blocks=max(1, min(math.ceil(len(paths) / batch_size), MAX_READ_BLOCKS)), num_cpus=0.25,
    )
