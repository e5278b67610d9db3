"""How a codec runs, chosen by whoever runs it: :class:`CodecOptions`.

Light on purpose (no torch): a job's driver builds and checks the options it ships to its actors.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .images import DEFAULT_MAX_PIXELS

__all__ = ["CodecOptions", "PRECISIONS", "parse_tile", "add_codec_arguments"]

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class CodecOptions:
    """How a codec runs, chosen by whoever runs it (not by the model folder): what it refuses,
    how it tiles and at what precision it decodes. One object, so the CLI, the jobs and each
    stage of a job pass the same three choices together instead of one by one.

    Attributes:
        max_pixels: the largest image, counted padded to the model's stride, that an input or a
            stream may claim: the decoder's work and memory are bounded by it before anything
            is allocated.
        tile: ``"auto"``, the model's tiles (``oscar.json`` "tiling"); ``"off"``, every image
            whole, as the release's test script codes it (memory grows with the image: a GPU's
            choice); an int N, tiles of N latent pixels. An encoder choice that changes some
            indices (the README's divergences); the stream does not record it. ``"64"`` is
            read as 64.
        precision: the decoder's networks in ``"fp32"`` (the reference), ``"bf16"`` (autocast
            on any device) or ``"auto"`` (bf16 on CUDA, where it is about twice as fast, fp32
            elsewhere). Encoding is always fp32, so indices never depend on bf16 rounding.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    tile: str | int = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if int(self.max_pixels) <= 0:
            raise ValueError(f"--max-pixels must be positive, got {self.max_pixels}")
        object.__setattr__(self, "tile", parse_tile(self.tile))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CodecOptions:
        """The options :func:`add_codec_arguments`' flags name (precision ``auto`` where not declared)."""
        if getattr(args, "refine", 0) < 0:
            raise ValueError(f"--refine must be >= 0, got {args.refine}")
        return cls(args.max_pixels, args.tile, getattr(args, "precision", "auto"))


def parse_tile(text: str | int) -> str | int:
    """``--tile``: ``auto``, ``off`` or a positive number of latent pixels; a one-line error otherwise."""
    if text in ("auto", "off"):
        return text
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n <= 0:
        raise ValueError(f"--tile {text!r}: expected auto, off or a tile side in latent pixels (e.g. 64)")
    return n


def add_codec_arguments(parser: argparse.ArgumentParser, precision: bool = True, refine: bool = True) -> None:
    """The flags of :class:`CodecOptions` (and the encoder's ``--refine``), declared once for the
    ``oscar`` command and every job; :meth:`CodecOptions.from_args` reads them back."""
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse larger images and streams (a job: an error row), counted padded to the model's "
                             f"stride (default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--tile", default="auto",
                        help="large images: auto (the model's tiles), off (every image whole, as the authors' release "
                             "codes it; memory grows with the image) or a tile side N in latent pixels (default auto)")
    if precision:
        parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                            help="the decoder's networks: fp32 (the reference), bf16, or auto (bf16 on CUDA, fp32 "
                                 "elsewhere)")
    if refine:
        parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                            help="encoder effort: STEPS of index search through the decoder per image and level; "
                                 "better images, same decoder and format, each step costing about one decode and its "
                                 "backward pass (16 is a good choice; default 0)")

