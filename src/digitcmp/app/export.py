"""A model and the digit-ness detector as ONNX files, for a runtime to answer with (answering without torch: runtime.py).

torch trains and scores; a serving runtime (ONNX Runtime) can answer from these files alone:
- the comparison graph takes raw pairs x[N, 2, 14, 14] (0..255) and returns p_le[N] and, for a
  model with digit heads, digit_probs[N, 2, 10]: standardized with the checkpoint's normalization
  and averaged over its fixed test-time views, all inside the graph, exactly as
  core.inference.answer computes them (tests/test_export.py holds the two to 1e-5);
- the detector graph takes raw digits x[K, 14, 14] and returns P(not a digit)[K].
Each file's metadata says what it was made from (the source file's SHA-256, the package version,
the checkpoint's own metadata: config and recorded errors) and what answering needs besides the
graph (the doubt thresholds; the normalization and views, for the record). runtime.py answers from
them without torch.

    digitcmp export [--model PATH] [--out DIR]

A checkpoint given to `predict --model` or `serve --model` is converted here once and kept in the
cache folder under its SHA-256 (answering_graph), so later answers need no torch at all.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common.version import __version__
from ..core.augment import affine_grids
from ..core.inference import AnswerSpec, view_maps
from .integrity import sha256_of
from .runtime import COMPARISON_FORMAT, DETECTOR_FORMAT, UNSURE_BELOW, read_bounded

OPSET = 18  # GridSample (the views) needs 16 or more; 18 is the exporter's own, measured no slower
CACHE_ENV = "DIGITCMP_CACHE_DIR"  # where converted checkpoints are kept (default ~/.cache/digitcmp)


class AnsweringGraph(nn.Module):
    """A comparison model with what answering adds: raw pairs -> (p_le, digit posteriors), the
    views' sampling grids fixed as constants (one per view and side, as answer() draws them)."""

    def __init__(self, model: nn.Module, spec: AnswerSpec):
        super().__init__()
        self.model, self.mean, self.std, self.views = model.eval(), spec.mean, spec.std, spec.views
        maps = view_maps(spec.seed, spec.views)  # [views - 1, 2, 4]
        grids = [affine_grids(maps[k]) for k in range(spec.views - 1)]  # each [2, 14, 14, 2]
        self.register_buffer("grids", torch.stack(grids) if grids else torch.zeros(0, 2, 14, 14, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[0]
        shown = [x]
        for k in range(self.views - 1):
            grid = self.grids[k][None].expand(n, 2, 14, 14, 2).reshape(n * 2, 14, 14, 2)
            digits = F.grid_sample(x.reshape(n * 2, 1, 14, 14), grid, align_corners=False, padding_mode="zeros")
            shown.append(digits.reshape(n, 2, 14, 14))
        cmp, digit_logits = self.model((torch.cat(shown) - self.mean) / self.std)  # view-major, as answer()
        p_le = cmp.softmax(-1)[:, 1].reshape(self.views, n).mean(0)
        if digit_logits is None:
            return (p_le,)
        return p_le, digit_logits.softmax(-1).reshape(self.views, n, 2, 10).mean(0)


class DetectorGraph(nn.Module):
    """The digit-ness net with its sigmoid: raw digits -> P(not a digit)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def _graph_proto(graph: nn.Module, example: torch.Tensor, outputs: list[str], metadata: dict[str, str]):
    """The graph traced (dynamo exporter, a dynamic batch size) into a checked ONNX ModelProto."""
    import onnx

    # The exporter's own chatter (operators of torchvision it skips, deprecations inside torch) is
    # not the user's concern: one line per written file is.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (example,),
                input_names=["x"],
                output_names=outputs,
                dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=2**20)}},
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def _write(proto, path: Path) -> None:
    import onnx

    from ..common.destinations import replace_file

    replace_file(path, lambda temporary: onnx.save(proto, temporary), "ONNX file")


def _comparison_proto(checkpoint, digest: str):
    """The checkpoint's comparison graph; digest: the SHA-256 of its file."""
    spec = checkpoint.spec
    graph = AnsweringGraph(checkpoint.model, spec)
    example = torch.rand(3, 2, 14, 14) * 255
    heads = len(graph(example)) == 2
    metadata = {
        "format": COMPARISON_FORMAT,
        "package_version": __version__,
        "source_sha256": digest,
        "arch": checkpoint.config.arch,
        "input_mean": repr(spec.mean),
        "input_std": repr(spec.std),
        "test_time_views": str(spec.views),
        "view_seed": str(spec.seed),
        "digit_heads": "true" if heads else "false",
        "unsure_below": repr(UNSURE_BELOW),
        "checkpoint_metadata": json.dumps(checkpoint.metadata, sort_keys=True),
    }
    return _graph_proto(graph, example, ["p_le", "digit_probs"] if heads else ["p_le"], metadata)


def export_model(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The checkpoint at model_path as an ONNX comparison graph at out; returns out."""
    from ..core.checkpoint import load_checkpoint

    _write(_comparison_proto(load_checkpoint(model_path), sha256_of(model_path)), Path(out))
    return Path(out)


def cache_folder() -> Path:
    """Where exported graphs are cached ($DIGITCMP_CACHE_DIR, else ~/.cache/digitcmp), under onnx/."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "digitcmp") / "onnx"


def answering_graph(model_path: str | os.PathLike) -> bytes:
    """The comparison graph of a checkpoint, as ONNX bytes: from the cache when this version
    converted the same file before, else converted now (the exporter traces the model, which takes
    seconds) and kept there. A cache that cannot be written only costs the next call the conversion
    again."""
    from ..core.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(model_path)  # checked (bounded, its tensors and config) before it is hashed
    digest = sha256_of(model_path)
    cached = cache_folder() / f"{digest}-{__version__}.onnx"
    if cached.is_file():
        return read_bounded(cached)  # and then checked as any ONNX file (runtime.Graph)
    proto = _comparison_proto(checkpoint, digest)
    data = proto.SerializeToString()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        _write(proto, cached)
    except OSError:
        pass
    return data


def export_detector(detector_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The digit-ness detector at detector_path as an ONNX graph at out, its threshold in the metadata."""
    from .digitness import load_detector

    detector = load_detector(detector_path)
    metadata = {
        "format": DETECTOR_FORMAT,
        "package_version": __version__,
        "source_sha256": sha256_of(detector_path),
        "threshold": repr(detector.threshold),
    }
    _write(_graph_proto(DetectorGraph(detector.net), torch.rand(3, 14, 14) * 255, ["p_not_digit"], metadata), Path(out))
    return Path(out)
