"""Checkpoints: a model's weights in safetensors, with what is needed to use it as metadata.

Loading reads tensors and strings only (safetensors never unpickles), rebuilds the architecture
from the stored config through the registry, and refuses anything that is not a digitcmp
checkpoint with a one-line reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from . import __version__
from .config import RunConfig
from .inference import AnswerSpec
from .models import Ensemble, create_model

FORMAT = "digitcmp-checkpoint-1"


class CheckpointError(ValueError):
    """A file that cannot be used as a digitcmp checkpoint."""


@dataclass
class Checkpoint:
    """A loaded model (eval mode, CPU) with its input normalization and provenance."""

    model: torch.nn.Module
    config: RunConfig
    mean: float
    std: float
    metadata: dict

    @property
    def spec(self) -> AnswerSpec:
        """How this model answers as it was scored: its normalization and test-time views."""
        return AnswerSpec(self.mean, self.std, self.config.tta, int(self.metadata.get("seed") or 0))


def save_checkpoint(
    path: str | os.PathLike, state: dict[str, torch.Tensor], config: RunConfig, mean: float, std: float, result: dict
) -> None:
    """Write weights (a state_dict) and metadata: config, normalization, version, final errors."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "arch": config.arch,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "input_mean": repr(float(mean)),
        "input_std": repr(float(std)),
        "package_version": __version__,
        "seed": str(result.get("seed", "")),
        "test_error": repr(result.get("test_error")),
        "train_error": repr(result.get("train_error")),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by save_checkpoint; anything else is a CheckpointError."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({type(err).__name__}: {err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a digitcmp checkpoint (no '{FORMAT}' metadata)")
    try:
        config = RunConfig.from_dict(json.loads(metadata["config"]))
        mean, std = float(metadata["input_mean"]), float(metadata["input_std"])
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(f"{path}: damaged digitcmp metadata ({err})") from None
    except ValueError as err:  # e.g. an architecture this version does not know
        raise CheckpointError(f"{path}: {err}") from None
    members = [create_model(config.arch, config.model_options()) for _ in range(config.ensemble)]
    model = members[0] if config.ensemble == 1 else Ensemble(members)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit architecture {config.arch!r} ({first})") from None
    model.eval()
    return Checkpoint(model, config, mean, std, metadata)
