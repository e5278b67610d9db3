"""Coding of VQ indices: rANS under a static per-model table, or fixed-length bits.

The tables are integer counts stored with the weights, turned into float64 probabilities by
exact division, so encoder and decoder build bit-identical models on any machine (the
cross-hardware desync of float entropy models, CompressAI #279/#309, cannot happen).
Whichever of rANS and fixed-length is shorter for a stream is used; the header says which.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from .bitstream import CODING_FIXED, CODING_RANS, BitstreamError

__all__ = ["encode_indices", "decode_indices", "counts_to_table", "TABLE_FLOOR"]

TABLE_FLOOR = 1.0
"""Added to every histogram count so that no symbol has zero probability."""


def counts_to_table(counts: np.ndarray) -> np.ndarray:
    """Histogram (G, K) -> integer table with the floor applied (what ships with the weights)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.rint(counts) + TABLE_FLOOR


def _models(table: np.ndarray) -> list:
    probs = np.asarray(table, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return [constriction.stream.model.Categorical(p, perfect=False) for p in probs]


def _fixed_bits(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size)))


def _encode_fixed(indices: np.ndarray, codebook_size: int) -> bytes:
    bits = _fixed_bits(codebook_size)
    flat = indices.astype(np.uint32).reshape(-1)
    bit_matrix = (flat[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint32)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).reshape(-1)).tobytes()


def _decode_fixed(payload: bytes, n: int, codebook_size: int) -> np.ndarray:
    bits = _fixed_bits(codebook_size)
    need = math.ceil(n * bits / 8)
    if len(payload) != need:
        raise BitstreamError(f"fixed-length payload has {len(payload)} bytes, expected {need}")
    unpacked = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[: n * bits].reshape(n, bits)
    values = (unpacked.astype(np.uint32) << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(axis=1)
    if values.size and values.max() >= codebook_size:
        raise BitstreamError("payload holds an index outside the codebook")
    return values.astype(np.int64)


def _encode_rans(indices: np.ndarray, table: np.ndarray) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    models = _models(table)
    # A stack coder decodes last-in first-out: encode groups in reverse order.
    for g in reversed(range(indices.shape[0])):
        coder.encode_reverse(indices[g].reshape(-1).astype(np.int32), models[g])
    return coder.get_compressed().astype("<u4").tobytes()


def _decode_rans(payload: bytes, groups: int, per_group: int, table: np.ndarray) -> np.ndarray:
    if len(payload) % 4:
        raise BitstreamError("rANS payload length is not a multiple of 4 bytes")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        models = _models(table)
        out = np.stack([coder.decode(models[g], per_group) for g in range(groups)])
    except Exception as e:  # constriction raises assorted errors on garbage
        raise BitstreamError(f"rANS payload could not be decoded: {e}") from e
    if not coder.is_empty():
        raise BitstreamError("rANS payload has data left over after the last index")
    return out.astype(np.int64)


def encode_indices(indices: np.ndarray, codebook_size: int, table: np.ndarray | None) -> tuple[int, bytes]:
    """Indices (G, N) -> (coding, payload), picking the shorter of rANS and fixed-length."""
    indices = np.asarray(indices)
    fixed = _encode_fixed(indices, codebook_size)
    if table is None:
        return CODING_FIXED, fixed
    rans = _encode_rans(indices, table)
    return (CODING_RANS, rans) if len(rans) < len(fixed) else (CODING_FIXED, fixed)


def decode_indices(
    payload: bytes, coding: int, groups: int, per_group: int, codebook_size: int, table: np.ndarray | None
) -> np.ndarray:
    """Inverse of :func:`encode_indices`: -> int64 (G, N)."""
    if coding == CODING_FIXED:
        return _decode_fixed(payload, groups * per_group, codebook_size).reshape(groups, per_group)
    if coding == CODING_RANS:
        if table is None:
            raise BitstreamError("stream is rANS-coded but the model has no entropy table for this level")
        return _decode_rans(payload, groups, per_group, table)
    raise BitstreamError(f"unknown payload coding {coding}")
