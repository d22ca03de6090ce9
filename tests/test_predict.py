import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from digitcmp import load_model
from digitcmp.cli import main
from digitcmp.core.catalog import ARCHITECTURES
from digitcmp.core.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from digitcmp.core.config import RunConfig
from digitcmp.core.train import train_run
from digitcmp.testing.extras import require


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=5)
    result, model, data = train_run(config, 0)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    return path, model, data


def _write_styles(folder, index, image):
    """The same MNIST digit (28x28 uint8, white on black) as files of several kinds."""
    img = Image.fromarray(image)
    styles = {
        "raw.png": img,
        "dark_on_light_84.png": Image.fromarray(255 - image).resize((84, 84), Image.Resampling.BICUBIC),
        "rgb_padded.png": Image.merge("RGB", [Image.fromarray(np.pad(image, 20))] * 3).resize((136, 136)),
        "rgba_ink.png": Image.merge("RGBA", [Image.new("L", (28, 28), 0)] * 3 + [img]).resize((56, 56)),
        "wide_canvas.jpg": Image.fromarray(np.pad(255 - image, ((5, 5), (40, 10)), constant_values=255)),
    }
    paths = {}
    for name, im in styles.items():
        path = folder / f"{index}_{name}"
        im.save(path, quality=95) if name.endswith(".jpg") else im.save(path)
        paths[name] = path
    return paths


def test_images_agree_with_tensors(mnist_test, tmp_path):
    # The shipped model: a one-epoch model's answers flip on the small differences any reading makes.
    predictor = load_model()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(mnist_test.labels), size=(30, 2), replace=False)
    pooled = F.avg_pool2d(torch.from_numpy(mnist_test.images[idx.flatten()]).float()[:, None], 2).view(30, 2, 14, 14)
    from_tensors = predictor.predict(pooled)
    files = {i: _write_styles(tmp_path, i, mnist_test.images[i]) for i in idx.flatten()}
    for style in ["raw.png", "dark_on_light_84.png", "rgb_padded.png", "rgba_ink.png", "wide_canvas.jpg"]:
        inputs = [files[i][style] for i in idx.flatten()]
        from_files = predictor.predict(inputs)
        le_agree = np.mean([a["le"] == b["le"] for a, b in zip(from_files, from_tensors)])
        digit_agree = np.mean([a["digits"] == b["digits"] for a, b in zip(from_files, from_tensors)])
        assert le_agree >= 0.9 and digit_agree >= 0.8, (style, le_agree, digit_agree)
        assert from_files[0]["input"] == f"{inputs[0].name} <= {inputs[1].name}"


def test_round_trip_gives_identical_outputs(checkpoint):
    path, model, data = checkpoint
    raw = data.eval_x[:64]  # predict takes raw 0..255 pixels and normalizes with the stored stats
    with torch.no_grad():
        expected = model((raw - data.mean) / data.std)[0].softmax(-1)[:, 1]
    got = torch.tensor([p["p_le"] for p in load_model(path).predict(raw)])
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-6)


def test_npy_batches_and_single_pairs(checkpoint, tmp_path, capsys):
    path, _, data = checkpoint
    raw = data.eval_x[:5].numpy()
    np.save(tmp_path / "batch.npy", raw)
    np.save(tmp_path / "one.npy", raw[0])
    assert main(["predict", "--model", str(path), str(tmp_path / "batch.npy"), str(tmp_path / "one.npy"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 6 and records[0] == records[5] | {"input": records[0]["input"]}
    assert set(records[0]) == {"input", "le", "p_le", "digits", "digit_probs", "unsure", "doubt"}
    assert len(records[0]["digit_probs"]) == 2 and abs(sum(records[0]["digit_probs"][0]) - 1) < 1e-4


def test_cli_text_output(checkpoint, mnist_test, tmp_path, capsys):
    path, _, _ = checkpoint
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(mnist_test.images[0]).save(a)
    Image.fromarray(mnist_test.images[1]).save(b)
    assert main(["predict", "--model", str(path), str(a), str(b)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("a.png <= b.png: ") and "(p = " in out and "digits" in out


def _foreign_safetensors(path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))


def _unknown_arch_checkpoint(path):
    from safetensors.torch import save_file

    config = RunConfig().to_dict() | {"arch": "no_such_name"}
    save_file(
        {"w": torch.zeros(2)},
        str(path),
        metadata={"format": FORMAT, "config": json.dumps(config), "input_mean": "1", "input_std": "1"},
    )


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing image", "does not exist"),
        ("corrupt image", "cannot read image"),
        ("odd count", "odd number of images"),
        ("wrong shape", "expected an array of shape [N, 2, 14, 14]"),
        ("corrupt checkpoint", "not a readable safetensors checkpoint"),
        ("foreign checkpoint", "not a digitcmp checkpoint"),
        ("unknown architecture", f"arch must be one of {', '.join(ARCHITECTURES)}, got 'no_such_name'"),
        ("missing checkpoint", "does not exist"),
    ],
)
def test_bad_inputs_one_line_exit_2(case, expected, checkpoint, mnist_test, tmp_path, capsys):
    model = str(checkpoint[0])
    good = tmp_path / "good.png"
    Image.fromarray(mnist_test.images[0]).save(good)
    inputs = [str(good), str(good)]
    if case == "missing image":
        inputs = [str(good), str(tmp_path / "nope.png")]
    elif case == "corrupt image":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
        inputs = [str(good), str(tmp_path / "bad.png")]
    elif case == "odd count":
        inputs = [str(good), str(good), str(good)]
    elif case == "wrong shape":
        np.save(tmp_path / "x.npy", np.zeros((3, 14, 14)))
        inputs = [str(tmp_path / "x.npy")]
    elif case == "corrupt checkpoint":
        model = str(tmp_path / "c.safetensors")
        (tmp_path / "c.safetensors").write_bytes(b"\x00\x01garbage" * 50)
    elif case == "foreign checkpoint":
        model = str(tmp_path / "f.safetensors")
        _foreign_safetensors(model)
    elif case == "unknown architecture":
        model = str(tmp_path / "u.safetensors")
        _unknown_arch_checkpoint(model)
    elif case == "missing checkpoint":
        model = str(tmp_path / "none.safetensors")
    code = main(["predict", "--model", model, *inputs])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_train_save_then_predict_from_the_cli(tmp_path, capsys, mnist_test):
    ckpt = tmp_path / "m.safetensors"
    assert main(["train", "--arch", "cnn", "--pairs", "100", "--epochs", "1", "--save", str(ckpt)]) == 0
    capsys.readouterr()
    a = tmp_path / "a.png"
    Image.fromarray(mnist_test.images[3]).save(a)
    assert main(["predict", "--model", str(ckpt), str(a), str(a), "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert set(record) == {"input", "le", "p_le", "unsure", "doubt"}  # no digit heads on the plain CNN, doubts all the same
    new_folder = tmp_path / "new" / "m.safetensors"  # every writing flag creates the folders it needs
    assert main(["train", "--pairs", "10", "--epochs", "1", "--save", str(new_folder)]) == 0 and new_folder.is_file()


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_reproduce_keeps_checkpoints_that_predict_can_use(tmp_path, capsys, reproduce_argv):
    ckpts = tmp_path / "ckpts"
    args = reproduce_argv(tmp_path, ["table1", "table2"]) + ["--checkpoints", str(ckpts)]
    assert main(args) == 0
    files = sorted(ckpts.glob("*.safetensors"))
    assert len(files) == 6  # FNN, FNN + BN (batched seeds) and CNN + BN (single runs), two seeds each
    capsys.readouterr()
    x = np.zeros((2, 14, 14), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    for f in files:
        assert main(["predict", "--model", str(f), str(tmp_path / "x.npy"), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 1


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_a_model_scored_with_tta_predicts_with_the_same_views(tmp_path):
    from digitcmp.core.inference import AnswerSpec, SingleModel, answer, error_rates

    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=2, pairs=200, test_pairs=300, tta=3)
    result, model, data = train_run(config, 4)
    path = tmp_path / "tta.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    got = torch.tensor([p["p_le"] for p in load_model(path).predict(data.eval_x)], dtype=torch.float64)
    scored = answer(SingleModel(model), data.eval_x[None], [AnswerSpec(data.mean, data.std, 3, 4)]).p_le[0]
    # The runtime's graph answers as scoring did: the same views, p_le within float error, the same decisions.
    assert (got - scored).abs().max() <= 1e-5 and torch.equal(got > 0.5, scored > 0.5)
    assert error_rates(got, data.eval_y).item() == result.test_error
    single_view = answer(SingleModel(model), data.eval_x[None], [AnswerSpec(data.mean, data.std)]).p_le[0]
    assert (got - single_view).abs().max() > 1e-3  # the extra views do change the answer


def test_answers_do_not_depend_on_what_else_is_in_the_batch(tmp_path):
    from digitcmp.app.runtime import CHUNK as EVAL_CHUNK

    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=1, pairs=100, test_pairs=10, tta=3)
    result, model, data = train_run(config, 0)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    predictor = load_model(path)
    x = torch.rand(EVAL_CHUNK + 5, 2, 14, 14, generator=torch.Generator().manual_seed(3)) * 255
    whole = [a["p_le"] for a in predictor.predict(x)]
    assert len(whole) == EVAL_CHUNK + 5
    # A pair's answer is its own: alone, at any place in a batch of any size, in the second chunk.
    for i in (0, 7, EVAL_CHUNK - 1, EVAL_CHUNK + 3):
        alone = predictor.predict(x[i : i + 1])[0]["p_le"]
        shuffled = torch.randperm(40, generator=torch.Generator().manual_seed(i))
        batch = torch.cat([x[shuffled[:11]], x[i : i + 1], x[shuffled[11:]]])  # pair i at place 11 of 41
        in_batch = predictor.predict(batch)[11]["p_le"]
        assert alone == pytest.approx(whole[i], rel=1e-9, abs=1e-12)  # (float sums may differ with batch size)
        assert in_batch == pytest.approx(alone, rel=1e-9, abs=1e-12)


@pytest.mark.slow  # sweeps, training or processes in subprocesses
def test_an_ensemble_checkpoint_keeps_every_member_and_predicts_as_scored(tmp_path):
    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=2, pairs=200, test_pairs=300, ensemble=3, tta=2)
    result, model, data = train_run(config, 1)
    path = tmp_path / "ensemble.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    loaded = load_model(path)
    members = load_checkpoint(path).model.members
    assert len(members) == 3 and loaded.config["ensemble"] == 3
    assert not torch.equal(members[0].towers[0][0][0].weight, members[1].towers[0][0][0].weight)
    answers = loaded.predict(data.eval_x)
    wrong = np.mean([a["le"] != bool(y) for a, y in zip(answers, data.eval_y.tolist())])
    assert wrong == result.test_error  # the ensemble's own scoring, exactly, not member 0's
    assert all(len(a["digits"]) == 2 and abs(sum(a["digit_probs"][0]) - 1) < 1e-4 for a in answers)


@pytest.fixture(scope="module")
def headless_models(tmp_path_factory):
    """Checkpoints of architectures without digit logits (a plain FNN and CNN), trained briefly."""
    folder = tmp_path_factory.mktemp("headless")
    paths = []
    for arch in ("fnn", "cnn"):
        path = folder / f"{arch}.safetensors"
        assert main(["train", "--arch", arch, "--pairs", "100", "--epochs", "1", "--save", str(path)]) == 0
        paths.append(path)
    return paths


def _blank_and_digit(tmp_path, mnist_test):
    blank, digit = tmp_path / "blank.png", tmp_path / "d.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(blank)
    Image.fromarray(255 - mnist_test.images[0]).save(digit)
    return blank, digit


def test_every_model_doubts_a_blank_side_and_a_non_digit(tmp_path, capsys, mnist_test, headless_models):
    """The blank check, the not-a-digit detector and the several-digits check need no digit logits:
    they judge a model without them as they judge the shipped one, on every surface."""
    blank, digit = _blank_and_digit(tmp_path, mnist_test)
    scribble = tmp_path / "scribble.png"
    from PIL import ImageDraw

    img = Image.new("L", (112, 112), 255)
    ImageDraw.Draw(img).line([(10, 10), (100, 100), (10, 100), (100, 10), (55, 5), (55, 105)], fill=0, width=6)
    img.save(scribble)
    for model in headless_models:
        capsys.readouterr()
        assert main(["predict", "--model", str(model), str(blank), str(digit), "--json"]) == 0
        (record,) = json.loads(capsys.readouterr().out)
        assert record["unsure"] and "blank.png: blank" in record["doubt"] and "digits" not in record
        assert main(["predict", "--model", str(model), str(blank), str(digit)]) == 0
        line = capsys.readouterr().out.strip()
        assert line.startswith("blank.png <= d.png: unsure (blank.png: blank") and "; leaning " in line, line
        two = tmp_path / "two.png"
        Image.fromarray(np.hstack([255 - mnist_test.images[1], 255 - mnist_test.images[2]])).save(two)
        (record,) = load_model(model).predict([two, digit])
        assert record["unsure"] and "two.png: two digits side by side" in record["doubt"], record


def test_a_served_model_without_digit_logits_answers_with_its_doubts(tmp_path, mnist_test, headless_models):
    require("fastapi")
    from fastapi.testclient import TestClient

    from digitcmp.app.server import create_app

    blank, digit = _blank_and_digit(tmp_path, mnist_test)
    with TestClient(create_app(load_model(headless_models[0]), "fnn"), base_url="http://127.0.0.1") as c:
        r = c.post("/api/compare", files={"a": ("a.png", blank.read_bytes()), "b": ("b.png", digit.read_bytes())})
        assert r.status_code == 200 and r.json()["unsure"] and r.json()["digits"] is None, r.text
        assert r.json()["doubt"].startswith("a: blank")


def test_the_plain_line_leads_with_the_doubt(tmp_path, capsys, mnist_test):
    blank, digit = _blank_and_digit(tmp_path, mnist_test)
    assert main(["predict", str(digit), str(blank)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("d.png <= blank.png: unsure (blank.png: blank: no digit to read); leaning "), line
    assert main(["predict", str(digit), str(digit)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("d.png <= d.png: yes (p = ") and "unsure" not in line, line


def test_checkpoint_notes_are_kept_and_may_not_replace_its_own_metadata(checkpoint, tmp_path):
    path, model, data = checkpoint
    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=5)
    noted = tmp_path / "noted.safetensors"
    save_checkpoint(noted, model.state_dict(), config, data.mean, data.std, None, {"fine_tuned": '{"lr": 0.001}'})
    assert load_model(noted).metadata["fine_tuned"] == '{"lr": 0.001}'
    with pytest.raises(ValueError, match="may not replace config"):
        bad = {"config": "{}"}
        save_checkpoint(tmp_path / "bad.safetensors", model.state_dict(), config, data.mean, data.std, None, bad)
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_prediction_is_one_typed_record_for_python_the_command_line_and_the_api(
    tmp_path, capsys, mnist_test, headless_models
):
    """predict() returns Prediction records (read by attribute, and as the dicts it returned before);
    --json writes their to_dict() (no digits keys without digit heads), the plain line their
    plain(); the API's answer schema is derived from the same fields and descriptions."""
    import dataclasses

    from digitcmp.app.prediction import Prediction

    blank, digit = _blank_and_digit(tmp_path, mnist_test)
    for model in [None, *headless_models]:
        (record,) = load_model(model).predict([digit, blank])
        assert isinstance(record, Prediction) and record.input == "d.png <= blank.png"
        assert dict(record) == record.to_dict() and record["p_le"] == record.p_le and record.unsure
        assert ("digits" in record) == (model is None) == (record.digits is not None)
        argv = ["predict", str(digit), str(blank)] + (["--model", str(model)] if model else [])
        capsys.readouterr()
        assert main([*argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == [record.to_dict()]
        assert main(argv) == 0
        assert capsys.readouterr().out.strip() == record.plain()
    require("fastapi")
    from digitcmp.app.schemas import API_ONLY, Answer

    fields = {f.name: f for f in dataclasses.fields(Prediction)}
    assert list(Answer.model_fields) == [name for name in fields if name != "input"] + list(API_ONLY)
    for name, info in Answer.model_fields.items():
        if name in fields:
            assert info.description == fields[name].metadata["description"]
