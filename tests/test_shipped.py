"""The model that ships in the package: a plain safetensors file, the deploy preset's config, right
on MNIST test pairs, and the default of predict and load_model."""

import json
import struct

import numpy as np
import pytest
from PIL import Image

import digitcmp
from digitcmp.cli import main
from digitcmp.config import RunConfig
from digitcmp.data import generate_pair_sets, load_mnist
from digitcmp.experiments import PRESETS
from digitcmp.predict import shipped_model_path


def test_the_shipped_file_is_plain_safetensors():
    raw = open(shipped_model_path(), "rb").read()
    (header_size,) = struct.unpack("<Q", raw[:8])  # safetensors: a little-endian length, then a JSON header
    header = json.loads(raw[8 : 8 + header_size])
    assert header["__metadata__"]["format"] == "digitcmp-checkpoint-1"
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor a zip (torch.save)
    assert len(raw) < 5 * 2**20


@pytest.fixture(scope="module")
def shipped():
    return digitcmp.load_model()


def test_its_metadata_is_the_deploy_preset(shipped):
    assert shipped.checkpoint.config == RunConfig(**PRESETS["deploy"])
    assert float(shipped.checkpoint.metadata["test_error"]) < 0.01


def test_it_is_right_on_a_fixed_sample_of_mnist_test_pairs(shipped):
    *_, x, y, classes = generate_pair_sets(10, 3, test_nb=500)
    answers = shipped.predict(x)
    pair_error = np.mean([a["le"] != bool(t) for a, t in zip(answers, y.tolist())])
    digit_error = np.mean([a["digits"] != c for a, c in zip(answers, classes.tolist())])
    assert pair_error <= 0.015 and digit_error <= 0.02, (pair_error, digit_error)


def test_predict_uses_it_without_a_model(tmp_path, capsys):
    test = load_mnist("test")
    for name, i in (("a.png", 0), ("b.png", 1)):  # a 7 and a 2, dark ink on light paper
        Image.fromarray(255 - test.images[i]).resize((112, 112)).save(tmp_path / name)
    assert main(["predict", str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a.png <= b.png: no") and "digits 7, 2" in out
