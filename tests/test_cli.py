import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oscar_model.cli import main
from oscar_model.factory import TINY_LADDER


@pytest.fixture
def png(tmp_path, photo):
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    return path


def test_encode_info_decode(tiny_model_dir, png, tmp_path, capsys):
    osc = tmp_path / "photo.osc"
    assert main(["encode", str(png), "-o", str(osc), "--bpp", "0.03", "--model", str(tiny_model_dir)]) == 0
    said = capsys.readouterr().out
    assert "used level 1" in said and "asked 0.03 bpp" in said
    assert main(["info", str(osc)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rate_index"] == 1 and (info["height"], info["width"]) == (200, 300)
    assert info["bytes"] == osc.stat().st_size
    assert info["bpp"] == pytest.approx(8 * osc.stat().st_size / (200 * 300), abs=1e-6)
    out = tmp_path / "back.png"
    assert main(["decode", str(osc), "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    assert np.asarray(Image.open(out)).shape == (200, 300, 3)


def test_decode_of_corrupt_file_is_a_clean_error(tiny_model_dir, png, tmp_path, capsys):
    osc = tmp_path / "photo.osc"
    main(["encode", str(png), "-o", str(osc), "--level", "0", "--model", str(tiny_model_dir)])
    osc.write_bytes(osc.read_bytes()[:-3])
    assert main(["decode", str(osc), "--model", str(tiny_model_dir)]) == 2
    assert "error" in capsys.readouterr().err


def test_models_json_lists_ladders(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("OSCAR_MODELS_DIR", str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "oscar-sd21")
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"oscar-tiny", "oscar-sd21"} <= set(rows)
    sd = rows["oscar-sd21"]
    assert sd["available"] and len(sd["ladder"]) == len(TINY_LADDER)  # the test model's ladder
    assert {"nominal_bpp", "downsample", "codebook_size", "timestep"} <= set(sd["ladder"][0])


def test_missing_weights_say_what_and_where(tmp_path, monkeypatch, png, capsys):
    monkeypatch.setenv("OSCAR_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["encode", str(png), "--model", "oscar-sd21"]) == 2
    err = capsys.readouterr().err
    assert "oscar-sd21" in err and str(tmp_path / "oscar-sd21") in err and "missing" in err


def test_unknown_model_name(png, capsys):
    assert main(["encode", str(png), "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_encode_with_refine_writes_a_stream_the_decoder_reads(tiny_model_dir, png, tmp_path):
    osc = tmp_path / "refined.osc"
    assert main(["encode", str(png), "-o", str(osc), "--level", "1", "--refine", "2", "--model", str(tiny_model_dir)]) == 0
    out = tmp_path / "refined.png"
    assert main(["decode", str(osc), "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    assert np.asarray(Image.open(out)).shape == (200, 300, 3)


def test_decode_takes_many_streams_with_one_model_load(tiny_model_dir, png, tmp_path, capsys):
    streams = []
    for level in (0, 2):
        osc = tmp_path / f"photo{level}.osc"
        assert main(["encode", str(png), "-o", str(osc), "--level", str(level), "--model", str(tiny_model_dir)]) == 0
        streams.append(str(osc))
    broken = tmp_path / "broken.osc"
    broken.write_bytes(Path(streams[0]).read_bytes()[:-3])
    capsys.readouterr()
    out = tmp_path / "decoded"
    assert main(["decode", *streams, str(broken), "-o", f"{out}/", "--model", str(tiny_model_dir)]) == 2
    said = capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.png")) == ["photo0.png", "photo2.png"]  # the good ones still decoded
    assert "2 of 3 decoded in" in said.out and "since the command started" in said.out
    assert said.err.count("oscar decode: error: ") == 1 and "broken.osc" in said.err


def test_encode_and_decode_take_tile_and_precision(tiny_model_dir, png, tmp_path, capsys):
    osc, out = tmp_path / "a.osc", tmp_path / "a.png"
    assert main(["encode", str(png), "-o", str(osc), "--level", "1", "--tile", "off", "--model", str(tiny_model_dir)]) == 0
    assert main(["decode", str(osc), "-o", str(out), "--precision", "fp32", "--tile", "8", "--model", str(tiny_model_dir)]) == 0
    assert Image.open(out).size == Image.open(png).size
    capsys.readouterr()
    assert main(["encode", str(png), "--tile", "big", "--model", str(tiny_model_dir)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--tile 'big'" in err[0], err
