"""The same image gives the same stream whatever the batching and threading: an archive's bytes
do not depend on how a job was sized. (Decoded pixels may differ in the last rounding between
thread counts: float sums in another order; the streams, which are what is stored, do not.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    from skimage import data

    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = []
    for i in range(8):
        src = photos[i % 4]
        y, x = int(rng.integers(0, src.shape[0] - 96)), int(rng.integers(0, src.shape[1] - 160))
        out.append(np.ascontiguousarray(src[y : y + 96, x : x + 160]))
    return out


def _encode(codec, crops, batch_size: int, threads: int) -> list[list[bytes]]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return codec.encode(crops, list(range(len(codec.ladder))), batch_size=batch_size)
    finally:
        torch.set_num_threads(before)


def test_streams_do_not_depend_on_batch_size_or_threads(tiny_codec, crops):
    reference = _encode(tiny_codec, crops, batch_size=1, threads=1)
    for batch_size in (1, 4, 8):
        for threads in (1, 2):
            assert _encode(tiny_codec, crops, batch_size, threads) == reference, (batch_size, threads)


def test_decoded_images_do_not_depend_on_batch_size(tiny_codec, crops):
    streams = [s for per_image in _encode(tiny_codec, crops, 8, 2) for s in per_image[:2]]
    one_by_one = [tiny_codec.decode([s])[0] for s in streams]
    batched = tiny_codec.decode(streams, batch_size=8)
    for a, b in zip(one_by_one, batched):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_encoding_runs_at_one_thread_count_whatever_the_caller_set(tiny_codec, photo, monkeypatch):
    """The job's actors run 1 torch thread and `oscar encode` ran torch's default: 2 of 45
    streams differed (a VQ index flipped on a 1e-6 difference). Every caller now encodes at
    ENCODE_THREADS, and its own setting is restored afterwards."""
    import torch

    from oscar_model import codec as codec_module

    seen: list[int] = []
    original = type(tiny_codec.model).encode_latents

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_codec.model), "encode_latents", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with_two = tiny_codec.encode([photo], [0, 3])
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert tiny_codec.encode([photo], [0, 3]) == with_two
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {codec_module.ENCODE_THREADS}
