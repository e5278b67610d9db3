"""Every kind of awkward input through the `oscar` command: a correct image of the input's
displayed size, or a one-line error and a non-zero exit; never a traceback.
(The same corpus goes through the archive job in tests/test_reliability.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bad_inputs import EXPECTATIONS, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("bad-inputs")
    return folder, write_corpus(folder)


def test_the_corpus_has_at_least_fifteen_kinds(corpus):
    _, expectations = corpus
    assert len(expectations) >= 15
    assert {kind for kind, _ in expectations.values()} == {"ok", "error"}


@pytest.mark.parametrize("name", sorted(EXPECTATIONS))
def test_each_input_gives_an_image_of_its_size_or_a_one_line_error(corpus, name, tiny_model_dir, tmp_path, capsys):
    from oscar_model.cli import main

    folder, expectations = corpus
    kind, what = expectations[name]
    osc, png = tmp_path / "x.osc", tmp_path / "x.png"
    code = main(["encode", str(folder / name), "-o", str(osc), "--level", "5", "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if kind == "error":
        assert code != 0 and not osc.exists()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("oscar encode: error:") and what in lines[0], err
        return
    assert code == 0, err
    assert main(["decode", str(osc), "-o", str(png), "--model", str(tiny_model_dir)]) == 0
    decoded = Image.open(png)
    assert decoded.size == what and decoded.mode == "RGB"
    assert np.asarray(decoded).std() > 0 or what == (1, 1)


def test_a_missing_file_and_a_folder_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    from oscar_model.cli import main

    for path in (tmp_path / "nope.png", tmp_path):
        assert main(["encode", str(path), "--level", "1", "--model", str(tiny_model_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("oscar encode: error:")
