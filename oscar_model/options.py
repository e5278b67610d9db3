"""How a codec runs, chosen by whoever runs it: :class:`CodecOptions`.

Light on purpose (no torch): a job's driver builds and checks the options it ships to its actors.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from .images import DEFAULT_MAX_PIXELS

__all__ = ["CodecOptions", "PRECISIONS", "RUNTIMES", "ENCODE_THREADS", "parse_tile", "add_codec_arguments", "free_cores", "THREADS_ENV"]

THREADS_ENV = "OSCAR_THREADS"
"""The default of ``--threads`` where the flag is not given."""

PRECISIONS = ("auto", "fp32", "bf16")

RUNTIMES = ("auto", "torch", "onnxruntime")
"""What runs the networks: ``torch`` (the reference, and the GPU's), ``onnxruntime`` (the model's
graphs exported once, :mod:`oscar_model.onnx_codec`: the fast start and the CPU's), or ``auto``
(:func:`oscar_model.runtimes.chosen_runtime`)."""

ENCODE_THREADS = 1
"""Threads while encoding on CPU, whoever calls and in either runtime: float sums in another
order can flip a VQ index (2 of 45 streams differed between 1 and 2 torch threads), so the CLI,
the job's actors and library callers all encode at this one count and write the same bytes on
one machine."""


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
        threads: the decoder's CPU threads (None: ``$OSCAR_THREADS``, else for one command the
            cores the load average leaves free (:func:`free_cores`), and for a job's actor 1, since
            Ray gives each actor its share of the cores). Threads never change a stream or a
            decoded image; encoding always runs :data:`ENCODE_THREADS`.
        runtime: what runs the networks, one of :data:`RUNTIMES`. Streams do not depend on it.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    tile: str | int = "auto"
    precision: str = "auto"
    threads: int | None = None
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if int(self.max_pixels) <= 0:
            raise ValueError(f"--max-pixels must be positive, got {self.max_pixels}")
        object.__setattr__(self, "tile", parse_tile(self.tile))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        threads = self.threads if self.threads is not None else os.environ.get(THREADS_ENV)
        if threads is not None:
            try:
                threads = int(threads)
            except ValueError:
                threads = 0
            if threads < 1:
                raise ValueError(f"--threads / ${THREADS_ENV} must be a whole number >= 1, got {threads}")
        object.__setattr__(self, "threads", threads)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CodecOptions:
        """The options :func:`add_codec_arguments`' flags name (precision ``auto`` where not declared)."""
        if getattr(args, "refine", 0) < 0:
            raise ValueError(f"--refine must be >= 0, got {args.refine}")
        return cls(args.max_pixels, args.tile, getattr(args, "precision", "auto"), getattr(args, "threads", None),
                   getattr(args, "runtime", "auto"))


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
    parser.add_argument("--threads", type=int, default=None,
                        help=f"the decoder's CPU threads (default: ${THREADS_ENV}, else for one command the cores the "
                             "load average leaves free, for each actor of a job 1)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs the networks: onnxruntime (fast on a CPU; the graphs are exported once and "
                             "cached), torch (the reference; the GPU's), or auto: onnxruntime on a CPU where the model "
                             "exports, torch otherwise (default auto). Streams are the same format either way")
    if refine:
        parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                            help="encoder effort: STEPS of index search through the decoder per image and level; "
                                 "better images, same decoder and format, each step costing about one decode and its "
                                 "backward pass (16 is a good choice; default 0)")



def free_cores() -> int:
    """The cores this process may use that the 1-minute load average leaves idle (at least 1).

    Why: torch takes every core by default, and on a shared machine that oversubscribes it (one
    thread decoded twice as fast as the default on a loaded 2-core machine).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))
