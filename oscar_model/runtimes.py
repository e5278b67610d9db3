"""Choosing what runs a model's networks, and opening the codec with it.

``--runtime auto`` (the default) picks ONNX Runtime where it is the fast choice and can run the
model: on a CPU, for a model whose networks export (oscar-tiny's design), when ``onnxruntime``
is installed and no encoder-side gradient search (``--refine``) is asked. Everything else runs
in torch: a GPU, the SD 2.1 model, ``--refine``. The choice never changes the stream format.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .config import read_model_config
from .onnx_codec import exportable
from .options import CodecOptions, free_cores
from .streams import StreamCodec

__all__ = ["chosen_runtime", "open_codec", "cuda_visible"]


def cuda_visible() -> bool:
    """Whether this process would see an NVIDIA GPU, asked without importing torch: the driver's
    proc file, unless ``CUDA_VISIBLE_DEVICES`` hides every device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def chosen_runtime(name_or_path: str | Path, device: str | None = None, options: CodecOptions | None = None,
                   gradients: bool = False) -> str:
    """``"torch"`` or ``"onnxruntime"``: ``options.runtime``, or for ``auto`` the rule above."""
    asked = (options or CodecOptions()).runtime
    on_gpu = device == "cuda" or (device is None and cuda_visible())
    if asked == "onnxruntime":
        if gradients:
            raise ValueError("--refine searches the indices through the decoder's gradients: run it with --runtime torch")
        if device == "cuda":
            raise ValueError("--runtime onnxruntime runs on the CPU; use --runtime torch (or auto) with --device cuda")
        return asked
    if asked == "torch":
        return asked
    _, config = read_model_config(name_or_path)
    if gradients or on_gpu or not exportable(config) or not config.model_hash:
        return "torch"
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def open_codec(name_or_path: str | Path, device: str | None = None, options: CodecOptions | None = None,
               gradients: bool = False) -> StreamCodec:
    """The codec of a registered name or model folder, on the runtime :func:`chosen_runtime` picks.

    Torch is imported only when torch runs it. ``options.threads`` (None: the cores the load
    average leaves free) sets the decoder's threads in either runtime.
    """
    options = options or CodecOptions()
    if chosen_runtime(name_or_path, device, options, gradients) == "onnxruntime":
        from .onnx_codec import OnnxCodec

        return OnnxCodec.from_pretrained(name_or_path, options=options)
    import torch

    from .codec import OscarCodec

    torch.set_num_threads(options.threads or free_cores())
    return OscarCodec.from_pretrained(name_or_path, device=device, options=options)
