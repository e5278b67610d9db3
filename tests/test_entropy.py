import numpy as np
import pytest

from oscar_model.bitstream import CODING_CONTEXT, CODING_FIXED, CODING_RANS, BitstreamError
from oscar_model.context_model import ContextModel, wavefront
from oscar_model.entropy import decode_indices, encode_indices
from oscar_model.train.tables import counts_to_table, fit_context_model, similarity_bins


def skewed(groups: int, n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.2))
    idx = rng.choice(k, size=(groups, n), p=p)
    table = counts_to_table(np.stack([np.bincount(idx[g], minlength=k) for g in range(groups)]))
    return idx, table


@pytest.mark.parametrize("groups,k", [(1, 16), (2, 256), (1, 1024)])
def test_rans_round_trip_and_saves_bits(groups, k):
    idx, table = skewed(groups, 3000, k)
    coding, payload = encode_indices(idx, k, table)
    assert coding == CODING_RANS
    assert len(payload) < groups * 3000 * np.log2(k) / 8
    np.testing.assert_array_equal(decode_indices(payload, coding, groups, 3000, k, table), idx)


def test_fixed_length_when_no_table_or_when_shorter():
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 256, size=(1, 500))
    coding, payload = encode_indices(idx, 256, None)
    assert coding == CODING_FIXED and len(payload) == 500
    np.testing.assert_array_equal(decode_indices(payload, coding, 1, 500, 256, None), idx)
    # A table that predicts the wrong symbols makes rANS longer: fixed-length wins.
    wrong = counts_to_table(np.where(np.arange(256) == 0, 10**6, 0)[None])
    coding, _ = encode_indices(idx, 256, wrong)
    assert coding == CODING_FIXED


def test_non_power_of_two_codebook_round_trips():
    idx = np.random.default_rng(2).integers(0, 100, size=(1, 77))
    coding, payload = encode_indices(idx, 100, None)
    np.testing.assert_array_equal(decode_indices(payload, coding, 1, 77, 100, None), idx)


def test_floor_gives_every_symbol_probability():
    table = counts_to_table(np.zeros((1, 8)))
    assert (table > 0).all()
    idx = np.array([[7, 7, 0, 3]])
    coding, payload = encode_indices(idx, 8, table)
    np.testing.assert_array_equal(decode_indices(payload, coding, 1, 4, 8, table), idx)


def test_bad_payloads_raise_typed_errors():
    idx, table = skewed(1, 200, 256)
    coding, payload = encode_indices(idx, 256, table)
    with pytest.raises(BitstreamError):
        decode_indices(payload[:-4], CODING_RANS, 1, 200, 256, table)
    with pytest.raises(BitstreamError):
        decode_indices(payload + b"\x00", CODING_RANS, 1, 200, 256, table)
    with pytest.raises(BitstreamError):
        decode_indices(b"\x00" * 3, CODING_FIXED, 1, 200, 256, None)
    with pytest.raises(BitstreamError):
        decode_indices(payload, CODING_RANS, 1, 200, 256, None)


def correlated_grids(n: int, groups: int, k: int, h: int = 12, w: int = 20, seed: int = 0) -> list[np.ndarray]:
    """Index grids like a VQ's on photos: each index mostly repeats its left or upper
    neighbour, and group g > 0 mostly follows group g - 1 through a fixed permutation."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(k)
    grids = []
    for _ in range(n):
        grid = np.zeros((groups, h, w), dtype=np.int64)
        for i in range(h):
            for j in range(w):
                r = rng.random()
                if r < 0.45 and j:
                    grid[0, i, j] = grid[0, i, j - 1]
                elif r < 0.8 and i:
                    grid[0, i, j] = grid[0, i - 1, j]
                else:
                    grid[0, i, j] = rng.integers(k)
        for g in range(1, groups):
            follow = rng.random((h, w)) < 0.7
            grid[g] = np.where(follow, perm[grid[g - 1]], rng.integers(0, k, (h, w)))
        grids.append(grid)
    return grids


def test_wavefront_visits_every_position_once_after_its_neighbours():
    order = np.concatenate(wavefront(5, 7))
    assert sorted(order.tolist()) == list(range(35))
    seen = np.full(35, -1)
    seen[order] = np.arange(35)
    for pos in range(35):
        i, j = divmod(pos, 7)
        if j:
            assert seen[pos - 1] < seen[pos]
        if i:
            assert seen[pos - 7] < seen[pos]


@pytest.mark.parametrize("groups,k", [(1, 16), (2, 64), (2, 256)])
def test_context_coding_round_trips_and_beats_order0(groups, k):
    train = correlated_grids(40, groups, k)
    model = fit_context_model(train, k)
    table = counts_to_table(sum(np.stack([np.bincount(t[g].ravel(), minlength=k) for g in range(groups)]) for t in train))
    test = correlated_grids(3, groups, k, seed=7)
    for grid in test:
        flat = grid.reshape(groups, -1)
        coding, payload = encode_indices(flat, k, table, model, grid.shape[1:])
        assert coding == CODING_CONTEXT
        _, order0 = encode_indices(flat, k, table)
        assert len(payload) < 0.9 * len(order0)
        decoded = decode_indices(payload, coding, groups, flat.shape[1], k, table, model, grid.shape[1:])
        np.testing.assert_array_equal(decoded, flat)
    assert model.bits(test) < np.log2(k)
    if groups > 1:
        assert model.weights[1, 2] > 0.3  # group 1 leans on group 0, as generated
    assert model.weights[0, 2] == 0 and np.allclose(model.weights.sum(axis=1), 1)


def test_context_coded_payloads_fail_with_typed_errors():
    grids = correlated_grids(6, 2, 64)
    model = fit_context_model(grids, 64)
    flat = grids[0].reshape(2, -1)
    coding, payload = encode_indices(flat, 64, None, model, grids[0].shape[1:])
    assert coding == CODING_CONTEXT
    with pytest.raises(BitstreamError):
        decode_indices(payload[:-4], coding, 2, flat.shape[1], 64, None, model, grids[0].shape[1:])
    with pytest.raises(BitstreamError):
        decode_indices(payload + b"\x00\x00\x00\x01", coding, 2, flat.shape[1], 64, None, model, grids[0].shape[1:])
    with pytest.raises(BitstreamError, match="no context model"):
        decode_indices(payload, coding, 2, flat.shape[1], 64, None, None, grids[0].shape[1:])
    with pytest.raises(BitstreamError, match="does not match"):
        decode_indices(payload, coding, 2, flat.shape[1], 32, None, model, grids[0].shape[1:])


def test_context_model_is_stored_sparse_and_reads_both_layouts():
    """A K = 1024 model is a few kB of (index, count) rows on disk, not 12 MB of dense tables,
    and loads back to the same tables; model folders written with dense tables still load."""
    k = 1024
    model = fit_context_model(correlated_grids(6, 1, k), k)
    stored = model.tensors("level_0")
    assert sum(t.nbytes for t in stored.values()) < 0.05 * (model.left.nbytes + model.top.nbytes + model.group.nbytes)
    for loaded in (
        ContextModel.from_tensors(stored, "level_0"),
        ContextModel.from_tensors({f"level_0.{n}": getattr(model, n) for n in ("left", "top", "group", "weights")}, "level_0"),
    ):
        for name in ("left", "top", "group", "weights"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert ContextModel.from_tensors(stored, "level_1") is None


def smooth_field_grids(n: int, codebook: np.ndarray, h: int = 12, w: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Index grids of a cosine VQ over smooth random vector fields: neighbours rarely share a
    code (K is large) but their codes lie close in the codebook, as at oscar-tiny's level 0."""
    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(n):
        field = rng.normal(size=(h + 4, w + 4, codebook.shape[-1]))
        for axis in (0, 1):  # box blur twice along each axis: neighbours correlate
            for _ in range(2):
                field = (field + np.roll(field, 1, axis) + np.roll(field, -1, axis)) / 3
        field = field[2:-2, 2:-2]
        grids.append(np.argmax(field @ codebook[0].T, axis=-1)[None].astype(np.int64))
    return grids


def test_similarity_component_wins_where_counts_are_too_sparse():
    """K = 512 over 20 small grids: the neighbour histograms have seen almost no pairs, yet the
    neighbours' codes predict x through the codebook; held-out bits drop and coding round-trips."""
    rng = np.random.default_rng(3)
    codebook = rng.normal(size=(1, 512, 6))
    codebook /= np.linalg.norm(codebook, axis=-1, keepdims=True)
    train, test = smooth_field_grids(20, codebook), smooth_field_grids(4, codebook, seed=9)
    plain = fit_context_model(train, 512)
    model = fit_context_model(train, 512, codebook=codebook)
    assert model.weights[0, 3] > 0.5 and np.isclose(model.weights[0].sum(), 1)
    assert model.bits(test) < plain.bits(test) - 1.0
    for grid in test:
        flat = grid.reshape(1, -1)
        coding, payload = encode_indices(flat, 512, None, model, grid.shape[1:])
        assert coding == CODING_CONTEXT
        assert len(payload) < len(encode_indices(flat, 512, None, plain, grid.shape[1:])[1])
        np.testing.assert_array_equal(decode_indices(payload, coding, 1, flat.shape[1], 512, None, model, grid.shape[1:]), flat)


def test_similarity_tables_save_load_and_old_models_keep_their_bytes():
    rng = np.random.default_rng(4)
    codebook = rng.normal(size=(2, 64, 4))
    codebook /= np.linalg.norm(codebook, axis=-1, keepdims=True)
    grids = [np.concatenate([g, g]) for g in smooth_field_grids(6, codebook[:1])]
    model = fit_context_model(grids, 64, codebook=codebook)
    again = ContextModel.from_tensors(model.tensors("level_2"), "level_2")
    np.testing.assert_array_equal(again.sim_bins, model.sim_bins)
    np.testing.assert_array_equal(again.sim_factor, model.sim_factor)
    assert again.bits(grids) == model.bits(grids)
    assert model.sim_bins.dtype == np.uint8 and (model.sim_bins[:, -1] == model.similarity_side - 1).all()
    # A model without the component writes the (G, 3) weights it always did: its id is unchanged.
    plain = fit_context_model(grids, 64)
    assert plain.tensors("level_2")["level_2.weights"].shape == (2, 3)
    assert ContextModel.from_tensors(plain.tensors("level_2"), "level_2").weights.shape == (2, 4)


def test_similarity_tables_are_validated():
    rng = np.random.default_rng(5)
    codebook = rng.normal(size=(1, 32, 4))
    codebook /= np.linalg.norm(codebook, axis=-1, keepdims=True)
    model = fit_context_model(smooth_field_grids(4, codebook), 32, codebook=codebook)
    stored = model.tensors("level_0")
    bad_bins = dict(stored, **{"level_0.sim_bins": np.full_like(stored["level_0.sim_bins"], 200)})
    with pytest.raises(ValueError, match="out-of-range"):
        ContextModel.from_tensors(bad_bins, "level_0")
    no_factor = {k: v for k, v in stored.items() if k != "level_0.sim_factor"}
    with pytest.raises(ValueError, match="both sim_bins and sim_factor"):
        ContextModel.from_tensors(no_factor, "level_0")
    with pytest.raises(ValueError, match="does not match"):
        fit_context_model(smooth_field_grids(4, codebook), 64, codebook=codebook)
    pair = np.stack([codebook[0, 0], -codebook[0, 0]])[None]  # a code and its opposite
    bins = similarity_bins(pair, bins=4)
    assert bins[0, 0, 0] == 3 and bins[0, 0, 1] == 0 and (bins[0, 2] == 4).all()


def test_chunked_context_encoding_writes_the_same_bytes(monkeypatch):
    """Large images are encoded in chunks of positions; the stream must not depend on it."""
    import oscar_model.entropy as entropy

    grids = correlated_grids(6, 2, 64)
    model = fit_context_model(grids, 64)
    flat = grids[0].reshape(2, -1)
    _, whole = encode_indices(flat, 64, None, model, grids[0].shape[1:])
    monkeypatch.setattr(entropy, "ENCODE_CHUNK", 7)
    coding, chunked = encode_indices(flat, 64, None, model, grids[0].shape[1:])
    assert coding == CODING_CONTEXT and chunked == whole
