"""One seed's pair data, and the training batches drawn from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .catalog import AUGMENTERS
from .config import RunConfig
from .data import draw_validation_pairs, generate_pair_sets
from .seeds import derive_seed


@dataclass
class PairData:
    """One seed's pairs, in raw pixels 0..255, and the training pairs' statistics that standardize
    every input of the run's models. The evaluation pairs are the test pairs, or in validation
    mode pairs of training digits that the training pairs do not use."""

    train_x: torch.Tensor  # [N, 2, 14, 14]
    train_y: torch.Tensor  # [N]
    train_classes: torch.Tensor  # [N, 2]
    eval_x: torch.Tensor  # [M, 2, 14, 14]
    eval_y: torch.Tensor  # [M]
    mean: float
    std: float

    def to(self, device: torch.device | str, dtype: torch.dtype) -> PairData:
        """The same pairs on device, inputs in dtype."""
        return PairData(
            self.train_x.to(device, dtype),
            self.train_y.to(device),
            self.train_classes.to(device),
            self.eval_x.to(device, dtype),
            self.eval_y.to(device),
            self.mean,
            self.std,
        )


def prepare_data(config: RunConfig, seed: int, data_dir: str | os.PathLike | None = None) -> PairData:
    """Draw the seed's pairs and the statistics of its training pairs."""
    if config.validation:
        # The run's own training pairs, scored on pairs of other training digits; no test pair is drawn.
        (train_x, train_y, train_cls), (test_x, test_y, _) = draw_validation_pairs(
            config.pairs, config.validation_pairs, seed, data_dir=data_dir
        )
    else:
        train_x, train_y, train_cls, test_x, test_y, _ = generate_pair_sets(
            config.pairs, seed, data_dir=data_dir, test_nb=config.test_pairs
        )
    return PairData(train_x, train_y, train_cls, test_x, test_y, train_x.mean().item(), train_x.std().item())


class BatchSampler:
    """Yields one seed's training batches, from a generator of its own."""

    def __init__(self, data: PairData, config: RunConfig, seed: int):
        self.data, self.config = data, config
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
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
        augmenter = AUGMENTERS[cfg.augment].function()
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            xb = x[idx]
            if augmenter is not None:
                xb = augmenter(xb, self.generator)
            yield (xb - d.mean) / d.std, y[idx], classes[idx]
