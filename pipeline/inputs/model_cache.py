"""Model folders on object storage (``--model s3://models/oscar-sd21``): no shared volume needed.

The driver reads only the folder's ``oscar.json`` (name, ladder, and the model hash that
``save_pretrained`` records). Each actor fetches the whole folder once per node into a local
cache named by that hash, under a file lock so that the actors of one node fetch it once, and
the weights it loads are checked against the hash (:meth:`ModelInfo.check`, in
``pipeline.stages.oscar.load_codec``): a changed remote folder cannot write rows under a stale id.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from pyarrow import fs as pafs

from oscar_model.model_info import ModelInfo
from oscar_model.registry import CONFIG_NAME

from ..storage import StorageOptions, read_text, resolve

__all__ = ["is_remote", "model_info", "local_model_folder", "CACHE_ENV"]

CACHE_ENV = "OSCAR_MODEL_CACHE"
"""Where fetched model folders go (default ``~/.cache/oscar/remote``)."""


def is_remote(model: str) -> bool:
    return urlparse(str(model)).scheme not in ("", "file") and len(urlparse(str(model)).scheme) > 1


def model_info(model: str, storage: StorageOptions | None = None) -> ModelInfo:
    """A registered name, a local folder, or a folder on object storage -> its info."""
    if not is_remote(model):
        return ModelInfo.read(model)
    folder = str(model).rstrip("/")
    uri = f"{folder}/{CONFIG_NAME}"
    try:
        text = read_text(uri, storage)
    except FileNotFoundError:
        raise FileNotFoundError(f"{model} is not an OSCAR model folder: {uri} does not exist") from None
    return ModelInfo.from_text(folder, text)


def local_model_folder(info: ModelInfo, storage: StorageOptions | None = None) -> str:
    """``info``'s folder on this node: fetched once into the cache, reused after."""
    root = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "oscar" / "remote"))
    root.mkdir(parents=True, exist_ok=True)
    target = root / info.model_hash[:32]
    done = target / ".fetched"
    if done.exists():
        return str(target)
    with open(root / f"{info.model_hash[:32]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other actors wait, then find it fetched
        if not done.exists():
            partial = root / f"{info.model_hash[:32]}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _copy_folder(info.path, partial, storage)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            done.write_text(json.dumps({"from": info.path, "model_hash": info.model_hash}))
    return str(target)


def _copy_folder(uri: str, dest: Path, storage: StorageOptions | None) -> None:
    filesystem, base = resolve(uri, storage)
    for entry in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type != pafs.FileType.File:
            continue
        out = dest / entry.path[len(base):].lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(entry.path) as src, open(out, "wb") as f:
            shutil.copyfileobj(src, f, length=8 << 20)
