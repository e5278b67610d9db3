"""Where images come from and where tables go: any pyarrow filesystem (s3://, gs://, local).

S3 credentials and endpoint come from explicit options or the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL). pyarrow's
S3FileSystem ignores AWS_ENDPOINT_URL, so it is passed on here as ``endpoint_override``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

__all__ = ["StorageOptions", "resolve", "list_files", "read_manifest", "join_uri", "source_uris"]


@dataclass(frozen=True)
class StorageOptions:
    """Explicit object-store settings; None falls back to the AWS_* environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None


def _s3(opts: StorageOptions) -> pafs.S3FileSystem:
    endpoint = opts.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    kwargs: dict = {"region": opts.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    key = opts.access_key or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = opts.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret)
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, options: StorageOptions | None = None) -> tuple[pafs.FileSystem, str]:
    """URI -> (filesystem, path inside it). Local paths may be relative."""
    options = options or StorageOptions()
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        return _s3(options), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(path)
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


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
