"""Predictions on people's own digits: image files made MNIST-like, arrays, or tensors.

An image goes through the steps that made MNIST itself: the digit (light on dark) is cropped to
its bounding box, scaled to fit 20x20 keeping its aspect ratio, placed in a 28x28 field so that its
center of mass is at the center, then average-pooled to 14x14 like the training data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, load_checkpoint
from .inference import SingleModel, answer
from .models import prepare_model


class InputError(ValueError):
    """An input that cannot be turned into digit pairs."""


def _ink_map(path: Path) -> np.ndarray:
    """The image as float 'ink' in 0..255: light digit on a dark background."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
                alpha = rgba[..., 3]
                if alpha.min() < 250:  # a drawing on a transparent canvas: the ink is where it is opaque
                    return alpha
            gray = np.asarray(img.convert("L"), dtype=np.float32)
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}") from None
    # Polarity from the border: a light background means a dark digit, which MNIST stores inverted.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:
        gray = 255.0 - gray
    return gray


def mnist_like(ink: np.ndarray) -> np.ndarray:
    """A digit's ink map (any size) -> 28x28 float 0..255, MNIST's size and centering."""
    from PIL import Image

    background = np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))
    ink = np.clip(ink - background, 0, None)
    peak = ink.max()
    if peak <= 0:
        return np.zeros((28, 28), dtype=np.float32)
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
    field = torch.from_numpy(mnist_like(_ink_map(Path(path))))
    return F.avg_pool2d(field[None, None], kernel_size=2)[0, 0]


def _as_pairs(array, name: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).float()
    if x.dim() == 3 and tuple(x.shape) == (2, 14, 14):
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != (2, 14, 14):
        raise InputError(f"{name}: expected an array of shape [N, 2, 14, 14] or [2, 14, 14], got {list(x.shape)}")
    return x


def load_pairs(inputs) -> tuple[torch.Tensor, list[str]]:
    """Inputs (image paths, .npy paths, arrays or tensors) -> (pairs [N, 2, 14, 14], a label per pair)."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = _as_pairs(inputs, "input")
        return x, [f"pair {i}" for i in range(x.shape[0])]
    chunks, labels, pending = [], [], []
    for item in inputs:
        if isinstance(item, (torch.Tensor, np.ndarray)):
            x = _as_pairs(item, "array")
            chunks.append(x)
            labels += [f"array[{i}]" for i in range(x.shape[0])]
            continue
        path = Path(item)
        if not path.is_file():
            raise InputError(f"input {path} does not exist or is not a file")
        if path.suffix.lower() == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read array {path}: {err}") from None
            x = _as_pairs(array, str(path))
            chunks.append(x)
            labels += [f"{path.name}[{i}]" for i in range(x.shape[0])]
        else:  # any other file is an image for Pillow to read
            pending.append(path)
            if len(pending) == 2:
                chunks.append(torch.stack([image_to_digit(p) for p in pending])[None])
                labels.append(f"{pending[0].name} <= {pending[1].name}")
                pending = []
    if pending:
        raise InputError(f"an odd number of images: {pending[0]} has no partner (images are read in consecutive pairs)")
    if not chunks:
        raise InputError("no inputs: give image files (in pairs) or .npy arrays")
    return torch.cat(chunks), labels


class Predictor:
    """A trained model ready to compare digits: `predict(inputs)` returns one dict per pair."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        # The evaluation form scoring uses (same layout, batch norm folded the same way), built once.
        self.stack = SingleModel(prepare_model(checkpoint.model, torch.device("cpu"))).for_eval()

    def predict(self, inputs, progress: bool = False) -> list[dict]:
        """Each pair's answer: le (first <= second), p_le, and, with digit heads, digits and digit_probs.

        The answer is the one scoring gave (inference.answer): a model trained with test-time
        augmentation averages the pair and its views, drawn as at scoring, so the same inputs
        always get the same answer.
        """
        x, labels = load_pairs(inputs if not isinstance(inputs, (str, os.PathLike)) else [inputs])
        answers = answer(self.stack, x[None], [self.checkpoint.spec], digits=True, ready=True, progress=progress)
        p_le, digit_probs = answers.p_le[0], answers.digit_probs
        out = []
        for i, label in enumerate(labels):
            record = {"input": label, "le": bool(p_le[i] > 0.5), "p_le": float(p_le[i])}
            if digit_probs is not None:
                record["digits"] = [int(d) for d in digit_probs[0, i].argmax(-1)]
                record["digit_probs"] = [[round(float(p), 6) for p in row] for row in digit_probs[0, i]]
            out.append(record)
        return out


def load_model(path: str | os.PathLike) -> Predictor:
    """Load a checkpoint written by `digitcmp train --save` as a Predictor."""
    return Predictor(load_checkpoint(path))
