"""The one training loop, for every architecture and for one seed or many seeds at once.

The loop sees a *stack* of S models (S = 1 for an ordinary run): a batch x[S, B, 2, 14, 14]
goes in, comparison logits [S, B, 2] and digit logits [S, B, 2, 10] (or None) come out. The
summed loss over seeds has, for each seed's parameters, exactly that seed's gradient, and SGD and
Adam act element-wise, so S seeds trained together follow the same arithmetic as S separate runs.
Errors are measured through the one inference path (inference.answer).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..common import interrupts
from .batches import BatchSampler, PairData, prepare_data
from .config import RunConfig
from .inference import AnswerSpec, ModelStack, SingleModel, answer, error_rates
from .models import Ensemble, create_model, prepare_model
from .records import EpochRecord, RunResult
from .seeds import derive_seed

# Called with each training step's per-seed losses [S].
StepCallback = Callable[[torch.Tensor], None]
# Called after each epoch with the epoch (from 1), the stack as it stands and its datas; it may raise to stop.
EpochCallback = Callable[[int, ModelStack, list[PairData]], None]


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


def _stacked_losses(cmp, digits, y, classes, config: RunConfig):
    """Per-seed losses [S]: main CE and the sum of the two digit CEs (zero without digit logits)."""
    S, B = y.shape
    ce = lambda logits, t: (
        F.cross_entropy(logits.flatten(0, 1), t.flatten(), reduction="none", label_smoothing=config.label_smoothing)
        .view(S, B)
        .mean(1)
    )
    main = ce(cmp, y)
    if digits is None:
        return main, torch.zeros_like(main)
    return main, ce(digits[:, :, 0], classes[..., 0]) + ce(digits[:, :, 1], classes[..., 1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WeightAverage:
    """An exponential moving average of a stack's weights and batch-norm statistics (config.ema),
    kept beside the live ones and copied into them when training ends."""

    def __init__(self, stack: ModelStack, decay: float):
        self.decay = decay
        self.live = stack.parameters() + stack.buffers()
        self.average = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def update(self) -> None:
        """Move the averages toward the live weights (after a step)."""
        for average, live in zip(self.average, self.live):
            if average.is_floating_point():
                average.lerp_(live, 1 - self.decay)
            else:  # a step counter
                average.copy_(live)

    @torch.no_grad()
    def apply(self) -> None:
        """Replace the live weights with the averages."""
        for average, live in zip(self.average, self.live):
            live.copy_(average)


class Stepper:
    """The optimizing half of the one training loop, for every net this package trains (the study's
    models through fit, the digit-ness detector through app/train_digitness.py): each step sets the
    scheduled rate ('constant': the optimizer's own; 'cosine': from it down to 0 over total_steps),
    backpropagates the loss, steps the optimizer and updates the weight average, if any. A Ctrl-C
    that Python swallowed (in a __del__) still stops the training here."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: str,
        total_steps: int,
        averager: WeightAverage | None = None,
    ):
        self.optimizer, self.schedule, self.total_steps = optimizer, schedule, total_steps
        self.lr = optimizer.defaults["lr"]  # the rate the schedule starts from
        self.averager = averager
        self.steps_done = 0

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on the (scalar) loss."""
        interrupts.check()
        if self.schedule == "cosine":
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * self.steps_done / self.total_steps))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.averager is not None:
            self.averager.update()
        self.steps_done += 1


def final_errors(stack: ModelStack, datas: list[PairData], specs: list[AnswerSpec]) -> dict[str, torch.Tensor]:
    """Train and evaluation errors [S] of a trained stack, answered as a checkpoint of it would answer."""
    stack = stack.for_eval()
    errors = {}
    for name, x, y in (
        ("train_error", [d.train_x for d in datas], [d.train_y for d in datas]),
        ("test_error", [d.eval_x for d in datas], [d.eval_y for d in datas]),
    ):
        p_le = answer(stack, torch.stack(x), specs, ready=True).p_le
        errors[name] = error_rates(p_le, torch.stack(y)).cpu()
    return errors


def fit(
    stack: ModelStack,
    datas: list[PairData],
    config: RunConfig,
    seeds: list[int],
    track_errors: bool = True,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[RunResult]:
    """Train the stack (one seed per model) and return one RunResult per seed; with track_errors,
    each epoch record holds the test error at the end of the epoch (the pairs alone).
    on_step, if given, is called with each step's per-seed losses [S]; on_epoch after each epoch
    with the epoch (from 1), the stack as it stands and the datas (tuning scores it to prune; it may raise to
    stop the training). With config.ema, the averaged weights replace the live ones at the end.
    """
    S = stack.n_seeds
    device = datas[0].train_x.device
    samplers = [BatchSampler(d, config, s) for d, s in zip(datas, seeds)]
    plain_specs = [AnswerSpec(d.mean, d.std) for d in datas]
    eval_x, eval_y = torch.stack([d.eval_x for d in datas]), torch.stack([d.eval_y for d in datas])
    averager = WeightAverage(stack, config.ema) if config.ema else None
    steps_per_epoch = math.ceil(datas[0].train_x.shape[0] / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    stepper = Stepper(make_optimizer(config, stack.parameters()), config.lr_schedule, total_steps, averager)
    history: list[list[EpochRecord]] = [[] for _ in range(S)]
    train_seconds = 0.0
    for epoch in range(config.epochs):
        _sync(device)
        started = time.perf_counter()
        stack.train(True)
        sums = torch.zeros(3, S, device=device, dtype=torch.float64)  # main loss, aux loss, wrong answers
        for batches in zip(*(sampler.epoch() for sampler in samplers)):
            x, y, classes = (torch.stack(parts) for parts in zip(*batches))  # [S, B, ...]
            cmp, digits = stack(x)
            main, aux = _stacked_losses(cmp, digits, y, classes, config)
            stepper.step((main + config.aux_weight * aux).sum())  # sum over seeds: each gets its own gradient
            wrong = (cmp.detach().argmax(-1) != y).sum(1)
            sums += torch.stack((main.detach(), aux.detach(), wrong)).double()
            if on_step is not None:
                on_step((main + config.aux_weight * aux).detach())
        _sync(device)
        train_seconds += time.perf_counter() - started
        means = (sums[:2] / steps_per_epoch).cpu()
        train_err = (sums[2] / datas[0].train_x.shape[0]).cpu()
        test_err = error_rates(answer(stack, eval_x, plain_specs).p_le, eval_y).cpu() if track_errors else None
        if on_epoch is not None:
            on_epoch(epoch + 1, stack, datas)
        for s in range(S):
            history[s].append(
                EpochRecord(
                    epoch=epoch + 1,
                    loss=means[0, s].item() + config.aux_weight * means[1, s].item(),
                    loss_main=means[0, s].item(),
                    loss_aux=means[1, s].item(),
                    train_error=train_err[s].item(),
                    test_error=None if test_err is None else test_err[s].item(),
                )
            )
    if averager is not None:
        averager.apply()
    specs = [AnswerSpec(d.mean, d.std, config.tta, seed) for d, seed in zip(datas, seeds)]
    errors = final_errors(stack, datas, specs)
    results = [
        RunResult(
            seed=seed,
            test_error=errors["test_error"][s].item(),
            train_error=errors["train_error"][s].item(),
            train_seconds=train_seconds / S,
            epochs=tuple(history[s]),
            input_mean=datas[s].mean,
            input_std=datas[s].std,
        )
        for s, seed in enumerate(seeds)
    ]
    # The evaluation pairs are the validation pairs in validation mode: the errors are named so.
    return [r.as_validation() for r in results] if config.validation else results


def train_run(
    config: RunConfig,
    seed: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    data_dir: str | os.PathLike | None = None,
    track_errors: bool = True,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[RunResult, nn.Module, PairData]:
    """Train one seed of config; returns (its RunResult, trained model, its data).

    With config.ensemble = K > 1, K models are trained on the seed's pairs (the first exactly as
    the single run, the others from other initializations and batch orders); the model returned
    is their models.Ensemble, and the errors are its answers' (the members' averaged probabilities).
    """
    dev = resolve_device(device)
    data = prepare_data(config, seed, data_dir).to(dev, dtype)
    members = [
        train_member(
            config,
            data,
            derive_seed(seed, "member", k),
            track_errors=track_errors,
            on_step=on_step,
            on_epoch=on_epoch if k == 0 else None,  # an ensemble reports its first member's curve
        )
        for k in range(config.ensemble)
    ]
    if config.ensemble == 1:
        return members[0][0], members[0][1], data
    ensemble = Ensemble([m for _, m in members])
    errors = final_errors(SingleModel(ensemble), [data], [AnswerSpec(data.mean, data.std, config.tta, seed)])
    result = _ensemble_result([r for r, _ in members], errors, data, seed)
    return (result.as_validation() if config.validation else result), ensemble, data


def train_member(
    config: RunConfig,
    data: PairData,
    member_seed: int,
    track_errors: bool = True,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[RunResult, nn.Module]:
    """Train one model of config on data (already on its device) from member_seed: its initial
    weights, batch order, augmentation and dropout masks; returns its result and the model in
    evaluation mode."""
    dev = data.train_x.device
    model = prepare_model(build_model(config, member_seed).to(dev, data.train_x.dtype), dev)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if dev.type == "cuda" else []):
        torch.manual_seed(member_seed)  # dropout masks, the only randomness drawn inside the model
        (result,) = fit(
            SingleModel(model),
            [data],
            config,
            [member_seed],
            track_errors=track_errors,
            on_step=on_step,
            on_epoch=on_epoch,
        )
    model.eval()
    return result, model


def _ensemble_result(members: list[RunResult], errors: dict[str, torch.Tensor], data: PairData, seed: int) -> RunResult:
    """The ensemble's result: its errors, the members' per-epoch records averaged, their training times summed."""
    epochs = []
    for records in zip(*(r.epochs for r in members)):
        merged = {"epoch": records[0].epoch}
        for f in fields(EpochRecord)[1:]:
            values = [getattr(rec, f.name) for rec in records]
            merged[f.name] = None if None in values else sum(values) / len(values)
        epochs.append(EpochRecord(**merged))
    return RunResult(
        seed=seed,
        test_error=errors["test_error"][0].item(),
        train_error=errors["train_error"][0].item(),
        train_seconds=sum(r.train_seconds for r in members),
        epochs=tuple(epochs),
        input_mean=data.mean,
        input_std=data.std,
        members_test_error=tuple(r.held_out_error for r in members),
    )
