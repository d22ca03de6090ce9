"""Geometric augmentation of raw digit pairs: for training, and as the test-time views."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ANGLE_DEG, MAX_SCALE, MAX_SHIFT_PX = 12.0, 0.1, 1.5  # the ranges at strength 1


def affine_augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random small rotation (+-12 deg), scale (0.9-1.1) and shift (+-1.5 px) of each raw digit of
    pairs x[B, 2, 14, 14], all ranges multiplied by strength; borders fill with 0 (background)."""
    B = x.shape[0]
    digits = x.reshape(B * 2, 1, 14, 14)
    u = (torch.rand(B * 2, 4, generator=generator).to(x.device, x.dtype) * 2 - 1) * strength  # [-s, s)
    angle, scale = u[:, 0] * math.radians(MAX_ANGLE_DEG), 1 + MAX_SCALE * u[:, 1]
    shift = u[:, 2:] * (MAX_SHIFT_PX / 7)  # grid units: 7 pixels per unit on a 14-pixel side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(digits.shape), align_corners=False)
    return F.grid_sample(digits, grid, align_corners=False, padding_mode="zeros").view(B, 2, 14, 14)
