"""The answer path as it was before issue 29, for the benchmarks to measure beside today's: the same
Predictor (the reader, the doubts, the server), with torch computing the model's and the
detector's answers (core.inference.answer, the one inference path that scores) instead of ONNX
Runtime. Importing this module imports torch, as every answer used to.

    python benchmarks/torch_path.py predict A.png B.png      # what `digitcmp predict` did, cold
    python benchmarks/torch_path.py serve [--port 0]     # what `digitcmp serve` did
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import numpy as np
import torch

from digitcmp.app.digitness import load_detector as load_torch_detector
from digitcmp.app.predict import Predictor, shipped_model_path
from digitcmp.app.runtime import UNSURE_BELOW
from digitcmp.core.checkpoint import load_checkpoint
from digitcmp.core.inference import SingleModel, answer
from digitcmp.core.models import prepare_model


class TorchComparison:
    """runtime.ComparisonSession's interface, answered by torch from a checkpoint."""

    def __init__(self, path: str | None = None):
        checkpoint = load_checkpoint(path or shipped_model_path())
        self.stack = SingleModel(prepare_model(checkpoint.model, torch.device("cpu"))).for_eval()
        self.spec = checkpoint.spec
        self.name = f"model {path or 'shipped'} (torch)"
        self.metadata = {
            "checkpoint_metadata": json.dumps(checkpoint.metadata),
            "test_time_views": str(self.spec.views),
            "unsure_below": repr(UNSURE_BELOW),
        }

    def answer(self, x: np.ndarray, progress: bool = False):
        got = answer(self.stack, torch.from_numpy(np.ascontiguousarray(x, np.float32))[None], [self.spec],
                     digits=True, ready=True, progress=progress)  # fmt: skip
        probs = None if got.digit_probs is None else got.digit_probs[0].double().numpy()
        return got.p_le[0].double().numpy(), probs


class TorchDetector:
    """runtime.DetectorSession's interface, answered by the torch detector."""

    def __init__(self):
        self.detector = load_torch_detector()
        self.threshold = self.detector.threshold

    def not_digit(self, x: np.ndarray) -> np.ndarray:
        return self.detector.not_digit(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def torch_predictor(path: str | None = None) -> Predictor:
    return Predictor(TorchComparison(path), TorchDetector())


def _serve(port: int) -> None:
    import uvicorn

    from digitcmp.app.http_guard import server_config
    from digitcmp.app.origin import served_hosts
    from digitcmp.app.server import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    app = create_app(torch_predictor(), model_name="deploy.safetensors (torch)", hosts=served_hosts("127.0.0.1", []))
    print(f"serving http://127.0.0.1:{port}/ (torch path); Ctrl-C stops", flush=True)
    try:
        uvicorn.Server(server_config(app)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict")
    predict.add_argument("images", nargs=2)
    serve = sub.add_parser("serve")
    serve.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from digitcmp.core.perf import configure_process

    configure_process(1)
    if args.command == "predict":
        (record,) = torch_predictor().predict(args.images)
        print(json.dumps(record))
    else:
        _serve(args.port)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
