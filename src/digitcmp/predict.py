"""Predictions on people's own digits (image files, arrays or tensors, read by inputs.py),
answered through the one inference path."""

from __future__ import annotations

import os

import torch

from .checkpoint import Checkpoint, load_checkpoint
from .inference import SingleModel, answer
from .inputs import InputError, load_pairs
from .models import prepare_model

__all__ = ["InputError", "Predictor", "load_model", "shipped_model_path"]


SHIPPED_MODEL = "deploy.safetensors"  # src/digitcmp/shipped/; docs/model_card.md
UNSURE_BELOW = 0.9  # an answer is unsure when either digit's most likely class has less posterior than this


def shipped_model_path() -> str:
    """The model that ships inside the package (trained by `digitcmp train --preset deploy`)."""
    from importlib import resources

    return str(resources.files("digitcmp") / "shipped" / SHIPPED_MODEL)


class Predictor:
    """A trained model ready to compare digits: `predict(inputs)` returns one dict per pair."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        # The evaluation form scoring uses (same layout, batch norm folded the same way), built once.
        self.stack = SingleModel(prepare_model(checkpoint.model, torch.device("cpu"))).for_eval()

    def predict(self, inputs, progress: bool = False) -> list[dict]:
        """Each pair's answer: le (first <= second), p_le, and, with digit heads, digits, digit_probs
        and unsure: either digit's most likely class below UNSURE_BELOW, or an image that did not
        look like one clear digit when it was read (then doubt says why).

        The answer is the one scoring gave (inference.answer): a model trained with test-time
        augmentation averages the pair and its views, drawn as at scoring, so the same inputs
        always get the same answer.
        """
        return self.compare(*load_pairs(inputs), progress=progress)

    def compare(self, x: torch.Tensor, labels: list[str], doubts: list[str | None], progress: bool = False) -> list[dict]:
        """predict() for pairs already read: x [N, 2, 14, 14] raw 0..255 (checked by inputs.py),
        a label and a doubt (or None) per pair."""
        answers = answer(self.stack, x[None], [self.checkpoint.spec], digits=True, ready=True, progress=progress)
        p_le, digit_probs = answers.p_le[0], answers.digit_probs
        out = []
        for i, label in enumerate(labels):
            record = {"input": label, "le": bool(p_le[i] > 0.5), "p_le": float(p_le[i])}
            if digit_probs is not None:
                record["digits"] = [int(d) for d in digit_probs[0, i].argmax(-1)]
                record["digit_probs"] = [[round(float(p), 6) for p in row] for row in digit_probs[0, i]]
                record["unsure"] = bool(doubts[i]) or bool(digit_probs[0, i].max(-1).values.min() < UNSURE_BELOW)
                if doubts[i]:
                    record["doubt"] = doubts[i]
            out.append(record)
        return out


def load_model(path: str | os.PathLike | None = None) -> Predictor:
    """Load a checkpoint written by `digitcmp train --save` as a Predictor; without a path, the
    model shipped inside the package."""
    return Predictor(load_checkpoint(shipped_model_path() if path is None else path))
