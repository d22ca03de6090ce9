"""Images of digits as people make them -> MNIST-like 14x14 digits, with OpenCV.

A photo or a drawing goes through these steps, in order (this module holds the first and puts
them together; each other step is a module of app/reading/: sheet, ink, ruling, glyphs, mnist_steps):
1. decode (decode.py: an allow-list of formats, bounded before and while decoding), and reduce to WORK_SIDE pixels a side;
2. find the sheet of paper, if the photo shows one on a table (a light quadrilateral, any
   rotation, in perspective, a third of the frame or more) and rectify it, so that the table,
   its texture and the sheet's edges never count as ink;
3. ink, judged against the paper's own local color (a morphological closing estimates the paper
   under the ink; shadows and color casts divide out); light ink on dark paper is inverted;
4. ruled and squared paper's lines (three or more long parallel lines) taken out, frames and
   margins (ink across the whole image) left out;
5. the ink's connected components grouped into glyphs (strokes that overlap in columns are one
   glyph: a 5's flag, a 4's bar); the heaviest glyph is the digit, and further glyphs of a similar
   size beside it are kept, so that "35" can be answered as two digits;
6. the steps that made MNIST itself: the glyph cropped, its strokes brought to MNIST's width
   (relative to its size, so that small drawings are not blobs and thin pens not threads),
   scaled to fit 20x20, centered by mass in 28x28, average-pooled to 14x14.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import DECODE_SECONDS, MAX_IMAGE_PIXELS, decode
from .errors import InputError
from .reading.glyphs import find_glyphs
from .reading.ink import ink_map
from .reading.mnist_steps import mnist_field, pool
from .reading.ruling import could_hold_ruling, has_long_lines, remove_ruling
from .reading.sheet import find_sheet, rectify

MIN_INK = 8.0  # an image whose ink never rises this far above its paper (of 255) is blank
WORK_SIDE = 512  # larger images are reduced by a whole factor to about this many pixels a side, first
MAX_GLYPHS = 4  # glyphs read beside the digit (more is "several marks")
DENOISE_FROM = 64  # pixels: a map this large has its salt-and-pepper noise (scans, photos) filtered, and an edge strip
PEN_LEVEL = 0.3  # of the ink's peak: the pen's strokes
FAINT_LEVEL = 0.12  # of the peak: where lines are looked for (a ruling is lighter than the pen)
EDGE_STRIP = 0.015  # of the smaller side: the strip along the edges left out (a board's frame, a sheet's edge)
WIDE_GLYPH, WIDE_FROM = 1.6, 8  # a single glyph this much wider than tall (and this many pixels) may be several digits


@dataclass
class DigitReading:
    """What was read from one image."""

    digit: np.ndarray
    """[14, 14] float32 0..255, like generate_pair_sets' digits."""
    doubt: str | None = None
    """Why the image may not be one clear digit, from its shape alone (the model adds its own)."""
    glyphs: list[np.ndarray] = field(default_factory=list)
    """Every glyph of a similar size in a row with the digit, left to right, when there are two or
    more ("35"): each [14, 14] like digit; empty when the image holds one glyph."""
    name: str = "image"
    """What messages call the image."""
    region: list[list[float]] = field(default_factory=list)
    """The four corners of the region that was read, in the original image, as fractions of its
    width and height (x, y): what a page outlines on a thumbnail."""


def _reduce(gray: np.ndarray) -> tuple[np.ndarray, int]:
    """The image reduced by a whole factor (area averaging: OpenCV's fast path) to at most about
    WORK_SIDE pixels a side, and the factor."""
    import cv2

    h, w = gray.shape[:2]
    factor = -(-max(h, w) // WORK_SIDE)
    if factor > 1:
        gray = cv2.resize(gray, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return gray, factor


NO_INK = "has no ink: it is blank or a single color (a digit must stand out from its background)"
BLANK = "blank: no digit to read"  # the doubt of a side without ink, image or array alike


class NoInk(InputError):
    """An image (or a region of one) with no ink that stands out from its paper."""


def read_ink(ink: np.ndarray, name: str) -> tuple[list[np.ndarray], int, str | None, tuple[int, int, int, int]]:
    """An ink map (light on dark, any size) -> (the 28x28 field of each glyph, left to right; which
    of them is the digit (the heaviest); a doubt or None; the digit's box x, y, w, h in the map).
    A map without ink is an InputError."""
    import cv2

    if min(ink.shape) >= DENOISE_FROM:
        ink = cv2.medianBlur(ink, 3)
    peak = float(ink.max())
    if peak < MIN_INK:
        raise NoInk(f"{name} {NO_INK}")
    level = max(MIN_INK, PEN_LEVEL * peak)
    # A thin strip along the edges is left out: a board's frame, a sheet's edge, a shadow's rim.
    strip = int(EDGE_STRIP * min(ink.shape)) if min(ink.shape) >= DENOISE_FROM else 0

    def above(threshold: float) -> np.ndarray:
        mask = (ink > threshold).astype(np.uint8) * 255
        if strip:
            mask[:strip], mask[-strip:], mask[:, :strip], mask[:, -strip:] = 0, 0, 0, 0
        return mask

    binary = above(level)
    faint = above(max(MIN_INK, FAINT_LEVEL * peak))
    if could_hold_ruling(faint) and has_long_lines(faint):
        ink, binary = remove_ruling(ink, binary, faint)
    glyphs, labels, doubt = find_glyphs(ink, binary, strip)
    read = []
    for g in glyphs:
        x, y, w, h = g.box
        keep = np.isin(labels[y : y + h, x : x + w], g.labels)
        keep = cv2.dilate(keep.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # with the strokes' soft edges
        field_28 = mnist_field(np.where(keep, ink[y : y + h, x : x + w], 0).astype(np.float32))
        if field_28.any():
            read.append((g, field_28))
    if not read:
        raise NoInk(f"{name} {NO_INK}")
    main = max(range(len(read)), key=lambda i: read[i][0].mass)
    if len(read) > MAX_GLYPHS:
        read, main, doubt = [read[main]], 0, f"{len(read)} marks in a row, not one digit"
    box = read[main][0].box
    if len(read) == 1 and box[2] > WIDE_GLYPH * box[3] and box[2] >= WIDE_FROM:
        doubt = doubt or "the ink is much wider than tall (several digits?)"
    return [f for _, f in read], main, doubt, box


SMALL_GLYPH = 64  # a digit smaller than this (pixels, reduced image) is read again at full resolution


def read_pixels(pixels: np.ndarray, is_ink: bool, name: str = "image") -> DigitReading:
    """Decoded pixels (RGB, or an ink map when is_ink) of the image called name -> what they show."""
    import cv2

    full = pixels if is_ink else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    gray, factor = _reduce(full)
    height, width = gray.shape
    quad = None if is_ink else find_sheet(gray)
    back = None  # the transform from the rectified sheet back to the (reduced) photo
    ink = None
    if quad is not None:
        sheet, back = rectify(gray, quad)
        ink = ink_map(sheet)
        if ink.max() >= MIN_INK:
            gray = sheet
        else:  # a light shape with nothing on it (a thick light stroke on a dark board): the frame is read
            quad = back = ink = None
    if ink is None:
        ink = gray if is_ink else ink_map(gray)
    try:
        fields, main, doubt, (x, y, w, h) = read_ink(ink, f"image {name}")
    except NoInk:
        # Blank paper, a single color, a photo of nothing: an answer that says so (as for a blank
        # array), not an error; the pair is answered unsure.
        return DigitReading(np.zeros((14, 14), np.float32), BLANK, [], name, [])
    if factor > 1 and max(w, h) < SMALL_GLYPH:
        # A small digit in a large image: its crop, read again from the full-resolution pixels.
        if quad is not None:
            full, _ = rectify(full, quad * factor, factor)
        pad = 2 * max(w, h)  # context enough to tell a ruling (lines across the crop) from the digit
        x0, y0 = max(0, (x - pad) * factor), max(0, (y - pad) * factor)
        crop = full[y0 : (y + h + pad) * factor, x0 : (x + w + pad) * factor]
        try:
            fields, main, _, _ = read_ink(crop if is_ink else ink_map(crop), f"image {name}")
        except InputError:
            pass  # the reduced reading stands
    corners = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    if back is not None:
        corners = cv2.perspectiveTransform(corners[None], back)[0]
    corners = corners / np.float32([width, height])
    region = [[round(float(cx), 4), round(float(cy), 4)] for cx, cy in np.clip(corners, 0, 1)]
    digits = [pool(f) for f in fields]
    return DigitReading(digits[main], doubt, digits if len(digits) > 1 else [], name, region)


def read_image_digit(
    source: str | os.PathLike | bytes,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    seconds: float = DECODE_SECONDS,
) -> DigitReading:
    """One image (a file, or its bytes, called name in messages) -> its DigitReading."""
    if isinstance(source, bytes):
        name = name or "image"
    else:
        source = Path(source)
        name = name or str(source)
    pixels, is_ink = decode(source, name, max_pixels, seconds)
    return read_pixels(pixels, is_ink, name)


def read_image_pair(
    images: Sequence[tuple[str, Path | bytes]], max_pixels: int = MAX_IMAGE_PIXELS, seconds: float = DECODE_SECONDS
) -> tuple[np.ndarray, list[DigitReading]]:
    """Two images [(name, file path or bytes), (name, ...)] -> (one pair [1, 2, 14, 14], their
    readings); each image's decode is cut off after `seconds`."""
    readings = [read_image_digit(source, name, max_pixels, seconds) for name, source in images]
    return np.stack([r.digit for r in readings])[None], readings


def image_to_digit(path: str | os.PathLike) -> np.ndarray:
    """One image file -> [14, 14] float32, values 0..255."""
    return read_image_digit(path).digit
