"""Stage 3 of reading an image (images.py): ink, judged against the paper's own local color (a
morphological closing estimates the paper under the ink; shadows and color casts divide out);
light ink on dark paper is inverted."""

from __future__ import annotations

import numpy as np

PAPER_STEP = 4  # the paper is estimated at a quarter of the resolution (it varies slowly)
MIN_SIDE_TO_REDUCE = 64  # pixels: a smaller image is estimated at full resolution
DARK_PAPER = 100  # median gray below which the paper is dark and the ink light (a blackboard, MNIST itself)
PAPER_FLOOR = 24  # gray level: contrast is relative to the paper, never to paper darker than this


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Gray [H, W] uint8 -> ink [H, W] uint8 0..255: how much darker (or, on dark paper, lighter)
    each pixel is than the paper around it, relative to the paper's brightness. The paper is
    estimated by a closing larger than any stroke, at a quarter of the resolution (a shadow or an
    uneven light divides out; ink of any color is darker than its paper in gray)."""
    import cv2

    h, w = gray.shape
    step = PAPER_STEP if min(h, w) >= MIN_SIDE_TO_REDUCE else 1
    small = cv2.resize(gray, (max(1, w // step), max(1, h // step)), interpolation=cv2.INTER_AREA)
    if np.median(small) < DARK_PAPER:  # light ink on dark paper
        gray, small = 255 - gray, 255 - small
    side = max(3, int(max(small.shape) / 3) | 1)  # wider than any stroke, even of a digit that fills the image
    # A square closing: it fits the corners of notes and sheets, and OpenCV runs it in two 1-D passes.
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    paper = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    darker = cv2.subtract(paper, gray).astype(np.float32)
    contrast = cv2.divide(darker, np.maximum(paper, PAPER_FLOOR).astype(np.float32), scale=255.0)
    return np.clip(contrast, 0, 255).astype(np.uint8)
