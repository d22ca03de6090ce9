"""`digitcmp export`: a model and the detector as ONNX files that ONNX Runtime answers with exactly
as torch's one inference path does (p_le within 1e-5, the same decisions and digits on thousands
of pairs); the shipped ONNX files are those of the shipped safetensors; bad arguments are one line."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from digitcmp import load_model
from digitcmp.app.digitness import load_detector, shipped_detector_path
from digitcmp.app.export import export_model
from digitcmp.app.integrity import sha256_of
from digitcmp.app.predict import shipped_model_path
from digitcmp.cli import main
from digitcmp.core.checkpoint import load_checkpoint, save_checkpoint
from digitcmp.core.config import RunConfig
from digitcmp.core.data import generate_pair_sets
from digitcmp.core.inference import SingleModel, answer
from digitcmp.core.train import train_run

pytestmark = pytest.mark.slow  # each export traces the model (about 15 s here)

SHIPPED = Path(shipped_model_path()).parent


def session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def metadata(path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def torch_answers(checkpoint_path, x: torch.Tensor):
    """What torch's one inference path (scoring's) answers for the checkpoint."""
    checkpoint = load_checkpoint(checkpoint_path)
    return answer(SingleModel(checkpoint.model), x[None], [checkpoint.spec], digits=True)


def pairs_to_check() -> torch.Tensor:
    """3000 MNIST test pairs, and 500 pairs of noise and of blank or saturated sides (outside MNIST)."""
    *_, test_x, _, _ = generate_pair_sets(10, 7, test_nb=3000)
    generator = torch.Generator().manual_seed(11)
    noise = torch.rand(500, 2, 14, 14, generator=generator) * 255
    noise[:100, 0] = 0.0
    noise[100:200, 1] = 255.0
    return torch.cat([test_x, noise])


def test_the_shipped_onnx_files_are_made_from_the_shipped_safetensors():
    model, detector = metadata(SHIPPED / "deploy.onnx"), metadata(SHIPPED / "digitness.onnx")
    assert model["source_sha256"] == sha256_of(shipped_model_path())  # regenerate: digitcmp export --out <shipped>
    assert detector["source_sha256"] == sha256_of(shipped_detector_path())
    shipped = load_model()
    assert float(detector["threshold"]) == load_detector().threshold
    assert shipped.detector.threshold == load_detector().threshold
    spec = load_checkpoint(shipped_model_path()).spec
    assert (float(model["input_mean"]), float(model["input_std"]), int(model["test_time_views"])) == (
        spec.mean,
        spec.std,
        spec.views,
    )


def test_onnx_runtime_answers_as_torch_does_on_thousands_of_pairs():
    x = pairs_to_check()
    expected = torch_answers(shipped_model_path(), x)
    p_le, digit_probs = session(SHIPPED / "deploy.onnx").run(None, {"x": x.numpy()})
    want_p, want_digits = expected.p_le[0].numpy(), expected.digit_probs[0].numpy()
    assert np.abs(p_le - want_p).max() <= 1e-5
    assert np.abs(digit_probs - want_digits).max() <= 1e-5
    assert ((p_le > 0.5) == (want_p > 0.5)).all()
    assert (digit_probs.argmax(-1) == want_digits.argmax(-1)).all()
    digits = x.reshape(-1, 14, 14)[:2000]
    (scores,) = session(SHIPPED / "digitness.onnx").run(None, {"x": digits.numpy()})
    assert np.abs(scores - load_detector().scores(digits).numpy()).max() <= 1e-5


def _answers_agree(records: list[dict], expected) -> None:
    """predict()'s records are torch's answers: p_le and every digit posterior within 1e-5, the same
    decisions and digits."""
    p_le = np.array([r["p_le"] for r in records])
    want_p = expected.p_le[0].numpy()
    assert np.abs(p_le - want_p).max() <= 1e-5
    assert ((p_le > 0.5) == (want_p > 0.5)).all()
    probs = np.array([r["digit_probs"] for r in records])
    want_probs = expected.digit_probs[0].numpy()
    assert np.abs(probs - want_probs).max() <= 1e-5 + 1e-6  # (records round posteriors to 6 places)
    assert (np.array([r["digits"] for r in records]) == want_probs.argmax(-1)).all()


def test_the_answer_path_answers_as_torch_scores_on_mnist_pairs_and_every_scene():
    """The whole answer path (load_model().predict, on ONNX Runtime) against torch's one inference
    path: thousands of MNIST test pairs and noise, and the digits the image reader reads from
    every scene of the robustness benchmark's kinds (synthetic.SCENES)."""
    from digitcmp.app import synthetic
    from digitcmp.app.images import read_image_digit
    from digitcmp.core.data import load_mnist

    shipped = load_model()
    x = pairs_to_check()
    _answers_agree(shipped.predict(x), torch_answers(shipped_model_path(), x))
    test = load_mnist("test")
    rng = np.random.default_rng(29)
    read = []
    for scene in synthetic.SCENES.values():
        for index in rng.choice(len(test.images), 12, replace=False):
            read.append(read_image_digit(scene(test.images[index].astype(np.float32), rng), "scene").digit)
    scenes = torch.from_numpy(np.stack(read).reshape(-1, 2, 14, 14))
    _answers_agree(shipped.predict(scenes), torch_answers(shipped_model_path(), scenes))


@pytest.mark.parametrize("arch, tta", [("fnn", 1), ("siamese_cnn", 3)])
def test_any_checkpoint_exports_with_or_without_digit_heads(tmp_path, capsys, arch, tta):
    config = RunConfig(arch=arch, epochs=1, pairs=200, test_pairs=50, tta=tta)
    result, model, data = train_run(config, 3)
    path = tmp_path / "mine.safetensors"
    save_checkpoint(path, model.state_dict(), config, data.mean, data.std, result)
    assert main(["export", "--model", str(path), "--out", str(tmp_path / "onnx" / "new")]) == 0
    assert "wrote" in capsys.readouterr().out
    exported = tmp_path / "onnx" / "new" / "mine.onnx"
    outputs = session(exported).run(None, {"x": data.eval_x.numpy()})
    expected = torch_answers(path, data.eval_x)
    assert np.abs(outputs[0] - expected.p_le[0].numpy()).max() <= 1e-5
    assert len(outputs) == (2 if expected.digit_probs is not None else 1)
    assert metadata(exported)["digit_heads"] == ("true" if len(outputs) == 2 else "false")


def test_export_model_writes_nothing_when_the_checkpoint_is_bad(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        export_model(bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_bad_export_arguments_are_one_line(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["export", "--model", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitcmp: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # the refused export left no folder behind
