"""The whole training chain, a few steps per stage, on a handful of small images."""

import json

import numpy as np
import pytest
from PIL import Image

from jobs.train import main
from oscar_model.codec import OscarCodec


@pytest.mark.slow
def test_all_stages_run_resume_and_export(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (264, 264, 3), dtype=np.uint8)).save(data / f"{i}.png")
    argv = [
        "--data", str(data), "--workdir", str(tmp_path / "run"), "--export", str(tmp_path / "model"),
        "--ae-steps", "2", "--he-steps", "2", "--dn-steps", "2", "--rf-steps", "2", "--po-steps", "2", "--threads", "2",
    ]
    assert main(argv) == 0
    codec = OscarCodec.from_pretrained(tmp_path / "model", device="cpu")
    assert set(codec.entropy_tables) == set(range(len(codec.ladder)))
    assert set(codec.context_models) == {p.index for p in codec.ladder if p.codebook_size <= 256}
    assert codec.config.info["training"]["stage2"]["steps"] == 2
    assert codec.config.info["training"]["stage2b"]["steps"] == 2
    assert codec.config.info["training"]["stage2c"]["steps"] == 2
    summaries = json.loads((tmp_path / "run" / "summaries.json").read_text())
    assert {"stage0", "stage1", "calibration", "stage2", "stage2b", "stage2c", "index_statistics"} <= set(summaries)
    # A second run skips every finished stage and exports the same model.
    assert main(argv) == 0
    assert OscarCodec.from_pretrained(tmp_path / "model", device="cpu").model_hash == codec.model_hash
