"""Predictions on people's own digits (image files, arrays or tensors, read by sources.py),
answered by ONNX Runtime from the exported graph (runtime.py): torch is not imported here. The
graph answers as torch's one inference path scores (export.py; tests/test_export.py holds the two
to 1e-5): the same normalization, the same test-time views."""

from __future__ import annotations

import json
import os

import numpy as np

from ..core.records import recorded_errors
from .errors import InputError
from .images import BLANK, MIN_INK
from .integrity import check_shipped
from .prediction import Prediction
from .runtime import UNSURE_BELOW, ComparisonSession, DetectorSession, GraphError
from .sources import load_pairs

__all__ = ["InputError", "Prediction", "Predictor", "load_model", "shipped_model_path"]


SHIPPED_MODEL = "deploy.safetensors"  # src/digitcmp/app/shipped/; docs/model_card.md
SHIPPED_GRAPHS = {"model": "deploy.onnx", "detector": "digitness.onnx"}  # its ONNX copies (digitcmp export), beside it
NEAR_EMPTY_INK = 255.0 * 3  # a 14x14 digit with less ink than three full pixels holds no digit
SIDES = ("first digit", "second digit")  # what doubts call the two sides of an array's pair
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def shipped_model_path() -> str:
    """The model that ships inside the package (trained by `digitcmp train --preset deploy`)."""
    from importlib import resources

    return str(resources.files("digitcmp.app") / "shipped" / SHIPPED_MODEL)


def shipped_graph_path(which: str) -> str:
    """The shipped ONNX graph answering uses: which is "model" or "detector"."""
    from importlib import resources

    return str(resources.files("digitcmp.app") / "shipped" / SHIPPED_GRAPHS[which])


def _listing(digits: list[int]) -> str:
    return ", ".join(str(d) for d in digits[:-1]) + f" and {digits[-1]}"


class Predictor:
    """A trained model ready to compare digits: `predict(inputs)` returns one Prediction per pair.

    Built from an ONNX comparison graph and the digit-ness detector's graph. What the model was
    trained as (its config, recorded errors, notes) comes from the graph's metadata."""

    def __init__(self, comparison: ComparisonSession, detector: DetectorSession | None = None):
        self.comparison = comparison
        # Whether an input is a digit at all is judged apart from the model (digitness.py).
        self.detector = detector or load_detector()
        meta = comparison.metadata
        try:
            self.metadata = json.loads(meta.get("checkpoint_metadata") or "{}")
            self.config = json.loads(self.metadata.get("config") or "{}")
            self.unsure_below = float(meta.get("unsure_below", UNSURE_BELOW))
            self.views = int(meta.get("test_time_views", "1"))
        except (ValueError, TypeError, RecursionError, AttributeError):
            raise GraphError(f"{comparison.name}: damaged digitcmp metadata") from None
        if not (isinstance(self.metadata, dict) and isinstance(self.config, dict) and 0 < self.unsure_below <= 1):
            raise GraphError(f"{comparison.name}: damaged digitcmp metadata")

    @property
    def recorded_errors(self) -> dict[str, float]:
        """The final errors written at training, as the checkpoint recorded them."""
        return recorded_errors(self.metadata)

    def predict(self, inputs: object, progress: bool = False) -> list[Prediction]:
        """Each pair's answer (prediction.Prediction): le (first <= second), p_le, unsure and doubt,
        and, with digit heads, digits and digit_probs. unsure (for every model): either digit's most
        likely class below UNSURE_BELOW, or a side that is not one digit (not a digit at all, two
        digits or more, blank, a mark beside it); then doubt says why, side by side.

        The answer is the one scoring gave (inference.answer): a model trained with test-time
        augmentation averages the pair and its views, drawn as at scoring, so the same inputs
        always get the same answer.
        """
        return self.compare(*load_pairs(inputs), progress=progress)

    def read_digits(self, digits: np.ndarray) -> np.ndarray:
        """Digit posteriors [K, 10] of single digits [K, 14, 14] (each read as a pair with itself)."""
        _, probs = self.comparison.answer(np.stack([digits, digits], axis=1))
        return probs[:, 0] if probs is not None else np.zeros((len(digits), 10))

    def compare(
        self, x: np.ndarray, labels: list[str], readings: list | None = None, progress: bool = False
    ) -> list[Prediction]:
        """predict() for pairs already read: x [N, 2, 14, 14] raw 0..255 (checked by arrays.py),
        a label per pair, and per pair the two images' images.DigitReading (None for arrays)."""
        readings = readings if readings is not None else [None] * x.shape[0]
        p_le, digit_probs = self.comparison.answer(x, progress=progress)
        # Whether each side is one digit at all is judged for every model, with digit heads or not:
        # the detector, the image reader's glyphs and the blank check need no digit logits.
        not_digit = self.detector.not_digit(x.reshape(-1, 14, 14)).reshape(-1, 2)
        glyph_reads = self._glyph_reads(readings, digit_probs is not None)
        out = []
        for i, label in enumerate(labels):
            probs = digit_probs[i] if digit_probs is not None else None
            doubts = []
            for side in range(2):
                reading = readings[i][side] if readings[i] is not None else None
                name = reading.name if reading is not None else SIDES[side]
                side_probs = probs[side] if probs is not None else None
                doubt = self._doubt(x[i, side], side_probs, bool(not_digit[i, side]), reading, glyph_reads.get((i, side)))
                if doubt:
                    doubts.append(f"{name}: {doubt}")
            # A posterior under the doubt threshold always comes with a doubt, so the doubts decide.
            out.append(
                Prediction(
                    input=label,
                    le=bool(p_le[i] > 0.5),
                    p_le=float(p_le[i]),
                    digits=None if probs is None else [int(d) for d in probs.argmax(-1)],
                    digit_probs=None if probs is None else [[round(float(p), 6) for p in row] for row in probs],
                    unsure=bool(doubts),
                    doubt="; ".join(doubts) or None,
                )
            )
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
        stacked = np.stack(glyphs)
        read = self.read_digits(stacked).argmax(-1) if with_digits else None
        not_digit = self.detector.not_digit(stacked)
        out, start = {}, 0
        for i, side, count in where:
            out[(i, side)] = (None if read is None else read[start : start + count], not_digit[start : start + count])
            start += count
        return out

    def _doubt(self, digit: np.ndarray, probs: np.ndarray | None, not_digit: bool, reading, glyphs) -> str | None:
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
        if probs is not None and float(probs.max()) < self.unsure_below:
            second, first = (int(d) for d in np.argsort(probs, kind="stable")[-2:])
            return f"reads as {first} or {second}"
        return None


def load_detector(path: str | os.PathLike | None = None) -> DetectorSession:
    """The digit-ness detector's graph (by default the shipped one, checked by its SHA-256)."""
    if path is None:
        path = shipped_graph_path("detector")
        check_shipped(path)
    return DetectorSession(path, f"digit-ness detector {os.fspath(path)}")


def load_model(path: str | os.PathLike | None = None) -> Predictor:
    """A Predictor: without a path, the model shipped inside the package; an .onnx file written by
    `digitcmp export`; or a checkpoint written by `digitcmp train --save` (converted to a graph
    once, which needs torch: export.answering_graph)."""
    if path is None:
        graph = shipped_graph_path("model")
        check_shipped(graph)
        return Predictor(ComparisonSession(graph, "the shipped model"))
    if not isinstance(path, (str, os.PathLike)):
        raise GraphError(f"a model path must be a string or path, got {type(path).__name__}")
    if os.fspath(path).lower().endswith(".onnx"):
        return Predictor(ComparisonSession(path, f"model {os.fspath(path)}"))
    from .export import answering_graph

    return Predictor(ComparisonSession(answering_graph(path), f"model {os.fspath(path)}"))
