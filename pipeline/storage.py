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

__all__ = ["StorageOptions", "resolve", "join_uri", "write_bytes", "write_json", "write_png", "read_json", "is_file"]


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


def is_file(uri: str, storage: StorageOptions | None = None) -> bool:
    filesystem, path = resolve(uri, storage)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_json(uri: str, storage: StorageOptions | None = None) -> dict:
    filesystem, path = resolve(uri, storage)
    with filesystem.open_input_file(path) as f:
        return json.loads(f.read())
