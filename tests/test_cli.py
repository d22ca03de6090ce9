import json
import subprocess
import sys

import pytest

from digitcmp.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_architecture(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    for name in ("fnn", "cnn", "split_cnn", "siamese_cnn", "leaky_relu", "adam"):
        assert name in out


def test_train_json_last_line(capsys):
    code, out, _ = _run(capsys, "train", "--arch", "fnn", "--pairs", "100", "--epochs", "2", "--json")
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert 0 <= record["test_error"] <= 1 and 0 <= record["train_error"] <= 1
    assert record["train_seconds"] > 0 and len(record["epochs"]) == 2
    assert record["config"]["arch"] == "fnn" and record["config"]["pairs"] == 100


def test_train_human_summary(capsys):
    code, out, _ = _run(capsys, "train", "--arch", "cnn", "--pairs", "100", "--epochs", "1", "--activation", "sigmoid")
    assert code == 0 and "test error" in out and "%" in out and " s" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--arch", "resnet"], "choose from 'fnn', 'cnn', 'split_cnn', 'siamese_cnn'"),
        (["train", "--activation", "tanh"], "choose from 'relu', 'leaky_relu', 'sigmoid'"),
        (["train", "--optimizer", "rmsprop"], "choose from 'sgd', 'adam'"),
        (["train", "--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["train", "--batch-size", "-5"], "--batch-size: expected a positive integer"),
        (["train", "--pairs", "0"], "--pairs: expected a positive integer"),
        (["train", "--lr", "0"], "--lr: expected a positive number"),
        (["train", "--pairs", "40000"], "at most 30000 pairs"),
        (["train", "--test-pairs", "6000"], "at most 5000 pairs"),
        (["train", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist does not exist"),
        (["frobnicate"], "invalid choice"),
        (["reproduce", "--experiment", "table9"], "unknown experiment 'table9'; valid: table1"),
        (["reproduce", "--seeds", "0"], "--seeds: expected a positive integer"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, expected):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreadable_data_folder(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data-dir", str(tmp_path), "--pairs", "10", "--epochs", "1")
    assert code == 2 and "not found in" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "digitcmp", "train", "--arch", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "valid" not in proc.stdout
    assert "choose from" in proc.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(capsys):
    code, _, err = _run(capsys, "train", "--device", "cuda", "--pairs", "10", "--epochs", "1")
    assert code == 2 and "no CUDA GPU is available" in err and len(err.strip().splitlines()) == 1


def test_preset_then_explicit_options(capsys):
    code, out, _ = _run(capsys, "train", "--preset", "best", "--pairs", "50", "--epochs", "1", "--tta", "2", "--json")
    config = json.loads(out.strip().splitlines()[-1])["config"]
    assert code == 0 and config["comparison"] == "exact" and config["augment"] == "affine"
    assert config["epochs"] == 1 and config["tta"] == 2 and config["lr_schedule"] == "cosine"
