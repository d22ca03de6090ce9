"""Training speed: the straightforward loop against digitcmp's engine, measured side by side.

Every timing runs in a fresh subprocess (so allocator settings and caches of one variant never
help another), variants alternate within each repetition, and the table quotes medians. The
matmul peak is measured in the same run, on one thread, to put GFLOP/s in proportion.

    python benchmarks/speed.py [--reps 3] [--device cpu|cuda] [--seeds 10 200]

Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- child measurements


def _child_setup(device: str):
    import torch

    from digitcmp.core.perf import configure_process

    configure_process(1)  # one thread, the training allocator settings
    return torch


def measure_peak(device: str) -> dict:
    """float32 matmul GFLOP/s (1024^3 on one CPU thread, 8192^3 on a GPU)."""
    _child_setup(device)
    from digitcmp.testing.peak import matmul_gflops

    return {"gflops": matmul_gflops(device)}


def _siamese_config(epochs: int):
    from digitcmp.core.config import RunConfig

    return RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=epochs)


def measure_straightforward(device: str, epochs: int) -> dict:
    """The plain loop of benchmarks/straightforward.py on the same pairs, config and learning rate."""
    torch = _child_setup(device)
    from digitcmp.core.batches import prepare_data
    from straightforward import train_straightforward  # benchmarks/ is this child script's first path

    config = _siamese_config(epochs)
    data = prepare_data(config, 0)
    x = ((data.train_x - data.mean) / data.std).to(device)
    _, seconds = train_straightforward(
        x, data.train_y.to(device), data.train_classes.to(device), epochs=epochs, lr=config.lr, device=device
    )
    del torch
    return {"seconds": seconds}


def measure_engine(device: str, epochs: int, arch: str = "siamese_cnn", seeds: int = 1) -> dict:
    """digitcmp's loop: seeds=1 is one ordinary run, seeds>1 the batched engine (seconds per seed)."""
    _child_setup(device)
    from digitcmp.core.config import RunConfig
    from digitcmp.core.engine import train_seeds
    from digitcmp.core.train import train_run

    config = RunConfig(arch=arch, aux_weight=1.0 if arch != "fnn" else 0.0, epochs=epochs)
    if seeds == 1:
        result, _, _ = train_run(config, 0, device=device, track_errors=False)
        return {"seconds": result.train_seconds, "test_error": result.test_error}
    results, _ = train_seeds(config, list(range(seeds)), device=device, track_errors=False)
    return {"seconds": results[0].train_seconds, "test_error": statistics.mean(r.test_error for r in results)}


def measure_flops(arch: str, epochs: int) -> dict:
    """FLOPs of one run (forward + backward of every training step), counted by torch."""
    torch = _child_setup("cpu")
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from digitcmp.core.config import RunConfig
    from digitcmp.core.models import create_model

    config = RunConfig(arch=arch, aux_weight=1.0 if arch != "fnn" else 0.0, epochs=epochs)
    model = create_model(arch, config.model_options())
    x = torch.randn(config.batch_size, 2, 14, 14)
    with FlopCounterMode(display=False) as counter:
        cmp, digits = model(x)
        loss = F.cross_entropy(cmp, torch.zeros(config.batch_size, dtype=torch.long))
        if digits is not None:
            loss = loss + F.cross_entropy(digits.flatten(0, 1), torch.zeros(2 * config.batch_size, dtype=torch.long))
        loss.backward()
    steps = epochs * (config.pairs // config.batch_size)
    return {"gflop_per_run": counter.get_total_flops() * steps / 1e9}


CHILDREN = {
    "peak": measure_peak,
    "straightforward": measure_straightforward,
    "engine": measure_engine,
    "flops": measure_flops,
}


def run_child(name: str, **kwargs) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, __file__, "--child", name, "--kwargs", json.dumps(kwargs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each alternating comparison")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="batched seed counts (default: 10, and 200 on cuda)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](**json.loads(args.kwargs))))
        return

    dev, epochs = args.device, args.epochs
    seed_counts = args.seeds or ([10, 200] if dev == "cuda" else [10])
    flops = {arch: run_child("flops", arch=arch, epochs=epochs)["gflop_per_run"] for arch in ("siamese_cnn", "fnn")}
    samples: dict[str, list[float]] = {}
    peaks = []
    variants = {
        "straightforward loop (siamese)": ("straightforward", dict(device=dev, epochs=epochs)),
        "digitcmp, one run (siamese)": ("engine", dict(device=dev, epochs=epochs)),
        "digitcmp, one run (fnn)": ("engine", dict(device=dev, epochs=epochs, arch="fnn")),
    }
    for s in seed_counts:
        variants[f"digitcmp, batched x{s} (fnn)"] = ("engine", dict(device=dev, epochs=epochs, arch="fnn", seeds=s))
        if dev == "cuda":  # on a CPU, batching conv-net seeds was measured slower than one run at a time
            variants[f"digitcmp, batched x{s} (siamese)"] = ("engine", dict(device=dev, epochs=epochs, seeds=s))
    for rep in range(args.reps):
        peaks.append(run_child("peak", device=dev)["gflops"])
        for label, (child, kwargs) in variants.items():
            samples.setdefault(label, []).append(run_child(child, **kwargs)["seconds"])
            print(f"rep {rep + 1}/{args.reps} {label}: {samples[label][-1]:.3f} s", file=sys.stderr, flush=True)
    peak = statistics.median(peaks)
    base = statistics.median(samples["straightforward loop (siamese)"])
    print(f"\ndevice {dev}, {epochs} epochs, 1000 pairs, batch 100; medians of {args.reps} alternating repetitions,")
    print(f"each in a fresh process; matmul peak measured in this run: {peak:.1f} GFLOP/s")
    print(f"{'variant':<36}{'s per run per seed':>20}{'speed-up':>10}{'GFLOP/s':>10}{'of peak':>9}")
    rows = {}
    for label, values in samples.items():
        seconds = statistics.median(values)
        arch = "fnn" if "(fnn)" in label else "siamese_cnn"
        gflops = flops[arch] / seconds
        speedup = base / seconds if arch == "siamese_cnn" else None
        rows[label] = {"seconds": seconds, "samples": values, "gflops": gflops, "fraction_of_peak": gflops / peak}
        if speedup is not None:
            rows[label]["speedup_vs_straightforward"] = speedup
        shown = f"{speedup:.2f}x" if speedup is not None else "–"
        print(f"{label:<36}{seconds:>20.3f}{shown:>10}{gflops:>10.1f}{gflops / peak:>9.1%}")
    fnn_one = statistics.median(samples["digitcmp, one run (fnn)"])
    for s in seed_counts:
        print(f"fnn batched x{s} vs one run: {fnn_one / statistics.median(samples[f'digitcmp, batched x{s} (fnn)']):.2f}x")
    print(
        json.dumps(
            {
                "device": dev,
                "epochs": epochs,
                "reps": args.reps,
                "matmul_peak_gflops": peak,
                "gflop_per_run": flops,
                "variants": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
