"""The digit-ness detector (digitness.py): the shipped file loads and separates digits from
non-digits it never saw; a damaged or foreign file is refused in one line; the trainer's steps
work on a small scale."""

import numpy as np
import pytest
import torch

from digitcmp.app import synthetic
from digitcmp.app.digitness import DetectorError, DigitnessNet, load_detector, save_detector, shipped_detector_path
from digitcmp.app.train_digitness import digits_as_images, non_digits, read_as_image


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def test_the_shipped_detector_passes_digits_and_flags_non_digits(detector, mnist_test):
    digits = mnist_test.pooled[:500, 0]  # test digits: never seen by the detector
    assert detector.not_digit(digits).double().mean() <= 0.03
    rng = np.random.default_rng(404)
    fonts = synthetic.fonts("all")
    flagged = []
    for kind in ("letter", "sign", "scribble", "blob", "dot", "mark"):
        for _ in range(15):
            seen = read_as_image(synthetic.non_digit_ink(kind, rng, fonts))
            if seen is not None:
                flagged.append(bool(detector.not_digit(seen[None])[0]))
    assert np.mean(flagged) >= 0.8


def _copy_with(tmp_path, state=None, metadata=None):
    net = DigitnessNet()
    if state:
        net.load_state_dict({**net.state_dict(), **state})
    path = tmp_path / "d.safetensors"
    save_detector(path, net, 0.5, metadata or {})
    return path


def test_damaged_or_foreign_detector_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    weight = DigitnessNet().state_dict()["head.3.weight"]
    cases = {
        "not finite": _copy_with(tmp_path, {"head.3.weight": torch.full_like(weight, float("nan"))}),
    }
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    cases["foreign"] = foreign
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    cases["garbage"] = garbage
    cases["missing"] = tmp_path / "missing.safetensors"
    bad_threshold = tmp_path / "threshold.safetensors"
    save_detector(bad_threshold, DigitnessNet(), 0.5, {})
    from safetensors import safe_open

    with safe_open(str(bad_threshold), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(bad_threshold), metadata={"format": "digitcmp-digitness-1", "threshold": "1.5"})
    cases["threshold out of range"] = bad_threshold
    for name, path in cases.items():
        with pytest.raises(DetectorError) as err:
            load_detector(path)
        assert "\n" not in str(err.value), name


def test_the_trainers_data_steps():
    negatives, kinds = non_digits(14, seed=5, font_kind="held out")
    assert negatives.shape == (14, 14, 14) and set(kinds) == set(synthetic.NON_DIGIT_KINDS)
    digits = digits_as_images(np.arange(59990, 60000))
    assert digits.shape[1:] == (14, 14) and len(digits) >= 9
    assert shipped_detector_path().endswith("digitness.safetensors")
