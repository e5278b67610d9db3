"""Object storage: one pyarrow filesystem for any URI (s3://, gs://, local), and small writes.

S3 credentials and endpoint come from explicit options or the standard AWS variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL). pyarrow's
S3FileSystem ignores AWS_ENDPOINT_URL, so it is passed on here as ``endpoint_override``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
from pyarrow import fs as pafs

__all__ = ["StorageOptions", "resolve", "s3_settings", "delete_file", "write_bytes", "write_json", "write_png", "read_json", "read_text", "is_file", "check_output"]


@dataclass(frozen=True)
class StorageOptions:
    """Explicit object-store settings; None falls back to the AWS_* environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None


def s3_settings(opts: StorageOptions) -> dict[str, str]:
    """Region, keys and endpoint (``scheme://host:port``) from ``opts``, else the AWS_* variables.

    One place for both clients: pyarrow's S3FileSystem (workers' data files) and delta-rs
    (the driver's commits) must talk to the same store.
    """
    out = {"region": opts.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"}
    key = opts.access_key or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = opts.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        out.update(access_key=key, secret_key=secret)
    endpoint = opts.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        out["endpoint"] = f"{parsed.scheme or 'https'}://{parsed.netloc}"
    return out


def _s3(opts: StorageOptions) -> pafs.S3FileSystem:
    s3 = s3_settings(opts)
    kwargs: dict = {"region": s3["region"]}
    if "access_key" in s3:
        kwargs.update(access_key=s3["access_key"], secret_key=s3["secret_key"])
    if "endpoint" in s3:
        scheme, netloc = s3["endpoint"].split("://", 1)
        kwargs.update(endpoint_override=netloc, scheme=scheme)
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


def write_bytes(dir_uri: str, name: str, data: bytes, storage: StorageOptions | None = None) -> None:
    filesystem, base = resolve(dir_uri, storage)
    filesystem.create_dir(base, recursive=True)
    with filesystem.open_output_stream(f"{base}/{name}") as f:
        f.write(data)


def write_json(dir_uri: str, name: str, payload: dict, storage: StorageOptions | None = None) -> None:
    write_bytes(dir_uri, name, json.dumps(payload, indent=1, default=str).encode(), storage)


def write_png(dir_uri: str, name: str, image: np.ndarray, storage: StorageOptions | None = None) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    write_bytes(dir_uri, name, buf.getvalue(), storage)


def check_output(uri: str, storage: StorageOptions | None = None) -> None:
    """Refuses, in one line and before any work, an output that cannot be written: an existing file, a
    path under a file, or a local folder this process may not write. (Object stores are checked by
    the first write: a permission there is only known by trying.)"""
    if urlparse(uri).scheme not in ("", "file"):
        return
    path = os.path.abspath(urlparse(uri).path if uri.startswith("file://") else uri)
    if os.path.isfile(path):
        raise NotADirectoryError(f"--output {uri} is a file: give a folder (new or a job's earlier output)")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(f"--output {uri} lies under {parent}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--output {uri}: {parent} is not writable by this user")


def is_file(uri: str, storage: StorageOptions | None = None) -> bool:
    filesystem, path = resolve(uri, storage)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_text(uri: str, storage: StorageOptions | None = None) -> str:
    filesystem, path = resolve(uri, storage)
    with filesystem.open_input_file(path) as f:
        return f.read().decode("utf-8")


def read_json(uri: str, storage: StorageOptions | None = None) -> dict:
    return json.loads(read_text(uri, storage))


def delete_file(uri: str, storage: StorageOptions | None = None) -> None:
    """Deletes ``uri`` if it exists."""
    filesystem, path = resolve(uri, storage)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        filesystem.delete_file(path)
