"""Digit images as people make them, drawn from MNIST *test* digits (never trained on): thick and
thin strokes, small digits on large canvases, noisy and unevenly lit paper, colored ink, photos
with margins, transparency. Used by the preprocessing tests and benchmarks/robustness.py."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

CASES = ("thick", "thin", "small on large canvas", "noisy uneven paper", "colored ink", "photo with margins", "transparent")


def _ink(digit: np.ndarray, side: int) -> Image.Image:
    """The 28x28 digit (ink 0..255) scaled to side x side, smooth."""
    return Image.fromarray(digit.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)


def _on_paper(ink: np.ndarray, paper: np.ndarray, color) -> np.ndarray:
    """Ink [H, W] 0..255 laid in a color on paper [H, W, 3]."""
    a = (ink / 255.0)[..., None]
    return paper * (1 - a) + np.asarray(color, dtype=np.float64) * a


def render(digit: np.ndarray, case: str, rng: np.random.Generator) -> bytes:
    """One digit image as PNG (or JPEG for photos) bytes."""
    fmt = "PNG"
    if case == "thick":
        ink = _ink(digit, 112).filter(ImageFilter.MaxFilter(9))
        img = Image.fromarray(255 - np.asarray(ink))
    elif case == "thin":
        ink = _ink(digit, 200).point(lambda v: 255 if v > 128 else 0).filter(ImageFilter.MinFilter(9))
        img = Image.fromarray(255 - np.asarray(ink))
    elif case == "small on large canvas":
        canvas = np.full((900, 1200), 250, np.uint8)
        size = int(rng.integers(30, 60))
        y, x = int(rng.integers(50, 800)), int(rng.integers(50, 1100))
        canvas[y : y + size, x : x + size] = 255 - np.asarray(_ink(digit, size))
        img = Image.fromarray(canvas)
    elif case == "noisy uneven paper":
        h = w = 160
        yy, xx = np.mgrid[0:h, 0:w] / h
        light = 130 + 110 * (0.5 * xx + 0.5 * yy)  # a shadow across the sheet
        paper = np.repeat((light + rng.normal(0, 12, (h, w)))[..., None], 3, -1)
        ink = np.asarray(_ink(digit, 120), dtype=np.float64)
        full = np.zeros((h, w))
        full[20:140, 20:140] = ink
        img = Image.fromarray(np.clip(_on_paper(full, paper, (30, 30, 40)), 0, 255).astype(np.uint8))
    elif case == "colored ink":
        colors = [((20, 60, 200), (255, 255, 255)), ((200, 30, 30), (250, 250, 240)), ((20, 140, 40), (250, 245, 200))]
        ink_color, paper_color = colors[int(rng.integers(len(colors)))]
        paper = np.ones((100, 100, 3)) * np.asarray(paper_color, dtype=np.float64)
        full = np.zeros((100, 100))
        full[10:90, 10:90] = np.asarray(_ink(digit, 80), dtype=np.float64)
        img = Image.fromarray(np.clip(_on_paper(full, paper, ink_color), 0, 255).astype(np.uint8))
    elif case == "photo with margins":
        h, w = 300, 400
        photo = np.full((h, w, 3), 60.0)  # a dark table around the sheet
        top, left = int(rng.integers(20, 60)), int(rng.integers(40, 120))
        sheet = np.full((200, 220, 3), 225.0)
        full = np.zeros((200, 220))
        full[40:160, 50:170] = np.asarray(_ink(digit, 120), dtype=np.float64)
        photo[top : top + 200, left : left + 220] = _on_paper(full, sheet, (40, 40, 50))
        photo += rng.normal(0, 6, photo.shape)
        img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
        fmt = "JPEG"
    elif case == "transparent":
        ink = np.asarray(_ink(digit, 96))
        rgba = np.zeros((96, 96, 4), np.uint8)
        rgba[..., 3] = ink
        img = Image.fromarray(rgba, mode="RGBA")
    else:
        raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 70} if fmt == "JPEG" else {}))
    return out.getvalue()
