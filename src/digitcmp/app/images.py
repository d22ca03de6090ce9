"""Images of digits as people make them -> MNIST-like 14x14 digits, with OpenCV.

A photo or a drawing goes through these steps (each below, in order):
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import DECODE_SECONDS, MAX_IMAGE_PIXELS, decode
from .errors import InputError

MIN_INK = 8.0  # an image whose ink never rises this far above its paper (of 255) is blank
WORK_SIDE = 512  # larger images are reduced by a whole factor to about this many pixels a side, first
MNIST_STROKE = 0.16  # MNIST's stroke width / the digit's larger side: median of stroke_width (p1 0.10, p99 0.29)
MAX_GLYPHS = 4  # glyphs read beside the digit (more is "several marks")


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


# -- 2. the sheet --------------------------------------------------------------------------------


def _order_corners(quad: np.ndarray) -> np.ndarray:
    """Four points -> top-left, top-right, bottom-right, bottom-left (for a sheet turned by less than
    45 degrees: the upright reading of it)."""
    center = quad.mean(axis=0)
    angles = np.arctan2(quad[:, 1] - center[1], quad[:, 0] - center[0])
    quad = quad[np.argsort(angles)]  # clockwise in image coordinates, from the left
    first = int(np.argmin(quad.sum(axis=1)))  # the top-left corner has the smallest x + y
    return np.roll(quad, -first, axis=0).astype(np.float32)


def _square_corners(hull: np.ndarray, shape: tuple[int, int]) -> int:
    """How many corners of a convex outline in an image of this shape are a sheet's: interior angles
    of 115 degrees or less on its polygon (the edges simplified to 2 % of the perimeter), or corners
    on the image's edge (where the frame cuts a sheet off). A sheet in perspective has four; a light
    digit in a thick marker on a dark board (a ring, a blob: convex too) has round ends, whose
    polygon's angles are all wider."""
    import cv2

    poly = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
    if len(poly) < 3:
        return 0
    before, after = np.roll(poly, 1, axis=0) - poly, np.roll(poly, -1, axis=0) - poly
    cos = (before * after).sum(1) / np.maximum(np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1), 1e-9)
    angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    h, w = shape
    margin = 0.02 * max(h, w)
    on_edge = (poly.min(1) < margin) | (poly[:, 0] > w - 1 - margin) | (poly[:, 1] > h - 1 - margin)
    return int(((angles <= 115) | on_edge).sum())


def find_sheet(gray: np.ndarray) -> np.ndarray | None:
    """A sheet of paper on a darker surround: its four corners [4, 2] (ordered as _order_corners),
    or None when the photo shows no such sheet (the paper fills the frame, or it is a drawing).

    The sheet is the largest light region (Otsu's threshold) covering a tenth of the frame or more
    but not all of it, whose outline is close to a quadrilateral (the corners of its polygon
    approximation, or of its minimal rotated rectangle when an edge leaves the frame)."""
    import cv2

    if min(gray.shape) < 96:
        return None
    full_h, full_w = gray.shape
    # A sheet is large: half the size is enough to find it.
    gray = cv2.resize(gray, (full_w // 2, full_h // 2), interpolation=cv2.INTER_AREA)
    h, w = gray.shape
    small = cv2.GaussianBlur(gray, (5, 5), 0)
    _, light = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = cv2.morphologyEx(light, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    contours, _ = cv2.findContours(light, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(outline)
    if not (0.1 * h * w <= area <= 0.93 * h * w):
        return None
    hull = cv2.convexHull(outline)
    if area < 0.85 * cv2.contourArea(hull):
        return None  # not a convex sheet: light strokes, a lit wall, a dark drawing's gaps
    inside = np.zeros_like(light)
    cv2.drawContours(inside, [hull], -1, 255, -1)
    # The sheet must stand out from what is around it; a digit drawn in dark ink fills no hull.
    outside = inside == 0
    if outside.sum() < 0.04 * h * w or gray[inside > 0].mean() - gray[outside].mean() < 25:
        return None
    quad = cv2.approxPolyDP(hull, 0.03 * cv2.arcLength(hull, True), True).reshape(-1, 2)
    if len(quad) != 4:
        quad = cv2.boxPoints(cv2.minAreaRect(hull))
    quad = _order_corners(np.clip(quad, 0, [w - 1, h - 1]).astype(np.float32))
    if _square_corners(hull, (h, w)) < 4:
        return None
    # A side that lies along the frame's edge is the frame's, not the sheet's: with two such sides the
    # light region is a lit part of a page that fills the frame (a shadow's edge), or a sheet that
    # leaves the frame, and the page is read as it is.
    margin = 0.02 * max(h, w)
    on_edge = 0
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        for axis, limit in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)):
            if abs(a[axis] - limit) < margin and abs(b[axis] - limit) < margin:
                on_edge += 1
    return quad * 2 if on_edge < 2 else None


def rectify(pixels: np.ndarray, quad: np.ndarray, factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The sheet inside quad warped to an upright rectangle (its size from the quad's sides, divided
    by factor and multiplied back, so that the same quad at a whole factor's resolution gives the
    same rectangle that many times larger), with a small inset so that the sheet's own edge is left
    out; and the transform back to the photo."""
    import cv2

    tl, tr, br, bl = quad / factor
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    width, height = max(width, 16) * factor, max(height, 16) * factor
    inset = 0.025 * min(width, height)
    target = np.float32(
        [[-inset, -inset], [width + inset, -inset], [width + inset, height + inset], [-inset, height + inset]]
    )
    forward = cv2.getPerspectiveTransform(quad, target)
    warped = cv2.warpPerspective(pixels, forward, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, np.linalg.inv(forward)


# -- 3. ink against the local paper color ------------------------------------------------------------


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Gray [H, W] uint8 -> ink [H, W] uint8 0..255: how much darker (or, on dark paper, lighter)
    each pixel is than the paper around it, relative to the paper's brightness. The paper is
    estimated by a closing larger than any stroke, at a quarter of the resolution (a shadow or an
    uneven light divides out; ink of any color is darker than its paper in gray)."""
    import cv2

    h, w = gray.shape
    step = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(gray, (max(1, w // step), max(1, h // step)), interpolation=cv2.INTER_AREA)
    if np.median(small) < 100:  # light ink on dark paper (a blackboard, MNIST itself)
        gray, small = 255 - gray, 255 - small
    side = max(3, int(max(small.shape) / 3) | 1)  # wider than any stroke, even of a digit that fills the image
    # A square closing: it fits the corners of notes and sheets, and OpenCV runs it in two 1-D passes.
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    paper = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    darker = cv2.subtract(paper, gray).astype(np.float32)
    contrast = cv2.divide(darker, np.maximum(paper, 24).astype(np.float32), scale=255.0)
    return np.clip(contrast, 0, 255).astype(np.uint8)


# -- 4. lines that are not ink -----------------------------------------------------------------------


def _line_pixels(rho: float, theta: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pixels (rows, cols) of the infinite line x cos(theta) + y sin(theta) = rho inside shape."""
    h, w = shape
    if abs(np.sin(theta)) > 0.7:  # closer to horizontal: one pixel per column
        cols = np.arange(w)
        rows = np.round((rho - cols * np.cos(theta)) / np.sin(theta)).astype(int)
    else:
        rows = np.arange(h)
        cols = np.round((rho - rows * np.sin(theta)) / np.cos(theta)).astype(int)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return rows[inside], cols[inside]


def _kept_lines(rhos: np.ndarray, thetas: np.ndarray, faint: np.ndarray, near: np.ndarray, span: int) -> np.ndarray:
    """For candidate lines (rho, theta), all at once: which of them remove_ruling keeps, i.e. lie
    inside the image along more than 80 % of span, on ink (faint) along 60 % of that and within a
    pixel of ink (near) along 85 % (their pixels as _line_pixels gives them). The share near ink is
    counted only for the lines that pass the other two tests: most candidates fail those."""
    h, w = faint.shape
    kept = np.zeros(len(rhos), bool)
    flat = np.abs(np.sin(thetas)) > 0.7  # closer to horizontal: one pixel per column
    faint_flat, near_flat = faint.ravel(), near.ravel()
    for group, horizontal in ((flat, True), (~flat, False)):
        if not group.any():
            continue
        n = w if horizontal else h
        rho, theta, along = rhos[group, None], thetas[group, None], np.arange(n)[None, :]
        if horizontal:
            cols = np.broadcast_to(along, (len(rho), n))
            rows = np.round((rho - along * np.cos(theta)) / np.sin(theta)).astype(int)
        else:
            rows = np.broadcast_to(along, (len(rho), n))
            cols = np.round((rho - along * np.sin(theta)) / np.cos(theta)).astype(int)
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        count = inside.sum(1)
        index = np.where(inside, rows * w + cols, 0)  # a pixel outside the image: masked out below
        on = (np.where(inside, faint_flat[index] > 0, False).sum(1)) / np.maximum(count, 1)
        passing = (count > 0.8 * span) & (on >= 0.6)
        close = np.where(inside[passing], near_flat[index[passing]], False).sum(1) / np.maximum(count[passing], 1)
        ok = np.zeros(len(rho), bool)
        ok[passing] = close >= 0.85
        kept[group] = ok
    return kept


def _has_long_lines(binary: np.ndarray) -> bool:
    """Whether any ink runs across most of the image (a ruling, a frame, or a digit that fills it),
    from its components at a quarter of the size: the quick test before the Hough transform."""
    import cv2

    h, w = binary.shape
    if min(h, w) < 48:
        return False
    small = cv2.resize(binary, (w // 4, h // 4), interpolation=cv2.INTER_AREA) > 0
    _, _, stats, _ = cv2.connectedComponentsWithStats(small.astype(np.uint8), connectivity=8)
    return bool(((stats[1:, cv2.CC_STAT_WIDTH] > 0.6 * (w // 4)) | (stats[1:, cv2.CC_STAT_HEIGHT] > 0.6 * (h // 4))).any())


LINE_REACH = 0.85 * 0.8  # remove_ruling's rule: ink within a pixel along 85 % of a line inside for 80 % of its span
RULING_FREE_BAND = 0.08  # a share of each side: ink-free margins this wide rule out remove_ruling's lines


def could_hold_ruling(faint: np.ndarray) -> bool:
    """False when remove_ruling could find no line in this mask, so that a clean drawing (a digit
    with a plain margin) skips the line search: the short path, with the same result.

    Why: a kept line lies within 10 degrees of horizontal (or vertical) and is inside the image
    along more than 80 % of its span, with ink within a pixel along 85 % of that. With no ink in
    a band of RULING_FREE_BAND along every side (and one pixel more, the 'within a pixel'), and
    sides no more than 3 to 1, such a line either crosses both side bands (16 % of it far from
    ink) or leaves through the top or bottom, running inside that band for at least
    0.08 h / tan(10 degrees) >= 0.15 w, besides the side band it starts in (its other end is past
    0.8 w, so the two do not overlap): 23 % far from ink. Either way more than 15 %. (The page
    sends drawings with margins of about 11 % of the upload's side: they take this path.)"""
    h, w = faint.shape
    if min(h, w) < 48:
        return False  # (remove_ruling's own rule: too small for a page with lines)
    if max(h, w) > 3 * min(h, w):
        return True
    bh, bw = int(np.ceil(RULING_FREE_BAND * h)) + 1, int(np.ceil(RULING_FREE_BAND * w)) + 1
    return bool(faint[:bh].any() or faint[-bh:].any() or faint[:, :bw].any() or faint[:, -bw:].any())


def remove_ruling(ink: np.ndarray, binary: np.ndarray, faint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ruled or squared paper, a board's frame: straight lines within 10 degrees of horizontal or
    vertical that run across the whole image (ink along 85 % of their length or more), three or more
    the same way and apart, are the paper's, and are taken out of the ink. A digit's stroke never
    runs across the whole page; where the digit crosses a line, its stroke is mended by a closing.
    faint: the ink at a lower level than binary's, where lines are looked for (a notebook's ruling
    is far lighter than the pen, and at the pen's level it is broken into pieces that cling to
    the digit)."""
    import cv2

    h, w = binary.shape
    if min(h, w) < 48 or (faint > 0).mean() > 0.4:  # small, or ink everywhere: no page with lines
        return ink, binary
    # Candidates from a half-size image (fast), checked at full size.
    half = cv2.resize(faint, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    half = (half > 64).astype(np.uint8) * 255
    near = cv2.dilate(faint, np.ones((3, 3), np.uint8)) > 0
    # How far the ink reaches along each axis: a kept line has ink within a pixel on more than
    # 0.85 x 0.8 of its span, one pixel per column (or row), so ink that reaches across less than
    # that holds no line of that direction, and its search is skipped (the same result, faster).
    columns, rows = np.flatnonzero(near.any(0)), np.flatnonzero(near.any(1))
    reach = {"horizontal": columns[-1] - columns[0] + 1 if len(columns) else 0,
             "vertical": rows[-1] - rows[0] + 1 if len(rows) else 0}  # fmt: skip
    lines = np.zeros_like(binary)
    # Horizontal lines, then vertical ones (whose angles lie on both sides of 0, i.e. of 180 degrees).
    for direction, ranges, span in (("horizontal", [(80, 100)], w), ("vertical", [(0, 10), (170, 180)], h)):
        if reach[direction] <= LINE_REACH * span:
            continue
        found = [
            cv2.HoughLines(
                half, 1, np.radians(0.25), int(0.5 * span / 2), min_theta=np.radians(low), max_theta=np.radians(high)
            )
            for low, high in ranges
        ]
        found = [f[:200, 0] for f in found if f is not None]
        candidates = np.concatenate(found) if found else np.zeros((0, 2), np.float32)
        keep = _kept_lines(2 * candidates[:, 0].astype(np.float64), candidates[:, 1].astype(np.float64), faint, near, span)
        kept = [(*_line_pixels(2 * rho, theta, (h, w)), 2 * rho) for rho, theta in candidates[keep]]
        offsets = np.sort([abs(r) for *_, r in kept])
        distinct = 1 + int((np.diff(offsets) > max(5.0, 0.025 * span)).sum()) if len(offsets) else 0
        if distinct < 3:  # one or two long strokes are a digit's (a 1, a 0 that fills the image), not a ruling
            continue
        for rows, cols, _ in kept:
            lines[rows, cols] = 255
    if not lines.any():
        return ink, binary
    # Where a stroke crosses a line, the pen's ink is kept: it is darker than the ruling's own (the
    # ruling's level is its median along the lines, which the digit crosses only briefly).
    ruling_ink = float(np.median(ink[(lines > 0) & (faint > 0)]))
    lines = cv2.dilate(lines, np.ones((5, 5), np.uint8)) & faint
    pen = (lines > 0) & (binary > 0) & (ink > 1.6 * ruling_ink)
    lines[pen] = 0
    kept = cv2.subtract(binary, lines)
    mended = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    mended &= lines | kept  # mend gaps where the lines were, never grow new ink
    stroke = float(np.median(ink[kept > 0])) if kept.any() else 0.0
    ink = np.where(lines > 0, np.where(mended > 0, stroke, 0), ink)
    return ink.astype(np.float32), mended


# -- 5. glyphs -----------------------------------------------------------------------------------------


@dataclass
class Glyph:
    box: tuple[int, int, int, int]  # x, y, width, height
    labels: list[int]
    mass: float


def _component_mass(ink: np.ndarray, labels: np.ndarray, stats: np.ndarray, count: int) -> np.ndarray:
    """The ink of each component (index 0, the background, is not used). A few components of a
    uint8 map are summed inside their boxes, far less work than one weighted count over the image,
    and the same sums exactly (whole numbers: float64 adds them without rounding)."""
    import cv2

    if count > 9 or ink.dtype != np.uint8:
        return np.bincount(labels.ravel(), weights=ink.ravel(), minlength=count)
    mass = np.zeros(count)
    for i in range(1, count):
        x, y, bw, bh = stats[i, [cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
        box = (slice(y, y + bh), slice(x, x + bw))
        mass[i] = ink[box][labels[box] == i].sum(dtype=np.float64)
    return mass


def _band_counts(labels: np.ndarray, count: int, inner: int) -> np.ndarray:
    """How many pixels of each component lie within inner pixels of the image's edges, counted on
    the band's four strips (top, bottom, then the sides between them) rather than a mask of the
    whole image; the band is the whole image when the image is no wider than two strips."""
    h, w = labels.shape
    if h > 2 * inner and w > 2 * inner:
        strips = (labels[:inner], labels[-inner:], labels[inner:-inner, :inner], labels[inner:-inner, -inner:])
    else:
        strips = (labels,)
    return sum(np.bincount(strip.ravel(), minlength=count)[:count] for strip in strips)


def find_glyphs(ink: np.ndarray, binary: np.ndarray, edge: int = 0) -> tuple[list[Glyph], np.ndarray, str | None]:
    """The glyphs of the ink, left to right, with the component labels, and a doubt when a mark
    nearly as strong as the heaviest glyph lies apart from it. edge: the width of the strip along
    the image's edges that was left out (a component that reaches it touches the edge)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    h, w = binary.shape
    mass = _component_mass(ink, labels, stats, count)
    # Ink that lies along the image's edges (within 4 % of its side) is a frame's or a shadow's rim.
    in_band = _band_counts(labels, count, max(1, int(0.04 * min(h, w)))) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    # How far along the image's sides each component lies (the longest share of one side, on the
    # first line inside the strip left out): a table or a shadow around a sheet runs along a side.
    first, last_row, last_col = min(edge, h - 1), max(h - 1 - edge, 0), max(w - 1 - edge, 0)
    contact = np.zeros(count)
    for line, side in ((labels[first], w), (labels[last_row], w), (labels[:, first], h), (labels[:, last_col], h)):
        contact = np.maximum(contact, np.bincount(line, minlength=count)[:count] / side)
    parts, frames, surrounds = [], [], []
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        reach = edge + 2
        edges = int(x <= reach) + int(y <= reach) + int(x + bw >= w - reach) + int(y + bh >= h - reach)  # sides reached
        part = (i, (int(x), int(y), int(bw), int(bh)), float(mass[i]))
        # Along most of one side and reaching another: the surround of a sheet not found (a table, a
        # shadow). A digit drawn against one edge (a 7's bar along the top of a pad) reaches one side only.
        if contact[i] > 0.6 and edges >= 2:
            surrounds.append(part)
        elif in_band[i] > 0.9:  # a frame, a margin, the edge of a sheet of paper: ink in the edge band
            # (A component that merely spans the image and reaches two sides is no frame: a blurred
            # scan's digit does that, and was lost when it was taken for one: UCI 5.46 -> 6.35 %.)
            frames.append(part)
        else:
            parts.append(part)
    # A digit that fills the frame (a tight crop, a low-resolution scan) touches its edges too: what
    # looks like a frame is left out only when it leaves something of weight besides it; a surround
    # is left out whenever anything else is there (a table outweighs any digit on the sheet).
    if frames and (not parts or max(p[2] for p in parts) < 0.1 * max(f[2] for f in frames)):
        parts = parts + frames
    if not parts:
        parts = surrounds

    # An outline around other ink is a frame (a sticky note's or a box's edge), not a glyph.
    def encloses(outer, inner) -> bool:
        (ox, oy, ow, oh), (ix, iy, iw, ih) = outer, inner
        return ox < ix and oy < iy and ox + ow > ix + iw and oy + oh > iy + ih

    parts = [
        p
        for p in parts
        if not (
            stats[p[0], cv2.CC_STAT_AREA] < 0.12 * p[1][2] * p[1][3]
            and any(encloses(p[1], q[1]) and q[2] >= 0.05 * p[2] for q in parts if q is not p)
        )
    ]
    if not parts:
        return [], labels, None
    heaviest = max(m for *_, m in parts)
    parts = [p for p in parts if p[2] >= 0.04 * heaviest]  # specks and noise
    # Strokes that overlap in columns (or nearly touch) are one glyph.
    parts.sort(key=lambda p: p[1][0])
    glyphs: list[Glyph] = []
    for i, (x, y, bw, bh), m in parts:
        for g in glyphs:
            gx, gy, gw, gh = g.box
            overlap = min(x + bw, gx + gw) - max(x, gx)
            gap_y = max(gy - (y + bh), y - (gy + gh))
            if overlap > 0.5 * min(bw, gw) and gap_y < 0.5 * max(bh, gh):
                nx, ny = min(x, gx), min(y, gy)
                g.box = (nx, ny, max(x + bw, gx + gw) - nx, max(y + bh, gy + gh) - ny)
                g.labels.append(i)
                g.mass += m
                break
        else:
            glyphs.append(Glyph((x, y, bw, bh), [i], m))
    glyphs.sort(key=lambda g: -g.mass)
    main = glyphs[0]
    mx, my, mw, mh = main.box
    # Small strokes near the digit belong to it (a 7's bar, a stray flick), the rest is apart.
    doubt = None
    kept = [main]
    for g in glyphs[1:]:
        gx, gy, gw, gh = g.box
        near = gx < mx + 1.3 * mw and gx + gw > mx - 0.3 * mw and gy < my + 1.3 * mh and gy + gh > my - 0.3 * mh
        beside = gh >= 0.5 * mh and min(gy + gh, my + mh) - max(gy, my) > 0.3 * min(gh, mh) and g.mass >= 0.25 * main.mass
        if beside:
            kept.append(g)
        elif near and g.mass < 0.25 * main.mass:
            main.labels += g.labels
            nx, ny = min(mx, gx), min(my, gy)
            main.box = (nx, ny, max(mx + mw, gx + gw) - nx, max(my + mh, gy + gh) - ny)
            mx, my, mw, mh = main.box
        elif g.mass >= 0.25 * main.mass:
            doubt = "another mark nearly as strong as the digit"
    return sorted(kept, key=lambda g: g.box[0]), labels, doubt


# -- 6. MNIST's steps ----------------------------------------------------------------------------------


def stroke_width(mask: np.ndarray) -> float:
    """A mask's mean stroke width in pixels: 4 x the mean distance to the nearest background pixel
    (exact for a long uniform stroke: its mean distance is a quarter of its width)."""
    import cv2

    if not mask.any():
        return 0.0
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)
    return 4.0 * float(dist[dist > 0].mean())


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The morphological skeleton of a binary mask (Lantuejoul's: the union over erosions of what
    an opening removes): the strokes' center lines, from which a blob of overlapping strokes keeps
    its shape."""
    import cv2

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    eroded = np.pad(mask, 1)  # OpenCV never erodes from outside the image: pad, so that every stroke ends
    bones = np.zeros_like(eroded)
    while eroded.any():
        opened = cv2.morphologyEx(eroded, cv2.MORPH_OPEN, cross)
        bones |= eroded & (1 - opened)
        eroded = cv2.erode(eroded, cross)
    return bones[1:-1, 1:-1]


def mnist_field(ink: np.ndarray) -> np.ndarray:
    """One glyph's ink (its crop, float 0..255) -> the 28x28 MNIST-like field: strokes brought to
    MNIST's width relative to the glyph's size, scaled to fit 20x20 keeping the aspect, centered by
    mass."""
    import cv2

    h, w = ink.shape
    if not float(ink.max()) > 0:
        return np.zeros((28, 28), np.float32)
    # Work at a size where morphology is precise: the larger side near 96 pixels.
    scale = 96.0 / max(h, w)
    ink = cv2.resize(ink, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    ink = ink * (255.0 / max(float(ink.max()), 1e-6))
    mask = (ink > 96).astype(np.uint8)
    width, target = stroke_width(mask), MNIST_STROKE * max(ink.shape)
    if width > 1.8 * target:  # beyond MNIST's 99th percentile (a thick pen, a small drawing): thinned back
        # Thinned evenly, but never so far that the thinnest stroke (the 10th percentile of the
        # half-widths along the center lines) breaks: strokes of one digit differ in width.
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        half_widths = dist[skeleton(mask) > 0]
        thinnest = float(np.percentile(half_widths, 10)) if half_widths.size else 0.0
        radius = min(int(round((width - target) / 2)), int(thinnest - 1.5))
        thinned = ink if radius < 1 else cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        if (thinned > 96).sum() >= 0.3 * mask.sum():
            ink = thinned
        else:  # strokes that ran together into a blob erode away: its skeleton, drawn again at MNIST's width
            smooth = (cv2.GaussianBlur(ink, (0, 0), 2.0) > 96).astype(np.uint8)  # no jagged edges: fewer spurs
            dist = cv2.distanceTransform(smooth, cv2.DIST_L2, 3)
            bones = skeleton(smooth) & (dist >= 0.3 * dist.max())  # spurs end near the edge: left out
            if bones.any():
                radius = max(1, int(round(target / 2)))
                redrawn = cv2.dilate(bones, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
                ink = cv2.GaussianBlur(redrawn.astype(np.float32) * 255.0, (0, 0), 1.0)
    elif 0 < width < 0.65 * target:  # below its 1st percentile: a thin pen, thickened (grey dilation)
        radius = int(round((target - width) / 2))
        ink = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    ys, xs = np.nonzero(ink > 0.1 * ink.max())
    if len(ys):
        ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = ink.shape
    fit = 20.0 / max(h, w)
    small = cv2.resize(ink, (max(1, round(w * fit)), max(1, round(h * fit))), interpolation=cv2.INTER_AREA)
    small = np.clip(small * (255.0 / max(float(small.max()), 1e-6)), 0, 255)
    total = float(small.sum())
    if total <= 0:
        return np.zeros((28, 28), np.float32)
    # Center of mass in numpy: cv2.moments takes an array of two columns for a contour's points.
    ys, xs = np.indices(small.shape)
    cy, cx = float((ys * small).sum()) / total, float((xs * small).sum()) / total
    out = np.zeros((28, 28), np.float32)
    top = int(np.clip(round(14 - cy - 0.5), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx - 0.5), 0, 28 - small.shape[1]))
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def pool(field_28: np.ndarray) -> np.ndarray:
    """28x28 -> 14x14 by 2x2 averaging, as the study's data."""
    return field_28.reshape(14, 2, 14, 2).mean(axis=(1, 3)).astype(np.float32)


NO_INK = "has no ink: it is blank or a single color (a digit must stand out from its background)"
BLANK = "blank: no digit to read"  # the doubt of a side without ink, image or array alike


class NoInk(InputError):
    """An image (or a region of one) with no ink that stands out from its paper."""


def read_ink(ink: np.ndarray, name: str) -> tuple[list[np.ndarray], int, str | None, tuple[int, int, int, int]]:
    """An ink map (light on dark, any size) -> (the 28x28 field of each glyph, left to right; which
    of them is the digit (the heaviest); a doubt or None; the digit's box x, y, w, h in the map).
    A map without ink is an InputError."""
    import cv2

    if min(ink.shape) >= 64:
        ink = cv2.medianBlur(ink, 3)  # salt-and-pepper noise of scans and photos
    peak = float(ink.max())
    if peak < MIN_INK:
        raise NoInk(f"{name} {NO_INK}")
    level = max(MIN_INK, 0.3 * peak)
    # A thin strip along the edges is left out: a board's frame, a sheet's edge, a shadow's rim.
    strip = int(0.015 * min(ink.shape)) if min(ink.shape) >= 64 else 0

    def above(threshold: float) -> np.ndarray:
        mask = (ink > threshold).astype(np.uint8) * 255
        if strip:
            mask[:strip], mask[-strip:], mask[:, :strip], mask[:, -strip:] = 0, 0, 0, 0
        return mask

    binary = above(level)
    faint = above(max(MIN_INK, 0.12 * peak))  # where lines are looked for: a ruling is lighter than the pen
    if could_hold_ruling(faint) and _has_long_lines(faint):
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
    if len(read) == 1 and box[2] > 1.6 * box[3] and box[2] >= 8:
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
    images, max_pixels: int = MAX_IMAGE_PIXELS, seconds: float = DECODE_SECONDS
) -> tuple[np.ndarray, list[DigitReading]]:
    """Two images [(name, file path or bytes), (name, ...)] -> (one pair [1, 2, 14, 14], their
    readings); each image's decode is cut off after `seconds`."""
    readings = [read_image_digit(source, name, max_pixels, seconds) for name, source in images]
    return np.stack([r.digit for r in readings])[None], readings


def image_to_digit(path: str | os.PathLike) -> np.ndarray:
    """One image file -> [14, 14] float32, values 0..255."""
    return read_image_digit(path).digit
