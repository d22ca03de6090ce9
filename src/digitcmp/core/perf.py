"""CPU speed: process settings (set once, where a process starts) and faster equivalent forms of some layers."""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from ..common.host import tune_allocator

ONEDNN_LEVELS = (("avx512_core_amx", {"amx_tile", "avx512f"}), ("avx512_core", {"avx512f", "avx512bw"}),
                 ("avx2", {"avx2"}), ("sse41", {"sse4_1"}))  # fmt: skip


@lru_cache(maxsize=1)  # (the dispatch is fixed when torch is loaded)
def instruction_set() -> str:
    """The instruction sets this process computes with: ATen's kernels' (torch's dispatch, capped by
    ATEN_CPU_CAPABILITY) and oneDNN's (convolutions: the best the CPU has, capped by
    ONEDNN_MAX_CPU_ISA). Results are equal to the last digit only under the same ones."""
    from ..common.host import cpu_flags

    aten = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    names = [name for name, _ in ONEDNN_LEVELS]
    best = next((name for name, needs in ONEDNN_LEVELS if needs <= flags), "default")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower()
    if cap in names and best in names and names.index(cap) > names.index(best):
        best = cap  # (the list runs from the widest down)
    return f"ATen {aten}, oneDNN {best}"


def configure_process(threads: int = 1) -> None:
    """The settings every training process runs under, applied at its entry point (the CLI, a
    sweep worker, a benchmark): torch intra-op threads (1 is fastest for these small nets on a
    small CPU) and the allocator below."""
    torch.set_num_threads(threads)
    tune_allocator()


def can_fuse_conv_bn(conv: torch.nn.Module, norm: torch.nn.Module) -> bool:
    """Where conv_bn_train applies and pays: a bias-free 3x3 convolution (stride 1, no padding)
    of a one-channel image followed by batch norm with running statistics. (With two input
    channels it was measured no faster than the layers themselves.)"""
    return (
        isinstance(conv, torch.nn.Conv2d)
        and isinstance(norm, torch.nn.BatchNorm2d)
        and conv.in_channels == 1
        and conv.bias is None
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and norm.affine
        and norm.track_running_stats
    )


def conv_bn_train(conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """norm(conv(x)) in training mode (batch statistics, running statistics updated), for the
    layers can_fuse_conv_bn accepts; the result is channels_last.

    The same function computed with less memory traffic. The convolution is a matmul of the
    3x3 patches under every output pixel (P, one row per pixel) with the weights W, so the batch
    statistics follow from the patches' 9x9 covariance without a pass over the output:
    mean = mean(P) W and var = diag(W' cov(P) W). Batch norm then folds into the matmul
    (P (W * scale) + shift), and its backward becomes a few 9x32 operations instead of two
    passes over the 200 x 32 x 12 x 12 activations; the weight gradient is one P' dZ matmul,
    several times faster here than oneDNN's for one input channel. tests/test_models.py checks it
    against the layers in float64.
    """
    batch, _, height, width = x.shape
    out_h, out_w = height - 2, width - 2
    # patches_t[(i, j), (b, y, x)] = x[b, 0, y + i, x + j]: nine shifted views, copied once.
    patches_t = torch.stack([x[:, 0, i : i + out_h, j : j + out_w] for i in range(3) for j in range(3)]).view(9, -1)
    n = patches_t.shape[1]
    patch_mean = patches_t.mean(1)
    centered = patches_t - patch_mean[:, None]
    cov = centered @ centered.t() / n  # [9, 9]; the patches do not depend on the parameters
    weight = conv.weight.reshape(conv.out_channels, 9).t()  # [9, out]
    mean = patch_mean @ weight
    var = ((cov @ weight) * weight).sum(0)  # biased, as batch norm normalizes with
    scale = norm.weight * torch.rsqrt(var + norm.eps)
    shift = norm.bias - mean * scale
    # A contiguous [9, out] right factor keeps the weight gradient a fast (9 x n) @ (n x out) matmul.
    z = torch.addmm(shift, patches_t.t(), (weight * scale).contiguous())  # [n, out], rows (b, y, x)
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / norm.num_batches_tracked.item()
        norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        norm.running_var.mul_(1 - momentum).add_(var * (n / (n - 1)), alpha=momentum)  # unbiased, as batch norm keeps it
    return z.view(batch, out_h, out_w, conv.out_channels).permute(0, 3, 1, 2)


def fused_for_eval(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy with every batch norm folded into the convolution or linear layer
    before it (the same function, one pass over the activations fewer: batch norm was ~30 % of
    an evaluation's time on the CPU)."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        layers = list(module)
        for i in range(len(layers) - 1):
            first, second = layers[i], layers[i + 1]
            if isinstance(first, torch.nn.Conv2d) and isinstance(second, torch.nn.BatchNorm2d):
                module[i], module[i + 1] = fuse_conv_bn_eval(first, second), torch.nn.Identity()
            elif isinstance(first, torch.nn.Linear) and isinstance(second, torch.nn.BatchNorm1d):
                module[i], module[i + 1] = fuse_linear_bn_eval(first, second), torch.nn.Identity()
    return fused
