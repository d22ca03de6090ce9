"""Image files from strangers -> pixels, with Pillow, through an allow-list of formats.

Every surface (predict, the API, the page) opens images here and nowhere else. A file is
accepted only in a format that people send (photos and drawings); any other format is refused by
its name before a decoder runs, so no decoder that starts a program (EPS and Ghostscript) or that
reads archives and scientific files (FITS, gzip) is ever reached. A decode's work is bounded
before it starts (bytes, pixels, a JPEG's progressive scans) and while it runs (a deadline checked
each time the decoder reads more of the file), and every warning a library emits is kept off the
terminal: a damaged file is one line of ours.
"""

from __future__ import annotations

import io
import time
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import PIL.Image

MAX_IMAGE_BYTES = 50 * 2**20
MAX_IMAGE_PIXELS = 40_000_000  # decoded; 40 MP decodes to at most 160 MB of RGBA
MAX_SOURCE_PIXELS = 250_000_000  # what a JPEG's header may say: it is decoded reduced (READ_SIDE), not whole
READ_SIDE = 1500  # a larger JPEG is decoded reduced by its DCT scaling (1/2, 1/4, 1/8), to no less than this a side
MAX_JPEG_SCANS = 64  # a progressive JPEG has about 10 scans (libjpeg's default script); each costs a pass over the image
DECODE_SECONDS = 10.0  # a decode still running after this long is cut off (the server gives it less)

# What Pillow calls each accepted format, and what messages call it. HEIF is accepted where a
# plugin (pillow-heif) has registered it with Pillow; AVIF where Pillow was built with libavif.
ACCEPTED_FORMATS = {
    "PNG": "PNG",
    "JPEG": "JPEG",  # (Pillow's JPEG opener also opens a phone's multi-picture JPEG, as MPO: its first picture)
    "WEBP": "WebP",
    "GIF": "GIF",
    "BMP": "BMP",
    "TIFF": "TIFF",
    "PPM": "PGM/PPM",  # raw pixels: what the page sends for a drawing (building a PNG in the browser is slow)
    "AVIF": "AVIF",
    "HEIF": "HEIC",
}
JPEG_FORMATS = ("JPEG", "MPO")  # the formats a JPEG file opens as: both decode reduced and have scans
# Files people try that Pillow does not name (or only writes): recognized by their first bytes.
OTHER_FILES = (
    (b"%PDF", "PDF"),
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "ZIP"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML (SVG?)"),
)


@cache
def _pillow():
    """Pillow with every plugin registered, HEIC/HEIF's (pillow-heif) where it is installed."""
    from PIL import Image

    Image.init()
    # Pillow's own pixel bound is off: ours (open_image) reads the header before any decode, and
    # knows that a JPEG is decoded reduced.
    Image.MAX_IMAGE_PIXELS = None
    try:
        import pillow_heif
    except ImportError:
        return Image
    pillow_heif.register_heif_opener(thumbnails=False)
    return Image


def accepted_names() -> str:
    """The accepted formats as messages list them: 'PNG, JPEG, WebP, ...'."""
    Image = _pillow()
    return ", ".join(shown for fmt, shown in ACCEPTED_FORMATS.items() if fmt in Image.OPEN)


def format_of(head: bytes) -> str | None:
    """The name of the format a file's first bytes announce, among all that Pillow knows (its
    plugins' own signature checks, which read only these bytes) and a few it does not."""
    Image = _pillow()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(head):
                return fmt
        except Exception:  # a plugin's check that trips on a short prefix says nothing
            continue
    stripped = head.lstrip()
    return next((name for magic, name in OTHER_FILES if stripped.startswith(magic)), None)


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) a JPEG holds: an upper bound, since entropy-coded data never
    holds the marker's bytes (a 0xFF there is followed by 0x00) but an embedded thumbnail may."""
    return data.count(b"\xff\xda")


class DecodeTimeout(InputError):
    """A decode cut off at its deadline."""


class _DeadlineBytes(io.BytesIO):
    """A file in memory whose reads fail once a deadline has passed: Pillow's decoders read their
    file a block at a time, so a decode that takes too long stops at its next block."""

    def __init__(self, data: bytes, deadline: float, message: str):
        super().__init__(data)
        self.deadline, self.message = deadline, message

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(self.message)

    def read(self, size: int | None = -1) -> bytes:
        self._check()
        return super().read(size)

    def readinto(self, buffer) -> int:
        self._check()
        return super().readinto(buffer)


def read_bytes(source: Path | bytes, name: str) -> bytes:
    """A file's bytes (or the bytes given), refused before reading when there are too many."""
    data, size = (source, len(source)) if isinstance(source, bytes) else (b"", 0)
    if not isinstance(source, bytes):
        try:
            size = source.stat().st_size
            if size <= MAX_IMAGE_BYTES:
                with open(source, "rb") as f:
                    data = f.read(MAX_IMAGE_BYTES + 1)  # a file that grows while it is read is still bounded
                size = len(data)
        except OSError as err:
            raise InputError(f"cannot read image {name}: {err.strerror or err}") from None
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"image {name} is {size / 2**20:.0f} MiB; at most {MAX_IMAGE_BYTES // 2**20} MiB is accepted")
    return data


def open_image(
    source: Path | bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS, seconds: float = DECODE_SECONDS
) -> PIL.Image.Image:
    """The decoded Pillow image of a file or of bytes (its first frame or page), in an accepted
    format and within the bounds, or an InputError that says which bound or format refused it."""
    from PIL import UnidentifiedImageError

    Image = _pillow()
    data = read_bytes(source, name)
    if not data:
        raise InputError(f"image {name} is empty")
    fp = _DeadlineBytes(
        data,
        time.monotonic() + seconds,
        f"image {name} took over {seconds:g} s to decode and was cut off; send a smaller image",
    )
    with warnings.catch_warnings():  # Pillow's warnings (its own pixel bound, damaged EXIF or TIFF tags) stay quiet
        warnings.simplefilter("ignore")
        try:
            img = Image.open(fp, formats=[fmt for fmt in ACCEPTED_FORMATS if fmt in Image.OPEN])  # the header only
        except DecodeTimeout:
            raise
        except UnidentifiedImageError:
            found = format_of(data[:64])
            what = f"in {found} format, which is not accepted" if found else "not in an image format digitcmp reads"
            raise InputError(f"image {name} is {what}; accepted formats: {accepted_names()}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise InputError(f"cannot read image {name}: {err}") from None
        width, height = img.size
        reducible = img.format in JPEG_FORMATS
        if reducible and max(width, height) > READ_SIDE and width * height <= MAX_SOURCE_PIXELS:
            # Decoded at the size the reader needs, by the JPEG's own DCT scaling: a fraction of a full
            # decode's work and memory, so any photo a phone takes is read.
            side = max(width, height)
            img.draft(
                img.mode if img.mode in ("L", "RGB") else "RGB", (width * READ_SIDE // side, height * READ_SIDE // side)
            )
        decoded_w, decoded_h = img.size
        if decoded_w * decoded_h > max_pixels or width * height > MAX_SOURCE_PIXELS or width < 1 or height < 1:
            img.close()
            most = MAX_SOURCE_PIXELS if reducible and width * height > MAX_SOURCE_PIXELS else max_pixels
            raise InputError(f"image {name} is {width}x{height} pixels; at most {most // 1_000_000} megapixels are accepted")
        scans = jpeg_scans(data) if reducible else 0
        if scans > MAX_JPEG_SCANS:
            img.close()
            raise InputError(f"image {name} is a JPEG of {scans} progressive scans; at most {MAX_JPEG_SCANS} are accepted")
        try:
            img.load()
        except DecodeTimeout:
            img.close()
            raise
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
            img.close()
            raise InputError(f"cannot decode image {name}: {err}") from None
    return img


def _strokes_are_dark(gray: np.ndarray, alpha: np.ndarray) -> bool:
    """Whether a drawing on a transparent canvas has dark strokes (it lies on light paper). Where the
    opacity is soft (a canvas's anti-aliasing) the strokes' own color is their median's. Where it
    is all or nothing (a palette image or a GIF with one transparent color) the anti-aliasing is in
    the colors: the fringe that meets the transparency lies between the strokes and their paper,
    so the paper is on the fringe's side of the strokes' core."""
    import cv2

    opaque = alpha >= 128
    if not opaque.any():
        return True
    soft = ((alpha > 0) & (alpha < 255)).sum() > 0.05 * (alpha > 0).sum()
    if not soft:
        fringe = opaque & (cv2.dilate((~opaque).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        core = opaque & ~fringe
        if fringe.any() and core.any():
            fringe_shade, core_shade = float(np.median(gray[fringe])), float(np.median(gray[core]))
            if abs(fringe_shade - core_shade) >= 16:
                return fringe_shade > core_shade
    return float(np.median(gray[opaque])) < 128


def _is_sheet(opaque: np.ndarray) -> bool:
    """Whether the opaque part of an image is a sheet (most of the image, or one solid shape over a
    fifth of it) rather than strokes on a transparent canvas (thin: a small part of their hull)."""
    import cv2

    share = float(opaque.mean())
    if share > 0.5:
        return True
    if share < 0.2:
        return False
    hull = cv2.convexHull(cv2.findNonZero(opaque.astype(np.uint8)))
    return float(opaque.sum()) >= 0.95 * max(cv2.contourArea(hull), 1.0)


def _paper_and_ink(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """An image with transparency -> (RGB with its transparent pixels made paper, or the ink map of
    a drawing on a transparent canvas (then RGB is None)).

    Whatever color hides under a transparent pixel, it is paper. When the opaque part covers most
    of the image, or is a solid shape (its convex hull) over a fifth of it, it is the sheet (a scan
    or a drawing with a transparent margin): its own median color is the paper, laid under the
    transparent pixels. Otherwise the opaque part is the strokes (a drawing on a transparent
    canvas): the ink is the opacity times how far each pixel's shade is from a paper of the other
    shade, so that a near-white fringe of a dark drawing (a palette image whose white is
    transparent) is not ink."""
    opaque = alpha >= 128
    if _is_sheet(opaque):
        opacity = alpha.astype(np.float32)[..., None] / 255.0
        paper = np.median(rgb[opaque], axis=0).astype(np.float32)
        out = rgb.astype(np.float32) * opacity + paper * (1.0 - opacity)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), None
    gray = rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    paper_shade = 255.0 if _strokes_are_dark(gray, alpha) else 0.0
    contrast = np.abs(gray - paper_shade)
    strongest = float(np.percentile(contrast[opaque], 90)) if opaque.any() else 0.0
    if strongest < 1.0:  # strokes of the paper's own shade: nothing stands out but the opacity
        return None, np.ascontiguousarray(alpha)
    shade = np.minimum(contrast / strongest, 1.0)
    return None, np.clip(alpha * shade + 0.5, 0, 255).astype(np.uint8)


def decode(
    source: Path | bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS, seconds: float = DECODE_SECONDS
) -> tuple[np.ndarray, bool]:
    """The image as uint8 pixels [H, W, 3] (RGB, its orientation tag applied, transparency made
    paper), or [H, W] ink when it is a drawing on a transparent canvas (then True: no paper to
    find)."""
    from PIL import ImageOps

    try:
        with open_image(source, name, max_pixels, seconds) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Phone photos are stored sideways with an orientation tag; any format and mode may carry one.
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "F") or img.mode.startswith("I;"):  # 16- and 32-bit gray: its range to 0..255
                gray = np.asarray(img, dtype=np.float32)
                low, high = float(gray.min()), float(gray.max())
                if not (np.isfinite(low) and np.isfinite(high)):
                    raise InputError(f"image {name} holds values that are not finite")
                gray = ((gray - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1), False
            if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
                rgba = np.asarray(img.convert("RGBA"))
                if rgba[..., 3].min() < 250:
                    rgb, ink = _paper_and_ink(rgba[..., :3], rgba[..., 3])
                    return (np.ascontiguousarray(ink), True) if rgb is None else (rgb, False)
            return np.asarray(img.convert("RGB")), False
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:  # a conversion or a tag Pillow cannot read
        raise InputError(f"cannot read image {name}: {err}") from None
