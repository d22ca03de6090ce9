"""decode.py: images from strangers. Only the formats people send are decoded (every other one is
refused by its name before a decoder runs, and nothing starts a program); a decode's work is
bounded before it starts and cut off while it runs; transparency is paper and every format's
orientation tag is honoured; a damaged file is one line, with no library warnings."""

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitcmp.app import decode as decode_module
from digitcmp.app.decode import MAX_JPEG_SCANS, DecodeTimeout, accepted_names, decode, format_of
from digitcmp.app.errors import InputError
from digitcmp.app.images import read_image_digit
from digitcmp.cli import main


def digit_drawing(digit: int, side: int = 112, ink: int = 0, paper: int = 255) -> Image.Image:
    """A digit drawn with Pillow's strokes (no font needed): 0-9 as a few arcs and lines."""
    img = Image.new("L", (side, side), paper)
    d = ImageDraw.Draw(img)
    s, w = side / 112, max(2, round(9 * side / 112))
    box = lambda *c: [round(v * s) for v in c]
    shapes = {
        0: lambda: d.ellipse(box(30, 14, 82, 98), outline=ink, width=w),
        1: lambda: d.line(box(56, 14, 56, 98), fill=ink, width=w),
        2: lambda: (d.arc(box(30, 14, 82, 60), 180, 30, fill=ink, width=w), d.line(box(78, 50, 30, 98), fill=ink, width=w),
                    d.line(box(30, 98, 84, 98), fill=ink, width=w)),
        3: lambda: (d.arc(box(30, 14, 80, 56), -150, 90, fill=ink, width=w),
                    d.arc(box(30, 54, 80, 98), -90, 150, fill=ink, width=w)),
        4: lambda: (d.line(box(70, 14, 26, 70), fill=ink, width=w), d.line(box(26, 70, 88, 70), fill=ink, width=w),
                    d.line(box(70, 14, 70, 98), fill=ink, width=w)),
        5: lambda: (d.line(box(80, 14, 36, 14), fill=ink, width=w), d.line(box(36, 14, 34, 52), fill=ink, width=w),
                    d.arc(box(30, 44, 82, 98), -120, 150, fill=ink, width=w)),
        7: lambda: (d.line(box(28, 16, 84, 16), fill=ink, width=w), d.line(box(84, 16, 44, 98), fill=ink, width=w)),
    }  # fmt: skip
    shapes[digit]()
    return img


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def view(data: bytes, name: str = "x") -> np.ndarray:
    return read_image_digit(data, name).digit


# -- the allow-list ----------------------------------------------------------------------------------

# Formats Pillow can write but that no person sends as a photo or a drawing: each refused by name.
REFUSED_WRITABLE = ["EPS", "PDF", "ICO", "TGA", "PCX", "SGI", "IM", "DDS", "MSP", "XBM", "SPIDER", "JPEG2000", "QOI"]


@pytest.mark.parametrize("fmt", REFUSED_WRITABLE)
def test_formats_outside_the_allow_list_are_refused_by_name_before_decoding(fmt, monkeypatch):
    img = digit_drawing(3).convert("1" if fmt in ("XBM", "MSP") else "RGB" if fmt != "SPIDER" else "F")
    try:
        data = encoded(img, fmt)
    except (OSError, KeyError, ValueError) as err:  # a writer this Pillow build lacks
        pytest.skip(f"Pillow cannot write {fmt} here: {err}")

    def no_decoder(*args, **kwargs):
        raise AssertionError("a decoder (or a program) ran for a refused format")

    monkeypatch.setattr(Image.Image, "load", no_decoder)
    monkeypatch.setattr(subprocess, "Popen", no_decoder)
    with pytest.raises(InputError) as err:
        read_image_digit(data, "f")
    message = str(err.value)
    assert "accepted formats: PNG, JPEG" in message and "\n" not in message
    # Named by the signature checks alone (no refused format's header is parsed): IM and SPIDER have
    # none, and a TGA's first bytes are also a CUR icon's.
    named = {"IM": None, "SPIDER": None, "TGA": "CUR"}.get(fmt, fmt)
    assert format_of(data[:64]) == named
    assert (f"in {named} format, which is not accepted" if named else "not in an image format") in message


POSTSCRIPT_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n{ } loop\nshowpage\n"
DOS_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(POSTSCRIPT_LOOP), 0, 0, 0, 0) + b"\xff\xff" + POSTSCRIPT_LOOP


@pytest.mark.parametrize(
    "data, named",
    [
        (POSTSCRIPT_LOOP, "EPS"),
        (DOS_EPS, "EPS"),
        (b"SIMPLE  =                    T" + b" " * 50 + b"END" + b" " * 77, "FITS"),
        (zlib.compress(b"SIMPLE  =  T"), None),  # zlib without a header Pillow knows
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + b"\x00" * 20, "gzip"),
        (b"%PDF-1.7\n1 0 obj\n", "PDF"),
        (b"PK\x03\x04" + b"\x00" * 30, "ZIP"),
        (b'  <svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
        (b"this is a note, not a picture", None),
    ],
    ids=["postscript", "dos eps", "fits", "zlib", "gzip", "pdf", "zip", "svg", "text"],
)
def test_files_people_might_send_that_are_no_accepted_image(data, named, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a program was started"))
    with pytest.raises(InputError) as err:
        read_image_digit(data, "upload")
    assert "accepted formats" in str(err.value)
    if named:
        assert f"in {named} format" in str(err.value)


@pytest.mark.slow  # a command in a subprocess
def test_eps_through_the_command_line_is_one_line_exit_2_and_starts_no_ghostscript(tmp_path, digit_png):
    (tmp_path / "loop.eps").write_bytes(POSTSCRIPT_LOOP)
    (tmp_path / "d.png").write_bytes(digit_png)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    fake_gs = tmp_path / "gs"  # a Ghostscript that leaves a mark if anything runs it
    fake_gs.write_text(f"#!/bin/sh\ntouch {tmp_path}/gs-ran\nsleep 1000\n")
    fake_gs.chmod(0o755)
    out = subprocess.run(
        [sys.executable, "-m", "digitcmp", "predict", str(tmp_path / "loop.eps"), str(tmp_path / "d.png")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "EPS" in out.stderr, out.stderr
    assert not (tmp_path / "gs-ran").exists()


@pytest.fixture
def digit_png() -> bytes:
    return encoded(digit_drawing(7), "PNG")


def test_every_accepted_format_reads_the_same_digit():
    img = digit_drawing(4).convert("RGB")
    reference = view(encoded(img, "PNG"))
    assert reference.max() > 100
    assert accepted_names().startswith("PNG, JPEG, WebP, GIF, BMP, TIFF")
    variants = {
        "JPEG": encoded(img, "JPEG", quality=95),
        "progressive JPEG": encoded(img, "JPEG", quality=95, progressive=True),
        "WebP": encoded(img, "WEBP", lossless=True),
        "GIF": encoded(img.convert("P"), "GIF"),
        "BMP": encoded(img, "BMP"),
        "PGM": encoded(img.convert("L"), "PPM"),
        "TIFF": encoded(img, "TIFF", compression="tiff_deflate"),
        "AVIF": encoded(img, "AVIF", quality=95) if "AVIF" in Image.SAVE else None,
    }
    for name, data in variants.items():
        if data is None:
            continue
        assert np.abs(view(data, name) - reference).max() < 40, name  # lossy formats differ a little


def test_first_frame_and_first_page_only():
    """An animated GIF or WebP and a multi-page TIFF: the first frame (page) is the one read."""
    first, second = digit_drawing(1).convert("RGB"), digit_drawing(0).convert("RGB")
    reference = view(encoded(first, "PNG"))
    for fmt, kwargs in (("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {})):
        data = encoded(first, fmt, save_all=True, append_images=[second] * 5, **kwargs)
        assert np.abs(view(data, fmt) - reference).max() < 40, fmt


def test_progressive_jpegs_of_too_many_scans_are_refused_before_decoding(monkeypatch):
    data = encoded(digit_drawing(5).convert("RGB"), "JPEG", progressive=True)
    assert data.count(b"\xff\xda") < MAX_JPEG_SCANS
    view(data)  # an ordinary progressive JPEG is read
    # The same file with its last scan repeated: a scan bomb (each scan is a pass over the image).
    last = data.rindex(b"\xff\xda")
    bomb = data[:last] + data[last:-2] * (MAX_JPEG_SCANS + 10) + b"\xff\xd9"
    monkeypatch.setattr(Image.Image, "load", lambda *a: pytest.fail("decoded a scan bomb"))
    with pytest.raises(InputError, match=f"at most {MAX_JPEG_SCANS} are accepted"):
        read_image_digit(bomb, "bomb")


def test_a_decode_past_its_deadline_is_cut_off():
    data = encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900), np.uint8)), "PNG")
    assert len(data) > 3 * 65536  # several reads: the deadline is checked at each
    with pytest.raises(DecodeTimeout, match="cut off"):
        decode(data, "slow", seconds=0.0)
    pixels, _ = decode(data, "slow")  # with time to finish, the same file decodes
    assert pixels.shape == (900, 900, 3)


def test_damaged_files_of_every_format_are_one_line_without_library_warnings(capfd):
    img = digit_drawing(2).convert("RGB")
    files = {fmt: encoded(img, fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")}
    files["TIFF tags"] = files["TIFF"][:8] + b"\xff" * 40 + files["TIFF"][48:]
    files["EXIF"] = encoded(img, "JPEG", exif=b"Exif\x00\x00II*\x00" + b"\xff" * 30)
    for fmt, data in list(files.items()):
        for cut in (len(data) // 3, len(data) // 2, len(data) - 5):
            files[f"{fmt} cut at {cut}"] = data[:cut]
        flipped = bytearray(data)
        for i in range(len(data) // 4, len(data), max(1, len(data) // 16)):
            flipped[i] ^= 0x5A
        files[f"{fmt} flipped"] = bytes(flipped)
    capfd.readouterr()
    for name, data in files.items():
        try:
            read_image_digit(data, name)
        except InputError as err:
            assert "\n" not in str(err) and name in str(err)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no warning of Pillow's or libtiff's reached the terminal


# -- transparency and orientation ---------------------------------------------------------------------


@pytest.mark.parametrize("digit", [3, 5, 7])
def test_a_palette_image_whose_white_is_transparent_reads_as_the_opaque_one(digit):
    # Drawn small and enlarged: gray anti-aliasing around the strokes, as a real drawing has.
    opaque = digit_drawing(digit, 56).resize((112, 112), Image.LANCZOS)
    palette = opaque.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=24)
    colors = np.array(palette.getpalette()[: 3 * 24]).reshape(-1, 3)
    white = int(np.argmax(colors.sum(1)))
    reference = view(encoded(opaque, "PNG"))
    for fmt in ("PNG", "GIF"):
        assert np.abs(view(encoded(palette, fmt, transparency=white), fmt) - reference).max() < 30, fmt


@pytest.mark.parametrize("margin", [2, 5, 12])  # (the digit starts 14 pixels in)
@pytest.mark.parametrize("hidden", ["black", "noise"])
def test_transparent_margins_are_paper_whatever_color_hides_under_them(margin, hidden):
    opaque = digit_drawing(3).convert("RGB")
    rgba = np.dstack([np.asarray(opaque), np.full((112, 112), 255, np.uint8)])
    edge = np.ones((112, 112), bool)
    edge[margin:-margin, margin:-margin] = False
    rgba[edge, 3] = 0
    rgba[edge, :3] = 0 if hidden == "black" else np.random.default_rng(margin).integers(0, 255, (edge.sum(), 3))
    assert np.abs(view(encoded(Image.fromarray(rgba), "PNG")) - view(encoded(opaque, "PNG"))).max() < 2


@pytest.mark.parametrize("strokes", ["dark", "light", "blue"])
def test_a_drawing_on_a_transparent_canvas_is_read_from_its_opacity(strokes):
    shape = np.asarray(digit_drawing(2, ink=255, paper=0))  # the strokes' opacity
    color = {"dark": (0, 0, 0), "light": (255, 255, 255), "blue": (30, 60, 200)}[strokes]
    rgba = np.zeros((112, 112, 4), np.uint8)
    rgba[..., :3] = color
    rgba[..., 3] = shape
    on_white = digit_drawing(2)
    assert np.abs(view(encoded(Image.fromarray(rgba), "PNG")) - view(encoded(on_white, "PNG"))).max() < 40


def with_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, fmt, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize(
    "fmt, mode",
    [(fmt, mode) for fmt in ("PNG", "WEBP", "TIFF") for mode in ("RGBA", "LA", "I;16", "RGB")
     if not (fmt == "WEBP" and mode == "I;16")],  # (WebP has no 16-bit gray)
)  # fmt: skip
def test_every_format_and_mode_honours_its_orientation_tag(orientation, mode, fmt):
    upright = digit_drawing(7)  # a 7 is not symmetric under any of these turns
    stored = upright.rotate({3: 180, 6: 90, 8: 270}[orientation], expand=True)  # what a turned camera stores
    if mode == "I;16":
        stored = Image.fromarray(np.asarray(stored).astype(np.uint16) * 257)
    else:
        stored = stored.convert(mode)
    data = with_orientation(stored, fmt, orientation)
    assert np.abs(view(data, fmt) - view(encoded(upright, "PNG"))).max() < 40


@pytest.mark.slow  # a command in a subprocess
def test_a_file_name_that_is_not_utf8_prints_safely_under_a_strict_utf8_stdout(tmp_path, digit_png):
    folder = os.fsencode(tmp_path)
    name = folder + b"/d\xff\xfe.png"
    with open(name, "wb") as f:
        f.write(digit_png)
    notes = folder + b"/n\xe9.txt"
    with open(notes, "wb") as f:
        f.write(b"not an image")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    predict = [sys.executable, "-m", "digitcmp", "predict"]
    ok = subprocess.run([*predict, name, name], capture_output=True, env=env, timeout=120)
    assert ok.returncode == 0 and b"\\udcff" in ok.stdout, (ok.stdout, ok.stderr)
    bad = subprocess.run(
        [sys.executable, "-m", "digitcmp", "predict", notes, name], capture_output=True, env=env, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1 and b"accepted formats" in bad.stderr, bad.stderr


def test_the_allow_list_holds_whatever_plugins_are_registered(monkeypatch):
    """A decoder registered later (a plugin of someone's) is not reached through our opener."""
    monkeypatch.setattr(decode_module, "ACCEPTED_FORMATS", {"PNG": "PNG"})
    with pytest.raises(InputError, match="in JPEG format, which is not accepted; accepted formats: PNG$"):
        read_image_digit(encoded(digit_drawing(1).convert("RGB"), "JPEG"), "j")


# -- what phones make: HEIC, and photos far larger than the reader needs --------------------------


def heic(img: Image.Image, orientation: int = 1) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, "HEIF", quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_heic_is_read_on_every_surface_with_its_orientation(tmp_path, orientation, capsys):
    upright = digit_drawing(7).convert("RGB")
    stored = upright.rotate({1: 0, 6: 90, 3: 180}[orientation], expand=True)
    data = heic(stored, orientation)
    assert np.abs(view(data, "h") - view(encoded(upright, "PNG"))).max() < 40
    (tmp_path / "a.heic").write_bytes(heic(digit_drawing(1).convert("RGB")))
    (tmp_path / "b.heic").write_bytes(data)
    assert main(["predict", str(tmp_path / "a.heic"), str(tmp_path / "b.heic")]) == 0
    assert capsys.readouterr().out.startswith("a.heic <= b.heic: yes (p = ")


def test_heic_through_the_api(client):
    files = {"a": ("a.heic", heic(digit_drawing(1).convert("RGB"))), "b": ("b.heic", heic(digit_drawing(7).convert("RGB")))}
    r = client.post("/api/compare", files=files)
    assert r.status_code == 200 and r.json()["digits"] == [1, 7] and r.json()["le"], r.text


@pytest.mark.parametrize("width, height", [(4000, 3000), (8000, 6000), (6000, 8000), (16000, 12000)])
def test_a_large_jpeg_is_decoded_reduced_not_refused(width, height):
    """Any photo a phone takes (12-200 MP) is read: decoded by the JPEG's DCT scaling at the size the
    reader needs, never whole."""
    img = Image.new("L", (width, height), 230)
    ImageDraw.Draw(img).line([(width // 2, height // 4), (width // 2, 3 * height // 4)], fill=10, width=width // 30)
    data = encoded(img, "JPEG", quality=80)
    pixels, _ = decode(data, "big", max_pixels=16_000_000)  # within the server's bound of what is decoded
    assert decode_module.READ_SIDE <= max(pixels.shape) < 2 * decode_module.READ_SIDE
    assert pixels.shape[0] / pixels.shape[1] == pytest.approx(height / width, rel=0.01)
    assert read_image_digit(data, "big").digit.max() > 100


def test_a_jpeg_header_beyond_any_camera_is_refused():
    data = encoded(Image.new("L", (16, 16), 200), "JPEG")
    sof = data.index(b"\xff\xc0")  # the frame header: height and width, 16 bits each
    huge = data[: sof + 5] + struct.pack(">HH", 60000, 60000) + data[sof + 9 :]
    with pytest.raises(InputError, match="60000x60000 pixels; at most 250 megapixels"):
        read_image_digit(huge, "huge")
