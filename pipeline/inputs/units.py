"""What to read: an input URI -> work units (the resume granularity), planned on the driver.

    a prefix of .tar files, a .tar, a comma list or {000..007} range   one unit per WebDataset shard
    a .parquet (or a prefix of them) with an image column            one unit per Parquet file
    a .parquet / .csv with a ``uri`` column (no image column)        a manifest: file groups
    any other prefix                                                 loose files: file groups

File groups are content-defined: a group ends after a file whose URI hashes to 0 mod the
group size (or at twice that size), so the same listing always gives the same groups and an
added file re-forms only the group it lands in. A unit's id is stable across runs (the shard
URI, or a hash of a group's members); keys of what a shard holds are ``<shard>#<member key>``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ..batch import column
from ..storage import StorageOptions, resolve
from .readers import IMAGE_EXTENSIONS

__all__ = ["WorkUnit", "ImageColumns", "plan_units", "list_files", "read_manifest", "image_columns", "expand_braces",
           "GROUP_SIZE"]

GROUP_SIZE = 64
"""Loose files per unit, on average."""


@dataclass(frozen=True)
class ImageColumns:
    """Which Parquet columns hold the image bytes and the key (None: detect)."""

    image: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class WorkUnit:
    """One unit of work: ``kind`` is "files", "tar" or "parquet" (redecode adds "delta-file").

    A file group's ``members`` are a slice of one Arrow string array that holds the whole
    listing (:func:`_file_groups`): the plan lives on the driver for the whole job, and 80,000
    URIs as Python strings in tuples cost about 3x what one Arrow buffer does. Python strings
    are made only for the slice of units in flight (:meth:`to_items`). The unit's identity is
    its id, a hash of its members, so they take no part in equality.
    """

    unit_id: str
    kind: str
    uri: str
    members: Sequence[str] | pa.StringArray = field(default=(), compare=False)
    columns: ImageColumns = field(default_factory=ImageColumns)

    def member_uris(self, start: int = 0, stop: int | None = None) -> list[str]:
        part = self.members[start:stop]
        return part.to_pylist() if isinstance(part, pa.Array) else list(part)

    def to_item(self, members: list[str] | None = None) -> dict:
        """The unit as a read item; ``members``: a part of its members (default: all of them)."""
        return {"unit_id": self.unit_id, "kind": self.kind, "uri": self.uri,
                "members": self.member_uris() if members is None else members,
                "image_column": self.columns.image, "key_column": self.columns.key, "unit_size": 0}

    def to_items(self, files_per_item: int) -> list[dict]:
        """Read items: a file group split into items of ``files_per_item`` files, each knowing the
        group's size (so its rows spread over the actor pool: a read task's output is one block,
        and a block goes to one actor); any other unit is one item."""
        if self.kind != "files" or len(self.members) <= files_per_item:
            return [{**self.to_item(), "unit_size": len(self.members) if self.kind == "files" else 0}]
        step = max(1, files_per_item)
        return [{**self.to_item(self.member_uris(i, i + step)), "unit_size": len(self.members)}
                for i in range(0, len(self.members), step)]


def _uri_for(base_uri: str, path: str) -> str:
    """Rebuilds a full URI for a listed path, keeping the input's scheme."""
    scheme = urlparse(base_uri).scheme
    return path if scheme in ("", "file") else f"{scheme}://{path}"


def list_files(uri: str, options: StorageOptions | None = None) -> list[str]:
    """Every file under a prefix (recursively, sorted), hidden and ``_``-prefixed names skipped.

    Non-image files are kept on purpose: they become error rows, not silent omissions; so are
    entries that are neither files nor folders (a FIFO, a socket) and folders named like an
    image (``dir-like.jpg``).
    """
    filesystem, path = resolve(uri, options)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [_uri_for(uri, path)]
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri} does not exist")
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [
        i.path for i in infos
        if _listed(i) and not any(part.startswith((".", "_")) for part in i.path[len(path):].split("/"))
    ]
    return sorted(_uri_for(uri, f) for f in files)


def _listed(info: pafs.FileInfo) -> bool:
    if info.type == pafs.FileType.Directory:
        return info.extension.lower() in IMAGE_EXTENSIONS
    return info.type != pafs.FileType.NotFound


def read_manifest(uri: str, options: StorageOptions | None = None) -> list[str]:
    """A Parquet or CSV manifest with a ``uri`` (or ``path``/``url``) column -> URIs, in order."""
    filesystem, path = resolve(uri, options)
    if path.endswith(".parquet"):
        table = pq.read_table(path, filesystem=filesystem)
        columns, rows = table.column_names, None
    else:
        with filesystem.open_input_file(path) as f:
            rows = list(csv.DictReader(io.StringIO(f.read().decode("utf-8"))))
        columns = list(rows[0]) if rows else []
    col = next((c for c in ("uri", "path", "url") if c in columns), None)
    if col is None:
        raise ValueError(f"manifest {uri} needs a 'uri' column (or 'path'/'url'); it has {columns}")
    values = column(table, col) if rows is None else [r[col] for r in rows]
    return [v for v in values if v]


def _is_image_type(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    return pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))


def image_columns(schema: pa.Schema, wanted: ImageColumns, where: str) -> ImageColumns | None:
    """The image and key columns of a Parquet schema (None: no image column, maybe a manifest).

    A binary column or a Hugging Face ``{bytes, path}`` struct is an image column; with more
    than one, ``--image-column`` must choose. The key defaults to ``key``/``__key__``/``id``
    when present, else the row number.
    """
    names = schema.names
    candidates = [f.name for f in schema if _is_image_type(f.type)]
    if wanted.image:
        if wanted.image not in names or not _is_image_type(schema.field(wanted.image).type):
            raise ValueError(f"{where}: --image-column {wanted.image!r} is not a binary or {{bytes, path}} column; "
                             f"columns: {_describe(schema)}")
        image = wanted.image
    elif len(candidates) == 1:
        image = candidates[0]
    elif candidates:
        raise ValueError(f"{where}: several image-like columns {candidates}; choose one with --image-column")
    else:
        return None
    if wanted.key and wanted.key not in names:
        raise ValueError(f"{where}: --key-column {wanted.key!r} not found; columns: {_describe(schema)}")
    key = wanted.key or next((c for c in ("key", "__key__", "id") if c in names and c != image), None)
    return ImageColumns(image, key)


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} ({f.type})" for f in schema)


def expand_braces(spec: str) -> list[str]:
    """``a/{000..002}.tar`` -> a/000.tar a/001.tar a/002.tar (WebDataset's shard notation)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if not m:
        return [spec]
    lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
    return [x for i in range(lo, hi + 1) for x in expand_braces(spec[: m.start()] + f"{i:0{width}d}" + spec[m.end():])]


def _file_groups(uris: list[str], size: int) -> list[WorkUnit]:
    """Content-defined groups of ``uris`` (see the module doc), their members slices of one Arrow array."""
    listing = pa.array(uris, pa.string())
    units, start = [], 0
    for i, uri in enumerate(uris):
        if int(hashlib.sha1(uri.encode()).hexdigest()[:8], 16) % size == 0 or i + 1 - start >= 2 * size:
            units.append((start, i + 1))
            start = i + 1
    if start < len(uris):
        units.append((start, len(uris)))
    return [WorkUnit("files:" + hashlib.sha1("\n".join(uris[a:b]).encode()).hexdigest()[:24], "files", uris[a],
                     listing[a:b]) for a, b in units]


def _parquet_units(files: list[str], options: StorageOptions | None, wanted: ImageColumns) -> list[WorkUnit] | None:
    """Parquet shards with images (None when the first has no image column: a manifest)."""
    filesystem, path = resolve(files[0], options)
    schema = pq.read_schema(path, filesystem=filesystem)
    cols = image_columns(schema, wanted, files[0])
    if cols is None:
        if wanted.image is None and not ({"uri", "path", "url"} & set(schema.names)):
            raise ValueError(f"{files[0]}: no image column (binary, or a {{bytes, path}} struct) and no 'uri' column; "
                             f"columns: {_describe(schema)}")
        return None
    return [WorkUnit(uri, "parquet", uri, columns=cols) for uri in files]


def plan_units(input_uri: str, options: StorageOptions | None = None, columns: ImageColumns | None = None,
               group_size: int = GROUP_SIZE) -> list[WorkUnit]:
    """The work units of ``input_uri`` (see the module doc), in a stable order."""
    columns = columns or ImageColumns()
    specs = [u for part in input_uri.split(",") for u in expand_braces(part.strip()) if u]
    if len(specs) > 1 or specs[0].endswith(".tar"):
        if not all(s.endswith(".tar") for s in specs):
            raise ValueError(f"a list of inputs must all be .tar shards: {input_uri}")
        return [WorkUnit(s, "tar", s) for s in specs]
    if group_size < 1:
        raise ValueError(f"group size must be >= 1, got {group_size}")
    if input_uri.endswith(".csv"):
        return _file_groups(read_manifest(input_uri, options), group_size)
    files = list_files(input_uri, options)
    if input_uri.endswith(".parquet"):
        return _parquet_units(files, options, columns) or _file_groups(read_manifest(input_uri, options), group_size)
    shards = [f for f in files if f.endswith(".tar")]
    parquets = [f for f in files if f.endswith(".parquet")]
    if parquets and len(parquets) == len(files):
        units = _parquet_units(parquets, options, columns)
        if units is not None:
            return units
    loose = [f for f in files if not f.endswith(".tar")]
    return [WorkUnit(s, "tar", s) for s in shards] + _file_groups(loose, group_size)
