import json
import subprocess
import sys

import pytest

from digitcmp.cli import main
from digitcmp.core.catalog import ACTIVATIONS, ARCHITECTURES, AUGMENTERS, TOWERS
from digitcmp.core.config import OPTIMIZERS

UNKNOWN = "no_such_name"  # a name no registry holds


def _choices(registry) -> str:
    return ", ".join(repr(name) for name in registry)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_declared_name(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0
    for registry in (ARCHITECTURES, TOWERS, ACTIVATIONS, AUGMENTERS, OPTIMIZERS):
        assert all(name in out for name in registry)


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
        (["train", "--arch", UNKNOWN], f"choose from {_choices(ARCHITECTURES)}"),
        (["train", "--activation", UNKNOWN], f"choose from {_choices(ACTIVATIONS)}"),
        (["train", "--tower", UNKNOWN], f"choose from {_choices(TOWERS)}"),
        (["train", "--augment", UNKNOWN], f"choose from {_choices(AUGMENTERS)}"),
        (["train", "--optimizer", UNKNOWN], f"choose from {_choices(OPTIMIZERS)}"),
        (["train", "--epochs", "0"], "--epochs: expected an integer in [1, 10000], got 0"),
        (["train", "--batch-size", "-5"], "--batch-size: expected an integer in [1, 30000]"),
        (["train", "--pairs", "0"], "--pairs: expected an integer in [1, 30000]"),
        (["train", "--lr", "0"], "--lr: expected a number in (0, 10]"),
        (["train", "--lr", "inf"], "--lr: expected a number in (0, 10], got inf"),
        (["train", "--aux-weight", "nan"], "--aux-weight: expected a number in [0, 100]"),
        (["train", "--pairs", "40000"], "--pairs: expected an integer in [1, 30000], got 40000"),
        (["train", "--test-pairs", "6000"], "--test-pairs: expected an integer in [1, 5000]"),
        (["train", "--channels", "8"], "--channels: expected 2 arguments"),
        (["train", "--seed", "-1"], "--seed: expected an integer in [0, 2147483647]"),
        (["train", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist does not exist"),
        (["frobnicate"], "invalid choice"),
        (["reproduce", "--experiment", "table9"], "unknown experiment 'table9'; valid: table1"),
        (["reproduce", "--seeds", "0"], "--seeds: expected an integer in [1, 1000]"),
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


@pytest.mark.slow  # a command in a subprocess
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


def test_every_config_field_has_a_flag_with_its_docstring(capsys):
    from dataclasses import fields

    from digitcmp.cli import build_parser
    from digitcmp.core.config import RunConfig
    from digitcmp.core.settings import field_docs

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {option for action in train._actions for option in action.option_strings}
    docs = field_docs(RunConfig)
    for f in fields(RunConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
        assert docs[f.name], f.name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "Width of the fully connected hidden layer. (default: 200; an integer in [1, 4096])" in " ".join(text.split())


def test_fields_without_a_flag_before_are_settable(capsys):
    argv = ["train", "--arch", "siamese_cnn", "--pairs", "60", "--test-pairs", "20", "--epochs", "1", "--json"]
    argv += ["--hidden", "32", "--channels", "8", "16", "--dropout", "0.2", "--momentum", "0.5"]
    argv += ["--weight-decay", "0.001", "--label-smoothing", "0.1", "--no-batch-norm"]
    code, out, _ = _run(capsys, *argv)
    config = json.loads(out.strip().splitlines()[-1])["config"]
    assert code == 0
    assert config["hidden"] == 32 and config["channels"] == [8, 16] and config["dropout"] == 0.2
    assert config["momentum"] == 0.5 and config["weight_decay"] == 0.001 and config["label_smoothing"] == 0.1
    assert config["batch_norm"] is False
