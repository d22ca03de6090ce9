"""The batched-seeds engine is exactly S independent runs (float64, every architecture)."""

import pytest
import torch

from digitcmp.core.config import RunConfig
from digitcmp.core.engine import train_seeds
from digitcmp.core.models import ARCHITECTURES
from digitcmp.core.train import train_run

SEEDS = [0, 1, 2]
TINY = dict(pairs=60, test_pairs=50, epochs=2, batch_size=20, aux_weight=1.0)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_batched_seeds_equal_independent_runs(arch, optimizer, device):
    config = RunConfig(arch=arch, optimizer=optimizer, **TINY)
    single_steps, singles = [], []
    for seed in SEEDS:
        steps = []
        result, model, _ = train_run(
            config, seed, device=device, dtype=torch.float64, on_step=lambda v, st=steps: st.append(v.item())
        )
        single_steps.append(steps)
        singles.append((result, model.state_dict()))
    batched_steps = []
    results, stack = train_seeds(
        config, SEEDS, device=device, dtype=torch.float64, on_step=lambda v: batched_steps.append(v.tolist())
    )
    per_seed = list(zip(*batched_steps))  # [S][steps]
    for s in range(len(SEEDS)):
        assert len(per_seed[s]) == len(single_steps[s]) == 2 * 3
        for a, b in zip(per_seed[s], single_steps[s]):
            assert abs(a - b) <= 1e-9
        single_result, single_state = singles[s]
        assert results[s].test_error == single_result.test_error
        assert results[s].train_error == single_result.train_error
        batched_state = stack.state_dict(s)
        assert batched_state.keys() == single_state.keys()
        for key, value in single_state.items():  # weights and batch-norm running statistics
            torch.testing.assert_close(batched_state[key].cpu(), value.cpu(), rtol=0, atol=1e-9, msg=key)
