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
    u = (torch.rand(B * 2, 4, generator=generator).to(x.device, x.dtype) * 2 - 1) * strength  # [-s, s)
    return affine_transform(x, u)


def affine_grids(u: torch.Tensor) -> torch.Tensor:
    """The sampling grids [K, 14, 14, 2] of the affine maps u[K, 4] (rows in [-1, 1) times a
    strength: angle, scale, shift x, shift y, as fractions of their ranges) on 14x14 digits."""
    angle, scale = u[:, 0] * math.radians(MAX_ANGLE_DEG), 1 + MAX_SCALE * u[:, 1]
    shift = u[:, 2:] * (MAX_SHIFT_PX / 7)  # grid units: 7 pixels per unit on a 14-pixel side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return F.affine_grid(theta, [u.shape[0], 1, 14, 14], align_corners=False)


def affine_transform(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The affine map of each raw digit of pairs x[B, 2, 14, 14] given by u[B * 2, 4] (see affine_grids)."""
    B = x.shape[0]
    digits = x.reshape(B * 2, 1, 14, 14)
    grid = affine_grids(u.to(x.device, x.dtype))
    return F.grid_sample(digits, grid, align_corners=False, padding_mode="zeros").view(B, 2, 14, 14)


def _lerp(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x + (y - x) * t


def robust_augment(x: torch.Tensor, generator: torch.Generator, share: float = 1.0) -> torch.Tensor:
    """What digits that are not MNIST's differ by, drawn independently for each raw digit of
    pairs x[B, 2, 14, 14] (values 0..255, background 0), after MNIST's own preprocessing has
    cropped, scaled and centered them: a stronger affine distortion (+-18 deg, scale 0.85-1.15,
    shift +-2.25 px), an elastic one (a smooth random displacement of up to ~1 px), thicker or
    thinner strokes, blur, fainter ink, and pixel noise. share: the fraction of digits that get
    these distortions (the others get affine_augment's milder ones). The result stays in 0..255."""
    B = x.shape[0]
    n = B * 2
    digits = affine_augment(x, generator, strength=1.5).reshape(n, 1, 14, 14)
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device, x.dtype)
    # elastic: a coarse 4x4 random displacement field, upsampled smoothly over the 14x14 grid
    coarse = (rand(n, 2, 4, 4) * 2 - 1) * (1.0 / 7)  # grid units: 7 px per unit, so up to 1 px
    flow = F.interpolate(coarse, size=(14, 14), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    identity = F.affine_grid(
        torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(n, 2, 3), [n, 1, 14, 14], align_corners=False
    )
    digits = F.grid_sample(digits, identity + flow, align_corners=False, padding_mode="zeros")
    # stroke width: toward a 3x3 max (thicker) or min (thinner) filter, by a random amount
    u = rand(n, 4, 1, 1, 1).unbind(1)
    thicker = F.max_pool2d(digits, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-digits, 3, stride=1, padding=1)
    width = torch.where(u[0] < 0.5, thicker, thinner)
    digits = _lerp(digits, width, u[1] * 0.5 * (u[0] < 0.8))  # 20 % keep their width
    # blur toward a 3x3 mean, fainter ink, then noise
    blurred = F.avg_pool2d(digits, 3, stride=1, padding=1, count_include_pad=False)
    digits = _lerp(digits, blurred, u[2] * 0.4)
    digits = digits * (0.6 + 0.4 * u[3])
    noise = torch.randn(digits.shape, generator=generator).to(x.device, x.dtype) * (rand(n, 1, 1, 1) * 10)
    digits = (digits + noise).clamp(0, 255).view(B, 2, 14, 14)
    if share >= 1.0:
        return digits
    mild = affine_augment(x, generator)
    chosen = (rand(B, 2, 1, 1) < share).to(x.dtype)
    return chosen * digits + (1 - chosen) * mild


# The named variants of catalog.AUGMENTERS (RunConfig.augment).


def affine_light(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """affine_augment at half its ranges (a strength to tune)."""
    return affine_augment(x, generator, strength=0.5)


def affine_strong(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """affine_augment at one and a half times its ranges."""
    return affine_augment(x, generator, strength=1.5)


def mixed_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the digits robust_augment's distortions, half affine_augment's."""
    return robust_augment(x, generator, share=0.5)
