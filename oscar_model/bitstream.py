"""The OSCAR bitstream container (NumPy only; no torch).

Every byte below is counted in bpp. Multi-byte integers are big-endian; "varint" is
unsigned LEB128 (7 bits a byte, low group first, high bit = more follows).

    offset  size  field
    0       4     magic b"OSCR"
    4       1     format version (1)
    5       4     model id: first 4 bytes of SHA-256 over the model's weights
    9       1     rate level (index into the model's ladder)
    10      1     flags: bits 0-1 payload coding (0 fixed-length, 1 rANS, 2 context rANS);
                        bit 2 folded (a thin image coded folded, see :mod:`oscar_model.folding`);
                        other bits 0
    11      var   original image height, varint
    ..      var   original image width, varint
    ..      1     C, number of latent channels
    ..      C     per-channel RMS of the original latent, u8 q: rms = 2 ** ((q - 128) / 20)
    ..      var   payload length n in bytes, varint
    ..      n     payload: the VQ indices, group-major then row-major (context rANS: anti-diagonals)
    end-4   4     CRC-32 (zlib) of every byte before it

A 768x512 stream at level 0 has a 24-byte frame around its payload.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "CODING_FIXED",
    "CODING_RANS",
    "CODING_CONTEXT",
    "BitstreamError",
    "Container",
    "pack",
    "unpack",
    "quantize_rms",
    "dequantize_rms",
]

MAGIC = b"OSCR"
FORMAT_VERSION = 1
CODING_FIXED = 0
CODING_RANS = 1
CODING_CONTEXT = 2
FLAG_FOLDED = 0b100
_CODINGS = {CODING_FIXED: "fixed", CODING_RANS: "rans", CODING_CONTEXT: "rans-context"}
RMS_STEPS_PER_OCTAVE = 20
RMS_ZERO_CODE = 128


class BitstreamError(ValueError):
    """A stream that cannot be decoded: truncated, corrupted, another model's or version's."""


@dataclass(frozen=True)
class Container:
    model_id: str
    """8 hex digits (4 bytes on the wire), as :attr:`OscarModel.model_id` writes it."""
    rate_index: int
    coding: int
    height: int
    width: int
    rms_codes: tuple[int, ...]
    payload: bytes
    version: int = FORMAT_VERSION
    folded: bool = False
    """The image was coded folded (:mod:`oscar_model.folding`); height and width stay the original's."""

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not re.fullmatch(r"[0-9a-f]{8}", self.model_id):
            raise ValueError(f"model_id must be 8 lowercase hex digits, got {self.model_id!r}")
        if not 0 <= self.rate_index < 256:
            raise ValueError(f"rate_index={self.rate_index} must fit one byte")
        if self.coding not in _CODINGS:
            raise ValueError(f"coding={self.coding}; expected one of {sorted(_CODINGS)}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size {self.height}x{self.width} must be positive")
        if not 1 <= len(self.rms_codes) < 256 or any(not 0 <= q < 256 for q in self.rms_codes):
            raise ValueError("rms_codes must be 1..255 values in [0, 255]")

    @property
    def coding_name(self) -> str:
        return _CODINGS[self.coding]

    def header_dict(self) -> dict:
        return {
            "format_version": self.version,
            "model_id": self.model_id,
            "rate_index": self.rate_index,
            "coding": self.coding_name,
            "height": self.height,
            "width": self.width,
            "latent_rms": [round(float(v), 5) for v in dequantize_rms(self.rms_codes)],
            "payload_bytes": len(self.payload),
            "folded": self.folded,
        }


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamError(f"stream truncated while reading {what} ({len(self.data)} bytes in all)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        """A minimal LEB128 varint of at most 5 bytes: one value, one encoding (a trailing 0x00
        group would let one image have several valid streams)."""
        value, shift = 0, 0
        for i in range(5):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise BitstreamError(f"{what} is not a minimal varint")
                return value
            shift += 7
        raise BitstreamError(f"{what} is not a valid varint")


def pack(c: Container) -> bytes:
    body = bytearray(MAGIC)
    body += bytes([c.version]) + bytes.fromhex(c.model_id) + bytes([c.rate_index, c.coding | (FLAG_FOLDED if c.folded else 0)])
    body += _varint(c.height) + _varint(c.width)
    body += bytes([len(c.rms_codes)]) + bytes(c.rms_codes)
    body += _varint(len(c.payload)) + c.payload
    body += zlib.crc32(bytes(body)).to_bytes(4, "big")
    return bytes(body)


def unpack(data: bytes) -> Container:
    """Parses and checks a stream; raises :class:`BitstreamError` on anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) + 4 or data[:4] != MAGIC:
        raise BitstreamError("not an OSCAR stream (magic bytes 'OSCR' missing)")
    version = data[4] if len(data) > 4 else None
    if version != FORMAT_VERSION:
        raise BitstreamError(f"format version {version} is not supported; this decoder reads version {FORMAT_VERSION}")
    r = _Reader(data[:-4])
    r.take(5, "magic and version")
    model_id = r.take(4, "model id").hex()
    rate_index, flags = r.take(2, "rate level and flags")
    if flags >> 3:
        raise BitstreamError(f"flags byte {flags:#04x} has reserved bits set")
    coding, folded = flags & 0b11, bool(flags & FLAG_FOLDED)
    height = r.varint("height")
    width = r.varint("width")
    (n_ch,) = r.take(1, "channel count")
    rms = tuple(r.take(n_ch, "latent norms"))
    n_payload = r.varint("payload length")
    payload = r.take(n_payload, "payload")
    if r.pos != len(r.data):
        raise BitstreamError(f"{len(r.data) - r.pos} unexpected bytes after the payload (or a truncated stream)")
    crc = int.from_bytes(data[-4:], "big")
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError("CRC-32 mismatch: the stream is corrupted")
    try:
        return Container(model_id, rate_index, coding, height, width, rms, payload, version, folded)
    except ValueError as e:
        raise BitstreamError(f"invalid header: {e}") from e


def quantize_rms(rms: np.ndarray) -> tuple[int, ...]:
    """Per-channel latent RMS -> u8 codes on a log2 grid: 1/20 octave (error <= 1.75%), range 0.012-81."""
    rms = np.maximum(np.asarray(rms, dtype=np.float64), 1e-12)
    q = np.rint(np.log2(rms) * RMS_STEPS_PER_OCTAVE) + RMS_ZERO_CODE
    return tuple(int(v) for v in np.clip(q, 0, 255))


def dequantize_rms(codes: tuple[int, ...] | np.ndarray) -> np.ndarray:
    return np.exp2((np.asarray(codes, dtype=np.float64) - RMS_ZERO_CODE) / RMS_STEPS_PER_OCTAVE)
