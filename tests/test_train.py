"""The whole training chain, a few steps per stage, on a handful of small images."""

import json

import numpy as np
import pytest
from PIL import Image

from jobs.train import main
from oscar_model.codec import OscarCodec
from oscar_model.factory import TINY_LADDER, TINY_TOP_LEVELS
from oscar_model.rates import RatePoint
from oscar_model.train.stages import CONTEXT_MAX_CODES, grow_ladder


@pytest.mark.slow
def test_all_stages_run_resume_and_export(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (264, 264, 3), dtype=np.uint8)).save(data / f"{i}.png")
    argv = [
        "--data", str(data), "--workdir", str(tmp_path / "run"), "--export", str(tmp_path / "model"),
        "--ae-steps", "2", "--he-steps", "2", "--dn-steps", "2", "--rf-steps", "2", "--po-steps", "2",
        "--gr-steps", "2", "--gp-steps", "2", "--threads", "2",
    ]
    assert main(argv) == 0
    codec = OscarCodec.from_pretrained(tmp_path / "model", device="cpu")
    assert set(codec.entropy_tables) == set(range(len(codec.ladder)))
    assert all(p.typical_bpp > 0 for p in codec.ladder)  # measured by the stats stage
    assert set(codec.context_models) == {p.index for p in codec.ladder if p.codebook_size <= CONTEXT_MAX_CODES}
    assert codec.config.info["training"]["stage2"]["steps"] == 2
    assert codec.config.info["training"]["stage2b"]["steps"] == 2
    assert codec.config.info["training"]["stage2c"]["steps"] == 2
    assert codec.config.info["training"]["stage2d"]["steps"] == 2
    # Stage "grow" added the top level(s), trained them and calibrated only them.
    assert len(codec.ladder) == len(TINY_LADDER) + len(TINY_TOP_LEVELS)
    summaries = json.loads((tmp_path / "run" / "summaries.json").read_text())
    assert summaries["grow"]["added_levels"] == [p.index for p in TINY_TOP_LEVELS]
    assert summaries["grow"]["calibration"]["levels"] == summaries["grow"]["added_levels"]
    stage2c = OscarCodec.from_pretrained(tmp_path / "run" / "codec_stage2c", device="cpu")
    assert [p.timestep for p in codec.ladder][: len(TINY_LADDER)] == [p.timestep for p in stage2c.ladder]
    assert {"stage0", "stage1", "calibration", "stage2", "stage2b", "stage2c", "grow", "stage2d", "index_statistics"} <= set(summaries)
    # A second run skips every finished stage and exports the same model.
    assert main(argv) == 0
    assert OscarCodec.from_pretrained(tmp_path / "model", device="cpu").model_hash == codec.model_hash


def test_grown_level_starts_as_the_level_below_it(tiny_model_dir, tmp_path):
    """A new level with one more group decodes exactly like its donor until it is trained."""
    import torch

    codec = OscarCodec.from_pretrained(tiny_model_dir, device="cpu")
    top = codec.ladder.get(len(codec.ladder) - 1)
    new = RatePoint(index=len(codec.ladder), downsample=top.downsample, codebook_size=top.codebook_size,
                    groups=top.groups + 1, timestep=top.timestep - 10)
    assert grow_ladder(codec, [new]) == [new.index]
    assert grow_ladder(codec, [new]) == []  # idempotent
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.inference_mode():
        z = codec.encode_latents(x)
        donor, grown = codec.hyper_encoders[top.index], codec.hyper_encoders[new.index]
        i_donor, i_grown = donor.encode(z), grown.encode(z)
        assert i_grown.shape[1] == top.groups + 1
        assert torch.equal(i_grown[:, : top.groups], i_donor)
        assert torch.equal(grown.decode(i_grown), donor.decode(i_donor))
    # The grown codec saves, loads and codes the new level like any other.
    codec.save_pretrained(tmp_path / "grown")
    loaded = OscarCodec.from_pretrained(tmp_path / "grown", device="cpu")
    assert len(loaded.ladder) == new.index + 1
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    (decoded,) = loaded.decode(loaded.encode([image], new.index))
    assert decoded.shape == image.shape


def test_grow_refuses_gaps_and_reshaped_levels(tiny_model_dir):
    codec = OscarCodec.from_pretrained(tiny_model_dir, device="cpu")
    n = len(codec.ladder)
    with pytest.raises(ValueError, match="gap"):
        grow_ladder(codec, [RatePoint(index=n + 1, downsample=1, codebook_size=16, timestep=50)])
    with pytest.raises(ValueError, match="different shape"):
        grow_ladder(codec, [RatePoint(index=0, downsample=1, codebook_size=16, groups=5, timestep=50)])
    assert len(codec.ladder) == n
