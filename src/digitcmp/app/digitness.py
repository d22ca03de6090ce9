"""Is it a digit at all? A small classifier of the 14x14 input a model reads: P(not a digit).

A comparison model answers with a digit for anything it is shown: a letter, a scribble, a dot.
Whether an input is a digit is a property of the input, not of the model that compares digits, so
it is judged apart, by this small convolutional net (two 3x3 convolutions, 95k parameters), for
the shipped model and any checkpoint alike. It was trained by `python -m digitcmp.app.train_digitness`
on MNIST training digits (as tensors, and as images are read) against synthetic non-digits
(synthetic.py: letters in many fonts, signs, scribbles, blobs, dots, marks, numbers written as one
stroke); its threshold was chosen on held-out data (docs/model_card.md).

The shipped file is ours, yet it is read like any file from elsewhere: tensors only (safetensors),
each checked by name and shape before it is read, finite values, a threshold in (0, 1).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

SHIPPED_DETECTOR = "digitness.safetensors"  # src/digitcmp/app/shipped/
FORMAT = "digitcmp-digitness-1"
CHUNK = 4096  # digits per forward pass: 100 MB of activations at most


class DigitnessNet(nn.Module):
    """Raw digits x[B, 14, 14] (0..255) -> the logit of "not a digit" [B]."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 3x3
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 128), nn.ReLU(), nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x[:, None] / 255.0))[:, 0]


class DetectorError(ValueError):
    """A file that cannot be used as a digit-ness detector."""


class Detector:
    """The net and its threshold: `not_digit(x)` for raw digits [K, 14, 14]."""

    def __init__(self, net: DigitnessNet, threshold: float, metadata: dict):
        self.net = net.eval()
        self.threshold = threshold
        self.metadata = metadata

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """P(not a digit) [K] of raw digits x[K, 14, 14], in chunks (predict takes up to 500000 pairs)."""
        x = x.float().cpu()
        return torch.cat([torch.zeros(0)] + [torch.sigmoid(self.net(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)])

    def not_digit(self, x: torch.Tensor) -> torch.Tensor:
        """Which of the raw digits x[K, 14, 14] are not digits [K] bool."""
        return self.scores(x) > self.threshold


def shipped_detector_path() -> str:
    """The detector shipped inside the package."""
    from importlib import resources

    return str(resources.files("digitcmp.app") / "shipped" / SHIPPED_DETECTOR)


def save_detector(path: str | os.PathLike, net: DigitnessNet, threshold: float, metadata: dict[str, str]) -> None:
    """Write the detector's weights, its threshold and how it was made (safetensors)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, os.fspath(path), metadata={"format": FORMAT, "threshold": repr(float(threshold)), **metadata})


def load_detector(path: str | os.PathLike | None = None) -> Detector:
    """The detector in the file (by default the shipped one), checked as any untrusted file."""
    from safetensors import safe_open

    from ..core.checkpoint import read_checked_tensors

    if path is None:
        from .integrity import check_shipped

        check_shipped(shipped_detector_path())
    path = os.fspath(path or shipped_detector_path())
    if not os.path.isfile(path) or os.path.getsize(path) > 16 * 2**20:
        raise DetectorError(f"digit-ness detector {path} is missing or larger than 16 MiB; reinstall digitcmp")
    net = DigitnessNet()
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise DetectorError(f"{path} is not a digitcmp digit-ness detector ({FORMAT})")
            tensors = read_checked_tensors(handle, net.state_dict(), path, "the digit-ness detector", DetectorError)
    except DetectorError:
        raise
    except Exception as err:  # safetensors' own errors for every kind of damage
        raise DetectorError(f"{path} is not a readable safetensors file ({type(err).__name__})") from None
    try:
        threshold = float(metadata.get("threshold", "nan"))
    except ValueError:
        threshold = math.nan
    if not 0.0 < threshold < 1.0:
        raise DetectorError(f"{path}: threshold must be a number in (0, 1)")
    net.load_state_dict(tensors)
    return Detector(net, threshold, metadata)
