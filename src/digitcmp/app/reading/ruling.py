"""Stage 4 of reading an image (images.py): the lines of ruled and squared paper (three or more
long parallel lines) taken out of the ink, with the exact short paths that skip the line search
where no line could pass its rule."""

from __future__ import annotations

import numpy as np

MIN_PAGE_SIDE = 48  # pixels: an image smaller than this is too small for a page with lines
FLAT_SINE = 0.7  # |sin(theta)| above which a line is closer to horizontal (one pixel per column)
# A kept line: inside the image along more than LINE_SPAN of its span, on ink along LINE_ON_INK of
# that, and within a pixel of ink along LINE_NEAR_INK.
LINE_SPAN = 0.8
LINE_ON_INK = 0.6
LINE_NEAR_INK = 0.85
LONG_INK = 0.6  # of the image's width (or height): a component this long may be a ruling (has_long_lines)
MAX_INK_SHARE = 0.4  # ink over more of the image than this is no page with lines
HALF_SIZE_LEVEL = 64  # ink level (of 255) at which the half-size image's lines are voted for
HOUGH_STEP_DEGREES = 0.25  # the Hough transform's angle step
HOUGH_VOTES = 0.5  # of the half-size span: the votes a candidate line needs
MAX_CANDIDATES = 200  # per angle range, the strongest candidates checked at full size
LINE_ANGLES = {"horizontal": [(80, 100)], "vertical": [(0, 10), (170, 180)]}  # degrees (theta of the normal)
DISTINCT_GAP = (5.0, 0.025)  # pixels, or a share of the span if more: lines further apart are distinct
MIN_RULING_LINES = 3  # one or two long strokes are a digit's (a 1, a 0 that fills the image), not a ruling
PEN_OVER_RULING = 1.6  # where a stroke crosses a line, ink this much darker than the ruling's is the pen's
LINE_DILATION = 5  # pixels: the lines taken out, widened to their blur
MEND_CLOSING = 7  # pixels: the closing that mends a stroke where it crossed a line


def _line_pixels(rho: float, theta: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The pixels (rows, cols) of the infinite line x cos(theta) + y sin(theta) = rho inside shape."""
    h, w = shape
    if abs(np.sin(theta)) > FLAT_SINE:  # closer to horizontal: one pixel per column
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
    flat = np.abs(np.sin(thetas)) > FLAT_SINE  # closer to horizontal: one pixel per column
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
        passing = (count > LINE_SPAN * span) & (on >= LINE_ON_INK)
        close = np.where(inside[passing], near_flat[index[passing]], False).sum(1) / np.maximum(count[passing], 1)
        ok = np.zeros(len(rho), bool)
        ok[passing] = close >= LINE_NEAR_INK
        kept[group] = ok
    return kept


def has_long_lines(binary: np.ndarray) -> bool:
    """Whether any ink runs across most of the image (a ruling, a frame, or a digit that fills it),
    from its components at a quarter of the size: the quick test before the Hough transform."""
    import cv2

    h, w = binary.shape
    if min(h, w) < MIN_PAGE_SIDE:
        return False
    small = cv2.resize(binary, (w // 4, h // 4), interpolation=cv2.INTER_AREA) > 0
    _, _, stats, _ = cv2.connectedComponentsWithStats(small.astype(np.uint8), connectivity=8)
    long_ = (stats[1:, cv2.CC_STAT_WIDTH] > LONG_INK * (w // 4)) | (stats[1:, cv2.CC_STAT_HEIGHT] > LONG_INK * (h // 4))
    return bool(long_.any())


LINE_REACH = (
    LINE_NEAR_INK * LINE_SPAN
)  # remove_ruling's rule: ink within a pixel along 85 % of a line inside for 80 % of its span
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
    if min(h, w) < MIN_PAGE_SIDE:
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
    if min(h, w) < MIN_PAGE_SIDE or (faint > 0).mean() > MAX_INK_SHARE:  # small, or ink everywhere
        return ink, binary
    # Candidates from a half-size image (fast), checked at full size.
    half = cv2.resize(faint, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    half = (half > HALF_SIZE_LEVEL).astype(np.uint8) * 255
    near = cv2.dilate(faint, np.ones((3, 3), np.uint8)) > 0
    # How far the ink reaches along each axis: a kept line has ink within a pixel on more than
    # 0.85 x 0.8 of its span, one pixel per column (or row), so ink that reaches across less than
    # that holds no line of that direction, and its search is skipped (the same result, faster).
    columns, rows = np.flatnonzero(near.any(0)), np.flatnonzero(near.any(1))
    reach = {"horizontal": columns[-1] - columns[0] + 1 if len(columns) else 0,
             "vertical": rows[-1] - rows[0] + 1 if len(rows) else 0}  # fmt: skip
    lines = np.zeros_like(binary)
    # Horizontal lines, then vertical ones (whose angles lie on both sides of 0, i.e. of 180 degrees).
    for direction, span in (("horizontal", w), ("vertical", h)):
        ranges = LINE_ANGLES[direction]
        if reach[direction] <= LINE_REACH * span:
            continue
        found = [
            cv2.HoughLines(
                half,
                1,
                np.radians(HOUGH_STEP_DEGREES),
                int(HOUGH_VOTES * span / 2),
                min_theta=np.radians(low),
                max_theta=np.radians(high),
            )
            for low, high in ranges
        ]
        found = [f[:MAX_CANDIDATES, 0] for f in found if f is not None]
        candidates = np.concatenate(found) if found else np.zeros((0, 2), np.float32)
        keep = _kept_lines(2 * candidates[:, 0].astype(np.float64), candidates[:, 1].astype(np.float64), faint, near, span)
        kept = [(*_line_pixels(2 * rho, theta, (h, w)), 2 * rho) for rho, theta in candidates[keep]]
        offsets = np.sort([abs(r) for *_, r in kept])
        distinct = 1 + int((np.diff(offsets) > max(DISTINCT_GAP[0], DISTINCT_GAP[1] * span)).sum()) if len(offsets) else 0
        if distinct < MIN_RULING_LINES:
            continue
        for rows, cols, _ in kept:
            lines[rows, cols] = 255
    if not lines.any():
        return ink, binary
    # Where a stroke crosses a line, the pen's ink is kept: it is darker than the ruling's own (the
    # ruling's level is its median along the lines, which the digit crosses only briefly).
    ruling_ink = float(np.median(ink[(lines > 0) & (faint > 0)]))
    lines = cv2.dilate(lines, np.ones((LINE_DILATION, LINE_DILATION), np.uint8)) & faint
    pen = (lines > 0) & (binary > 0) & (ink > PEN_OVER_RULING * ruling_ink)
    lines[pen] = 0
    kept = cv2.subtract(binary, lines)
    mended = cv2.morphologyEx(
        kept, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (MEND_CLOSING, MEND_CLOSING))
    )
    mended &= lines | kept  # mend gaps where the lines were, never grow new ink
    stroke = float(np.median(ink[kept > 0])) if kept.any() else 0.0
    ink = np.where(lines > 0, np.where(mended > 0, stroke, 0), ink)
    return ink.astype(np.float32), mended
