"""How long one answer takes, today's path (ONNX Runtime, no torch) against the torch path it
replaced (benchmarks/torch_path.py), alternating in one run, with issue 29's goals:

- cold: `digitcmp predict a.png b.png` in a fresh process, against `python -c "import torch"` and
  the torch path's cold answer (goals: <= 0.5x of importing torch, <= 1.0 s on a quiet machine);
- in process, model loaded, one thread: one pair of 280x280 PNG files read and answered
  (goal: p50 <= 10 ms); the two paths' answers are compared too (p_le within 1e-5).

    python benchmarks/predict_latency.py [--cold-reps 7] [--reps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def pngs(folder: Path) -> list[Path]:
    """Two MNIST test digits drawn dark on white at 280x280, as a phone or a drawing pad gives them."""
    from digitcmp.core.data import load_mnist

    test = load_mnist("test")
    paths = []
    for i in range(2):
        paths.append(folder / f"{i}.png")
        Image.fromarray(255 - test.images[i]).resize((280, 280), Image.Resampling.BICUBIC).save(paths[-1])
    return paths


def cold(commands: dict[str, list[str]], reps: int) -> dict[str, np.ndarray]:
    """Wall seconds of each command in a fresh process, the commands alternating, rep after rep."""
    times = {name: [] for name in commands}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for command in commands.values():  # once each first: the files in the page cache
        subprocess.run(command, capture_output=True, check=True, env=env)
    for _ in range(reps):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, env=env)
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def in_process(paths: list[Path], reps: int) -> tuple[dict[str, np.ndarray], float]:
    """Milliseconds per answer of each path, alternating; and the largest difference of p_le."""
    sys.path.insert(0, str(HERE))
    from digitcmp import load_model
    from digitcmp.core.perf import configure_process
    from torch_path import torch_predictor

    configure_process(1)
    predictors = {"onnx runtime": load_model(), "torch": torch_predictor()}
    answers = {name: p.predict(paths)[0] for name, p in predictors.items()}
    for _ in range(10):  # warm-up
        for p in predictors.values():
            p.predict(paths)
    times = {name: [] for name in predictors}
    for _ in range(reps):
        for name, p in predictors.items():
            start = time.perf_counter()
            p.predict(paths)
            times[name].append(time.perf_counter() - start)
    change = abs(answers["onnx runtime"]["p_le"] - answers["torch"]["p_le"])
    return {name: 1000 * np.array(t) for name, t in times.items()}, change


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-reps", type=int, default=7)
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = map(str, pngs(Path(tmp)))
        commands = {
            "digitcmp predict (onnx runtime)": [sys.executable, "-m", "digitcmp", "predict", a, b],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "torch path predict": [sys.executable, str(HERE / "torch_path.py"), "predict", a, b],
        }
        walls = cold(commands, args.cold_reps)
        out = subprocess.run([sys.executable, "-m", "digitcmp", "predict", "--json", a, b],
                             capture_output=True, text=True, check=True)  # fmt: skip
        imports_torch = subprocess.run(
            [sys.executable, "-c", f"import sys; from digitcmp.cli import main; main(['predict', {a!r}, {b!r}]); "
             "print('torch' in sys.modules)"], capture_output=True, text=True, check=True,
        ).stdout.split()[-1]  # fmt: skip
        times, change = in_process([Path(a), Path(b)], args.reps)
    medians = {name: float(np.median(t)) for name, t in walls.items()}
    print(f"cold, a fresh process per answer, alternating, n = {args.cold_reps} each (median, min-max s):")
    for name, t in walls.items():
        print(f"  {name:<34} {np.median(t):.2f}  ({t.min():.2f}-{t.max():.2f})")
    ours, torch_import = medians["digitcmp predict (onnx runtime)"], medians["python -c 'import torch'"]
    ratio = ours / torch_import
    print(f"  answer: {json.loads(out.stdout)[0]['digits']}; torch imported by digitcmp predict: {imports_torch}")
    print(f"  goal: digitcmp predict <= 0.5x of importing torch: {ratio:.2f}x, {verdict(ratio <= 0.5)}")
    print(f"  goal: <= 1.0 s on a quiet machine: {ours:.2f} s, {verdict(ours <= 1.0)}")
    print(f"  before (the torch path, cold): {medians['torch path predict']:.2f} s; after/before "
          f"{ours / medians['torch path predict']:.2f}x")  # fmt: skip
    print(f"in process, one pair of 280x280 PNG files read and answered, 1 thread, alternating, n = {args.reps} each:")
    for name, t in times.items():
        print(f"  {name:<14} p50 {np.percentile(t, 50):.1f} ms, p99 {np.percentile(t, 99):.1f} ms")
    p50 = float(np.percentile(times["onnx runtime"], 50))
    print(f"  after/before (p50): {p50 / np.percentile(times['torch'], 50):.2f}x; |p_le change| {change:.1e}")
    print(f"  goal: p50 <= 10 ms: {p50:.1f} ms, {verdict(p50 <= 10.0)}")


if __name__ == "__main__":
    main()
