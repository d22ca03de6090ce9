"""Arrays made into digit pairs x[N, 2, 14, 14] (raw pixel values 0..255, float32 numpy), checked
and bounded before they are read: .npy files, numpy arrays, torch tensors and nested JSON lists.
(Image files are images.py's job; sources.py takes both.) Answering needs no torch: a tensor is
recognized by its type's module and read through its own methods."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_PAIRS = 500_000  # pairs in one call: 784 MB of float32 pixels, answered in bounded chunks


def _numeric_pairs(x: np.ndarray, name: str) -> np.ndarray:
    """Pairs [N, 2, 14, 14] (or one pair [2, 14, 14]) of finite pixel values in 0..255, as float32."""
    if x.dtype.kind not in "uif" or x.dtype.fields is not None:  # bool, complex, strings, records are not
        raise InputError(f"{name}: pixel values must be real numbers (integer or float), got dtype {x.dtype}")
    if x.shape == (2, 14, 14):
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != (2, 14, 14):
        raise InputError(f"{name}: expected an array of shape [N, 2, 14, 14] or [2, 14, 14], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{name}: holds no pairs (shape {list(x.shape)})")
    if x.shape[0] > MAX_PAIRS:
        raise InputError(f"{name}: {x.shape[0]} pairs; at most {MAX_PAIRS} in one call (split the array)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{name}: holds NaN or infinite values; pixel values must be finite, in 0..255")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 255:
        raise InputError(f"{name}: pixel values must be in 0..255 (as MNIST's), got values from {low:g} to {high:g}")
    return x


def read_npy(path: Path) -> np.ndarray:
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
    return _numeric_pairs(array, str(path))


def is_tensor(item: object) -> bool:
    """Whether item is a torch tensor, told without importing torch (answering does not need it)."""
    return type(item).__module__.split(".")[0] == "torch" and hasattr(item, "detach")


def _tensor_values(item, name: str) -> np.ndarray:
    """A tensor's values as a numpy array, read on the CPU; a tensor without values is refused."""
    if item.is_meta or str(item.layout) != "torch.strided":
        raise InputError(
            f"{name}: a tensor must hold its values (dense, strided), got a {item.layout} tensor on {item.device}"
        )
    if item.is_complex() or str(item.dtype) == "torch.bool":
        raise InputError(f"{name}: pixel values must be real numbers (integer or float), got {item.dtype}")
    try:
        item = item.detach().cpu()
    except RuntimeError as err:  # a device whose memory cannot be read here
        raise InputError(
            f"{name}: cannot read the tensor's values from {item.device} ({str(err).splitlines()[0]})"
        ) from None
    # (bfloat16 and float16 have no numpy twin of their own everywhere: read as float32, as answered)
    return (item.float() if item.is_floating_point() else item).numpy()


def pairs_from_array(item: object, name: str) -> np.ndarray:
    """A numpy array or torch tensor of pairs -> checked float32 pairs [N, 2, 14, 14]."""
    return _numeric_pairs(_tensor_values(item, name) if is_tensor(item) else item, name)


def pairs_from_nested(value: object, name: str, max_pairs: int = MAX_PAIRS) -> np.ndarray:
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
    if array.dtype.kind not in "uif" or _holds_booleans(value):  # strings, objects; true/false mixed with numbers
        raise InputError(f"{name}: pixel values must be numbers in 0..255")
    return pairs_from_array(array, name)


def _holds_booleans(value: list) -> bool:
    """Whether regular nested lists (numpy read them as numbers) hold a true or false anywhere:
    numpy would have read them as 1 and 0."""
    while value and isinstance(value[0], list):
        value = list(itertools.chain.from_iterable(value))
    return bool in set(map(type, value))
