"""Preprocessing of real images, end to end with the shipped model: each kind of image people
make (digitcmp.app.synthetic.render, drawn from MNIST test digits) is read as the digit it shows."""

import numpy as np
import pytest
from PIL import Image

from digitcmp import load_model
from digitcmp.app.images import image_to_digit
from digitcmp.app.synthetic import CASES, render
from digitcmp.core.data import load_mnist


@pytest.fixture(scope="module")
def shipped():
    return load_model()


@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_real_image_is_read_right(shipped, tmp_path, case):
    test = load_mnist("test")
    rng = np.random.default_rng(1)
    paths, labels = [], []
    for i in range(100, 120):  # a fixed sample of MNIST test digits
        data = render(test.images[i], case, rng)
        path = tmp_path / f"{i}.{'jpg' if data[:2] == bytes([255, 216]) else 'png'}"
        path.write_bytes(data)
        paths.append(path)
        labels.append(int(test.labels[i]))
    answers = shipped.predict(paths)
    read = [d for a in answers for d in a["digits"]]
    right = np.mean([r == t for r, t in zip(read, labels)])
    assert right >= 0.85, (case, read, labels)


def test_a_thick_one_on_a_narrow_canvas_is_not_taken_for_a_sheet_of_paper(tmp_path):
    img = np.full((120, 40), 255, np.uint8)
    img[10:110, 12:28] = 0  # a thick vertical bar
    Image.fromarray(img).save(tmp_path / "one.png")
    digit = image_to_digit(tmp_path / "one.png")
    assert digit[:, 6:8].mean() > 100 and digit[:, :3].max() < 30  # a centered upright stroke


def test_specks_and_frames_are_left_out(tmp_path):
    test = load_mnist("test")
    clean = np.full((140, 140), 255, np.uint8)
    clean[20:120, 20:120] = 255 - np.asarray(Image.fromarray(test.images[0]).resize((100, 100)))
    noisy = clean.copy()
    noisy[:4, :] = 0  # a frame along two edges
    noisy[:, :4] = 0
    noisy[130:133, 5:8] = 0  # a speck
    Image.fromarray(clean).save(tmp_path / "clean.png")
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    a, b = image_to_digit(tmp_path / "clean.png"), image_to_digit(tmp_path / "noisy.png")
    assert np.abs(a - b).mean() < 5


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((80, 50, 3), 255, np.uint8),  # white paper
        np.zeros((80, 50, 3), np.uint8),  # black
        np.full((80, 50, 3), (30, 120, 200), np.uint8),  # one color
        np.full((600, 800, 3), 200, np.uint8) + np.random.default_rng(0).integers(0, 3, (600, 800, 3)).astype(np.uint8),
        np.tile(np.linspace(200, 206, 400).astype(np.uint8)[None, :, None], (300, 1, 3)),  # a faint gradient
    ],
    ids=["white", "black", "color", "faint noise", "faint gradient"],
)
def test_images_without_ink_read_as_blank_like_arrays(tmp_path, pixels):
    from digitcmp.app.images import BLANK, read_image_digit

    Image.fromarray(pixels).save(tmp_path / "flat.png")
    reading = read_image_digit(tmp_path / "flat.png")
    assert reading.doubt == BLANK and not reading.digit.any() and reading.region == []


def test_unsure_flags_inputs_that_are_not_one_clear_digit(shipped, tmp_path):
    rng = np.random.default_rng(0)
    scribble = (rng.random((60, 60)) > 0.5).astype(np.uint8) * 255  # noise, not a digit
    Image.fromarray(scribble).save(tmp_path / "scribble.png")
    test = load_mnist("test")
    Image.fromarray(255 - test.images[3]).save(tmp_path / "digit.png")
    two = np.full((60, 120), 255, np.uint8)  # two digits side by side
    two[16:44, 10:38] = 255 - test.images[0]
    two[16:44, 70:98] = 255 - test.images[1]
    Image.fromarray(two).save(tmp_path / "two.png")
    clear = shipped.predict([tmp_path / "digit.png", tmp_path / "digit.png"])[0]
    assert not clear["unsure"] and clear["digits"] == [int(test.labels[3])] * 2
    assert shipped.predict([tmp_path / "digit.png", tmp_path / "scribble.png"])[0]["unsure"]
    both = shipped.predict([tmp_path / "digit.png", tmp_path / "two.png"])[0]
    assert both["unsure"] and "two.png" in both["doubt"]


@pytest.mark.parametrize("kind", ["16-bit png", "float tiff", "cmyk jpeg", "1-bit png", "palette gif"])
def test_every_pixel_format_reads_the_same_digit(tmp_path, kind):
    test = load_mnist("test")
    ink = np.asarray(Image.fromarray(255 - test.images[0]).resize((112, 112)))  # a 7, dark on light
    img, name = {
        "16-bit png": (Image.fromarray(ink.astype(np.uint16) * 257), "a.png"),
        "float tiff": (Image.fromarray(ink.astype(np.float32) / 255), "a.tif"),
        "cmyk jpeg": (Image.fromarray(ink).convert("CMYK"), "a.jpg"),
        "1-bit png": (Image.fromarray(ink).convert("1"), "a.png"),
        "palette gif": (Image.fromarray(ink).convert("P"), "a.gif"),
    }[kind]
    img.save(tmp_path / name)
    reference = image_to_digit(_save(tmp_path / "ref.png", Image.fromarray(ink)))
    assert np.abs(image_to_digit(tmp_path / name) - reference).mean() < 12


def _save(path, img):
    img.save(path)
    return path
