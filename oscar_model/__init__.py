"""OSCAR: one-step diffusion image compression at many rates with one model.

    from oscar_model import open_codec
    codec = open_codec("oscar-tiny")            # ONNX Runtime on a CPU, torch on a GPU
    streams = codec.encode(["photo.png"], rates=0.0625)
    images = codec.decode(streams)

``OscarCodec.from_pretrained("oscar-tiny")`` is the torch codec, whatever the machine.

Names are imported lazily so that light modules (``bitstream``, ``images``) do not pull in
torch and diffusers: Ray workers that only decode JPEGs start in a fraction of the time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["open_codec", "StreamCodec", "OscarCodec", "OscarModel", "CodecOptions", "CodecConfig", "ModelInfo", "RateLadder", "RatePoint", "BitstreamError", "ModelWeightsMissing", "MODELS"]
__version__ = "0.4.0"

_LOCATIONS = {
    "open_codec": "runtimes",
    "StreamCodec": "streams",
    "OscarCodec": "codec",
    "OscarModel": "model",
    "CodecOptions": "options",
    "CodecConfig": "config",
    "ModelInfo": "model_info",
    "RateLadder": "rates",
    "RatePoint": "rates",
    "BitstreamError": "bitstream",
    "ModelWeightsMissing": "registry",
    "MODELS": "registry",
}

if TYPE_CHECKING:
    from .bitstream import BitstreamError
    from .codec import OscarCodec
    from .config import CodecConfig, ModelInfo
    from .model import OscarModel
    from .options import CodecOptions
    from .rates import RateLadder, RatePoint
    from .registry import MODELS, ModelWeightsMissing
    from .runtimes import open_codec
    from .streams import StreamCodec


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(f".{_LOCATIONS[name]}", __name__), name)
    raise AttributeError(f"module 'oscar_model' has no attribute {name!r}")
