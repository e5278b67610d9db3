"""The published model's backend (oscar-sd21) on tiny SD-shaped networks: conversion of a
checkpoint in the released layout, LoRA, refusing pickles, tables, and the CLI and job paths.
The real SD 2.1 is never run here (it is a GPU model; see benchmarks/gpu_throughput.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oscar_model.bitstream import unpack
from tests.sd21_fakes import write_official_checkpoint, write_tiny_sd21

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sd21_dir(tmp_path_factory) -> Path:
    return write_tiny_sd21(tmp_path_factory.mktemp("sd21"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "oscar.pkl"
    write_official_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def converted(sd21_dir, checkpoint, tmp_path_factory) -> Path:
    from oscar_model.convert import convert_official

    out = tmp_path_factory.mktemp("models") / "oscar-sd21"
    convert_official(sd21_dir, checkpoint, out)
    return out


def photo(h: int = 64, w: int = 128) -> np.ndarray:
    from skimage import data

    return data.astronaut()[100 : 100 + h, 150 : 150 + w].copy()


def test_official_checkpoint_converts_and_round_trips_every_level(converted):
    from oscar_model import OscarCodec
    from oscar_model.convert import OFFICIAL_LADDER

    codec = OscarCodec.from_pretrained(converted, device="cpu")
    assert [(p.downsample, p.codebook_size, p.timestep) for p in codec.ladder] == [
        (p.downsample, p.codebook_size, p.timestep) for p in OFFICIAL_LADDER
    ]
    assert codec.config.prediction_type == "v_prediction" and codec.stride == 64
    image = photo()
    levels = [p.index for p in codec.ladder]
    streams = codec.encode([image], levels)[0]
    for level, stream, decoded in zip(levels, streams, codec.decode(streams)):
        c = unpack(stream)
        assert (c.rate_index, c.height, c.width) == (level, 64, 128) and c.model_id == codec.model_id
        assert decoded.shape == image.shape and decoded.dtype == np.uint8
    # Bits grow with the ladder's nominal rate (fixed-length: no tables fitted yet).
    assert [len(s) for s in streams] == sorted(len(s) for s in streams)
    again = OscarCodec.from_pretrained(converted, device="cpu")
    assert again.model_hash == codec.model_hash == json.loads((converted / "oscar.json").read_text())["model_hash"]
    assert again.encode([image], levels)[0] == streams


def test_official_conversion_through_the_cli(sd21_dir, checkpoint, tmp_path, capsys):
    from oscar_model.cli import main

    out = tmp_path / "model"
    assert main(["convert-official", "--sd21", str(sd21_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert "8 levels" in capsys.readouterr().out
    assert json.loads((out / "autoencoder" / "base.json").read_text())["subfolder"] == "vae"  # referenced, not copied
    src, osc, png = tmp_path / "in.png", tmp_path / "x.osc", tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(photo()).save(src)
    assert main(["encode", str(src), "-o", str(osc), "--level", "7", "--model", str(out)]) == 0
    assert main(["decode", str(osc), "-o", str(png), "--model", str(out)]) == 0
    assert Image.open(png).size == (128, 64)


def test_sd21_lora_changes_the_unet_and_merging_keeps_its_output(converted):
    from oscar_model.sd21 import LoraConditionedUNet

    unmerged = LoraConditionedUNet.from_pretrained(converted / "denoiser").eval()
    merged = LoraConditionedUNet.from_pretrained(converted / "denoiser").eval()
    merged.merge_adapters()
    assert not any("lora" in k for k in merged.unet.state_dict())
    z, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([310, 310])
    with torch.no_grad():
        out_lora = unmerged(z, t).sample
        out_merged = merged(z, t).sample
        unmerged.unet.disable_adapters()
        out_base = unmerged(z, t).sample
    torch.testing.assert_close(out_merged, out_lora, atol=1e-4, rtol=1e-4)
    assert (out_lora - out_base).abs().mean() > 1e-3  # the adapters do something


def test_official_checkpoint_with_a_reduce_payload_is_refused_and_never_runs(tmp_path):
    from oscar_model.cli import main

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pkl"
    torch.save({"hyper_encoders": {}, "embeddings": Payload()}, bad)
    sd21 = write_tiny_sd21(tmp_path / "sd21")
    assert main(["convert-official", "--sd21", str(sd21), "--checkpoint", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert not marker.exists()
    assert not (tmp_path / "m").exists()


def test_official_checkpoint_without_the_released_keys_is_refused(tmp_path):
    from oscar_model.convert import CheckpointRefused, read_official_checkpoint

    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointRefused, match="hyper_encoders"):
        read_official_checkpoint(path)


def test_a_hyper_encoder_state_without_the_released_quantiser_is_refused():
    from oscar_model.perco import official_to_ours

    with pytest.raises(ValueError, match="project_in"):
        official_to_ours({"backbone.0.weight": torch.zeros(1)})


def test_sd21_x0_is_the_ddpm_schedulers_pred_original_sample(converted):
    from diffusers import DDPMScheduler

    from oscar_model import OscarCodec
    from tests.sd21_fakes import SCHEDULER

    codec = OscarCodec.from_pretrained(converted, device="cpu")
    scheduler = DDPMScheduler.from_config(SCHEDULER)  # the x0 of a step does not depend on the step count
    z_t, v = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    for t in (500, 150):
        ours = codec.config.schedule.predict_x0(z_t, v, torch.tensor([t]), codec.config.prediction_type)
        theirs = scheduler.step(v, t, z_t).pred_original_sample
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_sd21_tables_fitted_by_fit_tables_decode_in_a_fresh_process(sd21_dir, checkpoint, tmp_path):
    from PIL import Image
    from skimage import data

    from oscar_model.cli import main
    from oscar_model.convert import convert_official

    model = tmp_path / "model"
    before = convert_official(sd21_dir, checkpoint, model).model_id
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()[:128, :192]).save(photos / f"{name}.png")
    assert main(["fit-tables", "--model", str(model), "--images", str(photos)]) == 0
    config = json.loads((model / "oscar.json").read_text())
    assert all(p["typical_bpp"] > 0 for p in config["ladder"])
    assert config["model_hash"][:8] != before  # the id covers the tables
    code = (
        "import sys, numpy as np; from oscar_model import OscarCodec; from skimage import data\n"
        f"codec = OscarCodec.from_pretrained({str(model)!r}, device='cpu')\n"
        "streams = codec.encode([data.coffee()[:64, :128].copy()], list(range(8)))[0]\n"
        "assert codec.model_id == sys.argv[1], codec.model_id\n"
        "codings = {s[10] for s in streams}; print(sorted(codings))\n"
        "assert all(d.shape == (64, 128, 3) for d in codec.decode(streams))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, config["model_hash"][:8]], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() != "[0]"  # some level is entropy-coded with the fitted tables


def test_sd21_copied_base_equals_referenced_base(sd21_dir, checkpoint, converted, tmp_path):
    from oscar_model import OscarCodec
    from oscar_model.convert import convert_official

    copied = tmp_path / "copied"
    convert_official(sd21_dir, checkpoint, copied, copy_base=True)
    assert (copied / "denoiser" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    a, b = OscarCodec.from_pretrained(copied, device="cpu"), OscarCodec.from_pretrained(converted, device="cpu")
    assert a.model_id == b.model_id
    stream = a.encode([photo()], 3)[0]
    assert np.array_equal(a.decode([stream])[0], b.decode([stream])[0])


def test_sd21_missing_base_weights_are_a_clear_error(sd21_dir, checkpoint, tmp_path):
    import shutil

    from oscar_model import OscarCodec
    from oscar_model.convert import convert_official

    base = tmp_path / "sd21-moved"
    shutil.copytree(sd21_dir, base)
    convert_official(base, checkpoint, tmp_path / "model")
    shutil.rmtree(base)
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        OscarCodec.from_pretrained(tmp_path / "model", device="cpu")


def test_sd21_pickled_base_weights_are_never_loaded(sd21_dir, checkpoint, tmp_path):
    import shutil

    from oscar_model.convert import convert_official

    base = tmp_path / "sd21-bin"
    shutil.copytree(sd21_dir, base)
    weights = base / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save({}, base / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(Exception, match="safetensors"):
        convert_official(base, checkpoint, tmp_path / "model")


def test_sd21_model_runs_through_the_archive_job_without_new_flags(converted, tmp_path):
    from PIL import Image

    from jobs import archive
    from pipeline.tables.delta import read_delta as read_table

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo()).save(photos / "a.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert archive.main(["--input", str(photos), "--output", str(out), "--rates", "L2,L7", "--model", str(converted),
                         "--actors", "1", "--quiet"]) == 0
    bits, mets = read_table(str(out), "bitstreams"), read_table(str(out), "metrics")
    assert sorted(bits.column("rate_level").to_pylist()) == [2, 7] and mets.num_rows == 2
    assert read_table(str(out), "errors").num_rows == 1
    assert set(bits.column("model_id").to_pylist()) == {json.loads((converted / "oscar.json").read_text())["model_hash"][:8]}
