"""The static context model of the VQ indices: what the entropy coder conditions each index on.

Neighbouring VQ codes of a photo are strongly correlated. :class:`ContextModel` holds integer
count tables and factors taken over training photos (fitted by :mod:`oscar_model.train.tables`),
and turns them into per-position probabilities by IEEE arithmetic in a fixed order, so encoder
and decoder build bit-identical models on any machine. Positions are visited anti-diagonal by
anti-diagonal (:func:`wavefront`), so a decoder knows every neighbour it conditions on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["ContextModel", "wavefront", "contexts", "COMPONENTS", "TABLE_FLOOR", "SIMILARITY_SCALE", "CONTEXT_ALPHA"]

TABLE_FLOOR = 1.0
"""Added to every histogram count so that no symbol has zero probability."""


CONTEXT_ALPHA = 32.0
"""Pseudo-count pulling each context's histogram toward the level's overall histogram."""

_COUNT_TABLES = ("left", "top", "group")
"""The count tables of a :class:`ContextModel`, in field order (``weights`` follows)."""

COMPONENTS = 4
"""Mixture components, in weight-column order: left, top, previous group, codebook similarity."""

SIMILARITY_SCALE = 2**16
"""The similarity factors are stored as integers up to this, so that a context's weights and
their sum are exact int64 arithmetic: the only float step is one IEEE division per weight."""

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


def contexts(grid: np.ndarray, g: int, positions: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
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

    Each index is coded under a fixed-weight mixture of up to four conditional models taken
    over the training set: histograms of x given its left neighbour, given its upper
    neighbour, and (groups after the first) given the previous group's index at the same
    position; and a codebook-similarity model that shares its statistics across all codes.
    Neighbouring VQ codes are strongly correlated, and a histogram per neighbour captures it
    with nothing learned at run time - where it has seen enough data. At K = 1024 it has not
    (500 photos fill under 3% of a (K + 1, K) table), but neighbours' codes still lie close to
    x's code in the codebook. The similarity component scores each candidate x by
    ``unigram(x) * factor[bin(cos(c_left, c_x)), bin(cos(c_top, c_x))]``: 33 x 33 factors
    fitted by iterative scaling, which cut oscar-tiny's level 0 on Kodak from 9.62 to 8.57
    bits per index (``benchmarks/entropy_gain.py``).
    Everything is integer counts and factors plus float64 weights, combined by IEEE arithmetic
    in a fixed order, so encoder and decoder build identical models on any machine.

    Args:
        left: (G, K + 1, K) counts of x given its left neighbour; row K = no neighbour.
        top: (G, K + 1, K) counts of x given its upper neighbour; row K = no neighbour.
        group: (G, K, K) counts of x in group g given group g - 1's index (row g = 0 unused).
        weights: (G, 4) mixture weights of (left, top, group, similarity); weights[0, 2] = 0.
            Models saved before the similarity component have (G, 3); read as a 0 fourth column.
        sim_bins: optional uint8 (G, K + 1, K) from :func:`similarity_bins`.
        sim_factor: optional int64 (G, (B + 1) ** 2) factors of the joint (left, top) bin, in
            [1, SIMILARITY_SCALE]; present exactly when ``sim_bins`` is.
    """

    left: np.ndarray
    top: np.ndarray
    group: np.ndarray
    weights: np.ndarray
    sim_bins: np.ndarray | None = None
    sim_factor: np.ndarray | None = None

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[0] != self.groups or weights.shape[1] not in (3, COMPONENTS):
            raise ValueError(f"context weights have shape {weights.shape}, expected ({self.groups}, {COMPONENTS})")
        if weights.shape[1] == 3:  # written before the similarity component existed
            weights = np.concatenate([weights, np.zeros((weights.shape[0], 1))], axis=1)
        object.__setattr__(self, "weights", weights)
        if (self.sim_bins is None) != (self.sim_factor is None):
            raise ValueError("a context model needs both sim_bins and sim_factor, or neither")
        if self.sim_bins is None:
            if weights[:, 3].any():
                raise ValueError("context model weighs a similarity component it does not have")
            return
        k, side = self.codebook_size, self.similarity_side
        if self.sim_bins.shape != (self.groups, k + 1, k) or side * side != self.sim_factor.shape[1]:
            raise ValueError("context model's similarity tables do not match its codebook")
        if int(self.sim_bins.max()) >= side or int(self.sim_factor.min()) < 1:
            raise ValueError("context model's similarity tables hold out-of-range entries")
        if int(self._unigram_counts.max()) * int(self.sim_factor.max()) * k >= 2**53:
            raise ValueError("context model's similarity weights would not be exact in float64")

    @property
    def groups(self) -> int:
        return self.left.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.left.shape[2]

    @property
    def similarity_side(self) -> int:
        """Bins per neighbour of the similarity factors, "no neighbour" included (B + 1)."""
        return math.isqrt(self.sim_factor.shape[1]) if self.sim_factor is not None else 0

    @cached_property
    def _unigram_counts(self) -> np.ndarray:
        """(G, K) int64: every x counted once, floored."""
        return self.left.sum(axis=1, dtype=np.int64) + int(TABLE_FLOOR)

    @cached_property
    def min_bits_per_index(self) -> float:
        """A lower bound of any index's code length, averaged over groups: -log2 of an upper
        bound of its probability (every component at its largest entry; similarity at 1)."""
        bounds = []
        for g in range(self.groups):
            p = sum(w * float(t[g].max()) for w, t in zip(self.weights[g, :3], self.tables)) + self.weights[g, 3]
            bounds.append(-math.log2(min(1.0, p)))
        return float(np.mean(bounds))

    @cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        unigram = self._unigram_counts.astype(np.float64)
        unigram = unigram / unigram.sum(axis=1, keepdims=True)

        def smooth(counts: np.ndarray) -> np.ndarray:
            prior = CONTEXT_ALPHA * unigram[:, None, :]
            return (counts + prior) / (counts.sum(axis=2, keepdims=True) + CONTEXT_ALPHA)

        return smooth(self.left), smooth(self.top), smooth(self.group)

    def similarity(self, g: int, left: np.ndarray, top: np.ndarray) -> np.ndarray:
        """(n, K) p(x | similarity of x's code to the left and upper neighbours' codes).

        Weights and their row sums are exact int64 (bounded in ``__post_init__``); the one
        float step is the division, so every machine gets the same bits.
        """
        joint = self.sim_bins[g, left].astype(np.int64) * self.similarity_side + self.sim_bins[g, top]
        w = self._unigram_counts[g] * self.sim_factor[g, joint]
        return w / w.sum(axis=1, keepdims=True)

    def probabilities(self, grid: np.ndarray, g: int, positions: np.ndarray) -> np.ndarray:
        """(n, K) float64 models for ``positions`` of group ``g``; needs their neighbours known.

        ``grid`` is the (G, H, W) index array (decoded so far, when decoding).
        """
        ctxs = contexts(grid, g, positions, self.codebook_size)
        probs = 0.0
        for table, weight, ctx in zip(self.tables, self.weights[g], ctxs):
            probs = probs + weight * table[g, ctx]
        if self.weights[g, 3] > 0:
            probs = probs + self.weights[g, 3] * self.similarity(g, ctxs[0], ctxs[1])
        return probs

    def bits(self, grids: list[np.ndarray], chunk: int = 4096) -> float:
        """Mean ideal code length in bits per index over (G, H, W) ``grids`` (a held-out check)."""
        total, count = 0.0, 0
        for grid in grids:
            flat = grid.reshape(grid.shape[0], -1)
            for g in range(grid.shape[0]):
                for start in range(0, flat.shape[1], chunk):
                    positions = np.arange(start, min(start + chunk, flat.shape[1]))
                    probs = self.probabilities(grid, g, positions)
                    p = probs[np.arange(positions.size), flat[g, positions]] / probs.sum(axis=1)
                    total += float(-np.log2(p).sum())
                    count += p.size
        return total / count

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        """The model as safetensors entries: count tables sparse, weights dense.

        Why sparse: a K = 1024 level's three dense tables are 12.6 MB of mostly zeros (500
        training photos give ~75k positions for 3M cells); as (index..., count) rows they are
        a few MB. ``{name}.coo`` holds int32 rows of (g, row, col, count) and ``{name}.shape``
        the dense shape; a table whose rows would outweigh it is stored dense as ``{name}``.
        The similarity tables are dense (uint8 bins, int64 factors): 1 MB at K = 1024.
        """
        # Without the similarity component, the (G, 3) weights of old: same bytes, same model id.
        weights = self.weights if self.sim_bins is not None else self.weights[:, :3]
        out = {f"{prefix}.weights": np.ascontiguousarray(weights)}
        for name in _COUNT_TABLES:
            table = np.asarray(getattr(self, name), dtype=np.int32)
            nz = np.nonzero(table)
            if len(nz[0]) * 4 * 4 >= table.nbytes:  # dense is smaller (K <= 256 tables mostly are)
                out[f"{prefix}.{name}"] = np.ascontiguousarray(table)
                continue
            out[f"{prefix}.{name}.coo"] = np.ascontiguousarray(np.stack([*nz, table[nz]], axis=1).astype(np.int32))
            out[f"{prefix}.{name}.shape"] = np.asarray(table.shape, dtype=np.int64)
        if self.sim_bins is not None:
            out[f"{prefix}.sim_bins"] = np.ascontiguousarray(self.sim_bins, dtype=np.uint8)
            out[f"{prefix}.sim_factor"] = np.ascontiguousarray(self.sim_factor, dtype=np.int64)
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
        sim = [tensors.get(f"{prefix}.{name}") for name in ("sim_bins", "sim_factor")]
        sim = [None if t is None else np.asarray(t) for t in sim]
        return cls(*parts, np.asarray(tensors[f"{prefix}.weights"]), *sim)
