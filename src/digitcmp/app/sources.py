"""What `predict` and `load_model(...).predict` accept, read into pairs: image files (in consecutive
pairs, read by images.py), .npy files, arrays or tensors (checked by arrays.py), or a list of these."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .arrays import MAX_PAIRS, is_tensor, pairs_from_array, read_npy
from .errors import InputError
from .images import read_image_pair

ACCEPTED = "image files (in consecutive pairs), .npy files, arrays or tensors [N, 2, 14, 14], or a list of these"


def load_pairs(inputs: object) -> tuple[np.ndarray, list[str], list[list | None]]:
    """Inputs (an image or .npy path, an array or tensor, or a list of these) -> (pairs
    [N, 2, 14, 14] raw 0..255, a label per pair, per pair the two images' images.DigitReading or
    None for arrays); anything else is an InputError."""
    if isinstance(inputs, np.ndarray) or is_tensor(inputs):
        x = pairs_from_array(inputs, "input")
        return x, [f"pair {i}" for i in range(x.shape[0])], [None] * x.shape[0]
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)):
        raise InputError(f"inputs must be {ACCEPTED}; got {type(inputs).__name__}")
    chunks, labels, readings, pending, total = [], [], [], [], 0
    for item in inputs:
        if isinstance(item, np.ndarray) or is_tensor(item):
            x = pairs_from_array(item, "array")
            labels += [f"array[{i}]" for i in range(x.shape[0])]
            readings += [None] * x.shape[0]
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise InputError(f"input {path} does not exist or is not a file")
            if path.suffix.lower() == ".npy":
                x = read_npy(path)
                labels += [f"{path.name}[{i}]" for i in range(x.shape[0])]
                readings += [None] * x.shape[0]
            else:  # any other file is an image for Pillow to read
                pending.append(path)
                if len(pending) < 2:
                    continue
                x, pair_readings = read_image_pair([(p.name, p) for p in pending])
                labels.append(f"{pending[0].name} <= {pending[1].name}")
                readings.append(pair_readings)
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
    return np.concatenate(chunks), labels, readings
