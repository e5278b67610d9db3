"""OSCAR: one-step diffusion image compression at many rates with one model.

    from oscar_model import OscarCodec
    codec = OscarCodec.from_pretrained("oscar-tiny")
    streams = codec.encode(["photo.png"], rates=0.0625)
    images = codec.decode(streams)
"""

from .bitstream import BitstreamError
from .codec import CodecConfig, OscarCodec
from .rates import RateLadder, RatePoint
from .registry import MODELS, ModelWeightsMissing

__all__ = ["OscarCodec", "CodecConfig", "RateLadder", "RatePoint", "BitstreamError", "ModelWeightsMissing", "MODELS"]
__version__ = "0.1.0"
