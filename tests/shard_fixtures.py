"""Shards made by code, in the layouts users already have (nothing binary is committed).

- WebDataset tars as img2dataset writes them: ``000000.jpg`` + ``000000.json`` per sample.
- Parquet with a Hugging Face image struct (``image: {bytes, path}``) and a key column, and
  Parquet with a plain binary column.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def webdataset_tar(images: list[np.ndarray], start: int = 0, broken_member: bool = False,
                   sidecar_only: bool = False) -> bytes:
    """A tar of ``key.jpg`` + ``key.json`` samples; ``broken_member`` appends a ``.jpg`` that is
    not an image, ``sidecar_only`` a sample with a ``.json`` and no image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        key = start
        for arr in images:
            _add(tar, f"{key:06d}.jpg", jpeg(arr))
            _add(tar, f"{key:06d}.json", json.dumps({"key": f"{key:06d}", "status": "success"}).encode())
            key += 1
        if broken_member:
            _add(tar, f"{key:06d}.jpg", b"\xff\xd8\xff\xe0 truncated and not a jpeg")
            key += 1
        if sidecar_only:
            _add(tar, f"{key:06d}.json", b'{"status": "failed_to_download"}')
    return buf.getvalue()


def cut_inside_member(tar_bytes: bytes, member: int) -> bytes:
    """``tar_bytes`` cut halfway through the data of its ``member``-th member (a truncated shard;
    cutting at a fixed length often only drops the tar's zero padding)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        info = tar.getmembers()[member]
    return tar_bytes[: info.offset_data + info.size // 2]


def hf_parquet(images: list[np.ndarray], null_at: int | None = None) -> bytes:
    """Parquet as a Hugging Face datasets export writes it: ``image`` {bytes, path} + ``key``."""
    cells = [None if i == null_at else {"bytes": jpeg(a), "path": f"img-{i}.jpg"} for i, a in enumerate(images)]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"key": [f"img-{i}" for i in range(len(images))], "image": pa.array(cells, type=struct),
                      "caption": ["a photo"] * len(images)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def binary_parquet(images: list[np.ndarray], extra_binary: bool = False) -> bytes:
    """Parquet with a plain binary column ``jpg`` (img2dataset's parquet output has one per format)."""
    columns = {"url": [f"http://example.invalid/{i}.jpg" for i in range(len(images))],
               "jpg": pa.array([jpeg(a) for a in images], type=pa.binary())}
    if extra_binary:
        columns["png"] = pa.array([b"" for _ in images], type=pa.binary())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()
