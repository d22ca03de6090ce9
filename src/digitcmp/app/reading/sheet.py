"""Stage 2 of reading an image (images.py): the sheet of paper a photo shows on a table, found
(a light quadrilateral, any rotation, in perspective, a third of the frame or more) and rectified,
so that the table, its texture and the sheet's edges never count as ink."""

from __future__ import annotations

import numpy as np

MIN_SIDE = 96  # pixels: a smaller image is a drawing or a crop, with no sheet on a table to find
AREA_SHARE = (0.1, 0.93)  # a sheet covers a tenth of the (half-size) frame or more, and not all of it
CONVEX_SHARE = 0.85  # of its convex hull a sheet's light region fills at least (strokes and gaps do not)
SURROUND_SHARE = 0.04  # of the frame at least is around the sheet (else the page fills the frame)
CONTRAST = 25  # gray levels the sheet is lighter than its surround, at least
QUAD_EPSILON = 0.03  # of the hull's perimeter: how far the four-cornered outline may stray from it
CORNER_EPSILON = 0.02  # of the perimeter: the polygon whose angles are judged (_square_corners)
CORNER_DEGREES = 115  # a sheet's corner in perspective is this sharp or sharper; a round end is not
EDGE_MARGIN = 0.02  # of the frame's larger side: a corner or a side this close to the edge is on it
MIN_RECTIFIED = 16  # pixels a side, at least, of the rectified sheet
INSET = 0.025  # of the rectified sheet's smaller side, left out all round: the sheet's own edge


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

    poly = cv2.approxPolyDP(hull, CORNER_EPSILON * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
    if len(poly) < 3:
        return 0
    before, after = np.roll(poly, 1, axis=0) - poly, np.roll(poly, -1, axis=0) - poly
    cos = (before * after).sum(1) / np.maximum(np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1), 1e-9)
    angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    h, w = shape
    margin = EDGE_MARGIN * max(h, w)
    on_edge = (poly.min(1) < margin) | (poly[:, 0] > w - 1 - margin) | (poly[:, 1] > h - 1 - margin)
    return int(((angles <= CORNER_DEGREES) | on_edge).sum())


def find_sheet(gray: np.ndarray) -> np.ndarray | None:
    """A sheet of paper on a darker surround: its four corners [4, 2] (ordered as _order_corners),
    or None when the photo shows no such sheet (the paper fills the frame, or it is a drawing).

    The sheet is the largest light region (Otsu's threshold) covering a tenth of the frame or more
    but not all of it, whose outline is close to a quadrilateral (the corners of its polygon
    approximation, or of its minimal rotated rectangle when an edge leaves the frame)."""
    import cv2

    if min(gray.shape) < MIN_SIDE:
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
    if not (AREA_SHARE[0] * h * w <= area <= AREA_SHARE[1] * h * w):
        return None
    hull = cv2.convexHull(outline)
    if area < CONVEX_SHARE * cv2.contourArea(hull):
        return None  # not a convex sheet: light strokes, a lit wall, a dark drawing's gaps
    inside = np.zeros_like(light)
    cv2.drawContours(inside, [hull], -1, 255, -1)
    # The sheet must stand out from what is around it; a digit drawn in dark ink fills no hull.
    outside = inside == 0
    if outside.sum() < SURROUND_SHARE * h * w or gray[inside > 0].mean() - gray[outside].mean() < CONTRAST:
        return None
    quad = cv2.approxPolyDP(hull, QUAD_EPSILON * cv2.arcLength(hull, True), True).reshape(-1, 2)
    if len(quad) != 4:
        quad = cv2.boxPoints(cv2.minAreaRect(hull))
    quad = _order_corners(np.clip(quad, 0, [w - 1, h - 1]).astype(np.float32))
    if _square_corners(hull, (h, w)) < 4:
        return None
    # A side that lies along the frame's edge is the frame's, not the sheet's: with two such sides the
    # light region is a lit part of a page that fills the frame (a shadow's edge), or a sheet that
    # leaves the frame, and the page is read as it is.
    margin = EDGE_MARGIN * max(h, w)
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
    width, height = max(width, MIN_RECTIFIED) * factor, max(height, MIN_RECTIFIED) * factor
    inset = INSET * min(width, height)
    target = np.float32(
        [[-inset, -inset], [width + inset, -inset], [width + inset, height + inset], [-inset, height + inset]]
    )
    forward = cv2.getPerspectiveTransform(quad, target)
    warped = cv2.warpPerspective(pixels, forward, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, np.linalg.inv(forward)
