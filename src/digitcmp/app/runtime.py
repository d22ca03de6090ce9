"""The answering runtime: ONNX Runtime sessions of the graphs export.py writes, without torch.

torch trains and scores; answers (predict, the server, the page, digitcmp.load_model) come from
these sessions, as model servers do it: the comparison graph (raw pairs -> p_le and the digit
posteriors, its normalization and test-time views inside it) and the digit-ness detector (raw
digits -> P(not a digit)). An ONNX file is read like any file from elsewhere: its size bounded
before it is read, parsed from its bytes (so it cannot reach other files through external data),
its format, inputs and outputs checked before it is used.

One intra-op thread per session: the graphs are small, and a server answers several calls at once
on its cores (docs/performance.md). The CUDA provider is used where ONNX Runtime has one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

COMPARISON_FORMAT = "digitcmp-onnx-comparison-1"
DETECTOR_FORMAT = "digitcmp-onnx-digitness-1"
MAX_GRAPH_BYTES = 64 * 2**20  # the shipped comparison graph is about 2 MB
# An answer is unsure when either digit's most likely class has less posterior than this; written
# into each comparison graph's metadata at export, and read from there.
UNSURE_BELOW = 0.9
CHUNK = 1024  # inputs per call: a bounded working set (8 views x 2048 digits) for up to 500000 pairs


class GraphError(ValueError):
    """A file that cannot be used as a digitcmp ONNX graph, or a graph that answered nonsense."""


def providers() -> list[str]:
    """ONNX Runtime's CUDA provider where this installation has one, and the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Graph:
    """One exported graph in an ONNX Runtime session: `run(x)` answers in chunks of CHUNK inputs."""

    def __init__(self, source: str | os.PathLike | bytes, expected_format: str, name: str, threads: int = 1):
        import onnxruntime

        model = source if isinstance(source, bytes) else read_bounded(Path(source))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # ONNX Runtime's warnings are not the user's concern; errors are raised
        try:
            self.session = onnxruntime.InferenceSession(model, options, providers=providers())
        except Exception as err:  # ONNX Runtime's own error types for every kind of damage
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise GraphError(f"{name} is not a readable ONNX graph ({first})") from None
        self.name = name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != expected_format:
            raise GraphError(f"{name} is an ONNX file but not a digitcmp graph (no '{expected_format}' metadata)")
        self.outputs = [o.name for o in self.session.get_outputs()]
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != ["x"] or "float" not in inputs[0].type:
            raise GraphError(f"{name}: a digitcmp graph takes one float input x")

    def run(self, x: np.ndarray, progress: bool = False) -> list[np.ndarray]:
        """Each output for the inputs x (float32, batch first), every value checked finite; with
        progress, a bar when the inputs take more than a few chunks."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        starts = range(0, len(x), CHUNK)
        if progress and len(starts) > 4:
            from tqdm import tqdm

            starts = tqdm(starts, desc="answering", unit="chunk", leave=False)
        parts = [self.session.run(None, {"x": x[i : i + CHUNK]}) for i in starts]
        out = [np.concatenate([p[k] for p in parts]).astype(np.float64) for k in range(len(self.outputs))]
        if not all(np.isfinite(o).all() for o in out):
            raise GraphError(
                f"{self.name} answered with values that are not finite: its weights are damaged "
                "(export it again, or for the shipped model reinstall digitcmp)"
            )
        return out


def read_bounded(path: Path) -> bytes:
    """An ONNX graph's bytes, its size bounded before it is read."""
    if not path.is_file():
        raise GraphError(f"ONNX graph {path} does not exist or is not a file")
    size = path.stat().st_size
    if size > MAX_GRAPH_BYTES:
        raise GraphError(f"{path} is {size / 2**20:.0f} MiB; a digitcmp graph is at most {MAX_GRAPH_BYTES // 2**20} MiB")
    with open(path, "rb") as handle:
        return handle.read(MAX_GRAPH_BYTES + 1)


class ComparisonSession(Graph):
    """`answer(x)`: (p_le [N], digit posteriors [N, 2, 10] or None) of raw pairs x[N, 2, 14, 14]."""

    def __init__(self, source: str | os.PathLike | bytes, name: str):
        super().__init__(source, COMPARISON_FORMAT, name)
        if self.outputs not in (["p_le"], ["p_le", "digit_probs"]):
            raise GraphError(f"{name}: a comparison graph answers p_le (and digit_probs), not {self.outputs}")

    def answer(self, x: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """P(first <= second) [N] and the digit posteriors [N, 2, 10] (None without digit heads) of
        pairs x [N, 2, 14, 14]."""
        if len(x) == 0:
            return np.zeros(0), (np.zeros((0, 2, 10)) if len(self.outputs) == 2 else None)
        out = self.run(x, progress)
        return out[0], (out[1] if len(out) == 2 else None)


class DetectorSession(Graph):
    """`not_digit(x)`: which raw digits x[K, 14, 14] are not digits (P above the stored threshold)."""

    def __init__(self, source: str | os.PathLike | bytes, name: str):
        super().__init__(source, DETECTOR_FORMAT, name)
        try:
            self.threshold = float(self.metadata.get("threshold", "nan"))
        except ValueError:
            self.threshold = float("nan")
        if not 0.0 < self.threshold < 1.0:
            raise GraphError(f"{name}: its threshold must be a number in (0, 1)")

    def scores(self, x: np.ndarray) -> np.ndarray:
        """P(not a digit) [K] of raw digits x[K, 14, 14]."""
        return self.run(x)[0] if len(x) else np.zeros(0)

    def not_digit(self, x: np.ndarray) -> np.ndarray:
        """Per input [N, 14, 14]: whether it scores above the threshold (not one digit)."""
        return self.scores(x) > self.threshold
