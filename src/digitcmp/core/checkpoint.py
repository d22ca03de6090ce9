"""Checkpoints: a model's weights in safetensors, with what is needed to use it as metadata.

Loading reads tensors and strings only (safetensors never unpickles), rebuilds the architecture
from the stored config through the registry, and refuses anything that is not a digitcmp
checkpoint with a one-line reason. A checkpoint may come from anyone, so everything in it is
bounded before it is used: the file's size, its config (RunConfig's ranges), the normalization,
every tensor's name and shape (those of the architecture the config builds, checked before a
tensor is read) and its values (finite).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..common.version import __version__
from .config import RunConfig
from .inference import AnswerSpec
from .models import Ensemble, create_model
from .records import RunResult, recorded_errors

if TYPE_CHECKING:
    from safetensors import safe_open

FORMAT = "digitcmp-checkpoint-1"
MAX_CHECKPOINT_BYTES = 512 * 2**20  # the largest config RunConfig allows stays well below


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

    @property
    def recorded_errors(self) -> dict[str, float]:
        """The final errors written at training (records.recorded_errors)."""
        return recorded_errors(self.metadata)


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: RunConfig,
    mean: float,
    std: float,
    result: RunResult | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Write weights (a state_dict) and metadata: config, normalization, version, final errors, and
    notes (more text metadata: how weights were trained beyond the config, e.g. a fine-tuning).

    Weights that are not finite (a diverged training) are refused. The file is written under a
    temporary name beside the destination and renamed into place, so a failed write leaves no
    half-written checkpoint."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(
            f"not saving {os.fspath(path)}: weight {bad} is not finite (the training diverged; try a lower --lr)"
        )
    metadata = {
        "format": FORMAT,
        "arch": config.arch,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "input_mean": repr(float(mean)),
        "input_std": repr(float(std)),
        "package_version": __version__,
        "seed": "" if result is None else str(result.seed),
        "test_error": repr(None if result is None else result.test_error),
        "train_error": repr(None if result is None else result.train_error),
    }
    if result is not None and result.validation_error is not None:  # a validation run's (validation mode)
        metadata["validation_error"] = repr(result.validation_error)
    clash = set(notes or {}) & set(metadata)
    if clash:
        raise ValueError(f"checkpoint notes may not replace {', '.join(sorted(clash))}")
    metadata.update(notes or {})
    from ..common.destinations import replace_file  # a symlink written through, a device or FIFO refused

    def write(temporary: str) -> None:
        try:
            save_file(tensors, temporary, metadata=metadata)
        except (OSError, KeyboardInterrupt):
            raise
        except Exception as err:  # safetensors' own write errors
            raise OSError(f"cannot write checkpoint {os.fspath(path)}: {err}") from None

    replace_file(path, write, "checkpoint")


def _finite_number(metadata: dict, key: str, path: str) -> float:
    try:
        value = float(metadata[key])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: damaged digitcmp metadata ({key} missing or not a number)") from None
    if not math.isfinite(value):
        raise CheckpointError(f"{path}: metadata {key} must be a finite number, got {metadata[key]!r}")
    return value


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by save_checkpoint; anything else is a CheckpointError."""
    from safetensors import safe_open

    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"a checkpoint path must be a string or path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    size = os.path.getsize(path)
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{path} is {size / 2**20:.0f} MiB; a digitcmp checkpoint is at most {MAX_CHECKPOINT_BYTES // 2**20} MiB"
        )
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path} is a safetensors file but not a digitcmp checkpoint (no '{FORMAT}' metadata)")
            config, mean, std = _read_metadata(metadata, path)
            # The architecture's structure without memory: its tensors come from the file alone,
            # once their names and shapes have been checked against it.
            with torch.device("meta"):
                members = [create_model(config.arch, config.model_options()) for _ in range(config.ensemble)]
            model = members[0] if config.ensemble == 1 else Ensemble(members)
            tensors = read_checked_tensors(handle, model.state_dict(), path, f"architecture {config.arch!r}")
    except CheckpointError:
        raise
    except Exception as err:  # safetensors raises its own error types for every kind of damage
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({type(err).__name__}: {first})") from None
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    return Checkpoint(model, config, mean, std, metadata)


def _read_metadata(metadata: dict, path: str) -> tuple[RunConfig, float, float]:
    """The config and normalization, each checked against its bounds."""
    try:
        config = RunConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, TypeError, RecursionError) as err:
        raise CheckpointError(f"{path}: damaged digitcmp metadata (config: {type(err).__name__})") from None
    except ValueError as err:  # a field out of its range, or an architecture this version does not know
        raise CheckpointError(f"{path}: config {err}") from None
    mean, std = _finite_number(metadata, "input_mean", path), _finite_number(metadata, "input_std", path)
    if not (0 <= mean <= 255 and 0 < std <= 255):
        raise CheckpointError(
            f"{path}: input normalization out of range (mean {mean} must be in [0, 255], std {std} in (0, 255])"
        )
    seed = metadata.get("seed") or "0"
    if not (seed.isdigit() and int(seed) <= 2**31 - 1):
        raise CheckpointError(f"{path}: metadata seed must be an integer in [0, 2147483647], got {seed!r}")
    return config, mean, std


def read_checked_tensors(
    handle: safe_open, expected: dict[str, torch.Tensor], path: str, what: str, error: type[Exception] = CheckpointError
) -> dict[str, torch.Tensor]:
    """A model's tensors from an open safetensors file (`handle`), each checked by name, shape and
    dtype against `expected` (the model's state_dict) before it is read, and for finite values
    after: the one reader of weights from a file, a checkpoint's and the digit-ness detector's.
    `what` names the model in messages ("architecture 'fnn'"); error: the exception raised."""
    names = set(handle.keys())
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise error(f"{path}: weights do not fit {what} ({detail})")
    tensors = {}
    for name, reference in expected.items():
        shape = list(handle.get_slice(name).get_shape())
        if shape != list(reference.shape):
            raise error(f"{path}: tensor {name} has shape {shape}, {what} needs {list(reference.shape)}")
        tensor = handle.get_tensor(name)
        if tensor.dtype != reference.dtype:
            raise error(f"{path}: tensor {name} is {tensor.dtype}, expected {reference.dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise error(f"{path}: tensor {name} holds values that are not finite")
        tensors[name] = tensor
    return tensors
