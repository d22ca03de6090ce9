"""Stage 3 of reading an image (images.py): ink, judged against the paper's own local color (a
morphological closing estimates the paper under the ink; shadows and color casts divide out);
light ink on dark paper is inverted."""

from __future__ import annotations

import numpy as np


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
