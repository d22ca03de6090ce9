"""Batched seeds: S seeds of one config trained as one computation, exactly like S separate runs.

Each seed's model is built exactly as a single run builds it (same seed, same initial weights);
the S parameter sets are stacked and torch.func.vmap runs one forward over all of them. The
training loop (train.fit) sums the per-seed losses, so each seed's parameters receive that seed's
gradient alone, and SGD and Adam update element-wise: the arithmetic is that of S independent
runs (tests/test_engine.py checks it in float64). On a GPU this turns hundreds of tiny kernels
per step into a few large ones; on a CPU it pays only for the fully connected net.
"""

from __future__ import annotations

import copy
import os

import torch
from torch.func import functional_call, stack_module_state, vmap

from .batches import prepare_data
from .catalog import ARCHITECTURES
from .config import RunConfig
from .models import prepare_model
from .records import RunResult
from .train import StepCallback, build_model, fit, resolve_device


class BatchedModels:
    """S models of one architecture with stacked parameters, under the stack contract of train.fit."""

    def __init__(self, models: list[torch.nn.Module], has_digit_logits: bool):
        self.n_seeds = len(models)
        params, buffers = stack_module_state(models)
        # stack_module_state returns leaves that require grad; they become the optimized tensors.
        self.params, self.buffers_by_name = params, buffers
        self.template = copy.deepcopy(models[0]).to("meta")  # structure only, no storage

        def one(p: dict, b: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            return functional_call(self.template, (p, b), (x,))

        # Models without digit heads return None there, which vmap must not try to batch.
        self._forward = vmap(one, in_dims=(0, 0, 0), out_dims=(0, 0 if has_digit_logits else None))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._forward(self.params, self.buffers_by_name, x)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def buffers(self) -> list[torch.Tensor]:
        return list(self.buffers_by_name.values())

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    def for_eval(self) -> BatchedModels:
        self.train(False)
        return self

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """One seed's weights and buffers, as its own model's state_dict would hold them."""
        state = {k: v[index].detach().clone() for k, v in self.params.items()}
        state.update({k: v[index].clone() for k, v in self.buffers_by_name.items()})
        return state


def supports_batching(config: RunConfig) -> bool:
    """Dropout draws masks inside the model, which vmap cannot draw as S separate runs would;
    an ensemble is several models per seed, trained one after the other."""
    return config.dropout == 0 and config.ensemble == 1


def pays_to_batch(config: RunConfig, device: torch.device) -> bool:
    """Where batching seeds was measured to be faster: every net on a GPU; on a CPU, the
    architectures whose catalog entry says so (the FNN)."""
    if not supports_batching(config):
        return False
    return device.type == "cuda" or ARCHITECTURES[config.arch].batches_seeds_on_cpu


def train_seeds(
    config: RunConfig,
    seeds: list[int],
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    data_dir: str | os.PathLike | None = None,
    track_errors: bool = True,
    on_step: StepCallback | None = None,
) -> tuple[list[RunResult], BatchedModels]:
    """Train the given seeds of config together; returns (one result per seed, the stack)."""
    if not supports_batching(config):
        raise ValueError("batched seeds need dropout 0 and ensemble 1; train these seeds one by one with train_run")
    dev = resolve_device(device)
    datas = [prepare_data(config, s, data_dir).to(dev, dtype) for s in seeds]
    models = [prepare_model(build_model(config, s).to(dev, dtype), dev) for s in seeds]
    stack = BatchedModels(models, config.has_digit_logits)
    results = fit(stack, datas, config, seeds, track_errors=track_errors, on_step=on_step)
    return results, stack
