import zlib

import numpy as np
import pytest

from oscar_model.bitstream import (
    CODING_FIXED,
    CODING_RANS,
    FORMAT_VERSION,
    MAGIC,
    BitstreamError,
    Container,
    dequantize_rms,
    pack,
    quantize_rms,
    unpack,
)


def sample_container(payload: bytes = bytes(range(40))) -> Container:
    return Container("01020304", 3, CODING_RANS, 512, 768, (128, 100, 160, 140), payload)


def test_round_trip_keeps_every_field():
    c = sample_container()
    assert unpack(pack(c)) == c


def test_golden_bytes():
    """The layout documented in README / bitstream.py, byte by byte."""
    data = pack(sample_container(b"\xaa\xbb"))
    body = (
        MAGIC + bytes([FORMAT_VERSION]) + b"\x01\x02\x03\x04" + bytes([3, CODING_RANS])
        + bytes([0x80, 0x04])  # 512 as LEB128
        + bytes([0x80, 0x06])  # 768 as LEB128
        + bytes([4, 128, 100, 160, 140]) + bytes([2]) + b"\xaa\xbb"
    )
    assert data == body + zlib.crc32(body).to_bytes(4, "big")
    assert len(data) == 4 + 1 + 4 + 2 + 2 + 2 + 5 + 1 + 2 + 4


def test_every_truncation_raises():
    data = pack(sample_container())
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            unpack(data[:n])


def test_every_single_bit_flip_raises():
    data = pack(sample_container())
    for pos in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                unpack(bytes(flipped))


def test_wrong_version_is_named():
    data = bytearray(pack(sample_container()))
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(BitstreamError, match="version"):
        unpack(bytes(data))


def test_not_a_stream():
    with pytest.raises(BitstreamError, match="magic"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(30))
    with pytest.raises(BitstreamError):
        unpack("OSCR")  # type: ignore[arg-type]


def test_trailing_garbage_raises():
    data = pack(sample_container())
    with pytest.raises(BitstreamError):
        unpack(data + b"\x00")


def test_large_sizes_use_varints():
    c = Container("61626364", 0, CODING_FIXED, 70000, 1, (128,), b"")
    assert unpack(pack(c)).height == 70000


def test_rms_quantisation_error_is_small():
    rms = np.array([0.1, 0.5, 1.0, 1.7, 7.5])
    back = dequantize_rms(quantize_rms(rms))
    assert np.all(np.abs(back / rms - 1) < 0.018)
