"""Pipeline pieces that need no Ray cluster: table rows and the actor CPU budget."""

from __future__ import annotations

import numpy as np
import pytest

from oscar_model import ModelInfo, RateLadder, RatePoint
from pipeline.config import ActorConfig
from pipeline.rows import table_rows
from pipeline.runner import check_actor_budget


def _model(name: str = "oscar-test", model_id: str = "00000000") -> ModelInfo:
    """A model's info with a six-level ladder (no weights needed)."""
    ladder = RateLadder(tuple(RatePoint(index=i, downsample=1, codebook_size=16, timestep=100) for i in range(6)))
    return ModelInfo(name, "", model_id + "0" * 56, ladder)


def _transcoded_row(levels: np.ndarray) -> dict:
    return {
        "status": "ok", "image_id": "abc", "source_uri": "s3://b/a.png", "width": 16, "height": 8,
        "from_level": 5, "reference": "archive level 5", "archive_decode_ms": 3.0, "rate_levels": levels,
        "bitstreams": np.array([b"x" * 4] * len(levels), dtype=object), "encode_ms": np.array([1.0] * len(levels)),
        "psnr": np.array([20.0] * len(levels)), "ms_ssim": np.array([0.8] * len(levels)),
        "lpips": np.array([None] * len(levels)), "decode_ms": np.array([2.0] * len(levels)),
    }


def test_transcode_to_level_zero_is_not_mistaken_for_decode_only():
    # Ray hands list columns back as numpy arrays: array([0]) is falsy, which once turned a
    # transcode to level 0 into an extra "redecode" metrics row.
    out = table_rows([_transcoded_row(np.array([0]))], _model())
    assert [(m["rate_level"], m["setting"], m["reference"]) for m in out["metrics"]] == [(0, "level 0", "archive level 5")]
    assert len(out["bitstreams"]) == 1 and out["bitstreams"][0]["bpp"] == pytest.approx(8 * 4 / (16 * 8))


def test_decode_only_row_gets_a_redecode_metrics_row():
    out = table_rows([_transcoded_row(np.array([], dtype=int))], _model())
    assert [(m["rate_level"], m["setting"], m["decode_ms"]) for m in out["metrics"]] == [(5, "redecode", 3.0)]
    assert out["bitstreams"] == []


def test_actor_pools_must_leave_cpu_for_reads(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    check_actor_budget([ActorConfig(max_actors=2, num_cpus=0.25), ActorConfig(max_actors=2, num_cpus=0.25)])
    with pytest.raises(ValueError, match="lower --actors or --actor-cpus"):
        check_actor_budget([ActorConfig(max_actors=2, num_cpus=0.5), ActorConfig(max_actors=2, num_cpus=0.5)])


class CrashOnceStage:
    """Kills its own actor process on the first batch it sees (once per marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, batch: dict) -> dict:
        import os
        from pathlib import Path

        if not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            os._exit(1)
        return batch


def test_a_crashed_actor_is_restarted_and_its_batch_retried(tmp_path):
    """Our actor pools keep Ray Data's restart + retry defaults: a worker crash loses no row."""
    import sys

    import ray
    from ray import cloudpickle  # Ray pickles with its own vendored copy

    from pipeline.dataflow import map_actors

    me = sys.modules[__name__]  # this test module, shipped to the actor by value

    cloudpickle.register_pickle_by_value(me)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"i": i} for i in range(6)], override_num_blocks=3)
        ds = map_actors(ds, CrashOnceStage, ActorConfig(num_cpus=0.25, batch_size=2), marker=str(tmp_path / "crashed"))
        assert sorted(r["i"] for r in ds.take_all()) == list(range(6))
        assert (tmp_path / "crashed").exists()  # it really did crash once
    finally:
        cloudpickle.unregister_pickle_by_value(me)
        if started_here:
            ray.shutdown()


def test_error_columns_are_always_strings():
    """An all-ok block must not type its error columns as null/float: Ray could not merge it
    with a block holding an error row ("string vs float" in an actor's bundle)."""
    import pyarrow as pa

    from pipeline.rows import batch_of
    from pipeline.stages import decode_images

    ok_only = decode_images(raw_batch(_png_bytes(), "a.png"))
    with_error = decode_images(raw_batch(b"junk", "b.png"))
    for column in ("error_stage", "error_type", "error_message"):
        assert pa.array(list(ok_only[column])).type == pa.string()
        assert pa.array(list(with_error[column])).type == pa.string()
    assert list(ok_only["error_stage"]) == [""] and list(with_error["error_stage"]) == ["read"]
    # NaN (what a null column comes back as) is normalised too.
    assert list(batch_of([{"error_type": float("nan")}], ["error_type"])["error_type"]) == [""]
    # ...and the errors table still gets nulls, not empty strings, where a field is unknown.
    row = {"status": "error", "source_uri": "u", "image_id": None, "error_stage": "read", "error_type": "", "error_message": "m"}
    (err,) = table_rows([row], _model())["errors"]
    assert err["stage"] == "read" and err["error_type"] is None and err["message"] == "m"


def raw_batch(raw: bytes, uri: str) -> dict:
    """One reader row (pipeline.shards' columns) of ``raw`` bytes."""
    values = {"bytes": raw, "source_uri": uri, "unit_id": "u", "unit_size": 1, "error_stage": "", "error_type": "",
              "error_message": ""}
    out = {}
    for k, v in values.items():
        out[k] = np.empty(1, dtype=object)
        out[k][0] = v
    return out


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_rerun_with_another_model_is_refused(tmp_path):
    """Resuming skips committed units: with other weights or tables it would mix two models'
    rows (and bitstreams only the old model decodes) in one output, so it is refused."""
    from pipeline.delta import DeltaOutput
    from pipeline.runner import refuse_other_model

    out = DeltaOutput(str(tmp_path / "out"))
    out.create_tables()
    assert out.done_and_models() == (set(), set())
    out.commit_window({}, [{"unit_id": "a", "kind": "files", "uri": "a.png", "images": 1}], "aaaa0000")
    done, models = out.done_and_models()
    assert done == {"a"} and models == {"aaaa0000"}
    refuse_other_model(out.output_uri, _model("oscar-tiny", "aaaa0000"), models)  # same model: resumes
    with pytest.raises(ValueError, match="model id\\(s\\) aaaa0000; this run's model oscar-tiny is id bbbb1111"):
        refuse_other_model(out.output_uri, _model("oscar-tiny", "bbbb1111"), models)


def test_encode_stage_searches_indices_when_asked(tiny_model_dir, tiny_codec, photo):
    """--refine reaches the actors: the stage's streams are the codec's refined ones."""
    import io

    from PIL import Image

    from pipeline.stages import EncodeStage, decode_images

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    batch = decode_images(raw_batch(buf.getvalue(), "p.png"))
    level = max(p.index for p in tiny_codec.ladder)
    refined = EncodeStage(str(tiny_model_dir), rates=(level,), refine_steps=3)(dict(batch))
    greedy = EncodeStage(str(tiny_model_dir), rates=(level,))(dict(batch))
    assert list(refined["bitstreams"][0]) == tiny_codec.encode([photo], [level], refine_steps=3)[0]
    assert list(refined["bitstreams"][0]) != list(greedy["bitstreams"][0])
    assert list(refined["refine_steps"]) == [3] and list(greedy["refine_steps"]) == [0]


def test_refined_rows_say_so_in_the_metrics_table():
    row = dict(_transcoded_row(np.array([2])), refine_steps=np.int64(16))
    (metric,) = table_rows([row], _model())["metrics"]
    assert metric["setting"] == "level 2, refine 16"


def test_ms_ssim_of_small_images_is_measured_not_raised():
    """Images of 3-32 px once raised inside pytorch_msssim and aborted a whole archive job."""
    from pipeline.metrics import ms_ssim_rgb

    rng = np.random.default_rng(0)
    for side in (3, 16, 32, 33):
        a = (rng.random((side, side + 7, 3)) * 255).astype(np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
        assert 0.9 < ms_ssim_rgb(a, b) <= 1.0
        assert ms_ssim_rgb(a, a) == pytest.approx(1.0)


def test_a_second_writer_is_refused_and_a_dead_drivers_lease_is_taken_over(tmp_path):
    import json
    import socket

    from pipeline.delta import DeltaOutput, OutputBusy

    first, second = DeltaOutput(str(tmp_path / "out")), DeltaOutput(str(tmp_path / "out"))
    first.acquire_lease()
    with pytest.raises(OutputBusy, match=f"being written by run {first.run_id} .*one writer per output"):
        second.acquire_lease()
    first.release_lease()
    second.acquire_lease()  # released: free
    dead = {"run_id": "gone", "host": socket.gethostname(), "pid": 2**22 + 7, "renewed": 9e18}  # no such pid
    (tmp_path / "out" / "_lease.json").write_text(json.dumps(dead))
    DeltaOutput(str(tmp_path / "out")).acquire_lease()  # its driver is gone from this host: taken over at once
