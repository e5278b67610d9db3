"""Static entropy tables: counting VQ indices over training photos and fitting the models.

What ships with a model (``entropy_tables.safetensors``) is made here and only read by
:mod:`oscar_model.entropy`: per level an order-0 count table and, for K <= 1024, a
:class:`~oscar_model.entropy.ContextModel` (left / upper / previous-group histograms and the
codebook-similarity factors, mixture weights by EM on held-out photos). Training's stats stage
and ``oscar fit-tables`` both call :func:`index_statistics`, so every model's tables come
from one piece of code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..codec import OscarCodec
from ..context_model import COMPONENTS, SIMILARITY_SCALE, TABLE_FLOOR, ContextModel, contexts
from ..model import OscarModel
from ..pixels import to_model_range
from ..tiled_codec import encode_tiled
from .data import ImageFiles, list_images

__all__ = [
    "counts_to_table", "similarity_bins", "fit_context_model", "index_statistics", "typical_bpp",
    "codebook_of", "CONTEXT_MAX_CODES", "fit_tables", "index_grids",
]


def counts_to_table(counts: np.ndarray) -> np.ndarray:
    """Histogram (G, K) -> integer table with the floor applied (what ships with the weights)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.rint(counts) + TABLE_FLOOR


SIMILARITY_BINS = 32
"""cos(code_a, code_b) in [-1, 1] is cut into this many equal bins for the similarity component."""

SIMILARITY_FIT_POSITIONS = 50_000
"""Positions (a fixed random subset) the similarity factors are fitted on: 1089 numbers need no
more; all 1.2 M positions of a K = 256 level change held-out bits by 0.2% at 12x the time."""

SIMILARITY_FIT_STEPS = 12
"""Iterative-scaling passes; level 0 of oscar-tiny moves < 0.01 bits per index after 10."""


def similarity_bins(codebook: np.ndarray, bins: int = SIMILARITY_BINS) -> np.ndarray:
    """Unit codebooks (G, K, d) -> uint8 (G, K + 1, K): the bin of cos(code_n, code_x).

    Row K stands for "no neighbour" and holds ``bins``. The table is computed once, when the
    model is fitted, and shipped: recomputing it from float codes on another machine could
    move a pair across a bin edge and desynchronise the decoder.
    """
    if not 1 <= bins < 255:
        raise ValueError(f"bins must lie in [1, 254], got {bins}")
    cb = np.asarray(codebook, dtype=np.float64)
    cos = np.einsum("gkd,gjd->gkj", cb, cb)
    out = np.full((cb.shape[0], cb.shape[1] + 1, cb.shape[1]), bins, dtype=np.uint8)
    out[:, :-1] = np.clip(np.floor((cos + 1) / 2 * bins), 0, bins - 1).astype(np.uint8)
    return out


def fit_context_model(
    grids: list[np.ndarray], codebook_size: int, em_steps: int = 30, codebook: np.ndarray | None = None
) -> ContextModel:
    """Counts over every grid; mixture weights by EM on held-out grids (odd ones, under
    counts from the even ones), so the weights reward what generalises, not memorisation.

    ``codebook``: the level's unit codes (G, K, d); given, the model gets the similarity
    component too.
    """
    if len(grids) < 2:
        raise ValueError("fitting a context model needs at least two index grids")
    groups = grids[0].shape[0]
    bins = None if codebook is None else similarity_bins(codebook)
    if bins is not None and bins.shape[:1] + bins.shape[2:] != (groups, codebook_size):
        raise ValueError(f"codebook of shape {np.shape(codebook)} does not match {groups} groups of {codebook_size}")
    held_in = _counted(grids[0::2], codebook_size, bins)
    weights = np.zeros((groups, COMPONENTS))
    for g in range(groups):
        columns = [0, 1, 2][: 3 if g else 2] + ([3] if bins is not None else [])
        comps: list[list[np.ndarray]] = [[] for _ in columns]
        for grid in grids[1::2]:
            x = grid[g].reshape(-1)
            ctxs = contexts(grid, g, np.arange(x.size), codebook_size)
            for comp, table, ctx in zip(comps, held_in.tables, ctxs):
                comp.append(table[g, ctx, x])
            if bins is not None:
                comps[-1].append(held_in.similarity(g, ctxs[0], ctxs[1])[np.arange(x.size), x])
        p = np.stack([np.concatenate(c) for c in comps], axis=1)
        w = np.full(len(columns), 1 / len(columns))
        for _ in range(em_steps):
            r = p * w
            w = (r / r.sum(axis=1, keepdims=True)).mean(axis=0)
        weights[g, columns] = w
    full = _counted(grids, codebook_size, bins)
    return ContextModel(full.left, full.top, full.group, weights, full.sim_bins, full.sim_factor)

def _counted(grids: list[np.ndarray], k: int, bins: np.ndarray | None) -> ContextModel:
    """Counts (and, with ``bins``, fitted similarity factors) under uniform weights."""
    groups = grids[0].shape[0]
    counts = [np.zeros((groups, k + 1, k), dtype=np.int64) for _ in range(2)]  # left, top
    counts.append(np.zeros((groups, k, k), dtype=np.int64))  # previous group
    for grid in grids:
        for g in range(groups):
            x = grid[g].reshape(-1)
            for table, ctx in zip(counts, contexts(grid, g, np.arange(x.size), k)):
                np.add.at(table[g], (ctx, x), 1)
    tables = [c.astype(np.int32) for c in counts]
    weights = np.full((groups, 3), 1 / 3)
    if bins is None:
        return ContextModel(*tables, weights)
    unigram = tables[0].sum(axis=1, dtype=np.int64) + int(TABLE_FLOOR)
    factor = np.stack([_fit_similarity(grids, g, bins[g], unigram[g]) for g in range(groups)])
    return ContextModel(*tables, weights, bins, factor)


def _fit_similarity(grids: list[np.ndarray], g: int, bins: np.ndarray, unigram: np.ndarray) -> np.ndarray:
    """Iterative scaling of the joint-bin factors f so that, over a fixed subset of the grids'
    positions, the expected count of each (left bin, top bin) pair under
    p(x) ~ unigram(x) f[bin(left, x), bin(top, x)] matches the observed one -> int64 factors."""
    k = bins.shape[1]
    side = int(bins.max()) + 1
    x, left, top = [], [], []
    for grid in grids:
        ctx = contexts(grid, g, np.arange(grid[g].size), k)
        x.append(grid[g].reshape(-1))
        left.append(ctx[0])
        top.append(ctx[1])
    x, left, top = (np.concatenate(a) for a in (x, left, top))
    keep = np.random.default_rng(0).permutation(x.size)[:SIMILARITY_FIT_POSITIONS]
    x, left, top = x[keep], left[keep], top[keep]
    prior = unigram.astype(np.float64)
    observed = np.bincount(bins[left, x].astype(np.int64) * side + bins[top, x], minlength=side * side)
    factor = np.ones(side * side)
    for _ in range(SIMILARITY_FIT_STEPS):
        expected = np.zeros_like(factor)
        for s in range(0, x.size, 4096):
            joint = bins[left[s : s + 4096]].astype(np.int64) * side + bins[top[s : s + 4096]]
            w = prior * factor[joint]
            w /= w.sum(axis=1, keepdims=True)
            expected += np.bincount(joint.reshape(-1), weights=w.reshape(-1), minlength=factor.size)
        factor *= (observed + 0.5) / (expected + 0.5)
    return np.maximum(1, np.rint(factor / factor.max() * SIMILARITY_SCALE)).astype(np.int64)


CONTEXT_MAX_CODES = 1024
"""Levels with larger codebooks keep the order-0 table. At K = 1024 the 500 training photos
fill under 3% of a (K+1, K) table; the codebook-similarity component carries such a level
(oscar-tiny's level 0 on Kodak: 8.55 bits per index, 9.62 without it, 10 fixed-length)."""


def codebook_of(model: OscarModel, level: int) -> np.ndarray:
    """A level's unit codes (G, K, d) as float64, what the context model's similarity bins are cut from."""
    return model.hyper_encoders[level].quantizer.normalized_codebook().detach().cpu().double().numpy()


TYPICAL_BPP_EVERY = 4
"""Typical bpp is measured on images 1, 5, 9, ... (125 of BSDS500's 500, all odd-numbered)."""


def index_grids(codec: OscarCodec, image: np.ndarray, device: torch.device) -> list[np.ndarray]:
    """Every level's VQ indices (G, h, w) of one photo, cropped to the model's stride (tile by
    tile when it is larger than a tile, as the codec encodes it)."""
    h, w = (s // codec.stride * codec.stride for s in image.shape[:2])
    if not codec.fits_one_tile(h, w):
        codes, _ = encode_tiled(codec.model, codec.tiling, np.ascontiguousarray(image[:h, :w]), list(codec.ladder))
        return codes
    z = codec.model.encode_latents(to_model_range(image[None, :h, :w]).to(device))
    return [codec.model.hyper_encoders[p.index].encode(z)[0].cpu().numpy() for p in codec.ladder]


MIN_IMAGES = 3
"""Context models are fitted on the even-numbered photos (two at least: EM weights come from the
second) and typical bpp is measured on the odd-numbered ones (one at least)."""


@torch.inference_mode()
def index_statistics(model: OscarModel, images: Sequence[np.ndarray], device: torch.device) -> dict:
    """Per-level index histograms over the training images -> static entropy tables.

    Levels with K <= 1024 also get a :class:`ContextModel` (left/upper neighbour and previous
    group); its bits per index are reported on held-out images (counted on the even-numbered
    training images, measured on the odd ones) next to the order-0 entropy. Last, each level's
    typical bpp is measured from real streams under the same split, so ``--bpp`` picks levels
    by what they cost on photos the tables have not seen. The tables, ladder and id of ``model``
    are changed in place.
    """
    codec = OscarCodec(model)  # images are coded as users code them (tiles included)
    if len(images) < MIN_IMAGES:
        raise ValueError(f"fitting entropy tables needs at least {MIN_IMAGES} photos, got {len(images)}")
    grids: dict[int, list[np.ndarray]] = {p.index: [] for p in codec.ladder}
    for image in tqdm(images, desc="index statistics", unit="img", mininterval=10):
        for p, grid in zip(codec.ladder, index_grids(codec, image, device)):
            grids[p.index].append(grid)

    def histogram(level_grids: list[np.ndarray], k: int) -> np.ndarray:
        """(G, K) index counts over (G, H, W) grids."""
        return sum(np.stack([np.bincount(g.reshape(-1), minlength=k) for g in grid]) for grid in level_grids)

    summary = {}
    half_tables, half_models = {}, {}  # from the even-numbered images only
    full_tables, full_models = {}, {}
    for p in codec.ladder:
        level_grids = grids[p.index]
        c = histogram(level_grids, p.codebook_size)
        prob = c / c.sum(axis=1, keepdims=True)
        ent = float(-(prob * np.log2(np.where(prob > 0, prob, 1))).sum(axis=1).mean())
        summary[f"level_{p.index}"] = {
            "codes_used": int((c > 0).sum()),
            "codes_total": int(c.size),
            "entropy_bits": round(ent, 3),
            "fixed_bits": float(np.log2(p.codebook_size)),
        }
        full_tables[p.index] = counts_to_table(c)
        half_tables[p.index] = counts_to_table(histogram(level_grids[0::2], p.codebook_size))
        if p.codebook_size <= CONTEXT_MAX_CODES:
            codebook = codebook_of(model, p.index)
            half_models[p.index] = fit_context_model(level_grids[0::2], p.codebook_size, codebook=codebook)
            full_models[p.index] = fit_context_model(level_grids, p.codebook_size, codebook=codebook)
            held_out = half_models[p.index].bits(level_grids[1::2])
            summary[f"level_{p.index}"]["context_bits_held_out"] = round(held_out, 3)
    # Typical bpp on images the tables never saw: tables from the even-numbered images, streams
    # of odd-numbered ones. Measured on the images the shipped tables were counted on, a K = 1024
    # level would look 18% cheaper than it is (its sparse tables partly memorise them).
    model.entropy_tables, model.context_models = half_tables, half_models
    typical = typical_bpp(codec, images[1::TYPICAL_BPP_EVERY])
    model.entropy_tables, model.context_models = full_tables, full_models
    model.config.ladder = model.config.ladder.with_typical_bpp(typical)
    model.invalidate_hash()
    for p, bpp in zip(codec.ladder, typical):
        summary[f"level_{p.index}"]["typical_bpp"] = round(bpp, 5)
    return summary


def typical_bpp(codec: OscarCodec, images) -> list[float]:
    """Mean actual bpp per level (every container byte) of real streams for ``images``."""
    totals = [0.0] * len(codec.ladder)
    levels = [p.index for p in codec.ladder]
    for im in images:
        (streams,) = codec.encode([im], levels)
        for lvl, stream in zip(levels, streams):
            totals[lvl] += codec.bpp(stream)
    return [t / len(images) for t in totals]


def fit_tables(model: str | Path, images: str | Path, limit: int | None = None, device: str | None = None) -> dict:
    """``oscar fit-tables``: a model folder's entropy tables and typical bpp, fitted on a folder
    of photos with the same code as oscar-tiny's training (:func:`index_statistics`), written
    into the folder with the new model id. Returns the per-level summary."""
    from ..registry import resolve_model_path

    path = resolve_model_path(model)
    loaded = OscarModel.from_pretrained(path, device=device, merge_adapters=False)
    files = list_images([images])[:limit]
    summary = index_statistics(loaded, ImageFiles(files), loaded.device)
    loaded.save_tables(path)
    return {"model_id": loaded.model_id, "images": len(files), "levels": summary}
