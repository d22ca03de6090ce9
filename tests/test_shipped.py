"""The model that ships in the package: a plain safetensors file, the deploy preset's config, right
on MNIST test pairs, and the default of predict and load_model."""

import json
import struct

import numpy as np
import pytest
from PIL import Image

import digitcmp
from digitcmp.app.predict import shipped_model_path
from digitcmp.cli import main
from digitcmp.core.config import RunConfig
from digitcmp.core.data import generate_pair_sets, load_mnist
from digitcmp.study.experiments import PRESETS


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
    assert RunConfig.from_dict(shipped.config) == RunConfig(**PRESETS["deploy"])
    assert float(shipped.metadata["test_error"]) < 0.01 and shipped.recorded_errors["test_error"] < 0.01


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


def test_the_recorded_digests_are_the_shipped_files():
    import hashlib
    from pathlib import Path

    from digitcmp.app.integrity import SHIPPED_SHA256

    folder = Path(shipped_model_path()).parent
    assert {p.name for p in [*folder.glob("*.safetensors"), *folder.glob("*.onnx")]} == set(SHIPPED_SHA256)
    for name, digest in SHIPPED_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def _graph_with_weights(change) -> bytes:
    """The shipped comparison graph with change(array) applied to each of its weight tensors."""
    import onnx
    from onnx import numpy_helper

    from digitcmp.app.predict import shipped_graph_path

    proto = onnx.load(shipped_graph_path("model"))
    for k, tensor in enumerate(proto.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.ndim > 1:
            tensor.CopyFrom(numpy_helper.from_array(change(k, array), tensor.name))
    return proto.SerializeToString()


def test_a_damaged_shipped_model_is_one_line_saying_how_to_reinstall(tmp_path, monkeypatch, capsys):
    """Half the weights' signs flipped (every value finite): refused before it answers anything."""
    import digitcmp.app.predict as predict

    damaged = tmp_path / "deploy.onnx"
    damaged.write_bytes(_graph_with_weights(lambda k, w: -w if k % 2 == 0 else w))
    monkeypatch.setattr(predict, "shipped_graph_path", lambda which: str(damaged))
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    test = load_mnist("test")
    Image.fromarray(test.images[0]).save(a)
    Image.fromarray(test.images[1]).save(b)
    assert main(["predict", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "damaged" in err and "reinstall" in err


def test_answers_that_are_not_finite_never_leave_predict(shipped):
    from digitcmp.app.predict import Predictor
    from digitcmp.app.runtime import ComparisonSession, GraphError

    broken = ComparisonSession(_graph_with_weights(lambda k, w: np.full_like(w, np.nan)), "a broken model")
    with pytest.raises(GraphError, match="not finite"):
        Predictor(broken, shipped.detector).predict(load_mnist("test").pooled[:4, 0].reshape(2, 2, 14, 14))


@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_tensors_without_values_are_refused(shipped, kind):
    import torch

    from digitcmp.app.errors import InputError

    x = torch.empty(1, 2, 14, 14, device="meta") if kind == "meta" else torch.zeros(1, 2, 14, 14).to_sparse()
    with pytest.raises(InputError, match="must hold its values"):
        shipped.predict(x)
