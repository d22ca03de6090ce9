"""People's inputs made into digit pairs x[N, 2, 14, 14] (raw pixel values 0..255), checked and
bounded before they are read: image files, .npy arrays, arrays and tensors.

An image goes through the steps that made MNIST itself: the digit (light on dark) is cropped to
its bounding box, scaled to fit 20x20 keeping its aspect ratio, placed in a 28x28 field so that its
center of mass is at the center, then average-pooled to 14x14 like the training data.
"""

from __future__ import annotations

import io
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
WORK_SIDE = 1024  # larger images are reduced to this many pixels a side before the digit is found


class InputError(ValueError):
    """An input that cannot be turned into digit pairs."""


def _open_image(source: Path | bytes, path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS):
    """The decoded image (from a file, or from bytes already in memory, named path in messages),
    refused before decoding when the file or its pixel count is too large."""
    from PIL import Image, UnidentifiedImageError

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise InputError(f"image {path} is {size / 2**20:.0f} MiB; at most {MAX_IMAGE_BYTES // 2**20} MiB is accepted")
    try:
        with warnings.catch_warnings():  # Pillow warns above its own bound; ours, below it, refuses first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours
        raise InputError(f"image {path} is too large; at most {max_pixels // 1_000_000} megapixels are accepted") from None
    except UnidentifiedImageError:
        raise InputError(
            f"cannot read image {path}: not an image format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from None
    width, height = img.size
    if width * height > max_pixels or width < 1 or height < 1:
        img.close()
        raise InputError(
            f"image {path} is {width}x{height} pixels; at most {max_pixels // 1_000_000} megapixels are accepted"
        )
    try:
        img.load()
    except (OSError, ValueError, EOFError, Image.DecompressionBombError, MemoryError) as err:
        img.close()
        raise InputError(f"cannot decode image {path}: {err}") from None
    return img


def _ink_map(source: Path | bytes, path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """The image as float 'ink' in 0..255 (light digit on a dark background): how far each pixel
    is from the paper's color, in any channel (dark, light or colored ink alike); on a transparent
    canvas, the opacity. Large images are first reduced to at most WORK_SIDE pixels a side."""
    from PIL import Image

    try:
        with _open_image(source, path, max_pixels) as img:
            if max(img.size) > WORK_SIDE:
                img = img.copy()
                img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
                alpha = rgba[..., 3]
                if alpha.min() < 250:  # a drawing on a transparent canvas: the ink is where it is opaque
                    return alpha
            if img.mode in ("I", "F") or img.mode.startswith("I;"):  # 16- and 32-bit gray: scale its range to 0..255
                gray = np.asarray(img, dtype=np.float32)
                low, high = float(gray.min()), float(gray.max())
                if not (np.isfinite(low) and np.isfinite(high)):
                    raise InputError(f"image {path} holds values that are not finite")
                gray = (gray - low) * (255.0 / max(high - low, 1e-6))
                rgb = np.repeat(gray[..., None], 3, axis=-1)
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    except (OSError, ValueError) as err:  # a conversion Pillow cannot make
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read image {path}: {err}") from None
    ink = _distance_from_border_color(rgb)
    sheet = _sheet_of_paper(ink)
    if sheet is not None:  # a photo of a sheet on a table: the sheet is the paper, the rest is left out
        rows, cols = sheet
        ink = _distance_from_border_color(rgb[rows, cols])
    return ink


def _distance_from_border_color(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [P, 3]
    paper = np.median(border, axis=0)
    return np.abs(rgb - paper).max(axis=-1)


def _sheet_of_paper(ink: np.ndarray) -> tuple[slice, slice] | None:
    """Where a photo shows a sheet of paper on a darker or lighter surround: the rows and columns
    inside a solid region, most of the image and most of its bounding box, that differs from the
    border's color; None when there is no such region (the usual case: the digit on its paper)."""
    from scipy import ndimage

    if min(ink.shape) < 32:
        return None
    solid = ink > 0.5 * ink.max()
    labels, count = ndimage.label(solid)
    if count == 0:
        return None
    sizes = ndimage.sum(solid, labels, np.arange(1, count + 1))
    biggest = int(np.argmax(sizes))
    rows, cols = ndimage.find_objects(labels)[biggest]
    box = (rows.stop - rows.start) * (cols.stop - cols.start)
    spans = (rows.stop - rows.start) > 0.4 * ink.shape[0] and (cols.stop - cols.start) > 0.4 * ink.shape[1]
    if sizes[biggest] < 0.2 * ink.size or sizes[biggest] < 0.7 * box or not spans:
        return None  # strokes (even a thick 1 on a narrow canvas), not a sheet
    inset_r, inset_c = max(2, (rows.stop - rows.start) // 30), max(2, (cols.stop - cols.start) // 30)
    return slice(rows.start + inset_r, rows.stop - inset_r), slice(cols.start + inset_c, cols.stop - inset_c)


def _flatten_background(ink: np.ndarray) -> np.ndarray:
    """Subtract uneven paper or lighting: a quadratic surface fitted to the pixels that are most
    likely paper (the darker half of the ink map), evaluated everywhere."""
    h, w = ink.shape
    step = max(1, max(h, w) // 64)
    small = ink[::step, ::step]
    ys, xs = np.mgrid[0 : small.shape[0], 0 : small.shape[1]].astype(np.float64)
    ys, xs = ys * step / max(h, 1), xs * step / max(w, 1)
    basis = lambda y, x: np.stack([np.ones_like(y), y, x, y * y, x * x, x * y], -1)  # noqa: E731
    paper = small <= np.median(small)
    coef, *_ = np.linalg.lstsq(basis(ys[paper], xs[paper]), small[paper].astype(np.float64), rcond=None)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    surface = basis(yy / max(h, 1), xx / max(w, 1)) @ coef
    return np.clip(ink - surface, 0, None).astype(np.float32)


def _digit_mask(ink: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Which pixels belong to the digit: the strongest connected group of ink and the parts near it,
    without specks, and without frames or margins (ink that spans the image from edge to edge).
    Also a doubt, when another mark nearly as strong was left out (two digits, say)."""
    from scipy import ndimage

    strong = ink > 0.3 * ink.max()
    labels, count = ndimage.label(strong, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros_like(strong), None
    index = np.arange(1, count + 1)
    mass = ndimage.sum(ink, labels, index)
    boxes = ndimage.find_objects(labels)
    h, w = ink.shape
    for i, (rows, cols) in enumerate(boxes):
        spans = (rows.stop - rows.start) > 0.9 * h or (cols.stop - cols.start) > 0.9 * w
        edges = (rows.start == 0) + (rows.stop == h) + (cols.start == 0) + (cols.stop == w)
        if spans and edges >= 2 and count > 1:  # a frame, a margin, the edge of a sheet of paper
            mass[i] = 0
    main = int(np.argmax(mass))
    if mass[main] <= 0:
        return np.zeros_like(strong), None
    rows, cols = boxes[main]
    pad_r, pad_c = (rows.stop - rows.start) // 2 + 2, (cols.stop - cols.start) // 2 + 2
    keep = [main + 1]
    for i, (r, c) in enumerate(boxes):  # the other strokes of the same digit (a 5's flag, a 4's bar)
        near = (
            r.start < rows.stop + pad_r
            and r.stop > rows.start - pad_r
            and c.start < cols.stop + pad_c
            and c.stop > cols.start - pad_c
        )
        if i != main and mass[i] >= 0.05 * mass[main] and near:
            keep.append(i + 1)
    mask = np.isin(labels, keep)
    left_out = [mass[i] for i in range(count) if i + 1 not in keep]
    doubt = "another mark nearly as strong as the digit" if left_out and max(left_out) >= 0.25 * mass[main] else None
    return ndimage.binary_dilation(mask, iterations=2) & (ink > 0.1 * ink.max()), doubt  # with the strokes' soft edges


MNIST_INK_SHARE = (0.07, 0.21)  # share of a 28x28 MNIST digit above half intensity: 5th and 95th percentiles


def _normalize_stroke_width(field: np.ndarray) -> np.ndarray:
    """Bring strokes much thicker or thinner than MNIST's back into its range (grey erosion or
    dilation of the 28x28 field, at most twice)."""
    from scipy import ndimage

    for _ in range(2):
        share = (field > 127).mean()
        if share > 1.6 * MNIST_INK_SHARE[1]:
            field = ndimage.grey_erosion(field, size=(2, 2))
        elif 0 < share < 0.6 * MNIST_INK_SHARE[0]:
            field = ndimage.grey_dilation(field, size=(2, 2))
        else:
            break
    return field


MAX_DIGIT_WIDTH = 1.5  # a digit is taller than wide: ink this much wider than tall is likely several digits


def mnist_like(ink: np.ndarray, name: str = "image") -> tuple[np.ndarray, str | None]:
    """A digit's ink map (any size) -> (28x28 float 0..255, a doubt or None): MNIST's size and
    centering, with paper and lighting flattened, noise, specks and margins left out, the digit
    cropped, scaled into 20x20, centered by mass, its strokes brought to MNIST's width. The doubt
    says why the image may not be one clear digit. An image with no ink (blank, or one color) is
    an InputError."""
    from PIL import Image
    from scipy import ndimage

    background = np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink - background, 0, None)
    if ink.max() < MIN_INK:
        raise InputError(f"{name} has no ink: it is blank or a single color (a digit must stand out from its background)")
    if min(ink.shape) >= 16:
        ink = _flatten_background(ink)
        if max(ink.shape) >= 64:
            ink = ndimage.median_filter(ink, size=3)  # salt-and-pepper noise of scans and photos
    peak = ink.max()
    if peak < MIN_INK:
        raise InputError(f"{name} has no ink: it is blank or a single color (a digit must stand out from its background)")
    mask, doubt = _digit_mask(ink)
    ink = np.where(mask, ink, 0) * (255.0 / peak)
    rows, cols = np.nonzero(ink > 0.15 * 255)  # ignore faint edges when cropping
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    if w > MAX_DIGIT_WIDTH * h and w >= 8:
        doubt = doubt or "the ink is much wider than tall (several digits?)"
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
    return _normalize_stroke_width(field), doubt


def read_image_digit(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[torch.Tensor, str | None]:
    """One image (a file, or its bytes, called name in messages) -> ([14, 14] float32 0..255 like
    generate_pair_sets' digits, a doubt or None)."""
    if isinstance(source, bytes):
        name = name or "image"
    else:
        source = Path(source)
        name = name or str(source)
    field, doubt = mnist_like(_ink_map(source, name, max_pixels), f"image {name}")
    return F.avg_pool2d(torch.from_numpy(field)[None, None], kernel_size=2)[0, 0], doubt


def read_image_pair(images, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[torch.Tensor, str | None]:
    """Two images [(name, file path or bytes), (name, ...)] -> (one pair [1, 2, 14, 14], the
    doubts of either image as "name: doubt", or None)."""
    read = [read_image_digit(source, name, max_pixels) for name, source in images]
    doubt = "; ".join(f"{name}: {d}" for (name, _), (_, d) in zip(images, read) if d) or None
    return torch.stack([digit for digit, _ in read])[None], doubt


def image_to_digit(path: str | os.PathLike) -> torch.Tensor:
    """One image file -> [14, 14] float32, values 0..255."""
    return read_image_digit(path)[0]


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _numeric_pairs(x: torch.Tensor, name: str) -> torch.Tensor:
    """Pairs [N, 2, 14, 14] (or one pair [2, 14, 14]) of finite pixel values in 0..255, as float32."""
    if not (x.is_floating_point() or x.dtype in _INT_DTYPES):  # bool and complex are neither
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


def pairs_from_nested(value, name: str, max_pairs: int = MAX_PAIRS) -> torch.Tensor:
    """Nested lists of numbers (JSON, say) [N][2][14][14] or [2][14][14] -> checked pairs as for an array."""
    if not isinstance(value, list):
        raise InputError(f"{name}: expected a list of pairs [N][2][14][14], got {type(value).__name__}")
    if not value:
        raise InputError(f"{name}: holds no pairs; give 1 or more pairs [2][14][14]")
    if len(value) > max_pairs:
        raise InputError(f"{name}: {len(value)} pairs; at most {max_pairs} in one request")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged lists
        raise InputError(f"{name}: expected an array of shape [N, 2, 14, 14] or [2, 14, 14] (ragged lists)") from None
    if array.dtype.kind not in "uif":  # strings, booleans, objects
        raise InputError(f"{name}: pixel values must be numbers in 0..255")
    return _as_tensor(array, name)


ACCEPTED = "image files (in consecutive pairs), .npy files, arrays or tensors [N, 2, 14, 14], or a list of these"


def load_pairs(inputs) -> tuple[torch.Tensor, list[str], list[str | None]]:
    """Inputs (an image or .npy path, an array or tensor, or a list of these) -> (pairs
    [N, 2, 14, 14] raw 0..255, a label per pair, a doubt per pair from reading its images or None);
    anything else is an InputError."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = _as_tensor(inputs, "input")
        return x, [f"pair {i}" for i in range(x.shape[0])], [None] * x.shape[0]
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"inputs must be {ACCEPTED}; got {type(inputs).__name__}")
    chunks, labels, doubts, pending, total = [], [], [], [], 0
    for item in inputs:
        if isinstance(item, (torch.Tensor, np.ndarray)):
            x = _as_tensor(item, "array")
            labels += [f"array[{i}]" for i in range(x.shape[0])]
            doubts += [None] * x.shape[0]
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise InputError(f"input {path} does not exist or is not a file")
            if path.suffix.lower() == ".npy":
                x = _read_npy(path)
                labels += [f"{path.name}[{i}]" for i in range(x.shape[0])]
                doubts += [None] * x.shape[0]
            else:  # any other file is an image for Pillow to read
                pending.append(path)
                if len(pending) < 2:
                    continue
                x, doubt = read_image_pair([(p.name, p) for p in pending])
                labels.append(f"{pending[0].name} <= {pending[1].name}")
                doubts.append(doubt)
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
    return torch.cat(chunks), labels, doubts
