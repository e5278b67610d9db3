"""A small random model, saved and reloaded, driven through the bytes-level API."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from oscar_model.bitstream import BitstreamError, unpack
from oscar_model.codec import OscarCodec


def test_save_load_keeps_identity(tiny_codec, tiny_model_dir):
    again = OscarCodec.from_pretrained(tiny_model_dir, device="cpu")
    assert again.model_hash == tiny_codec.model_hash
    assert len(tiny_codec.model_id) == 8 and int(tiny_codec.model_id, 16) >= 0


def test_indices_round_trip_exactly(tiny_codec, photo):
    streams = tiny_codec.encode([photo], list(range(len(tiny_codec.ladder))))[0]
    x = tiny_codec.model.to_model_input([photo])
    with torch.inference_mode():
        z = tiny_codec.model.encode_latents(x)
    for point, stream in zip(tiny_codec.ladder, streams):
        container, p = tiny_codec.parse(stream)
        assert p == point
        with torch.inference_mode():
            expected = tiny_codec.model.hyper_encoders[point.index].encode(z)[0].numpy()
        np.testing.assert_array_equal(tiny_codec._indices(container, p), expected)


def test_header_fields_survive(tiny_codec, photo):
    (stream,) = tiny_codec.encode([photo], 2)
    c = unpack(stream)
    assert (c.height, c.width, c.rate_index) == (200, 300, 2)
    assert c.model_id == tiny_codec.model_id
    assert len(c.rms_codes) == 4
    with torch.inference_mode():
        z = tiny_codec.model.encode_latents(tiny_codec.model.to_model_input([photo]))
    from oscar_model.bitstream import dequantize_rms

    rms = tiny_codec.model.channel_rms(z)[0].numpy()
    np.testing.assert_allclose(dequantize_rms(c.rms_codes), rms, rtol=0.018)


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (513, 771)])
def test_odd_sizes_come_back_at_their_own_size(tiny_codec, h, w):
    img = np.random.default_rng(h).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    streams = tiny_codec.encode([img], [0, 5])[0]
    for s in streams:
        (out,) = tiny_codec.decode([s])
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_gray_rgba_16bit_palette_pngs_are_accepted(tiny_codec, photo, tmp_path):
    rgb = Image.fromarray(photo)
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    variants = {
        "gray": rgb.convert("L"),
        "rgba": rgb.convert("RGBA"),
        "gray16": gray16,
        "palette": rgb.convert("P", palette=Image.Palette.ADAPTIVE),
        "gray_alpha": rgb.convert("LA"),
    }
    for name, im in variants.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(_png_bytes(im))
        reopened = Image.open(path)
        (stream,) = tiny_codec.encode([path], 1)
        (out,) = tiny_codec.decode([stream])
        assert out.shape == (200, 300, 3), name
        assert unpack(stream).rate_index == 1
        assert reopened.mode in {"L", "RGBA", "I;16", "I", "P", "LA"}, (name, reopened.mode)
    # 16-bit gray is scaled, not clipped: it encodes like its 8-bit twin.
    (a,) = tiny_codec.encode([variants["gray"]], 3)
    (b,) = tiny_codec.encode([variants["gray16"]], 3)
    assert a == b


def test_batch_and_single_give_identical_bytes(tiny_codec):
    rng = np.random.default_rng(5)
    from skimage import data

    imgs = [data.astronaut()[:64, :96].copy(), data.coffee()[:64, :96].copy(), rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)]
    batched = tiny_codec.encode(imgs, [0, 3, 5], batch_size=8)
    singles = [tiny_codec.encode([im], [0, 3, 5])[0] for im in imgs]
    assert batched == singles


def test_bytes_identical_with_one_or_two_threads(tiny_model_dir, photo, tmp_path):
    np.save(tmp_path / "img.npy", photo)
    script = (
        "import sys, torch, numpy as np\n"
        "from oscar_model.codec import OscarCodec\n"
        "torch.set_num_threads(int(sys.argv[1]))\n"
        f"c = OscarCodec.from_pretrained({str(tiny_model_dir)!r}, device='cpu')\n"
        f"img = np.load({str(tmp_path / 'img.npy')!r})\n"
        "out = c.encode([img], [0, 1, 2, 3, 4, 5])[0]\n"
        "sys.stdout.write(b''.join(out).hex())\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script, n], capture_output=True, text=True, check=True).stdout for n in ("1", "2")]
    assert runs[0] and runs[0] == runs[1]


def test_bpp_counts_every_byte(tiny_codec, photo):
    for s in tiny_codec.encode([photo], [0, 5])[0]:
        assert OscarCodec.bpp(s) == 8 * len(s) / (200 * 300)


def test_entropy_coding_is_used_and_decodes(tiny_codec, photo):
    codings = {unpack(s).coding_name for s in tiny_codec.encode([photo], list(range(6)))[0]}
    assert codings <= {"rans-context", "rans", "fixed"}
    assert "rans-context" in codings


def test_save_load_keeps_context_models(tiny_codec, tiny_model_dir):
    again = OscarCodec.from_pretrained(tiny_model_dir, device="cpu")
    assert set(again.model.context_models) == set(tiny_codec.model.context_models) and again.model.context_models
    for k, model in tiny_codec.model.context_models.items():
        np.testing.assert_array_equal(again.model.context_models[k].left, model.left)
        np.testing.assert_array_equal(again.model.context_models[k].weights, model.weights)


def test_context_models_change_the_model_id(tiny_codec):
    saved = tiny_codec.model.context_models
    try:
        tiny_codec.model.context_models = {}
        tiny_codec.model.invalidate_hash()
        without = tiny_codec.model_id
    finally:
        tiny_codec.model.context_models = saved
        tiny_codec.model.invalidate_hash()
    assert without != tiny_codec.model_id


def test_corrupt_streams_raise_typed_errors(tiny_codec, photo):
    (stream,) = tiny_codec.encode([photo], 3)
    with pytest.raises(BitstreamError):
        tiny_codec.decode([stream[: len(stream) // 2]])
    for pos in (0, 6, 9, len(stream) // 2, len(stream) - 1):
        bad = bytearray(stream)
        bad[pos] ^= 0x10
        with pytest.raises(BitstreamError):
            tiny_codec.decode([bytes(bad)])


def test_wrong_model_is_refused(tiny_codec, other_model_dir, photo):
    other = OscarCodec.from_pretrained(other_model_dir, device="cpu")
    (stream,) = other.encode([photo], 0)
    with pytest.raises(BitstreamError, match="model id"):
        tiny_codec.decode([stream])


def test_one_bad_stream_fails_before_any_work(tiny_codec, photo):
    (good,) = tiny_codec.encode([photo], 0)
    with pytest.raises(BitstreamError):
        tiny_codec.decode([good, b"OSCR garbage"])


def test_timestep_override_changes_reconstruction(tiny_codec, photo):
    (stream,) = tiny_codec.encode([photo], 3)
    a = tiny_codec.decode([stream])[0]
    b = tiny_codec.decode([stream], timestep=900)[0]
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ValueError):
        tiny_codec.decode([stream], timestep=1000)


def test_decode_batches_mixed_sizes_and_rates(tiny_codec, photo):
    small = photo[:40, :50].copy()
    streams = [tiny_codec.encode([photo], 1)[0], tiny_codec.encode([small], 4)[0], tiny_codec.encode([photo], 1)[0]]
    outs = tiny_codec.decode(streams)
    assert [o.shape for o in outs] == [(200, 300, 3), (40, 50, 3), (200, 300, 3)]
    np.testing.assert_array_equal(outs[0], outs[2])


def test_unknown_rate_errors(tiny_codec, photo):
    with pytest.raises(ValueError, match="does not exist; the ladder is L0 "):
        tiny_codec.encode([photo], 17)


def test_refined_encoding_decodes_closer_with_the_same_decoder(tiny_codec, photo):
    """Index search through the decoder: a valid stream of the same level and model, decoding
    (with the unchanged decoder) no worse by the search's loss; 0 steps is the greedy encoder."""
    from oscar_model.image_loss import image_loss

    level = max(p.index for p in tiny_codec.ladder)
    (greedy,) = tiny_codec.encode([photo], level)
    assert tiny_codec.encode([photo], level, refine_steps=0) == [greedy]
    flags = [p.requires_grad for p in tiny_codec.model.parameters()]
    (refined,) = tiny_codec.encode([photo], level, refine_steps=4)
    assert [p.requires_grad for p in tiny_codec.model.parameters()] == flags  # networks left as they were
    assert unpack(refined).rate_index == level and unpack(refined).model_id == tiny_codec.model_id
    assert refined != greedy

    def loss(stream: bytes) -> float:
        (img,) = tiny_codec.decode([stream])
        as_tensor = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1 for a in (img, photo)]
        return float(image_loss(*as_tensor)[0])

    assert loss(refined) <= loss(greedy) + 1e-3
    with pytest.raises(ValueError, match="refine_steps"):
        tiny_codec.encode([photo], level, refine_steps=-1)


def test_every_shipped_component_meets_its_roles_contract_and_others_are_named(tiny_codec):
    import torch

    from oscar_model.contracts import check_component

    check_component("autoencoder", "compact", tiny_codec.model.autoencoder)
    check_component("denoiser", "unet2d", tiny_codec.model.denoiser)
    for he in tiny_codec.model.hyper_encoders:
        check_component("hyper_encoder", "compact", he)
    with pytest.raises(TypeError, match="lacks decode, decode_codes, encode, features, quantizer"):
        check_component("hyper_encoder", "linear", torch.nn.Linear(2, 2))


def test_the_ladders_latent_factor_comes_from_the_autoencoder(tiny_codec):
    from dataclasses import replace

    from oscar_model.model import OscarModel
    from oscar_model.rates import RateLadder

    wrong = RateLadder(tuple(replace(p, latent_factor=4) for p in tiny_codec.ladder))
    config = replace(tiny_codec.config, ladder=wrong)
    model = OscarModel(config, tiny_codec.model.autoencoder, list(tiny_codec.model.hyper_encoders), tiny_codec.model.denoiser)
    assert {p.latent_factor for p in model.ladder} == {int(tiny_codec.model.autoencoder.downscale)}
    assert [p.nominal_bpp for p in model.ladder] == [p.nominal_bpp for p in tiny_codec.ladder]


def test_the_codec_holds_its_model_and_runs_it_with_options(tiny_codec, photo):
    """A codec is policy over a model, not a module: options change how it runs (here the limit
    and the tiles), never the networks, and two codecs may share one model."""
    from oscar_model.model import OscarModel
    from oscar_model.options import CodecOptions

    assert not isinstance(tiny_codec, torch.nn.Module) and isinstance(tiny_codec.model, OscarModel)
    small = tiny_codec.with_options(tile=2)
    assert small.model is tiny_codec.model and small.options == CodecOptions(tile=2)
    assert small.tiling.tile < tiny_codec.tiling.tile and not small.fits_one_tile(*photo.shape[:2])
    (stream,) = small.encode([photo], 3)
    assert small.decode([stream])[0].shape == photo.shape
    assert tiny_codec.options == CodecOptions()  # the first codec is as it was


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"tile": "big"}, "--tile 'big': expected auto, off"), ({"tile": 0}, "--tile 0"),
     ({"precision": "fp16"}, "precision 'fp16': expected one of auto, fp32, bf16"),
     ({"max_pixels": 0}, "--max-pixels must be positive")],
)
def test_bad_codec_options_are_one_line_errors(changes, message):
    from oscar_model.options import CodecOptions

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        CodecOptions(**changes)
    assert CodecOptions(tile="64").tile == 64
