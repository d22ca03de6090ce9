"""People's inputs made into digit pairs x[N, 2, 14, 14] (raw pixel values 0..255), checked and
bounded before they are read: image files, .npy arrays, arrays and tensors.

An image goes through the steps that made MNIST itself: the digit (light on dark) is cropped to
its bounding box, scaled to fit 20x20 keeping its aspect ratio, placed in a 28x28 field so that its
center of mass is at the center, then average-pooled to 14x14 like the training data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAX_IMAGE_BYTES = 50 * 2**20
MAX_IMAGE_PIXELS = 40_000_000  # a 48-megapixel phone photo is over; 40 MP decodes to at most 160 MB of RGBA
MAX_PAIRS = 500_000  # pairs in one call: 784 MB of float32 pixels, answered in bounded chunks
MIN_INK = 8.0  # an image whose ink never rises this far above its background (of 255) is blank


class InputError(ValueError):
    """An input that cannot be turned into digit pairs."""


def _open_image(path: Path):
    """The decoded image, refused before decoding when the file or its pixel count is too large."""
    from PIL import Image, UnidentifiedImageError

    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"image {path} is {size / 2**20:.0f} MiB; at most {MAX_IMAGE_BYTES // 2**20} MiB is accepted")
    try:
        with warnings.catch_warnings():  # Pillow warns above its own bound; ours, below it, refuses first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours
        raise InputError(
            f"image {path} is too large; at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from None
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS or width < 1 or height < 1:
        img.close()
        raise InputError(
            f"image {path} is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted"
        )
    try:
        img.load()
    except (OSError, ValueError, EOFError, Image.DecompressionBombError, MemoryError) as err:
        img.close()
        raise InputError(f"cannot decode image {path}: {err}") from None
    return img


def _ink_map(path: Path) -> np.ndarray:
    """The image as float 'ink' in 0..255: light digit on a dark background."""
    try:
        with _open_image(path) as img:
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
                alpha = rgba[..., 3]
                if alpha.min() < 250:  # a drawing on a transparent canvas: the ink is where it is opaque
                    return alpha
            gray = np.asarray(img.convert("L"), dtype=np.float32)
    except (OSError, ValueError) as err:  # a conversion Pillow cannot make
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read image {path}: {err}") from None
    # Polarity from the border: a light background means a dark digit, which MNIST stores inverted.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray = 255.0 - gray
    return gray


def mnist_like(ink: np.ndarray, name: str = "image") -> np.ndarray:
    """A digit's ink map (any size) -> 28x28 float 0..255, MNIST's size and centering. An image
    with no ink (blank, or one color) is an InputError."""
    from PIL import Image

    background = np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink - background, 0, None)
    peak = ink.max()
    if peak < MIN_INK:
        raise InputError(f"{name} has no ink: it is blank or a single color (a digit must stand out from its background)")
    ink = ink * (255.0 / peak)
    rows, cols = np.nonzero(ink > 0.15 * 255)  # ignore faint noise when cropping
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    small = np.clip(small, 0, 255)
    field = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(14 - cy - 0.5), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx - 0.5), 0, 28 - small.shape[1]))
    field[top : top + small.shape[0], left : left + small.shape[1]] = small
    return field


def image_to_digit(path: str | os.PathLike) -> torch.Tensor:
    """One image file -> [14, 14] float32, values 0..255, like generate_pair_sets' digits."""
    field = torch.from_numpy(mnist_like(_ink_map(Path(path)), f"image {path}"))
    return F.avg_pool2d(field[None, None], kernel_size=2)[0, 0]


def _numeric_pairs(x: torch.Tensor, name: str) -> torch.Tensor:
    """Pairs [N, 2, 14, 14] (or one pair [2, 14, 14]) of finite pixel values in 0..255, as float32."""
    if x.dtype == torch.bool or x.is_complex() or not (x.is_floating_point() or x.dtype in _INT_DTYPES):
        raise InputError(f"{name}: pixel values must be real numbers (integer or float), got {x.dtype}")
    if x.dim() == 3 and tuple(x.shape) == (2, 14, 14):
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != (2, 14, 14):
        raise InputError(f"{name}: expected an array of shape [N, 2, 14, 14] or [2, 14, 14], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{name}: holds no pairs (shape {list(x.shape)})")
    if x.shape[0] > MAX_PAIRS:
        raise InputError(f"{name}: {x.shape[0]} pairs; at most {MAX_PAIRS} in one call (split the array)")
    x = x.float()
    if not torch.isfinite(x).all():
        raise InputError(f"{name}: holds NaN or infinite values; pixel values must be finite, in 0..255")
    low, high = x.min().item(), x.max().item()
    if low < 0 or high > 255:
        raise InputError(f"{name}: pixel values must be in 0..255 (as MNIST's), got values from {low:g} to {high:g}")
    return x


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _read_npy(path: Path) -> torch.Tensor:
    """A .npy file's pairs, its header checked (format, numeric dtype, shape, size) before the data is read."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = fh.tell()
    except (ValueError, EOFError, OSError, SyntaxError) as err:
        raise InputError(f"{path} is not a readable .npy array ({err}); give an array saved with numpy.save") from None
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "uif":
        raise InputError(f"{path}: pixel values must be real numbers (integer or float), got dtype {dtype}")
    if tuple(shape) != (2, 14, 14) and (len(shape) != 4 or tuple(shape[1:]) != (2, 14, 14)):
        raise InputError(f"{path}: expected an array of shape [N, 2, 14, 14] or [2, 14, 14], got {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    if len(shape) == 4 and shape[0] > MAX_PAIRS:
        raise InputError(f"{path}: {shape[0]} pairs; at most {MAX_PAIRS} in one file (split the array)")
    if path.stat().st_size - offset < count * dtype.itemsize:
        raise InputError(f"{path} is truncated: its header announces {list(shape)} {dtype} values")
    array = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
    return _numeric_pairs(torch.from_numpy(array.astype(np.float32)), str(path))


def _as_tensor(item, name: str) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return _numeric_pairs(item.detach().cpu(), name)
    if item.dtype.kind not in "uif" or item.dtype.fields is not None:
        raise InputError(f"{name}: pixel values must be real numbers (integer or float), got dtype {item.dtype}")
    return _numeric_pairs(torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32)), name)


ACCEPTED = "image files (in consecutive pairs), .npy files, arrays or tensors [N, 2, 14, 14], or a list of these"


def load_pairs(inputs) -> tuple[torch.Tensor, list[str]]:
    """Inputs (an image or .npy path, an array or tensor, or a list of these) -> (pairs
    [N, 2, 14, 14] raw 0..255, a label per pair); anything else is an InputError."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = _as_tensor(inputs, "input")
        return x, [f"pair {i}" for i in range(x.shape[0])]
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"inputs must be {ACCEPTED}; got {type(inputs).__name__}")
    chunks, labels, pending, total = [], [], [], 0
    for item in inputs:
        if isinstance(item, (torch.Tensor, np.ndarray)):
            x = _as_tensor(item, "array")
            labels += [f"array[{i}]" for i in range(x.shape[0])]
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise InputError(f"input {path} does not exist or is not a file")
            if path.suffix.lower() == ".npy":
                x = _read_npy(path)
                labels += [f"{path.name}[{i}]" for i in range(x.shape[0])]
            else:  # any other file is an image for Pillow to read
                pending.append(path)
                if len(pending) < 2:
                    continue
                x = torch.stack([image_to_digit(p) for p in pending])[None]
                labels.append(f"{pending[0].name} <= {pending[1].name}")
                pending = []
        else:
            raise InputError(f"each input must be a path, an array or a tensor; got {type(item).__name__}")
        total += x.shape[0]
        if total > MAX_PAIRS:
            raise InputError(f"more than {MAX_PAIRS} pairs in one call; give them in several calls")
        chunks.append(x)
    if pending:
        raise InputError(f"an odd number of images: {pending[0]} has no partner (images are read in consecutive pairs)")
    if not chunks:
        raise InputError(f"no inputs: give {ACCEPTED}")
    return torch.cat(chunks), labels
