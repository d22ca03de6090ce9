"""Predictions on people's own digits (image files, arrays or tensors, read by inputs.py),
answered through the one inference path."""

from __future__ import annotations

import os

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .inference import SingleModel, answer
from .inputs import InputError, load_pairs
from .models import prepare_model

__all__ = ["InputError", "Predictor", "load_model"]


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
        x, labels = load_pairs(inputs)
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
