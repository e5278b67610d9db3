"""Streams crafted to pass the CRC: every one ends in a decoded image or a BitstreamError,
quickly and in bounded memory, before any pixel of a bad one is produced."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oscar_model.bitstream import CODING_CONTEXT, CODING_FIXED, BitstreamError, unpack
from tests.fuzz_streams import fields, forge, varint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def streams(tiny_codec):
    from skimage import data

    return tiny_codec.encode([data.coffee()[:96, :160].copy()], list(range(len(tiny_codec.ladder))))[0]


def test_fuzz_500_mutations_end_in_an_image_or_a_bitstream_error():
    run = subprocess.run([sys.executable, "-m", "tests.fuzz_streams", "--cases", "500", "--seed", "0", "--case-seconds", "10"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["crashes"] == [] and "crash" not in summary["outcomes"] and "hang" not in summary["outcomes"]
    assert sum(summary["outcomes"].values()) == 500
    assert summary["outcomes"]["BitstreamError"] >= 400  # forgeries are caught, not decoded
    assert all(k.get("BitstreamError") for k in summary["by_kind"].values())
    assert summary["slowest_case_s"] < 5 and summary["peak_rss_mb"] < 2500


def test_varints_must_be_minimal(tiny_codec, streams):
    f = fields(streams[3])
    assert unpack(forge(f)).height == f["height"]
    for pads in [(1, 0, 0), (0, 1, 0), (0, 0, 2)]:
        with pytest.raises(BitstreamError, match="minimal"):
            unpack(forge(f, pads=pads))
    assert varint(300, pad=1) == bytes([0xAC, 0x82, 0x00])


@pytest.mark.parametrize("height,width", [(100_000, 100_000), (16384, 16384), (256, 1_000_000), (2**34, 2**34)])
def test_huge_claimed_sizes_are_refused_before_anything_is_allocated(tiny_codec, streams, height, width):
    f = fields(streams[3])
    f["height"], f["width"] = height, width
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match="limit"):
        tiny_codec.decode([forge(f)])
    assert time.perf_counter() - t0 < 1.0


def test_sizes_within_the_limit_still_need_a_payload_that_can_hold_them(tiny_codec, streams):
    for stream in streams:
        f = fields(stream)
        if f["flags"] == CODING_FIXED:
            continue
        f["height"], f["width"] = 4000, 6000  # 24 Mpx, under the limit; a few hundred bytes of payload
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError, match="too short"):
            tiny_codec.decode([forge(f)])
        assert time.perf_counter() - t0 < 1.0


def test_an_empty_payload_is_an_error_at_every_level(tiny_codec, streams):
    for stream in streams:
        f = fields(stream)
        f["payload"] = b""
        with pytest.raises(BitstreamError):
            tiny_codec.decode([forge(f)])


def test_a_payload_that_runs_out_early_is_an_error_before_any_pixel(tiny_codec, streams, monkeypatch):
    """The front half of a context-coded payload, CRC recomputed: the coder would decode the rest
    from its empty state; the decoder notices the indices cost more bits than it was given."""
    import oscar_model.codec as codec_module

    decoded_pixels = []
    monkeypatch.setattr(codec_module, "to_uint8", lambda *a: decoded_pixels.append(1))
    context = [s for s in streams if fields(s)["flags"] == CODING_CONTEXT]
    assert context
    for stream in context:
        f = fields(stream)
        cut = len(f["payload"]) // 2 // 4 * 4
        if cut == 0:
            continue
        f["payload"] = f["payload"][:cut]
        with pytest.raises(BitstreamError):
            tiny_codec.decode([forge(f)])
    assert decoded_pixels == []


def test_payload_data_left_over_is_an_error(tiny_codec, streams):
    f = fields(streams[-1])
    f["payload"] = f["payload"] + bytes(8)
    with pytest.raises(BitstreamError):
        tiny_codec.decode([forge(f)])


def test_decode_limit_is_configurable(tiny_codec, streams):
    codec = tiny_codec.with_options(max_pixels=100)  # the 160x96 stream is over it now
    assert codec.model is tiny_codec.model  # the same networks, run with another limit
    with pytest.raises(BitstreamError, match="limit of 100"):
        codec.decode([streams[0]])
    assert tiny_codec.decode([streams[0]])[0].shape == (96, 160, 3)


def test_the_cap_counts_the_area_padded_to_the_stride(tiny_codec, photo):
    """A 1 x 50,000,000 header claimed exactly the 50 Mpx cap, and asked the networks for 32x
    as much: the padded area is what is capped now."""
    from dataclasses import replace

    from oscar_model.bitstream import BitstreamError, pack, unpack

    stream = tiny_codec.encode([photo], [0])[0][0]
    thin = pack(replace(unpack(stream), height=1, width=50_000_000))
    assert 1 * 50_000_000 <= tiny_codec.max_pixels
    with pytest.raises(BitstreamError, match=r"50000000x1 image: 1600000000 pixels once padded to the model's stride"):
        tiny_codec.decode([thin])
    with pytest.raises(ValueError, match="--max-pixels"):
        tiny_codec.check_size(1, 50_000_000, "image")
