"""The one training loop, for every architecture and for one seed or many seeds at once.

The loop sees a *stack* of S models (S = 1 for an ordinary run): a batch x[S, B, 2, 14, 14]
goes in, comparison logits [S, B, 2] and digit logits [S, B, 2, 10] (or None) come out. The
summed loss over seeds has, for each seed's parameters, exactly that seed's gradient, and SGD and
Adam act element-wise, so S seeds trained together follow the same arithmetic as S separate runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig
from .data import generate_pair_sets
from .models import Ensemble, create_model
from .perf import fused_for_eval, prepare_model, tune_allocator

EVAL_CHUNK = 1000  # pairs per forward pass when measuring errors


class ModelStack(Protocol):
    """S models with the stacked contract x[S, B, 2, 14, 14] -> ([S, B, 2], [S, B, 2, 10] | None)."""

    n_seeds: int

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def parameters(self) -> list[torch.Tensor]: ...
    def train(self, mode: bool = True) -> None: ...
    def state_dict(self, index: int) -> dict[str, torch.Tensor]: ...
    def for_eval(self) -> ModelStack: ...


class SingleModel:
    """A plain nn.Module seen as a stack of one."""

    n_seeds = 1

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, x):
        cmp, digits = self.model(x[0])
        return cmp.unsqueeze(0), None if digits is None else digits.unsqueeze(0)

    def parameters(self):
        return list(self.model.parameters())

    def train(self, mode=True):
        self.model.train(mode)

    def state_dict(self, index=0):
        return self.model.state_dict()

    def for_eval(self):
        """An eval-mode stack computing the same function faster (batch norm folded on the CPU)."""
        device = next(self.model.parameters()).device
        if device.type == "cpu":
            return SingleModel(prepare_model(fused_for_eval(self.model), device))
        self.model.eval()
        return self


@dataclass
class PairData:
    """One seed's pairs: raw training pairs (standardized per batch, after augmentation) and a
    standardized evaluation set (the test pairs, or the validation pairs in validation mode)."""

    train_x: torch.Tensor  # [N, 2, 14, 14] raw pixels 0..255
    train_y: torch.Tensor  # [N]
    train_classes: torch.Tensor  # [N, 2]
    eval_x: torch.Tensor  # [M, 2, 14, 14] standardized
    eval_y: torch.Tensor  # [M]
    mean: float
    std: float

    def to(self, device, dtype) -> PairData:
        return PairData(
            self.train_x.to(device, dtype),
            self.train_y.to(device),
            self.train_classes.to(device),
            self.eval_x.to(device, dtype),
            self.eval_y.to(device),
            self.mean,
            self.std,
        )


def prepare_data(config: RunConfig, seed: int, data_dir=None) -> PairData:
    """Draw the seed's pairs and standardize with the training pairs' statistics."""
    train_x, train_y, train_cls, test_x, test_y, _ = generate_pair_sets(
        config.pairs, seed, data_dir=data_dir, test_nb=config.test_pairs
    )
    if config.validation:
        # Hold out the last 20 % of the training pairs; the test pairs are never looked at.
        n_fit = config.pairs - config.pairs // 5
        test_x, test_y = train_x[n_fit:], train_y[n_fit:]
        train_x, train_y, train_cls = train_x[:n_fit], train_y[:n_fit], train_cls[:n_fit]
    mean, std = train_x.mean().item(), train_x.std().item()
    return PairData(train_x, train_y, train_cls, (test_x - mean) / std, test_y, mean, std)


def build_model(config: RunConfig, seed: int) -> nn.Module:
    """The config's model with its initial parameters drawn from the seed alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(config.arch, config.model_options())


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda' or 'auto' (cuda when available); cuda without a GPU is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; valid here: cpu, auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, auto")
    return torch.device(device)


def make_optimizer(config: RunConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """SGD or Adam as configured (both element-wise, which keeps stacked seeds independent)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _affine_augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random small rotation (+-12 deg), scale (0.9-1.1) and shift (+-1.5 px) of each raw digit,
    all ranges multiplied by strength."""
    B = x.shape[0]
    digits = x.reshape(B * 2, 1, 14, 14)
    u = (torch.rand(B * 2, 4, generator=generator).to(x.device, x.dtype) * 2 - 1) * strength  # [-s, s)
    angle, scale = u[:, 0] * math.radians(12), 1 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (1.5 / 7)  # grid units: 7 pixels per unit on a 14-pixel side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(digits.shape), align_corners=False)
    return F.grid_sample(digits, grid, align_corners=False, padding_mode="zeros").view(B, 2, 14, 14)


class BatchSampler:
    """Yields one seed's training batches, from a generator of its own."""

    def __init__(self, data: PairData, config: RunConfig, seed: int):
        self.data, self.config = data, config
        self.generator = torch.Generator().manual_seed(seed + 7919)  # distinct from the pair draw

    def epoch(self):
        """Batches (x standardized [B, 2, 14, 14], target [B], classes [B, 2]) of one epoch."""
        d, cfg = self.data, self.config
        n = d.train_x.shape[0]
        if cfg.recombine:
            # A fresh pairing of the 2n labelled digits: targets follow from their classes.
            order = torch.randperm(2 * n, generator=self.generator).to(d.train_x.device)
            x = d.train_x.reshape(2 * n, 14, 14)[order].view(n, 2, 14, 14)
            classes = d.train_classes.reshape(2 * n)[order].view(n, 2)
            y = (classes[:, 0] <= classes[:, 1]).long()
        else:
            x, y, classes = d.train_x, d.train_y, d.train_classes
        perm = torch.randperm(n, generator=self.generator).to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            xb = x[idx]
            if cfg.augment == "affine":
                xb = _affine_augment(xb, self.generator)
            yield (xb - d.mean) / d.std, y[idx], classes[idx]


def _stacked_losses(cmp, digits, y, classes, config: RunConfig):
    """Per-seed losses [S]: main CE and the sum of the two digit CEs (zero without digit logits)."""
    S, B = y.shape
    ce = lambda logits, t: (
        F.cross_entropy(  # noqa: E731
            logits.flatten(0, 1), t.flatten(), reduction="none", label_smoothing=config.label_smoothing
        )
        .view(S, B)
        .mean(1)
    )
    main = ce(cmp, y)
    if digits is None:
        return main, torch.zeros_like(main)
    return main, ce(digits[:, :, 0], classes[..., 0]) + ce(digits[:, :, 1], classes[..., 1])


TTA_STRENGTH = 0.5  # test-time views are milder than the training augmentation


def tta_generator(seed: int) -> torch.Generator:
    """The generator that draws a run's test-time views (scoring and predict use the same)."""
    return torch.Generator().manual_seed(seed + 15485863)


def tta_view(raw_x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One test-time view of raw 0..255 pairs [B, 2, 14, 14]: a mild affine augmentation of the
    raw pixels (so that borders fill with background)."""
    return _affine_augment(raw_x, generator, TTA_STRENGTH)


@torch.no_grad()
def stack_probs(
    stack: ModelStack,
    x: torch.Tensor,
    views: int = 1,
    datas: list[PairData] | None = None,
    seeds: list[int] | None = None,
) -> torch.Tensor:
    """P(first <= second) [S, M] on standardized x[S, M, 2, 14, 14] (eval mode), averaged over
    `views`: the pairs themselves, then views - 1 augmented copies (these need each seed's data,
    for its normalization, and seed, for the generator that draws them)."""
    stack = stack.for_eval()
    total = torch.zeros(x.shape[:2], device=x.device, dtype=torch.float64)
    generators = [tta_generator(seed) for seed in seeds] if views > 1 else []
    for view in range(views):
        xv = x
        if view > 0:  # back to raw pixels for the view, then standardized again
            xv = torch.stack(
                [(tta_view(x[s] * d.std + d.mean, g) - d.mean) / d.std for s, (d, g) in enumerate(zip(datas, generators))]
            )
        for start in range(0, x.shape[1], EVAL_CHUNK):
            cmp, _ = stack(xv[:, start : start + EVAL_CHUNK])
            total[:, start : start + EVAL_CHUNK] += cmp.softmax(-1)[..., 1].double()
    return total / views


def error_rates(p_le: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction [..., ] of pairs whose answer (P(first <= second) > 0.5) misses the target, along the last dim."""
    return ((p_le > 0.5).long() != y).double().mean(-1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(
    stack: ModelStack,
    datas: list[PairData],
    config: RunConfig,
    seeds: list[int],
    track_errors: bool = True,
    on_step=None,
) -> list[dict]:
    """Train the stack (one seed per model) and return one result dict per seed.

    Each result has test_error and train_error (fractions, eval mode, after the last epoch),
    train_seconds (training alone, shared equally among the stacked seeds) and epochs: per-epoch
    records of the loss and its parts, the running train error of the epoch's batches (training
    mode, as the loss) and, with track_errors, the test error at the end of the epoch.
    on_step, if given, is called with each step's per-seed losses [S].
    """
    S = stack.n_seeds
    device = datas[0].train_x.device
    samplers = [BatchSampler(d, config, s) for d, s in zip(datas, seeds)]
    train_eval_x = torch.stack([(d.train_x - d.mean) / d.std for d in datas])  # [S, N, 2, 14, 14]
    train_eval_y = torch.stack([d.train_y for d in datas])
    eval_x, eval_y = torch.stack([d.eval_x for d in datas]), torch.stack([d.eval_y for d in datas])
    optimizer = make_optimizer(config, stack.parameters())
    steps_per_epoch = math.ceil(datas[0].train_x.shape[0] / config.batch_size)
    total_steps, step = config.epochs * steps_per_epoch, 0
    history: list[list[dict]] = [[] for _ in range(S)]
    train_seconds = 0.0
    for epoch in range(config.epochs):
        _sync(device)
        started = time.perf_counter()
        stack.train(True)
        sums = torch.zeros(3, S, device=device, dtype=torch.float64)  # main loss, aux loss, wrong answers
        for batches in zip(*(sampler.epoch() for sampler in samplers)):
            if config.lr_schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            x, y, classes = (torch.stack(parts) for parts in zip(*batches))  # [S, B, ...]
            cmp, digits = stack(x)
            main, aux = _stacked_losses(cmp, digits, y, classes, config)
            loss = (main + config.aux_weight * aux).sum()  # sum over seeds: each gets its own gradient
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            wrong = (cmp.detach().argmax(-1) != y).sum(1)
            sums += torch.stack((main.detach(), aux.detach(), wrong)).double()
            if on_step is not None:
                on_step((main + config.aux_weight * aux).detach())
            step += 1
        _sync(device)
        train_seconds += time.perf_counter() - started
        means = (sums[:2] / steps_per_epoch).cpu()
        train_err = (sums[2] / datas[0].train_x.shape[0]).cpu()
        test_err = error_rates(stack_probs(stack, eval_x), eval_y).cpu() if track_errors else None
        for s in range(S):
            history[s].append(
                {
                    "epoch": epoch + 1,
                    "loss": means[0, s].item() + config.aux_weight * means[1, s].item(),
                    "loss_main": means[0, s].item(),
                    "loss_aux": means[1, s].item(),
                    "train_error": train_err[s].item(),
                    "test_error": None if test_err is None else test_err[s].item(),
                }
            )
    final_train = error_rates(stack_probs(stack, train_eval_x, config.tta, datas, seeds), train_eval_y).cpu()
    final_test = error_rates(stack_probs(stack, eval_x, config.tta, datas, seeds), eval_y).cpu()
    return [
        {
            "seed": seed,
            "test_error": final_test[s].item(),
            "train_error": final_train[s].item(),
            "train_seconds": train_seconds / S,
            "epochs": history[s],
            "input_mean": datas[s].mean,  # the normalization a checkpoint of this run needs
            "input_std": datas[s].std,
        }
        for s, seed in enumerate(seeds)
    ]


def train_run(
    config: RunConfig,
    seed: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    data_dir=None,
    track_errors: bool = True,
    on_step=None,
) -> tuple[dict, nn.Module, PairData]:
    """Train one seed of config; returns (result dict, trained model, its data).

    With config.ensemble = K > 1, K models are trained on the seed's pairs (the first exactly as
    the single run, the others from other initializations and batch orders); the errors are those
    of their averaged probabilities, and the model returned is their models.Ensemble.
    """
    dev = resolve_device(device)
    tune_allocator()
    data = prepare_data(config, seed, data_dir).to(dev, dtype)
    members: list[tuple[dict, nn.Module]] = []
    for k in range(config.ensemble):
        member_seed = seed + k * 1_000_003
        model = prepare_model(build_model(config, member_seed).to(dev, dtype), dev)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if dev.type == "cuda" else []):
            torch.manual_seed(member_seed)  # dropout masks, the only randomness drawn inside the model
            (result,) = fit(SingleModel(model), [data], config, [member_seed], track_errors=track_errors, on_step=on_step)
        model.eval()
        members.append((result, model))
    if config.ensemble == 1:
        return members[0][0], members[0][1], data
    return _ensemble_result(members, data, config, seed), Ensemble([m for _, m in members]), data


def _ensemble_result(members: list[tuple[dict, nn.Module]], data: PairData, config: RunConfig, seed: int) -> dict:
    """Errors of the members' averaged probabilities; losses averaged, training times summed."""
    errors = {}
    train_x = ((data.train_x - data.mean) / data.std)[None]
    for name, x, y in (("train_error", train_x, data.train_y), ("test_error", data.eval_x[None], data.eval_y)):
        p = sum(stack_probs(SingleModel(m), x, config.tta, [data], [seed])[0] for _, m in members) / len(members)
        errors[name] = error_rates(p, y).item()
    epochs = []
    for records in zip(*(r["epochs"] for r, _ in members)):
        merged = {"epoch": records[0]["epoch"]}
        for key in ("loss", "loss_main", "loss_aux", "train_error", "test_error"):
            values = [rec[key] for rec in records]
            merged[key] = None if None in values else sum(values) / len(values)
        epochs.append(merged)
    return {
        "seed": seed,
        **errors,
        "train_seconds": sum(r["train_seconds"] for r, _ in members),
        "epochs": epochs,
        "members_test_error": [r["test_error"] for r, _ in members],
        "input_mean": data.mean,
        "input_std": data.std,
    }
