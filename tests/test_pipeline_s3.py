"""archive -> redecode -> audit over a local S3 (moto on 127.0.0.1), with bad files mixed in."""

from __future__ import annotations

import io
import json
import socket

import numpy as np
import pytest
from PIL import Image

from pipeline.tables.schema import BITSTREAMS, ERRORS, METRICS

BUCKET = "corpus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def good_photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "photos/astronaut.png": data.astronaut()[100:196, 150:278].copy(),
        "photos/coffee.png": data.coffee()[50:146, 200:328].copy(),
        "photos/sub/chelsea.png": data.chelsea()[60:156, 100:228].copy(),
    }


def rotated_jpeg() -> tuple[bytes, tuple[int, int]]:
    """A 128x96 JPEG with EXIF orientation 6 (rotate 90 degrees): decodes as 96x128."""
    from skimage import data

    img = Image.fromarray(data.rocket()[:96, :128].copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif)
    return buf.getvalue(), (128, 96)


def bad_files() -> dict[str, bytes]:
    good = _png(good_photos()["photos/astronaut.png"])
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")
    return {
        "photos/corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
        "photos/truncated.png": good[: len(good) // 2],
        "photos/empty.png": b"",
        "photos/notes.txt": b"this is not an image\n",
        "photos/bomb.png": bomb.getvalue(),
    }


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    mp = pytest.MonkeyPatch()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        mp.setenv(k, v)
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket=BUCKET)
    for key, arr in good_photos().items():
        client.put_object(Bucket=BUCKET, Key=key, Body=_png(arr))
    jpeg, _ = rotated_jpeg()
    client.put_object(Bucket=BUCKET, Key="photos/rotated.jpg", Body=jpeg)
    for key, body in bad_files().items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    yield client
    mp.undo()
    server.stop()


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()



def table(uri: str, name: str):
    from pipeline.tables.delta import read_delta

    return read_delta(uri, name)


def test_archive_redecode_audit_over_s3(s3, ray_local, tiny_model_dir, tiny_codec):
    from jobs import archive, audit, redecode
    from pipeline.stages.metrics import ms_ssim_rgb, psnr

    out = f"s3://{BUCKET}/archive"
    argv = ["--input", f"s3://{BUCKET}/photos", "--output", out, "--rates", "0.03,L5", "--model", str(tiny_model_dir), "--quiet"]
    assert archive.main(argv) == 0

    bits, mets, errs = table(out, "bitstreams"), table(out, "metrics"), table(out, "errors")
    assert (bits.schema.names, mets.schema.names, errs.schema.names) == (BITSTREAMS.names, METRICS.names, ERRORS.names)
    n_good, n_bad, n_rates = 4, 5, 2
    assert bits.num_rows == n_good * n_rates and mets.num_rows == n_good * n_rates
    assert errs.num_rows == n_bad
    bad_uris = {f"s3://{BUCKET}/{k}" for k in bad_files()}
    assert set(errs.column("source_uri").to_pylist()) == bad_uris
    reasons = {r["source_uri"].rsplit("/", 1)[1]: r for r in errs.to_pylist()}
    assert "empty" in reasons["empty.png"]["message"]
    assert "decompression bomb" in reasons["bomb.png"]["message"]
    assert all(r["stage"] == "read" for r in reasons.values())

    # EXIF orientation applied: the rotated JPEG is archived at its displayed size.
    rot = [r for r in bits.to_pylist() if r["source_uri"].endswith("rotated.jpg")]
    assert {(r["width"], r["height"]) for r in rot} == {(96, 128)}

    # Every stored bitstream decodes to the metrics' numbers, against its own original.
    originals = {f"s3://{BUCKET}/{k}": v for k, v in good_photos().items()}
    metric_by_key = {(m["image_id"], m["rate_level"]): m for m in mets.to_pylist()}
    for row in bits.to_pylist():
        assert row["n_bytes"] == len(row["bitstream"])
        assert row["bpp"] == pytest.approx(8 * row["n_bytes"] / (row["width"] * row["height"]))
        m = metric_by_key[(row["image_id"], row["rate_level"])]
        assert m["bpp"] == row["bpp"]
        if row["source_uri"] in originals:
            (decoded,) = tiny_codec.decode([row["bitstream"]])
            assert psnr(originals[row["source_uri"]], decoded) == pytest.approx(m["psnr"], abs=0.05)
            assert ms_ssim_rgb(originals[row["source_uri"]], decoded) == pytest.approx(m["ms_ssim"], abs=2e-3)

    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="archive/run_manifest.json")["Body"].read())
    assert manifest["counts"]["images_ok"] == n_good and manifest["counts"]["images_failed"] == n_bad
    assert manifest["model"]["model_id"] == tiny_codec.model_id

    # A rerun resumes: nothing left to do, no rows added.
    assert archive.main(argv) == 0
    assert table(out, "bitstreams").num_rows == bits.num_rows
    assert table(out, "metrics").num_rows == mets.num_rows
    assert table(out, "errors").num_rows == errs.num_rows
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="archive/run_manifest.json")["Body"].read())
    assert manifest["counts"]["units_done"] == 0 and manifest["counts"]["units_skipped_already_done"] >= 1
    # Every committed unit records its model, and another model may not resume into it.
    from oscar_model import ModelInfo
    from oscar_model.config import CodecConfig
    from pipeline.runner import refuse_other_model
    from pipeline.tables.delta import DeltaOutput

    _, models = DeltaOutput(out).done_and_models()
    assert models == {tiny_codec.model_id}
    with pytest.raises(ValueError, match="new --output"):
        refuse_other_model(out, ModelInfo("", "00000000", CodecConfig(name="oscar-tiny", ladder=tiny_codec.ladder)), models)

    # redecode: PNGs for every archived stream, and a transcode of the top level to level 0.
    dec = f"s3://{BUCKET}/decoded"
    # No --model: the archive's own model (a folder here, its name not registered).
    assert redecode.main(["--archive", out, "--output", dec, "--images", "--quiet"]) == 0
    pngs = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="decoded/images/")["Contents"] if o["Key"].endswith(".png")]
    assert len(pngs) == n_good * n_rates
    png = s3.get_object(Bucket=BUCKET, Key=pngs[0])["Body"].read()
    assert Image.open(io.BytesIO(png)).size in {(128, 96), (96, 128)}
    trans = f"s3://{BUCKET}/transcoded"
    assert redecode.main(["--archive", out, "--output", trans, "--rates", "L0", "--model", str(tiny_model_dir), "--quiet"]) == 0
    tbits = table(trans, "bitstreams")
    assert tbits.num_rows == n_good and set(tbits.column("rate_level").to_pylist()) == {0}
    assert set(table(trans, "metrics").column("reference").to_pylist()) == {"archive level 5"}
    assert redecode.main(["--archive", out, "--output", trans, "--rates", "L0", "--model", str(tiny_model_dir), "--quiet"]) == 0
    assert table(trans, "bitstreams").num_rows == n_good

    # audit: classical codecs at the bpp OSCAR reached, plus the report.
    aud = f"s3://{BUCKET}/audit"
    assert audit.main(["--input", f"s3://{BUCKET}/photos", "--output", aud, "--codecs", "oscar-test,jpeg,webp",
                       "--rates", "L5", "--model", str(tiny_model_dir), "--metrics", "psnr,ms_ssim", "--quiet"]) == 0
    amet = table(aud, "metrics").to_pylist()
    assert {m["codec"] for m in amet} == {"oscar-test", "jpeg", "webp"}
    assert len([m for m in amet if m["mode"] != "sweep" or m["codec"] == "oscar-test"]) == n_good * 3
    assert len([m for m in amet if m["mode"] == "sweep" and m["codec"] != "oscar-test"]) == n_good * 2 * 12
    for m in amet:
        if m["mode"] == "matched" and m["reached"]:
            oscar = next(o for o in amet if o["codec"] == "oscar-test" and o["image_id"] == m["image_id"])
            assert m["bpp"] <= oscar["bpp"] + 1e-9
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="audit/")["Contents"]}
    assert {"audit/report.html", "audit/rd.png", "audit/summary.json"} <= keys
    assert "audit/bd_rates/_delta_log/00000000000000000000.json" in keys  # per-image BD-rates, a Delta table on S3
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key="audit/summary.json")["Body"].read())
    assert {s["codec"] for s in summary["summary"]} == {"oscar-test", "jpeg", "webp"}


def test_manifest_input_with_missing_object(s3, ray_local, tiny_model_dir, tmp_path):
    """A manifest may name objects that do not exist: they become error rows."""
    from jobs import archive

    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri\ns3://{BUCKET}/photos/coffee.png\ns3://{BUCKET}/photos/missing.png\n")
    out = str(tmp_path / "out")
    assert archive.main(["--input", str(manifest), "--output", out, "--rates", "L1", "--no-verify",
                         "--model", str(tiny_model_dir), "--quiet"]) == 0
    bits = table(out, "bitstreams")
    errs = table(out, "errors").to_pylist()
    assert bits.num_rows == 1
    assert [e["source_uri"] for e in errs] == [f"s3://{BUCKET}/photos/missing.png"]
    assert errs[0]["error_type"] == "FileNotFoundError"


def test_webdataset_and_parquet_shards_over_s3(s3, ray_local, tiny_model_dir, tmp_path):
    """Shards on S3: tars as img2dataset writes them (one broken member, one truncated shard) and
    Parquet with a Hugging Face image struct; every readable image archived, every bad one an error row."""
    from jobs import archive
    from tests.shard_fixtures import cut_inside_member, hf_parquet, webdataset_tar

    photos = list(good_photos().values())
    s3.put_object(Bucket=BUCKET, Key="shards/00000.tar", Body=webdataset_tar(photos[:2], broken_member=True))
    cut = cut_inside_member(webdataset_tar(photos[1:], start=10), member=2)  # the second sample's .jpg
    s3.put_object(Bucket=BUCKET, Key="shards/00001.tar", Body=cut)
    out = f"s3://{BUCKET}/from-shards"
    argv = ["--input", f"s3://{BUCKET}/shards/", "--output", out, "--rates", "L1", "--no-verify",
            "--model", str(tiny_model_dir), "--quiet"]
    assert archive.main(argv) == 0
    bits, errs = table(out, "bitstreams").to_pylist(), table(out, "errors").to_pylist()
    assert {b["source_uri"] for b in bits} >= {f"s3://{BUCKET}/shards/00000.tar#000000.jpg",
                                               f"s3://{BUCKET}/shards/00000.tar#000001.jpg"}
    reasons = {e["source_uri"]: e for e in errs}
    assert reasons[f"s3://{BUCKET}/shards/00000.tar#000002.jpg"]["stage"] == "read"  # the broken member, by name
    broke = reasons[f"s3://{BUCKET}/shards/00001.tar"]
    assert "broke off inside member 000011.jpg, after 2 whole members" in broke["message"]
    assert f"s3://{BUCKET}/shards/00001.tar#000010.jpg" in {b["source_uri"] for b in bits}  # read before the break
    assert len(table(out, "work_units")) == 2

    s3.put_object(Bucket=BUCKET, Key="hf/train-00000.parquet", Body=hf_parquet(photos))
    out = f"s3://{BUCKET}/from-parquet"
    assert archive.main(["--input", f"s3://{BUCKET}/hf/", "--output", out, "--rates", "L1", "--no-verify",
                         "--model", str(tiny_model_dir), "--quiet"]) == 0
    bits = table(out, "bitstreams").to_pylist()
    assert sorted(b["source_uri"] for b in bits) == [f"s3://{BUCKET}/hf/train-00000.parquet#img-{i}" for i in range(3)]


def test_a_model_folder_on_s3_is_fetched_once_per_node_and_checked(s3, ray_local, tiny_model_dir, tiny_codec, tmp_path):
    """--model s3://...: the driver reads only oscar.json, each node fetches the folder into a
    cache named by the model hash; no shared volume."""
    from pathlib import Path

    from jobs import archive
    from pipeline.inputs.model_cache import local_model_folder, model_info

    for f in Path(tiny_model_dir).rglob("*"):
        if f.is_file():
            s3.put_object(Bucket=BUCKET, Key=f"models/oscar-test/{f.relative_to(tiny_model_dir)}", Body=f.read_bytes())
    remote = f"s3://{BUCKET}/models/oscar-test"
    info = model_info(remote)
    assert (info.model_id, info.path) == (tiny_codec.model_id, remote)
    out = f"s3://{BUCKET}/from-remote-model"
    assert archive.main(["--input", f"s3://{BUCKET}/photos/sub", "--output", out, "--rates", "L1", "--no-verify",
                         "--model", remote, "--quiet"]) == 0
    bits = table(out, "bitstreams").to_pylist()
    assert len(bits) == 1 and bits[0]["model_id"] == tiny_codec.model_id
    cached = Path(local_model_folder(info))  # what the actor fetched, on this (the only) node
    assert (cached / ".fetched").exists() and (cached / "oscar.json").exists()
    with pytest.raises(FileNotFoundError, match="is not an OSCAR model folder"):
        model_info(f"s3://{BUCKET}/models/nothing-here")
