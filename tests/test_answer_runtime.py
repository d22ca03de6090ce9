"""Answering without torch (issue 29): predict, the server's app and digitcmp.load_model() answer
through ONNX Runtime, and neither they nor the CLI's help import torch; a checkpoint is converted
to a graph once and kept under its SHA-256; a bad graph file is one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digitcmp.cli import COMMANDS, main
from digitcmp.core.data import load_mnist
from digitcmp.testing.extras import require

pytestmark = pytest.mark.slow  # fresh interpreters


def _run_without_torch(code: str, tmp_path) -> dict:
    """code run in a fresh interpreter, which then reports whether torch was imported."""
    script = tmp_path / "script.py"
    script.write_text(code + "\nimport json, sys\nprint(json.dumps({'torch': 'torch' in sys.modules}))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return {"out": done.stdout, **json.loads(done.stdout.strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def two_pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    test = load_mnist("test")
    paths = []
    for i in (3, 4):  # a 0 and a 4
        path = folder / f"d{i}.png"
        Image.fromarray(255 - test.images[i]).resize((280, 280)).save(path)
        paths.append(str(path))
    return paths, [int(test.labels[i]) for i in (3, 4)]


def test_predict_answers_images_without_importing_torch(two_pngs, tmp_path):
    (a, b), labels = two_pngs
    got = _run_without_torch(
        f"from digitcmp.cli import main\nassert main(['predict', '--json', {a!r}, {b!r}]) == 0", tmp_path
    )
    assert not got["torch"]
    (record,) = json.loads(got["out"].strip().splitlines()[0])
    assert record["digits"] == labels and record["le"] == (labels[0] <= labels[1])


@pytest.mark.parametrize("argv", [["--help"]] + [[command, "--help"] for command in COMMANDS])
def test_the_cli_help_imports_no_torch(argv, tmp_path):
    got = _run_without_torch(
        f"from digitcmp.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass", tmp_path
    )
    assert not got["torch"] and "usage: digitcmp" in got["out"]


def test_list_reads_the_catalog_without_importing_torch(tmp_path):
    """`digitcmp list` prints every architecture, tower, activation and augmentation from
    core.catalog, which holds the declarations without their torch code."""
    from digitcmp.core import catalog

    got = _run_without_torch("from digitcmp.cli import main\nmain(['list'])", tmp_path)
    assert not got["torch"]
    for registry in (catalog.ARCHITECTURES, catalog.TOWERS, catalog.ACTIVATIONS, catalog.AUGMENTERS):
        assert all(name in got["out"] for name in registry)
    assert all(entry.description in got["out"] for entry in catalog.ARCHITECTURES.values())


def test_the_python_api_and_the_server_answer_without_importing_torch(tmp_path):
    require("fastapi")
    code = """
import numpy as np
import digitcmp
from fastapi.testclient import TestClient
from digitcmp.app.server import create_app

model = digitcmp.load_model()
rng = np.random.default_rng(0)
x = np.zeros((3, 2, 14, 14), np.float32)
x[:, :, 3:11, 6:8] = 255.0  # 1s
assert len(model.predict(x)) == 3
with TestClient(create_app(model, "deploy"), base_url="http://127.0.0.1") as client:
    answer = client.post("/api/compare", json={"pairs": x.tolist()})
    assert answer.status_code == 200, answer.text
    assert client.get("/api/health").json()["test_time_views"] == model.views
"""
    assert not _run_without_torch(code, tmp_path)["torch"]


def test_a_checkpoint_is_converted_once_and_then_answered_from_the_cache(tmp_path, monkeypatch):
    from digitcmp import load_model
    from digitcmp.app import export

    monkeypatch.setenv(export.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "m.safetensors"
    assert (
        main(["train", "--arch", "siamese_cnn", "--aux-weight", "1", "--pairs", "100", "--epochs", "1", "--save", str(path)])
        == 0
    )
    x = np.random.default_rng(1).uniform(0, 255, (20, 2, 14, 14)).astype(np.float32)
    first = load_model(path).predict(x)
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.startswith(export.sha256_of(path))
    monkeypatch.setattr(export, "_comparison_proto", lambda *a: pytest.fail("converted twice"))
    assert load_model(path).predict(x) == first


@pytest.mark.parametrize("case", ["not onnx", "another onnx graph", "too large", "missing"])
def test_a_bad_onnx_model_is_one_line_exit_2(case, two_pngs, tmp_path, capsys):
    from digitcmp.app.predict import shipped_graph_path

    model = tmp_path / "model.onnx"
    if case == "not onnx":
        model.write_bytes(b"\x08\x07garbage" * 100)
    elif case == "another onnx graph":  # a digitcmp graph, but the detector's: not a comparison
        model.write_bytes(open(shipped_graph_path("detector"), "rb").read())
    elif case == "too large":
        with open(model, "wb") as handle:
            handle.truncate(65 * 2**20)
    (a, b), _ = two_pngs
    assert main(["predict", "--model", str(model), a, b]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("digitcmp: error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    expected = {"not onnx": "not a readable ONNX graph", "another onnx graph": "not a digitcmp graph",
                "too large": "at most 64 MiB", "missing": "does not exist"}[case]  # fmt: skip
    assert expected in err


def test_an_exported_model_answers_as_its_checkpoint(tmp_path):
    from digitcmp import load_model

    path = tmp_path / "m.safetensors"
    assert main(["train", "--arch", "cnn", "--pairs", "100", "--epochs", "1", "--save", str(path)]) == 0
    assert main(["export", "--model", str(path), "--out", str(tmp_path / "onnx")]) == 0
    x = np.random.default_rng(2).uniform(0, 255, (30, 2, 14, 14)).astype(np.float32)
    assert load_model(tmp_path / "onnx" / "m.onnx").predict(x) == load_model(path).predict(x)


BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):  # as in an install for comparing digits only (README)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
sys.meta_path.insert(0, NoTorch())
from digitcmp.cli import main
"""


def test_without_torch_installed_predict_answers_and_the_study_commands_say_what_is_missing(two_pngs, tmp_path):
    (a, b), labels = two_pngs
    code = (
        BLOCK_TORCH + f"assert main(['predict', '--json', {a!r}, {b!r}]) == 0\nassert main(['train', '--epochs', '1']) == 2"
    )
    script = tmp_path / "lean.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["digits"] == labels
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "`digitcmp train` needs torch" in err and "Traceback" not in err
