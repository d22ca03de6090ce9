"""Where one training step of the Siamese aux net spends its time, stage by stage, on one CPU thread.

The step (100 pairs = 200 digit images through the shared tower, forward and backward) is cut
into the tower's stages; each stage is timed forward + backward on inputs of its real shape, with
the first stage both as plain layers and as digitcmp's fused computation (perf.conv_bn_train).
Variants alternate within each repetition and the table quotes medians; the matmul peak and the
FLOPs of each stage (torch.utils.flop_counter) are measured in the same run.

    python benchmarks/step_breakdown.py [--reps 5] [--iters 200]

Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from digitcmp.core.models import ModelOptions, create_model, prepare_model
from digitcmp.core.perf import configure_process
from digitcmp.testing.peak import matmul_gflops

PAIRS = 100


def _model(fused: bool) -> nn.Module:
    torch.manual_seed(0)
    model = prepare_model(create_model("siamese_cnn", ModelOptions()), torch.device("cpu"))
    for module in model.modules():
        if hasattr(module, "fuse_first_stage"):
            module.fuse_first_stage = fused and module.fuse_first_stage
    return model.train()


def build_variants() -> dict[str, tuple]:
    """label -> a function doing one forward + backward (+ update for the full steps)."""
    torch.manual_seed(1)
    x = torch.randn(PAIRS, 2, 14, 14)
    y, classes = torch.randint(0, 2, (PAIRS,)), torch.randint(0, 10, (PAIRS, 2))
    plain, fused = _model(False), _model(True)
    trunk = plain.towers[0][0]
    digits = x.reshape(2 * PAIRS, 1, 14, 14)
    cl = torch.channels_last
    # Slices of the trunk are trunks of their own sharing its layers, built once here.
    first_plain, rest = trunk[:4], trunk[4:]
    first_fused = trunk[:4]
    first_fused.fuse_first_stage = True  # the same layers through ConvTrunk's fused path
    stage2_in = first_plain(digits).detach().contiguous(memory_format=cl).requires_grad_()
    head_in = rest(stage2_in).detach().requires_grad_()
    stage1_grad = torch.randn_like(first_plain(digits))
    stage2_grad = torch.randn_like(head_in)

    def stage1(first_stage):
        def run():
            first_stage(digits).backward(stage1_grad)

        return run

    def stage2():
        rest(stage2_in).backward(stage2_grad)

    def head():
        d = plain.towers[0][1](head_in).view(PAIRS, 2, 10)
        cmp = plain.compare(d.flatten(1))
        loss = F.cross_entropy(cmp, y) + F.cross_entropy(d.flatten(0, 1), classes.flatten())
        loss.backward()

    def full_step(model, optimizer):
        def run():
            cmp, d = model(x)
            loss = F.cross_entropy(cmp, y) + F.cross_entropy(d.flatten(0, 1), classes.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    opt_plain, opt_fused = (torch.optim.SGD(m.parameters(), lr=0.01) for m in (plain, fused))
    return {
        "full step, plain first stage": full_step(plain, opt_plain),
        "full step, fused first stage": full_step(fused, opt_fused),
        "stage 1 (conv1 bn1 pool act), plain": stage1(first_plain),
        "stage 1, fused": stage1(first_fused),
        "stage 2 (conv2 bn2 pool act)": stage2,
        "head (fc, bn, fc, compare, losses)": head,
    }


def count_flops(run) -> float:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--iters", type=int, default=200, help="calls per timing")
    args = parser.parse_args()
    configure_process(1)
    variants = build_variants()
    flops = {label: count_flops(run) for label, run in variants.items()}
    samples: dict[str, list[float]] = {label: [] for label in variants}
    peaks = []
    for run in variants.values():  # warm-up: allocator, oneDNN primitive caches
        for _ in range(20):
            run()
    for _ in range(args.reps):
        peaks.append(matmul_gflops("cpu"))
        for label, run in variants.items():
            started = time.perf_counter()
            for _ in range(args.iters):
                run()
            samples[label].append((time.perf_counter() - started) / args.iters)
    peak = statistics.median(peaks)
    step = statistics.median(samples["full step, fused first stage"])
    print(f"one CPU thread, {PAIRS} pairs per step; medians of {args.reps} alternating repetitions of {args.iters} calls;")
    print(f"matmul peak measured in this run: {peak:.1f} GFLOP/s")
    print(f"{'part of a training step':<40}{'ms':>8}{'of step':>9}{'MFLOP':>8}{'GFLOP/s':>9}{'of peak':>9}")
    rows = {}
    for label, values in samples.items():
        ms = statistics.median(values) * 1e3
        gflops = flops[label] / (ms / 1e3) / 1e9
        rows[label] = {"ms": ms, "samples_ms": [v * 1e3 for v in values], "mflop": flops[label] / 1e6, "gflops": gflops}
        print(f"{label:<40}{ms:>8.3f}{ms / (step * 1e3):>9.0%}{flops[label] / 1e6:>8.1f}{gflops:>9.1f}{gflops / peak:>9.0%}")
    floor_ms = flops["full step, fused first stage"] / (peak * 1e9) * 1e3
    print(f"a step at the matmul peak would take {floor_ms:.2f} ms")
    print(json.dumps({"matmul_peak_gflops": peak, "step_floor_ms": floor_ms, "parts": rows}))


if __name__ == "__main__":
    main()
