"""How often predictions on image files agree with predictions on the same digits as tensors.

Trains one model (or loads --model), draws pairs of MNIST *test* digits, writes each digit as an
image file in several styles (as is; inverted and enlarged; RGB on a larger canvas; RGBA with the
ink in alpha; JPEG on a wide light canvas), and compares `predict` on the files with `predict` on
the pooled tensors that generate_pair_sets would give.

    python benchmarks/predict_agreement.py [--pairs 500] [--model m.safetensors]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from digitcmp import load_model
from digitcmp.core.checkpoint import save_checkpoint
from digitcmp.core.config import RunConfig
from digitcmp.core.data import load_mnist
from digitcmp.core.train import train_run

STYLES = {
    "grayscale 28x28, as MNIST": lambda a: Image.fromarray(a),
    "dark on light, 84x84": lambda a: Image.fromarray(255 - a).resize((84, 84), Image.Resampling.BICUBIC),
    "RGB, padded, 136x136": lambda a: Image.merge("RGB", [Image.fromarray(np.pad(a, 20))] * 3).resize((136, 136)),
    "RGBA, ink in alpha, 56x56": lambda a: Image.merge(
        "RGBA", [Image.new("L", (28, 28), 0)] * 3 + [Image.fromarray(a)]
    ).resize((56, 56)),
    "JPEG, dark on light, wide canvas": lambda a: Image.fromarray(np.pad(255 - a, ((5, 5), (40, 10)), constant_values=255)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--model", default=None, help="checkpoint (default: train the Siamese aux net, seed 0)")
    args = parser.parse_args()
    from digitcmp.core.perf import configure_process

    configure_process(1)  # one thread, the training allocator settings
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path = args.model
        if model_path is None:
            config = RunConfig(arch="siamese_cnn", aux_weight=1.0)
            result, model, data = train_run(config, 0)
            model_path = folder / "m.safetensors"
            save_checkpoint(model_path, model.state_dict(), config, data.mean, data.std, result)
        predictor = load_model(model_path)
        test = load_mnist("test")
        idx = np.random.default_rng(1).choice(len(test.labels), size=(args.pairs, 2), replace=False)
        pooled = F.avg_pool2d(torch.from_numpy(test.images[idx.flatten()]).float()[:, None], 2)
        reference = predictor.predict(pooled.view(args.pairs, 2, 14, 14))
        truth = [int(a <= b) for a, b in test.labels[idx]]
        figures = {"pairs": args.pairs, "tensor_accuracy": float(np.mean([r["le"] == t for r, t in zip(reference, truth)]))}
        print(f"{args.pairs} pairs of MNIST test digits; comparison accuracy on tensors: {figures['tensor_accuracy']:.1%}")
        print(f"{'style':<34}{'same answer':>12}{'same digits':>12}{'accuracy':>10}")
        for style, render in STYLES.items():
            paths = []
            for k, i in enumerate(idx.flatten()):
                path = folder / f"{k}.{'jpg' if 'JPEG' in style else 'png'}"
                render(test.images[i]).save(path)
                paths.append(path)
            got = predictor.predict(paths)
            same = float(np.mean([g["le"] == r["le"] for g, r in zip(got, reference)]))
            digits = float(np.mean([g["digits"] == r["digits"] for g, r in zip(got, reference)]))
            acc = float(np.mean([g["le"] == t for g, t in zip(got, truth)]))
            figures[style] = {"same_answer": same, "same_digits": digits, "accuracy": acc}
            print(f"{style:<34}{same:>12.1%}{digits:>12.1%}{acc:>10.1%}")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
