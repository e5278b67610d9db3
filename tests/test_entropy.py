import numpy as np
import pytest

from oscar_model.bitstream import CODING_FIXED, CODING_RANS, BitstreamError
from oscar_model.entropy import counts_to_table, decode_indices, encode_indices


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
