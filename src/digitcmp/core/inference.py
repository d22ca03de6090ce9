"""The one inference path: raw digit pairs -> P(first <= second) and the digit posteriors.

Scoring during and after training, ensembles, `predict`, `load_model` and every later consumer
call `answer`. A model answers as it was scored: its inputs standardized with its training
pairs' statistics, and with test-time augmentation the probabilities averaged over the pair and
views - 1 mildly augmented copies. Each view is one fixed affine map per side, drawn once from the
run's seed and the same for every pair: a pair's answer depends on the pair alone, never on the
pairs that come with it or on its place among them (pairs are answered EVAL_CHUNK at a time, so
memory stays bounded however many come in).

It works on a *stack* of S models (S = 1 for an ordinary model) under the contract
x[S, B, 2, 14, 14] -> ([S, B, 2], [S, B, 2, 10] or None), so that seeds trained together
(engine.BatchedModels) are scored by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn as nn

from .augment import affine_transform
from .models import prepare_model
from .perf import fused_for_eval
from .seeds import derive_seed

if TYPE_CHECKING:
    import numpy as np

EVAL_CHUNK = 1000  # pairs per forward pass
VIEW_STRENGTH = 0.5  # test-time views are milder than the training augmentation


class ModelStack(Protocol):
    """S models with the stacked contract x[S, B, 2, 14, 14] -> ([S, B, 2], [S, B, 2, 10] | None)."""

    n_seeds: int

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def parameters(self) -> list[torch.Tensor]:
        """Every model's trainable tensors (what the optimizer steps)."""
        ...

    def buffers(self) -> list[torch.Tensor]:
        """Every model's buffers (batch-norm statistics), which weight averaging follows too."""
        ...

    def train(self, mode: bool = True) -> None:
        """Training (True) or evaluation mode, as nn.Module.train."""
        ...

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index`'s weights and buffers, as its own nn.Module would hold them."""
        ...

    def for_eval(self) -> ModelStack:
        """The stack ready to answer (evaluation mode; a faster equivalent where there is one)."""
        ...


class SingleModel:
    """A plain nn.Module (one model, or a models.Ensemble) seen as a stack of one."""

    n_seeds = 1

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        cmp, digits = self.model(x[0])
        return cmp.unsqueeze(0), None if digits is None else digits.unsqueeze(0)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def buffers(self) -> list[torch.Tensor]:
        return list(self.model.buffers())

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def state_dict(self, index: int = 0) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def for_eval(self) -> SingleModel:
        """An eval-mode copy computing the same function faster (batch norm folded, on the CPU)."""
        device = next(self.model.parameters()).device
        if device.type == "cpu":
            return SingleModel(prepare_model(fused_for_eval(self.model), device))
        self.model.eval()
        return self


@dataclass(frozen=True)
class AnswerSpec:
    """What a model needs besides its weights to answer as it was scored."""

    mean: float
    """Pixel mean of the training pairs (inputs are standardized with it and std)."""
    std: float
    views: int = 1
    """1: the pair alone; n > 1: the pair and n - 1 test-time views, probabilities averaged."""
    seed: int = 0
    """The run's seed, which seeds the generators of the views."""


@dataclass
class Answers:
    """Per seed of the stack and per pair: P(first <= second), and the digit posteriors."""

    p_le: torch.Tensor  # [S, M] float64
    digit_probs: torch.Tensor | None  # [S, M, 2, 10] float64, or None for models without digit heads


def view_maps(seed: int, views: int) -> torch.Tensor:
    """The test-time views of a run: views - 1 affine maps per side, [views - 1, 2, 4] (see
    augment.affine_transform), drawn from the run's seed alone."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "views", 0))
    return (torch.rand(max(views - 1, 0), 2, 4, generator=generator) * 2 - 1) * VIEW_STRENGTH


@torch.no_grad()
def answer(
    stack: ModelStack,
    raw_x: torch.Tensor,
    specs: list[AnswerSpec],
    digits: bool = False,
    ready: bool = False,
    progress: bool = False,
) -> Answers:
    """Answers of an S-model stack for raw 0..255 pairs raw_x[S, M, 2, 14, 14] (seed s's pairs in
    raw_x[s], answered under specs[s]). digits: also average the digit posteriors. ready: the stack
    is already in evaluation form (stack.for_eval()); otherwise it is put in it here."""
    from tqdm import tqdm

    views = specs[0].views
    if any(sp.views != views for sp in specs):
        raise ValueError("every model of a stack answers with the same number of views")
    stack = stack if ready else stack.for_eval()
    S, M = raw_x.shape[:2]
    p_le = torch.zeros(S, M, dtype=torch.float64, device=raw_x.device)
    digit_probs = None
    maps = [view_maps(sp.seed, views) for sp in specs]  # [views - 1, 2, 4] per model, for every chunk
    chunks = range(0, M, EVAL_CHUNK)
    for start in tqdm(chunks, desc="pairs", unit="chunk", disable=not progress or len(chunks) < 2, leave=False):
        part = raw_x[:, start : start + EVAL_CHUNK]  # [S, b, 2, 14, 14]
        b = part.shape[1]
        shown = [part] + [
            torch.stack([affine_transform(part[s], m[k].repeat(b, 1)) for s, m in enumerate(maps)]) for k in range(views - 1)
        ]
        # All views of the chunk, forwarded EVAL_CHUNK pairs at a time: a few pairs and their views
        # go in one pass (fast answers for one pair), a full chunk one view per pass.
        x = torch.cat(shown, dim=1)  # [S, views * b, 2, 14, 14], view-major
        x = torch.stack([(x[s] - sp.mean) / sp.std for s, sp in enumerate(specs)])
        per_pass = max(1, EVAL_CHUNK // b) * b  # whole views per pass
        for first in range(0, x.shape[1], per_pass):
            cmp, digit_logits = stack(x[:, first : first + per_pass])
            for row in range(first, first + cmp.shape[1], b):  # each view's rows in this pass
                rows = slice(row - first, row - first + b)
                p_le[:, start : start + b] += cmp[:, rows].softmax(-1)[..., 1].double()
                if digits and digit_logits is not None:
                    if digit_probs is None:
                        digit_probs = torch.zeros(S, M, 2, 10, dtype=torch.float64, device=raw_x.device)
                    digit_probs[:, start : start + b] += digit_logits[:, rows].softmax(-1).double()
    return Answers(p_le / views, None if digit_probs is None else digit_probs / views)


def error_rates(p_le: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs whose answer (P(first <= second) > 0.5) misses the target, along the last dim."""
    return ((p_le > 0.5).long() != y).double().mean(-1)


def expected_calibration_error(p_le: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, bins: int = 15) -> float:
    """ECE of the answers' confidence max(p, 1 - p) against their accuracy, in equal-width bins
    over [0.5, 1] (p_le and truth: tensors or arrays of the same length)."""
    p = torch.as_tensor(p_le, dtype=torch.float64)
    confidence = torch.maximum(p, 1 - p)
    correct = ((p > 0.5) == torch.as_tensor(truth).bool()).double()
    which = ((confidence - 0.5) / 0.5 * bins).long().clamp(max=bins - 1)
    return float(
        sum(
            (which == b).double().mean() * (confidence[which == b].mean() - correct[which == b].mean()).abs()
            for b in which.unique()
        )
    )
