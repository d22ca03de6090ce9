"""train_served: the shipped model fine-tuned on MNIST training digits drawn into scenes and read
back by the reader; the render resumes where it stopped, held-out digits and seeds are apart from
the fitted ones, and the written checkpoint answers like any other."""

import json

import numpy as np
import pytest

from digitcmp import load_model
from digitcmp.app import train_served
from digitcmp.core.config import RunConfig


def test_a_render_resumes_with_the_same_images_and_every_scene_in_turn(tmp_path):
    train_served.render_scenes(tmp_path / "a", range(0, 100), 12, seed=5)
    train_served.render_scenes(tmp_path / "b", range(0, 100), 12, seed=5)
    images = sorted((tmp_path / "b").glob("*.img"))
    for path in images[5:]:  # an interrupted render: the last images missing, one half written
        path.unlink()
    images[5].with_suffix(".part").write_bytes(b"half")
    train_served.render_scenes(tmp_path / "b", range(0, 100), 12, seed=5)  # resumed with the same arguments
    first, second = sorted((tmp_path / "a").glob("*.img")), sorted((tmp_path / "b").glob("*.img"))
    assert [p.name for p in first] == [p.name for p in second] and len(first) == 12
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    assert not list((tmp_path / "b").glob("*.part"))
    digits, classes = train_served.read_scenes(tmp_path / "a")
    assert digits.shape == (12, 14, 14) and classes.shape == (12,)
    assert float(digits.amax()) > 100  # a digit, not a blank, was read from the scenes


def test_the_fitted_and_held_out_digits_never_overlap():
    assert not set(train_served.FIT_INDICES) & set(train_served.HELD_OUT_INDICES)
    assert train_served.FIT_SCENE_SEED != train_served.HELD_OUT_SCENE_SEED


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_the_fine_tuned_checkpoint_answers_images(tmp_path, capsys):
    out = tmp_path / "served.safetensors"
    code = train_served.main(
        ["--out", str(out), "--fit-digits", "20", "--held-out-digits", "10", "--epochs", "1", "--cache", str(tmp_path)]
    )
    assert code == 0 and out.is_file()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == len(train_served.CANDIDATE_LRS)  # one row per candidate, with its held-out errors
    model = load_model(str(out))
    base = load_model()
    assert RunConfig.from_dict(model.config) == RunConfig.from_dict(base.config)  # the base recipe
    fine_tuning = json.loads(model.metadata["fine_tuned"])
    assert fine_tuning["served_digits"] == 20 and fine_tuning["lr"] in train_served.CANDIDATE_LRS
    x = np.zeros((1, 2, 14, 14), np.float32)
    x[0, :, 3:11, 6:8] = 255.0  # two 1s
    (record,) = model.predict(x)
    assert 0.0 <= record["p_le"] <= 1.0 and len(record["digits"]) == 2
