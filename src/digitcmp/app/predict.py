"""Predictions on people's own digits (image files, arrays or tensors, read by sources.py),
answered through the one inference path."""

from __future__ import annotations

import os

import torch

from ..core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..core.inference import SingleModel, answer
from ..core.models import prepare_model
from .digitness import Detector, load_detector
from .errors import InputError
from .images import BLANK, MIN_INK
from .integrity import check_shipped
from .sources import load_pairs

__all__ = ["InputError", "Predictor", "load_model", "shipped_model_path"]


SHIPPED_MODEL = "deploy.safetensors"  # src/digitcmp/app/shipped/; docs/model_card.md
UNSURE_BELOW = 0.9  # an answer is unsure when either digit's most likely class has less posterior than this
NEAR_EMPTY_INK = 255.0 * 3  # a 14x14 digit with less ink than three full pixels holds no digit
SIDES = ("first digit", "second digit")  # what doubts call the two sides of an array's pair
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def shipped_model_path() -> str:
    """The model that ships inside the package (trained by `digitcmp train --preset deploy`)."""
    from importlib import resources

    return str(resources.files("digitcmp.app") / "shipped" / SHIPPED_MODEL)


def _listing(digits: list[int]) -> str:
    return ", ".join(str(d) for d in digits[:-1]) + f" and {digits[-1]}"


class Predictor:
    """A trained model ready to compare digits: `predict(inputs)` returns one dict per pair."""

    def __init__(self, checkpoint: Checkpoint, detector: Detector | None = None):
        self.checkpoint = checkpoint
        # The evaluation form scoring uses (same layout, batch norm folded the same way), built once.
        self.stack = SingleModel(prepare_model(checkpoint.model, torch.device("cpu"))).for_eval()
        # Whether an input is a digit at all is judged apart from the model (digitness.py).
        self.detector = detector or load_detector()

    def predict(self, inputs, progress: bool = False) -> list[dict]:
        """Each pair's answer: le (first <= second), p_le, unsure and doubt, and, with digit heads,
        digits and digit_probs. unsure (for every model): either digit's most likely class below UNSURE_BELOW, or a side that
        is not one digit (not a digit at all, two digits or more, blank, a mark beside it); then
        doubt says why, side by side.

        The answer is the one scoring gave (inference.answer): a model trained with test-time
        augmentation averages the pair and its views, drawn as at scoring, so the same inputs
        always get the same answer.
        """
        return self.compare(*load_pairs(inputs), progress=progress)

    def read_digits(self, digits: torch.Tensor) -> torch.Tensor:
        """Digit posteriors [K, 10] of single digits [K, 14, 14] (each read as a pair with itself)."""
        if digits.shape[0] == 0:
            return torch.zeros(0, 10, dtype=torch.float64)
        pairs = torch.stack([digits, digits], dim=1)
        return answer(self.stack, pairs[None], [self.checkpoint.spec], digits=True, ready=True).digit_probs[0, :, 0]

    def compare(
        self, x: torch.Tensor, labels: list[str], readings: list | None = None, progress: bool = False
    ) -> list[dict]:
        """predict() for pairs already read: x [N, 2, 14, 14] raw 0..255 (checked by arrays.py),
        a label per pair, and per pair the two images' images.DigitReading (None for arrays)."""
        readings = readings if readings is not None else [None] * x.shape[0]
        answers = answer(self.stack, x[None], [self.checkpoint.spec], digits=True, ready=True, progress=progress)
        p_le, digit_probs = answers.p_le[0], answers.digit_probs
        if not bool(torch.isfinite(p_le).all()) or (digit_probs is not None and not bool(torch.isfinite(digit_probs).all())):
            raise CheckpointError(
                "the model answered with values that are not finite: its weights are damaged "
                "(retrain it, or for the shipped model reinstall digitcmp)"
            )
        # Whether each side is one digit at all is judged for every model, with digit heads or not:
        # the detector, the image reader's glyphs and the blank check need no digit logits.
        not_digit = self.detector.not_digit(x.reshape(-1, 14, 14)).view(-1, 2)
        glyph_reads = self._glyph_reads(readings, digit_probs is not None)
        out = []
        for i, label in enumerate(labels):
            record = {"input": label, "le": bool(p_le[i] > 0.5), "p_le": float(p_le[i])}
            probs = digit_probs[0, i] if digit_probs is not None else None
            if probs is not None:
                record["digits"] = [int(d) for d in probs.argmax(-1)]
                record["digit_probs"] = [[round(float(p), 6) for p in row] for row in probs]
            doubts = []
            for side in range(2):
                reading = readings[i][side] if readings[i] is not None else None
                name = reading.name if reading is not None else SIDES[side]
                side_probs = probs[side] if probs is not None else None
                doubt = self._doubt(x[i, side], side_probs, bool(not_digit[i, side]), reading, glyph_reads.get((i, side)))
                if doubt:
                    doubts.append(f"{name}: {doubt}")
            # A posterior under UNSURE_BELOW always comes with a doubt, so the doubts decide.
            record["unsure"] = bool(doubts)
            record["doubt"] = "; ".join(doubts) or None
            out.append(record)
        return out

    def _glyph_reads(self, readings: list, with_digits: bool = True) -> dict[tuple[int, int], tuple]:
        """For each image that holds several glyphs: each glyph's digit (None for a model without
        digit heads) and whether it is a digit at all, all read in one pass."""
        where, glyphs = [], []
        for i, pair in enumerate(readings):
            for side, reading in enumerate(pair or ()):
                if reading.glyphs:
                    where.append((i, side, len(reading.glyphs)))
                    glyphs += reading.glyphs
        if not glyphs:
            return {}
        stacked = torch.stack(glyphs)
        read = self.read_digits(stacked).argmax(-1) if with_digits else None
        not_digit = self.detector.not_digit(stacked)
        out, start = {}, 0
        for i, side, count in where:
            out[(i, side)] = (None if read is None else read[start : start + count], not_digit[start : start + count])
            start += count
        return out

    def _doubt(self, digit: torch.Tensor, probs: torch.Tensor | None, not_digit: bool, reading, glyphs) -> str | None:
        """Why one side is not one clear digit, or None (probs: the side's digit posterior, None for a
        model without digit heads, which has no posterior to doubt)."""
        if float(digit.sum()) < NEAR_EMPTY_INK or float(digit.max() - digit.min()) < MIN_INK:
            return BLANK  # nothing, or one flat color: nothing stands out (as the image reader says of a photo)
        if glyphs is not None:
            read, others = glyphs
            count = len(others)
            if not bool(others.any()):
                if read is None:
                    return f"{NUMBER_WORDS.get(count, count)} digits side by side, not one"
                return f"{NUMBER_WORDS.get(count, count)} digits: {_listing([int(d) for d in read])}"
            return f"{count} marks side by side, not one digit"
        if not_digit:
            return "not a digit"
        if reading is not None and reading.doubt:
            return reading.doubt
        if probs is not None and float(probs.max()) < UNSURE_BELOW:
            first, second = probs.topk(2).indices.tolist()
            return f"reads as {first} or {second}"
        return None


def load_model(path: str | os.PathLike | None = None) -> Predictor:
    """Load a checkpoint written by `digitcmp train --save` as a Predictor; without a path, the
    model shipped inside the package."""
    if path is None:
        check_shipped(shipped_model_path())
    return Predictor(load_checkpoint(shipped_model_path() if path is None else path))
