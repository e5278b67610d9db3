"""Coding of VQ indices: rANS under a static per-model table, or fixed-length bits.

The tables are integer counts stored with the weights, turned into float64 probabilities by
exact division, so encoder and decoder build bit-identical models on any machine (the
cross-hardware desync of float entropy models, CompressAI #279/#309, cannot happen).
A level may also ship a :class:`ContextModel` (each index coded given its left and upper
neighbours, the previous group's index, and how close the neighbours' codes lie to each
candidate in the codebook). Whichever of context rANS, rANS and fixed-length
is shortest for a stream is used; the header says which. Fitting the tables is training's
business (:mod:`oscar_model.train.tables`); this module only reads and codes with them.
"""

from __future__ import annotations

import math
from pathlib import Path

import constriction
import numpy as np
from safetensors.numpy import load_file

from .bitstream import CODING_CONTEXT, CODING_FIXED, CODING_RANS, BitstreamError
from .context_model import ContextModel, wavefront

__all__ = [
    "encode_indices", "decode_indices", "check_payload_size", "ENCODE_CHUNK", "ENTROPY_TABLES_NAME", "entropy_tensors", "load_entropy_tables",
]

ENTROPY_TABLES_NAME = "entropy_tables.safetensors"
"""The file of a model folder that holds every level's tables (order-0 and context)."""

_FAMILY = constriction.stream.model.Categorical(perfect=False)
"""Categorical models whose probabilities come with each symbol (context coding)."""


def entropy_tensors(tables: dict[int, np.ndarray], contexts: dict[int, ContextModel]) -> dict[str, np.ndarray]:
    """Everything the entropy coder reads, under its safetensors key."""
    out = {f"level_{k}": np.ascontiguousarray(v, dtype=np.float64) for k, v in tables.items()}
    for k, model in contexts.items():
        out.update(model.tensors(f"level_{k}"))
    return out


def load_entropy_tables(path: Path, ladder) -> tuple[dict[int, np.ndarray], dict[int, ContextModel]]:
    """A model folder's tables: (order-0 table per level, context model per level); empty when
    the folder has none (every stream of such a model is fixed-length)."""
    if not path.exists():
        return {}, {}
    raw = load_file(str(path))
    tables = {int(k.split("_")[1]): v for k, v in raw.items() if "." not in k}
    contexts = {p.index: m for p in ladder if (m := ContextModel.from_tensors(raw, f"level_{p.index}")) is not None}
    return tables, contexts


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


MAX_BITS_PER_INDEX = 24
"""constriction's models quantise every probability to at least 2^-24: no index costs more."""

SLACK_BITS = 128
"""What a valid payload may differ from its indices' ideal code length by: the coder's 64-bit
initial state, word padding, and the fixed-point rounding of the probabilities."""


def _ideal_bits(probs: np.ndarray, symbols: np.ndarray) -> float:
    """-sum log2 p(symbol) under (n, K) unnormalised model rows."""
    p = probs[np.arange(len(symbols)), symbols] / probs.sum(axis=1)
    return float(-np.log2(np.maximum(p, 2.0**-MAX_BITS_PER_INDEX)).sum())


def check_payload_size(payload: bytes, n: int, min_bits_per_index: float) -> None:
    """Refuses, before decoding anything, a rANS payload too short or too long to hold ``n``
    indices: at least ``min_bits_per_index`` each (the model's most probable symbol's cost),
    at most 24. Why: a header may claim any image size; without this, a crafted stream made
    the decoder walk millions of positions past the end of a 1 kB payload."""
    bits = 8 * len(payload)
    if len(payload) % 4:
        raise BitstreamError("rANS payload length is not a multiple of 4 bytes")
    if n and not payload:
        raise BitstreamError(f"payload is empty but {n} indices are to be decoded")
    if bits > n * MAX_BITS_PER_INDEX + SLACK_BITS:
        raise BitstreamError(f"payload of {len(payload)} bytes is longer than {n} indices can need")
    if bits + SLACK_BITS < 0.99 * n * min_bits_per_index:
        raise BitstreamError(f"payload of {len(payload)} bytes is too short for {n} indices")


def _check_spent(ideal: float, payload: bytes) -> None:
    """The indices decoded so far cost more than the payload holds: it ran out early (a
    truncated or forged payload decodes to the coder's empty state, not to an error).

    Why this margin: a valid payload holds its indices' ideal code length plus the coder's
    final state, less what the 24-bit rounding of probabilities gives back (at least 13 bits
    more on 8 Kodak photos x 7 levels of oscar-tiny), so a payload whose indices need more than
    all its bits (+32, +0.5%) cannot be one."""
    if ideal > 1.005 * 8 * len(payload) + 32:
        raise BitstreamError(f"payload of {len(payload)} bytes ran out before the last index")


def _decode_rans(payload: bytes, groups: int, per_group: int, table: np.ndarray) -> np.ndarray:
    probs = np.asarray(table, dtype=np.float64)
    check_payload_size(payload, groups * per_group, float(-np.log2(probs.max(axis=1) / probs.sum(axis=1)).mean()))
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        models = _models(table)
        out = np.stack([coder.decode(models[g], per_group) for g in range(groups)])
    except Exception as e:  # constriction raises assorted errors on garbage
        raise BitstreamError(f"rANS payload could not be decoded: {e}") from e
    _check_spent(sum(_ideal_bits(np.broadcast_to(probs[g], (per_group, probs.shape[1])), out[g]) for g in range(groups)), payload)
    if not coder.is_empty():
        raise BitstreamError("rANS payload has data left over after the last index")
    return out.astype(np.int64)


def encode_indices(
    indices: np.ndarray,
    codebook_size: int,
    table: np.ndarray | None,
    context: ContextModel | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[int, bytes]:
    """Indices (G, N) -> (coding, payload), the shortest of the codings the model offers.

    Context coding needs ``context`` and the index ``grid`` (H, W) with H * W = N.
    """
    indices = np.asarray(indices)
    candidates = [(CODING_FIXED, _encode_fixed(indices, codebook_size))]
    if table is not None:
        candidates.append((CODING_RANS, _encode_rans(indices, table)))
    if context is not None and grid is not None:
        candidates.append((CODING_CONTEXT, _encode_context(indices.reshape(indices.shape[0], *grid), context)))
    return min(candidates, key=lambda c: len(c[1]))


def decode_indices(
    payload: bytes,
    coding: int,
    groups: int,
    per_group: int,
    codebook_size: int,
    table: np.ndarray | None,
    context: ContextModel | None = None,
    grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_indices`: -> int64 (G, N)."""
    if coding == CODING_FIXED:
        return _decode_fixed(payload, groups * per_group, codebook_size).reshape(groups, per_group)
    if coding == CODING_RANS:
        if table is None:
            raise BitstreamError("stream is rANS-coded but the model has no entropy table for this level")
        return _decode_rans(payload, groups, per_group, table)
    if coding == CODING_CONTEXT:
        if context is None or grid is None:
            raise BitstreamError("stream is context-coded but the model has no context model for this level")
        if grid[0] * grid[1] != per_group or context.codebook_size != codebook_size:
            raise BitstreamError("context model does not match the stream's level")
        return _decode_context(payload, groups, grid[0], grid[1], context).reshape(groups, per_group)
    raise BitstreamError(f"unknown payload coding {coding}")


ENCODE_CHUNK = 2048
"""Positions whose (n, K) models are built at once when encoding. Bounds memory on large
images (a 12-megapixel photo has 190k positions per group, 390 MB of models at K = 256) and
keeps each chunk in cache: 2048 encodes a Kodak image's level 4 in 29 ms, 8192 in 89 ms."""


def _encode_context(grid: np.ndarray, model: ContextModel) -> bytes:
    order = np.concatenate(wavefront(*grid.shape[1:]))
    flat = grid.reshape(grid.shape[0], -1)
    chunks = [(g, order[s : s + ENCODE_CHUNK]) for g in range(grid.shape[0]) for s in range(0, order.size, ENCODE_CHUNK)]
    coder = constriction.stream.stack.AnsCoder()
    # A stack coder decodes last-in first-out: the last chunk goes in first.
    for g, positions in reversed(chunks):
        probs = model.probabilities(grid, g, positions)
        coder.encode_reverse(flat[g, positions].astype(np.int32), _FAMILY, probs)
    return coder.get_compressed().astype("<u4").tobytes()


def _decode_context(payload: bytes, groups: int, height: int, width: int, model: ContextModel) -> np.ndarray:
    if model.groups != groups:
        raise BitstreamError(f"context model has {model.groups} groups, the stream's level {groups}")
    check_payload_size(payload, groups * height * width, model.min_bits_per_index)
    grid = np.zeros((groups, height, width), dtype=np.int64)
    flat = grid.reshape(groups, -1)
    ideal = 0.0
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        for g in range(groups):
            for positions in wavefront(height, width):
                probs = model.probabilities(grid, g, positions)
                flat[g, positions] = coder.decode(_FAMILY, probs)
                ideal += _ideal_bits(probs, flat[g, positions])
                _check_spent(ideal, payload)  # stop at once: never walk on past the payload's end
    except BitstreamError:
        raise
    except Exception as e:  # constriction raises assorted errors on garbage
        raise BitstreamError(f"rANS payload could not be decoded: {e}") from e
    if not coder.is_empty():
        raise BitstreamError("rANS payload has data left over after the last index")
    return grid
