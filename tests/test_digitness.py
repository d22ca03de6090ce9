"""The digit-ness detector (digitness.py): the shipped file loads and separates digits from
non-digits it never saw; a damaged or foreign file is refused in one line; the trainer's steps
work on a small scale."""

import numpy as np
import pytest
import torch

from digitcmp.app import synthetic
from digitcmp.app.digitness import (
    Detector,
    DetectorError,
    DigitnessNet,
    load_detector,
    save_detector,
    shipped_detector_path,
)
from digitcmp.app.synthetic import NON_DIGIT_KINDS
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


def test_the_detector_trains_briefly_from_its_seed_alone_and_its_threshold_is_chosen_on_held_out_data(tmp_path):
    """A smoke run of the detector's recipe on a few examples: the same seed gives the same weights,
    the global generator is left as it was, the threshold lets through all but 1 % of the held-out
    digits, and the saved file is read back by the checked loader."""
    from digitcmp.app.train_digitness import DataSizes, build_net, choose_threshold, train

    sizes = DataSizes(digits_read=100, other_digits=60, non_digits=200, held_out_non_digits=120, held_out_digits=200)
    before = torch.random.get_rng_state()
    net, _ = train(30, 0, sizes, log=lambda *_: None)
    assert torch.equal(torch.random.get_rng_state(), before)  # explicit generators only
    assert all(torch.equal(a, b) for a, b in zip(build_net(0).state_dict().values(), build_net(0).state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(build_net(0).state_dict().values(), net.state_dict().values()))
    chosen = choose_threshold(net, 0, sizes)
    assert 0 < chosen["threshold"] < 1 and chosen["held_out_digits"] <= 200
    assert chosen["digits_flagged"] <= 0.01 + 1 / chosen["held_out_digits"]
    assert chosen["held_out_non_digits"] == 120 and set(chosen["by_kind"]) == set(NON_DIGIT_KINDS)
    save_detector(tmp_path / "d.safetensors", net, chosen["threshold"], {"recipe": "smoke"})
    loaded = load_detector(tmp_path / "d.safetensors")
    x = torch.rand(8, 14, 14) * 255
    assert loaded.threshold == chosen["threshold"] and torch.allclose(loaded.scores(x), Detector(net, 0.5, {}).scores(x))
