"""Hypothesis properties of the surfaces the second hardening round added: HTTP bodies (JSON of any
shape and depth, multipart with any parts), tuning storage URLs, and destination paths of every
file type. Each property: a valid answer or a one-line refusal, never a crash, a hang or a file
changed that was not ours."""

import os
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitcmp.testing.extras import require

pytestmark = pytest.mark.slow  # Hypothesis properties: outside the fast tier (pytest -m "not slow")

require("fastapi")
require("optuna")

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=40,
)  # fmt: skip


@st.composite
def json_bodies(draw) -> bytes:
    """Any JSON: arbitrary values, objects with "pairs" of any shape, and bodies nested to any depth."""
    import json

    kind = draw(st.sampled_from(["value", "pairs", "deep", "almost pairs"]))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "pairs":
        return json.dumps({"pairs": draw(json_values)}).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return ('{"pairs": ' + opener * depth + "1" + closer * depth + "}").encode()
    n = draw(st.integers(1, 3))
    shape = draw(st.sampled_from([(n, 2, 14, 14), (2, 14, 14), (n, 2, 14, 13), (n, 3, 14, 14), (n, 2, 14, 14, 1)]))
    value = draw(st.sampled_from([0, 255, 128.5, -1, 256, True, "7", None, 1e308]))

    def nest(dims):
        return value if not dims else [nest(dims[1:]) for _ in range(dims[0])]

    return json.dumps({"pairs": nest(shape)}).encode()


@FUZZ
@given(body=json_bodies())
def test_any_json_body_is_an_answer_or_a_one_line_400(client, body):
    r = client.post("/api/compare", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
    else:
        assert all(0 <= a["p_le"] <= 1 for a in r.json()["answers"])


@st.composite
def multipart_parts(draw) -> list:
    """Any parts: names (a, b, others, empty), files or plain fields, any bytes or images."""
    import io

    import numpy as np
    from PIL import Image

    def image() -> bytes:
        side = draw(st.integers(1, 64))
        out = io.BytesIO()
        Image.fromarray(np.full((side, side), draw(st.integers(0, 255)), np.uint8)).save(out, format="PNG")
        return out.getvalue()

    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(["a", "b", "c", "", "a "]) | st.text(max_size=6))
        content = draw(st.sampled_from(["image", "bytes", "empty"]))
        data = image() if content == "image" else draw(st.binary(max_size=200)) if content == "bytes" else b""
        if draw(st.booleans()):
            kind = draw(st.sampled_from(["image/png", "text/plain"]))
            parts.append((name, (draw(st.text(max_size=8)) or "f", data, kind)))
        else:
            parts.append((name, (None, data.decode("latin-1"))))
    return parts


@FUZZ
@given(parts=multipart_parts())
def test_any_multipart_form_is_an_answer_or_a_one_line_4xx(client, parts):
    r = client.post("/api/compare", files=parts) if parts else client.post(
        "/api/compare", content=b"", headers={"content-type": "multipart/form-data; boundary=x"})  # fmt: skip
    assert r.status_code in (200, 400, 413, 415), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]


SCHEMES = ["sqlite", "sqlite+pysqlite", "garbage", "postgresql", "mysql", "", "file", "sqlite:"]
SQLITE_PATHS = ["", ":memory:", "/dev/null", "/proc/x/y.db", ".", "a/b/c.db", "x.db", "/", "notes.txt"]
storage_texts = st.one_of(
    st.text(max_size=30),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(SCHEMES), st.text(max_size=20)),
    st.builds(lambda rest: f"sqlite:///{rest}", st.sampled_from(SQLITE_PATHS)),
)


@FUZZ
@given(text=storage_texts)
def test_any_storage_text_opens_or_is_one_tune_error(tmp_path_factory, text):
    from digitcmp.tune.search import TuneError, open_storage, storage_url

    folder = tmp_path_factory.mktemp("storage")
    (folder / "notes.txt").write_text("mine\n")
    cwd = os.getcwd()
    os.chdir(folder)  # relative paths land here
    try:
        open_storage(storage_url(text))
    except TuneError as err:
        assert "\n" not in str(err) and str(err)
    finally:
        os.chdir(cwd)
    assert (folder / "notes.txt").read_text() == "mine\n"


KINDS = ["missing", "file", "folder", "fifo", "socket", "char device", "link to file", "link to folder", "link to fifo",
         "dangling link", "missing parent", "empty", "blank"]  # fmt: skip


def make(kind: str, folder: Path) -> str:
    path = folder / "dest"
    if kind == "file":
        path.write_bytes(b"old")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "char device":
        return "/dev/null"
    elif kind.startswith("link to"):
        target = folder / "target"
        {"file": lambda: target.write_bytes(b"old"), "folder": target.mkdir, "fifo": lambda: os.mkfifo(target)}[
            kind.removeprefix("link to ")]()  # fmt: skip
        path.symlink_to(target)
    elif kind == "dangling link":
        path.symlink_to(folder / "nowhere")
    elif kind == "missing parent":
        return str(folder / "no" / "dest")
    elif kind == "empty":
        return ""
    elif kind == "blank":
        return " \t"
    return str(path)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(KINDS), writer=st.sampled_from(["file", "folder"]))
def test_any_destination_is_written_as_a_regular_file_or_refused_in_one_line(tmp_path_factory, kind, writer):
    from digitcmp.common.destinations import check_folder, write_text

    folder = tmp_path_factory.mktemp("dest")
    dest = make(kind, folder)
    before = os.lstat(dest).st_mode if dest.strip() and os.path.lexists(dest) else None
    try:
        if writer == "file":
            written = write_text(dest, "new")
            assert written.read_text() == "new" and stat.S_ISREG(os.lstat(written).st_mode)
            if before is not None and stat.S_ISLNK(before):
                assert os.path.islink(dest)  # a link is written through, never replaced
        else:
            made = check_folder(dest, "report folder")
            assert made.is_dir()
    except OSError as err:
        assert "\n" not in str(err) and str(err)
        if before is not None:
            assert os.lstat(dest).st_mode == before  # a refused destination is left as it was
    assert not list(folder.glob(".digitcmp-*"))  # no temporary left behind


# ---- decoders: files of every format Pillow writes, whole, cut short or damaged, through every surface

WRITABLE = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF", "EPS", "PDF", "ICO", "TGA", "PCX", "SGI", "IM",
            "DDS", "MSP", "XBM", "JPEG2000", "QOI", "SPIDER"]  # fmt: skip


@st.composite
def image_files(draw) -> bytes:
    """An image in any format Pillow writes (any mode it takes), possibly cut short, with bytes
    flipped, or with its header kept and its body replaced."""
    import io
    import warnings

    import numpy as np
    from PIL import Image

    fmt = draw(st.sampled_from(WRITABLE))
    side = draw(st.integers(1, 48))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "1", "P"]))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 256, (side, side, 3), np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.save(out, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):  # a mode this writer does not take
        fallback = {"SPIDER": "F", "XBM": "1", "MSP": "1"}.get(fmt, "RGB")
        Image.fromarray(pixels).convert(fallback).save(out, format=fmt)
    data = out.getvalue()
    damage = draw(st.sampled_from(["none", "cut", "flip", "body"]))
    if damage == "cut" and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif damage == "flip":
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            flipped[i] = draw(st.integers(0, 255))
        data = bytes(flipped)
    elif damage == "body":
        data = data[:32] + draw(st.binary(min_size=0, max_size=200))
    return data


@FUZZ
@given(data=image_files())
def test_any_image_file_is_an_answer_or_one_line_on_every_surface(client, tmp_path_factory, capfd, data):
    from digitcmp.app.errors import InputError
    from digitcmp.app.images import read_image_digit
    from digitcmp.cli import main

    capfd.readouterr()
    try:  # the library
        read_image_digit(data, "x")
    except InputError as err:
        assert "\n" not in str(err)
    r = client.post("/api/compare", files={"a": ("a", data), "b": ("b", data)})  # the API
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
    folder = tmp_path_factory.mktemp("img")
    (folder / "x.img").write_bytes(data)
    code = main(["predict", str(folder / "x.img"), str(folder / "x.img")])  # the command line
    out, err = capfd.readouterr()
    assert code in (0, 2) and "Traceback" not in err, err
    assert (code == 0 and err == "") or (code == 2 and err.count("\n") == 1), (out, err)
