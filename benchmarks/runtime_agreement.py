"""Today's answers (ONNX Runtime) against the torch path's (benchmarks/torch_path.py) on what the
robustness benchmark answers: MNIST test pairs (as tensors) and pairs of every image source (its
generators at its seed, read once, answered by both), plus its non-digits. Prints the largest
change of p_le and of any digit posterior, and how many decisions, digits and unsure flags differ
(issue 29's goal: p_le within 1e-5, nothing else different).

    python benchmarks/runtime_agreement.py [--seed 0] [--per-source 200] [--mnist-pairs 5000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def compare(ours: list[dict], theirs: list[dict]) -> dict:
    p = np.array([[a["p_le"], b["p_le"]] for a, b in zip(ours, theirs)])
    probs = [np.abs(np.array(a["digit_probs"]) - np.array(b["digit_probs"])).max() for a, b in zip(ours, theirs)]
    return {
        "pairs": len(ours),
        "max_p_le_change": float(np.abs(p[:, 0] - p[:, 1]).max()),
        "max_posterior_change": float(max(probs)),
        "decisions_differ": sum(a["le"] != b["le"] for a, b in zip(ours, theirs)),
        "digits_differ": sum(a["digits"] != b["digits"] for a, b in zip(ours, theirs)),
        "unsure_differ": sum(a["unsure"] != b["unsure"] for a, b in zip(ours, theirs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=200)
    parser.add_argument("--mnist-pairs", type=int, default=5000)
    args = parser.parse_args()
    import robustness
    from digitcmp import load_model
    from digitcmp.app.images import read_image_digit
    from digitcmp.app.synthetic import SCENES
    from digitcmp.core.data import generate_pair_sets
    from digitcmp.core.perf import configure_process
    from torch_path import torch_predictor

    configure_process(1)
    ours, theirs = load_model(), torch_predictor()
    rows = {}
    *_, x, _, _ = generate_pair_sets(10, 7, test_nb=args.mnist_pairs)
    rows["mnist test pairs (tensors)"] = compare(ours.predict(x), theirs.predict(x))
    rng = np.random.default_rng(args.seed)
    sources = {"handwriting (UCI)": robustness.uci_handwriting, "typeset": robustness.typeset,
               "pen strokes": robustness.pen_strokes, "small drawings": robustness.small_drawings,
               "photos and scans": robustness.simulated_photos}  # fmt: skip
    sources.update({scene: lambda r, s=scene: robustness.scene_source(s)(r, args.per_source) for scene in SCENES})
    sources["non-digits"] = lambda r: robustness.non_digit_images(r)
    for name, make in sources.items():
        images = make(rng)
        if not images:
            print(f"{name}: skipped (pip install scikit-learn)", file=sys.stderr)
            continue
        readings = [read_image_digit(data, "image") for data, _ in images]
        pairs = [(readings[i], readings[(i + 1) % len(readings)]) for i in range(len(readings))]
        x = np.stack([np.stack([a.digit, b.digit]) for a, b in pairs])
        labels = [f"pair {i}" for i in range(len(pairs))]
        rows[name] = compare(
            ours.compare(x, labels, [list(p) for p in pairs]), theirs.compare(x, labels, [list(p) for p in pairs])
        )
    print(f"{'source':<28} {'pairs':>6} {'max dp_le':>10} {'max dprob':>10} {'le':>3} {'digits':>6} {'unsure':>6}")
    for name, r in rows.items():
        print(f"{name:<28} {r['pairs']:>6} {r['max_p_le_change']:>10.1e} {r['max_posterior_change']:>10.1e} "
              f"{r['decisions_differ']:>3} {r['digits_differ']:>6} {r['unsure_differ']:>6}")  # fmt: skip
    worst = max(r["max_p_le_change"] for r in rows.values())
    differ = sum(r["decisions_differ"] + r["digits_differ"] + r["unsure_differ"] for r in rows.values())
    ok = worst <= 1e-5 and differ == 0
    print(
        f"goal: p_le within 1e-5 and no other change: largest {worst:.1e}, {differ} differences: {'met' if ok else 'missed'}"
    )


if __name__ == "__main__":
    main()
