"""Stage 6 of reading an image (images.py): the steps that made MNIST itself: the glyph cropped,
its strokes brought to MNIST's width (relative to its size), scaled to fit 20x20, centered by
mass in 28x28, average-pooled to 14x14."""

from __future__ import annotations

import numpy as np

MNIST_STROKE = 0.16  # MNIST's stroke width / the digit's larger side: median of stroke_width (p1 0.10, p99 0.29)
THICK, THIN = 1.8, 0.65  # x MNIST_STROKE: past MNIST's 99th and below its 1st percentile, strokes are brought back
WORK_SIZE = 96.0  # pixels, the glyph's larger side while its strokes are measured (morphology is precise there)
STROKE_LEVEL = 96  # ink level (of 255) that is stroke, when measuring and thinning
THINNEST_PERCENTILE = 10  # of the half-widths along the center lines: the stroke thinning must not break
KEPT_AFTER_THINNING = 0.3  # of the stroke pixels: less left means strokes ran together into a blob
BLOB_BLUR = 2.0  # pixels: the blur that smooths a blob's edge before its skeleton (fewer spurs)
SPUR_DEPTH = 0.3  # of the blob's deepest point: center lines shallower than this are spurs, left out
REDRAWN_BLUR = 1.0  # pixels: the blur of a skeleton drawn again at MNIST's width
CROP_LEVEL = 0.1  # of the peak: ink below this is left outside the crop
MNIST_BOX, MNIST_FIELD = 20.0, 28  # MNIST's digits fit a 20x20 box, centered by mass in a 28x28 field


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
        return np.zeros((MNIST_FIELD, MNIST_FIELD), np.float32)
    # Work at a size where morphology is precise: the larger side near 96 pixels.
    scale = WORK_SIZE / max(h, w)
    ink = cv2.resize(ink, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    ink = ink * (255.0 / max(float(ink.max()), 1e-6))
    mask = (ink > STROKE_LEVEL).astype(np.uint8)
    width, target = stroke_width(mask), MNIST_STROKE * max(ink.shape)
    if width > THICK * target:  # a thick pen, a small drawing: thinned back
        # Thinned evenly, but never so far that the thinnest stroke (the 10th percentile of the
        # half-widths along the center lines) breaks: strokes of one digit differ in width.
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        half_widths = dist[skeleton(mask) > 0]
        thinnest = float(np.percentile(half_widths, THINNEST_PERCENTILE)) if half_widths.size else 0.0
        radius = min(int(round((width - target) / 2)), int(thinnest - 1.5))
        thinned = ink if radius < 1 else cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        if (thinned > STROKE_LEVEL).sum() >= KEPT_AFTER_THINNING * mask.sum():
            ink = thinned
        else:  # strokes that ran together into a blob erode away: its skeleton, drawn again at MNIST's width
            smooth = (cv2.GaussianBlur(ink, (0, 0), BLOB_BLUR) > STROKE_LEVEL).astype(np.uint8)
            dist = cv2.distanceTransform(smooth, cv2.DIST_L2, 3)
            bones = skeleton(smooth) & (dist >= SPUR_DEPTH * dist.max())  # spurs end near the edge: left out
            if bones.any():
                radius = max(1, int(round(target / 2)))
                redrawn = cv2.dilate(bones, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
                ink = cv2.GaussianBlur(redrawn.astype(np.float32) * 255.0, (0, 0), REDRAWN_BLUR)
    elif 0 < width < THIN * target:  # a thin pen, thickened (grey dilation)
        radius = int(round((target - width) / 2))
        ink = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    ys, xs = np.nonzero(ink > CROP_LEVEL * ink.max())
    if len(ys):
        ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = ink.shape
    fit = MNIST_BOX / max(h, w)
    small = cv2.resize(ink, (max(1, round(w * fit)), max(1, round(h * fit))), interpolation=cv2.INTER_AREA)
    small = np.clip(small * (255.0 / max(float(small.max()), 1e-6)), 0, 255)
    total = float(small.sum())
    if total <= 0:
        return np.zeros((MNIST_FIELD, MNIST_FIELD), np.float32)
    # Center of mass in numpy: cv2.moments takes an array of two columns for a contour's points.
    ys, xs = np.indices(small.shape)
    cy, cx = float((ys * small).sum()) / total, float((xs * small).sum()) / total
    out = np.zeros((MNIST_FIELD, MNIST_FIELD), np.float32)
    middle = MNIST_FIELD // 2
    top = int(np.clip(round(middle - cy - 0.5), 0, MNIST_FIELD - small.shape[0]))
    left = int(np.clip(round(middle - cx - 0.5), 0, MNIST_FIELD - small.shape[1]))
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def pool(field_28: np.ndarray) -> np.ndarray:
    """28x28 -> 14x14 by 2x2 averaging, as the study's data."""
    return field_28.reshape(14, 2, 14, 2).mean(axis=(1, 3)).astype(np.float32)
