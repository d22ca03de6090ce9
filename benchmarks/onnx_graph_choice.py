"""How the shipped model's answering graph was chosen (issue 29): the test-time views inside the
graph (fixed sampling grids, GridSample) against the views applied outside (a plain model graph
given all 8 views' digits at once: the least the views-outside design could cost, its view
sampling left out); one thread, alternating, one pair and 16 pairs per call. Prints ms per call,
median of --reps. (The opset is the dynamo exporter's own, 18: GridSample needs 16 or more, and
ONNX's version converter fails to lower this graph to 16 or 17.)

    python benchmarks/onnx_graph_choice.py [--reps 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np


def session(proto):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    args = parser.parse_args()
    import torch

    from digitcmp.app import export
    from digitcmp.app.predict import shipped_model_path
    from digitcmp.core.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(shipped_model_path())
    spec = checkpoint.spec
    example = torch.rand(3, 2, 14, 14) * 255
    inside = export.AnsweringGraph(checkpoint.model, spec)
    outside = export.AnsweringGraph(checkpoint.model, dataclasses.replace(spec, views=1))
    graphs = {  # name: (session, whether its input is every view's digits)
        "views inside": (session(export._graph_proto(inside, example, ["p_le", "digit_probs"], {})), False),
        "views outside (model only, 8x the digits)": (
            session(export._graph_proto(outside, example, ["p_le", "digit_probs"], {})),
            True,
        ),
    }
    rng = np.random.default_rng(0)
    print(f"{spec.views} views, one thread, median ms per call (n = {args.reps}):")
    for pairs in (1, 16):
        x = rng.uniform(0, 255, (pairs, 2, 14, 14)).astype(np.float32)
        inputs = {name: np.repeat(x, spec.views, 0) if outside else x for name, (_, outside) in graphs.items()}
        times = {name: [] for name in graphs}
        for _ in range(args.reps):
            for name, (s, _) in graphs.items():
                start = time.perf_counter()
                s.run(None, {"x": inputs[name]})
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            print(f"  {pairs:>2} pair(s), {name:<44} {1000 * np.median(t):.3f}")


if __name__ == "__main__":
    main()
