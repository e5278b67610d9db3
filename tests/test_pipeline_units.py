"""Pipeline pieces that need no Ray cluster: table rows and the actor CPU budget."""

from __future__ import annotations

import numpy as np
import pytest

from oscar_model import ModelInfo, RateLadder, RatePoint
from oscar_model.config import CodecConfig
from pipeline.batch import table_of
from pipeline.cluster import check_actor_budget
from pipeline.config import ActorConfig


def _model(name: str = "oscar-test", model_id: str = "00000000") -> ModelInfo:
    """A model's info with a six-level ladder (no weights needed)."""
    ladder = RateLadder(tuple(RatePoint(index=i, downsample=1, codebook_size=16, timestep=100) for i in range(6)))
    return ModelInfo("", model_id + "0" * 56, CodecConfig(name=name, ladder=ladder))


def _decoded_archive_row(**more) -> dict:
    """A redecode row after ArchiveDecodeStage (and, with ``streams``, a transcode's encode and verify)."""
    return {"unit_id": "u", "unit_size": 1, "source_uri": "s3://b/a.png", "error": None, "image_id": "abc",
            "width": 16, "height": 8, "pixels": b"", "reference": "archive level 5", "from_level": 5,
            "archive_decode_ms": 3.0, **more}


def test_transcode_to_level_zero_is_not_mistaken_for_decode_only():
    from pipeline.batch import measurement
    from pipeline.redecode import RedecodeRows

    m = measurement("oscar-test", 0, "level 0", "sweep", True, "archive level 5", n_bytes=4, bpp=0.25, psnr=20.0)
    row = _decoded_archive_row(streams=[{"rate_level": 0, "bitstream": b"x" * 4, "encode_ms": 1.0}], oscar_metrics=[m])
    out = RedecodeRows(_model(), transcode=True)(table_of([row], list(row)))
    metrics = out["metrics"].to_pylist()
    assert [(m["rate_level"], m["setting"], m["reference"]) for m in metrics] == [(0, "level 0", "archive level 5")]
    (stream,) = out["bitstreams"].to_pylist()
    assert stream["bpp"] == pytest.approx(8 * 4 / (16 * 8)) and stream["nominal_bpp"] == _model().nominal_bpp[0]


def test_decode_only_row_gets_a_redecode_metrics_row():
    from pipeline.redecode import RedecodeRows

    row = _decoded_archive_row()
    out = RedecodeRows(_model(), transcode=False)(table_of([row], list(row)))
    assert [(m["rate_level"], m["setting"], m["decode_ms"]) for m in out["metrics"].to_pylist()] == [(5, "redecode", 3.0)]
    assert "bitstreams" not in out


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

    def __call__(self, batch):
        import os
        from pathlib import Path

        if not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            os._exit(1)
        return batch


def test_a_crashed_actor_is_not_restarted_but_ends_the_dataset(tmp_path):
    """Our actor pools start with max_restarts=0 (a restartable actor with constructor arguments
    in the object store is what Ray logs an error line for, ray-project/ray#53727): a crash ends
    the dataset with RayActorError, which the runner answers by taking the run up again
    (tests/test_reliability.py runs that end to end)."""
    import sys

    import ray
    from ray import cloudpickle  # Ray pickles with its own vendored copy
    from ray.exceptions import RayActorError

    from pipeline.runner import Step, apply_step

    me = sys.modules[__name__]  # this test module, shipped to the actor by value

    cloudpickle.register_pickle_by_value(me)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.from_items([{"i": i} for i in range(6)], override_num_blocks=3)
        step = Step(CrashOnceStage, {"marker": str(tmp_path / "crashed")}, pool=ActorConfig(num_cpus=0.25, batch_size=2))
        ds = apply_step(ds, step)
        with pytest.raises(RayActorError):
            ds.take_all()
        assert (tmp_path / "crashed").exists()  # it really did crash
    finally:
        cloudpickle.unregister_pickle_by_value(me)
        if started_here:
            ray.shutdown()


def test_an_ok_block_and_a_failed_block_have_one_schema():
    """Every in-flight column is typed, the error too: an all-ok block must concatenate with a
    block holding an error row (an untyped all-null column once made Ray fail "string vs float")."""
    import pyarrow as pa

    from pipeline.stages.images import decode_images
    from pipeline.tables.rows import error_rows

    ok_only = decode_images(raw_batch(_png_bytes(), "a.png"))
    with_error = decode_images(raw_batch(b"junk", "b.png"))
    assert ok_only.schema == with_error.schema
    both = pa.concat_tables([ok_only, with_error])
    assert both.column("error").to_pylist()[0] is None and both.column("error").to_pylist()[1]["stage"] == "read"
    # ...and the errors table gets nulls, not empty strings, where a field is unknown.
    failed = table_of([{"unit_id": "u", "unit_size": 1, "source_uri": "u", "error": {"stage": "read", "type": None,
                                                                                       "message": "m"}}],
                      ["unit_id", "unit_size", "source_uri", "error"])
    (err,) = error_rows(failed).to_pylist()
    assert err["stage"] == "read" and err["error_type"] is None and err["message"] == "m" and err["image_id"] is None


def raw_batch(raw: bytes, uri: str):
    """One reader row (pipeline.inputs.readers' columns) of ``raw`` bytes."""
    from pipeline.inputs.readers import RAW_COLUMNS

    return table_of([{"bytes": raw, "source_uri": uri, "unit_id": "u", "unit_size": 1, "error": None}], RAW_COLUMNS)


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_rerun_with_another_model_is_refused(tmp_path):
    """Resuming skips committed units: with other weights or tables it would mix two models'
    rows (and bitstreams only the old model decodes) in one output, so it is refused."""
    from pipeline.runner import refuse_other_model
    from pipeline.tables.delta import DeltaOutput

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

    from pipeline.stages.images import decode_images
    from pipeline.stages.oscar import EncodeStage, VerifyStage
    from pipeline.tables.rows import metrics_rows

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    batch = decode_images(raw_batch(buf.getvalue(), "p.png"))
    level = max(p.index for p in tiny_codec.ladder)
    refined = EncodeStage(str(tiny_model_dir), levels=(level,), refine_steps=3)(batch)
    greedy = EncodeStage(str(tiny_model_dir), levels=(level,))(batch)

    def streams(b):
        return [s["bitstream"] for s in b.column("streams").to_pylist()[0]]

    assert streams(refined) == tiny_codec.encode([photo], [level], refine_steps=3)[0]
    assert streams(refined) != streams(greedy)
    assert refined.column("refine_steps").to_pylist() == [3] and greedy.column("refine_steps").to_pylist() == [0]
    # ...and the metrics table says so, so refined rows never pass for greedy ones.
    (metric,) = metrics_rows(VerifyStage(str(tiny_model_dir))(refined), "oscar_metrics").to_pylist()
    assert metric["setting"] == f"level {level}, refine 3" and metric["mode"] == "sweep" and metric["psnr"] > 10


def test_ms_ssim_of_small_images_is_measured_not_raised():
    """Images of 3-32 px once raised inside pytorch_msssim and aborted a whole archive job."""
    from pipeline.stages.metrics import ms_ssim_rgb

    rng = np.random.default_rng(0)
    for side in (3, 16, 32, 33):
        a = (rng.random((side, side + 7, 3)) * 255).astype(np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
        assert 0.9 < ms_ssim_rgb(a, b) <= 1.0
        assert ms_ssim_rgb(a, a) == pytest.approx(1.0)


def test_a_second_writer_is_refused_and_a_dead_drivers_lease_is_taken_over(tmp_path):
    import json
    import socket

    from pipeline.tables.delta import DeltaOutput, OutputBusy

    first, second = DeltaOutput(str(tmp_path / "out")), DeltaOutput(str(tmp_path / "out"))
    first.acquire_lease()
    with pytest.raises(OutputBusy, match=f"being written by run {first.run_id} .*one writer per output"):
        second.acquire_lease()
    first.release_lease()
    second.acquire_lease()  # released: free
    dead = {"run_id": "gone", "host": socket.gethostname(), "pid": 2**22 + 7, "renewed": 9e18}  # no such pid
    (tmp_path / "out" / "_lease.json").write_text(json.dumps(dead))
    DeltaOutput(str(tmp_path / "out")).acquire_lease()  # its driver is gone from this host: taken over at once


def test_a_unit_is_complete_only_once_every_table_row_of_it_is_in_a_received_file(tmp_path):
    """A write task's batch can split a block's rows and receipts arrive in any order: the unit's
    count row alone must not complete it, or a driver killed before the other file's receipt
    would commit the unit without those rows and a rerun would skip it."""
    from pipeline.archive import ArchiveRows
    from pipeline.tables.windows import CommitWindows
    from pipeline.tables.writer import receipts_of, table_rows, write_files

    streams = [{"rate_level": lv, "bitstream": b"x" * 4, "encode_ms": 1.0} for lv in (0, 1)]
    row = {"unit_id": "u", "unit_size": 1, "source_uri": "a.png", "error": None, "image_id": "abc", "width": 16,
           "height": 8, "streams": streams}
    flat = table_rows(table_of([row], list(row)), ArchiveRows("00000000", _model().nominal_bpp, "oscar-test"))
    assert flat.column("table").to_pylist() == ["", "bitstreams", "bitstreams"]
    first, rest = flat.slice(0, 2), flat.slice(2)  # the count row and one stream; the other stream
    windows = CommitWindows()
    (later,) = receipts_of(write_files(rest, str(tmp_path)))
    (earlier,) = receipts_of(write_files(first, str(tmp_path)))
    windows.add(earlier)
    assert not windows.complete("u")  # one of its two streams is not in a received file yet
    windows.add(later)
    assert windows.complete("u")
    files, units, _, _ = windows.take()
    assert units == {"u": 1} and sum(f["rows"] for f in files["bitstreams"]) == 2
