"""Coding of VQ indices: rANS under a static per-model table, or fixed-length bits.

The tables are integer counts stored with the weights, turned into float64 probabilities by
exact division, so encoder and decoder build bit-identical models on any machine (the
cross-hardware desync of float entropy models, CompressAI #279/#309, cannot happen).
A level may also ship a :class:`ContextModel` (each index coded given its left and upper
neighbours and the previous group's index). Whichever of context rANS, rANS and fixed-length
is shortest for a stream is used; the header says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np

from .bitstream import CODING_CONTEXT, CODING_FIXED, CODING_RANS, BitstreamError

__all__ = ["encode_indices", "decode_indices", "counts_to_table", "ContextModel", "wavefront", "TABLE_FLOOR"]

TABLE_FLOOR = 1.0
"""Added to every histogram count so that no symbol has zero probability."""


def counts_to_table(counts: np.ndarray) -> np.ndarray:
    """Histogram (G, K) -> integer table with the floor applied (what ships with the weights)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.rint(counts) + TABLE_FLOOR


_FAMILY = constriction.stream.model.Categorical(perfect=False)
"""Categorical models whose probabilities come with each symbol (context coding)."""


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


# ---------------------------------------------------------------------------- context model
CONTEXT_ALPHA = 32.0
"""Pseudo-count pulling each context's histogram toward the level's overall histogram."""

_COUNT_TABLES = ("left", "top", "group")
"""The count tables of a :class:`ContextModel`, in field order (``weights`` follows)."""


def wavefront(height: int, width: int) -> list[np.ndarray]:
    """Flat positions of an (H, W) grid, one array per anti-diagonal i + j = d.

    Why this order: every position's left and upper neighbours lie on earlier diagonals, so a
    whole diagonal decodes in one vectorised call (H + W - 1 calls, not H * W).
    """
    rows = np.arange(height)
    out = []
    for d in range(height + width - 1):
        i = rows[max(0, d - width + 1) : min(height, d + 1)]
        out.append(i * width + (d - i))
    return out


def _contexts(grid: np.ndarray, g: int, positions: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """The contexts of flat ``positions`` in group ``g`` of a (G, H, W) grid, one array per
    mixture component: left neighbour, upper neighbour (k = none), and for g > 0 the previous
    group's index at the same position. The one definition counting, fitting and coding share."""
    flat = grid.reshape(grid.shape[0], -1)
    width = grid.shape[2]
    i, j = positions // width, positions % width
    left = np.where(j > 0, flat[g, positions - 1], k)
    top = np.where(i > 0, flat[g, positions - width], k)
    return (left, top, flat[g - 1, positions]) if g > 0 else (left, top)


@dataclass(frozen=True)
class ContextModel:
    """Static context-mixing model for one level's indices: p(x | left, top, lower group).

    Each index is coded under a fixed-weight mixture of three conditional histograms taken
    over the training set: given its left neighbour, given its upper neighbour, and (groups
    after the first) given the index of the previous group at the same position. Neighbouring
    VQ codes are strongly correlated, and a histogram per neighbour captures it with nothing
    learned at run time: on Kodak, 17-24% fewer payload bytes than the order-0 table at
    oscar-tiny's levels 1-5 (``benchmarks/entropy_gain.py``).
    Everything is integer counts plus float64 weights, combined by IEEE arithmetic in a fixed
    order, so encoder and decoder build identical models on any machine.

    Args:
        left: (G, K + 1, K) counts of x given its left neighbour; row K = no neighbour.
        top: (G, K + 1, K) counts of x given its upper neighbour; row K = no neighbour.
        group: (G, K, K) counts of x in group g given group g - 1's index (row g = 0 unused).
        weights: (G, 3) mixture weights of (left, top, group); weights[0, 2] = 0.
    """

    left: np.ndarray
    top: np.ndarray
    group: np.ndarray
    weights: np.ndarray

    @property
    def groups(self) -> int:
        return self.left.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.left.shape[2]

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        unigram = self.left.sum(axis=1) + TABLE_FLOOR  # (G, K): every x counted once
        unigram = unigram / unigram.sum(axis=1, keepdims=True)

        def smooth(counts: np.ndarray) -> np.ndarray:
            prior = CONTEXT_ALPHA * unigram[:, None, :]
            return (counts + prior) / (counts.sum(axis=2, keepdims=True) + CONTEXT_ALPHA)

        return smooth(self.left), smooth(self.top), smooth(self.group)

    def probabilities(self, grid: np.ndarray, g: int, positions: np.ndarray) -> np.ndarray:
        """(n, K) float64 models for ``positions`` of group ``g``; needs their neighbours known.

        ``grid`` is the (G, H, W) index array (decoded so far, when decoding).
        """
        probs = 0.0
        for table, weight, ctx in zip(self._tables, self.weights[g], _contexts(grid, g, positions, self.codebook_size)):
            probs = probs + weight * table[g, ctx]
        return probs

    def bits(self, grids: list[np.ndarray]) -> float:
        """Mean ideal code length in bits per index over (G, H, W) ``grids`` (a held-out check)."""
        total, count = 0.0, 0
        for grid in grids:
            flat = grid.reshape(grid.shape[0], -1)
            positions = np.arange(flat.shape[1])
            for g in range(grid.shape[0]):
                probs = self.probabilities(grid, g, positions)
                p = probs[positions, flat[g]] / probs.sum(axis=1)
                total += float(-np.log2(p).sum())
                count += p.size
        return total / count

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """The model as safetensors entries: count tables sparse, weights dense.

        Why sparse: a K = 1024 level's three dense tables are 12.6 MB of mostly zeros (500
        training photos give ~75k positions for 3M cells); as (index..., count) rows they are
        a few MB. ``{name}.coo`` holds int32 rows of (g, row, col, count) and ``{name}.shape``
        the dense shape; a table whose rows would outweigh it is stored dense as ``{name}``.
        """
        out = {f"{prefix}.weights": np.ascontiguousarray(self.weights)}
        for name in _COUNT_TABLES:
            table = np.asarray(getattr(self, name), dtype=np.int32)
            nz = np.nonzero(table)
            if len(nz[0]) * 4 * 4 >= table.nbytes:  # dense is smaller (K <= 256 tables mostly are)
                out[f"{prefix}.{name}"] = np.ascontiguousarray(table)
                continue
            out[f"{prefix}.{name}.coo"] = np.ascontiguousarray(np.stack([*nz, table[nz]], axis=1).astype(np.int32))
            out[f"{prefix}.{name}.shape"] = np.asarray(table.shape, dtype=np.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> ContextModel | None:
        """Reads :meth:`tensors`' sparse entries (or dense ``{prefix}.{name}`` ones from
        model folders written before the sparse layout); None when the level has no model."""
        if f"{prefix}.weights" not in tensors:
            return None
        parts = []
        for name in _COUNT_TABLES:
            if f"{prefix}.{name}" in tensors:
                parts.append(np.asarray(tensors[f"{prefix}.{name}"]))
                continue
            coo, shape = tensors[f"{prefix}.{name}.coo"], tensors[f"{prefix}.{name}.shape"]
            table = np.zeros(tuple(int(d) for d in shape), dtype=np.int32)
            if len(coo):
                table[tuple(coo[:, :-1].T)] = coo[:, -1]
            parts.append(table)
        return cls(*parts, np.asarray(tensors[f"{prefix}.weights"]))

    @classmethod
    def fit(cls, grids: list[np.ndarray], codebook_size: int, em_steps: int = 30) -> ContextModel:
        """Counts over every grid; mixture weights by EM on held-out grids (odd ones, under
        counts from the even ones), so the weights reward what generalises, not memorisation."""
        if len(grids) < 2:
            raise ValueError("fitting a context model needs at least two index grids")
        groups = grids[0].shape[0]
        held_in = cls._counted(grids[0::2], codebook_size, np.full((groups, 3), 1 / 3))
        weights = np.zeros((groups, 3))
        for g in range(groups):
            parts = 3 if g else 2
            comps: list[list[np.ndarray]] = [[] for _ in range(parts)]
            for grid in grids[1::2]:
                x = grid[g].reshape(-1)
                for comp, table, ctx in zip(comps, held_in._tables, _contexts(grid, g, np.arange(x.size), codebook_size)):
                    comp.append(table[g, ctx, x])
            p = np.stack([np.concatenate(c) for c in comps], axis=1)
            w = np.full(parts, 1 / parts)
            for _ in range(em_steps):
                r = p * w
                w = (r / r.sum(axis=1, keepdims=True)).mean(axis=0)
            weights[g, :parts] = w
        return cls._counted(grids, codebook_size, weights)

    @classmethod
    def _counted(cls, grids: list[np.ndarray], k: int, weights: np.ndarray) -> ContextModel:
        groups = grids[0].shape[0]
        counts = [np.zeros((groups, k + 1, k), dtype=np.int64) for _ in range(2)]  # left, top
        counts.append(np.zeros((groups, k, k), dtype=np.int64))  # previous group
        for grid in grids:
            for g in range(groups):
                x = grid[g].reshape(-1)
                for table, ctx in zip(counts, _contexts(grid, g, np.arange(x.size), k)):
                    np.add.at(table[g], (ctx, x), 1)
        return cls(*(c.astype(np.int32) for c in counts), weights)


def _encode_context(grid: np.ndarray, model: ContextModel) -> bytes:
    order = np.concatenate(wavefront(*grid.shape[1:]))
    flat = grid.reshape(grid.shape[0], -1)
    symbols = np.concatenate([flat[g, order] for g in range(grid.shape[0])]).astype(np.int32)
    probs = np.concatenate([model.probabilities(grid, g, order) for g in range(grid.shape[0])])
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _FAMILY, probs)
    return coder.get_compressed().astype("<u4").tobytes()


def _decode_context(payload: bytes, groups: int, height: int, width: int, model: ContextModel) -> np.ndarray:
    if len(payload) % 4:
        raise BitstreamError("rANS payload length is not a multiple of 4 bytes")
    if model.groups != groups:
        raise BitstreamError(f"context model has {model.groups} groups, the stream's level {groups}")
    grid = np.zeros((groups, height, width), dtype=np.int64)
    flat = grid.reshape(groups, -1)
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        for g in range(groups):
            for positions in wavefront(height, width):
                flat[g, positions] = coder.decode(_FAMILY, model.probabilities(grid, g, positions))
    except Exception as e:  # constriction raises assorted errors on garbage
        raise BitstreamError(f"rANS payload could not be decoded: {e}") from e
    if not coder.is_empty():
        raise BitstreamError("rANS payload has data left over after the last index")
    return grid
