"""Shared fixtures: a small randomly initialised OSCAR model saved to a temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KODAK = SHARED / "datasets" / "kodak"

# The ONNX Runtime graphs the tests' models are exported to (once per model hash; Ray's workers
# inherit it): a temp folder, not the user's ~/.cache.
os.environ.setdefault("OSCAR_ONNX_CACHE", str(Path(tempfile.gettempdir()) / "oscar-onnx-tests"))

TINY_TEST_LADDER_KW = dict(
    autoencoder_config={"block_channels": (32, 16, 16, 8)},
    hyper_encoder={"channels": 16, "num_res_blocks": 1, "codebook_dim": 4},
    denoiser={"block_out_channels": (16, 16, 32), "norm_num_groups": 8, "attention_head_dim": 8},
)


def make_tiny_model(seed: int = 0, name: str = "oscar-test"):
    """A small random model with rANS tables on every level (so both codings get exercised)."""
    from oscar_model.factory import build_model
    from oscar_model.train.tables import counts_to_table

    torch.manual_seed(seed)
    model = build_model(name=name, **TINY_TEST_LADDER_KW).eval()
    rng = np.random.default_rng(seed)
    model.entropy_tables = {
        p.index: counts_to_table(rng.integers(0, 50, size=(p.groups, p.codebook_size))) for p in model.ladder
    }
    model.context_models = fit_context_models(model)
    # Smaller tiles than oscar-tiny's for images over 1024 px (the bad-input panorama): the
    # global attention of a tile costs the square of its area, and tests only need correctness.
    model.config.tiling = {"tile": 32, "overlap": 8}
    return model


def fit_context_models(model) -> dict:
    """Context models fitted to the model's own indices on four photos (so they win on photos)."""
    from skimage import data

    from oscar_model.train.tables import CONTEXT_MAX_CODES, codebook_of, fit_context_model

    grids: dict[int, list[np.ndarray]] = {p.index: [] for p in model.ladder}
    with torch.inference_mode():
        for im in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
            z = model.encode_latents(model.to_model_input([im[:256, :256].copy()]))
            for p in model.ladder:
                grids[p.index].append(model.hyper_encoders[p.index].encode(z)[0].numpy())
    return {
        p.index: fit_context_model(grids[p.index], p.codebook_size, codebook=codebook_of(model, p.index))
        for p in model.ladder
        if p.codebook_size <= CONTEXT_MAX_CODES
    }


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "oscar-test"
    make_tiny_model().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "oscar-other"
    make_tiny_model(seed=1, name="oscar-other").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_codec(tiny_model_dir):
    from oscar_model.codec import OscarCodec

    return OscarCodec.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture
def photo() -> np.ndarray:
    """A real photo (scikit-image ships it), cropped to an odd size."""
    from skimage import data

    return data.astronaut()[:200, :300].copy()


def json_text_cells(output) -> dict[str, list[str]]:
    """Every string cell of every table of a job's output that parses as a JSON object or list: the
    tables hold typed columns, never JSON text (what a test asserts is empty)."""
    import json

    import pyarrow as pa

    from pipeline.tables.delta import read_delta
    from pipeline.tables.schema import ALL_TABLES

    found: dict[str, list[str]] = {}
    for table in ALL_TABLES:
        rows = read_delta(str(output), table)
        for field in rows.schema:
            if not pa.types.is_string(field.type):
                continue
            for value in rows.column(field.name).to_pylist():
                if isinstance(value, str) and value[:1] in "{[":
                    try:
                        json.loads(value)
                    except ValueError:
                        continue
                    found.setdefault(f"{table}.{field.name}", []).append(value[:80])
    return found
