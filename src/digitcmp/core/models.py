"""The study's architectures, found by name in a registry, all under one contract.

Contract: a model maps a batch x[B, 2, 14, 14] (standardized pixels) to a pair
(comparison logits [B, 2], digit logits [B, 2, 10] or None). Class 1 of the comparison means
"first digit <= second digit". Weight sharing, batch norm, the activation and how the two digit
predictions are compared are constructor options, so the study's variants are rows of data.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn

from .catalog import ACTIVATIONS, ARCHITECTURES, COMPARISONS, TOWERS, Architecture, Tower, resolve
from .config import ModelOptions
from .perf import can_fuse_conv_bn, conv_bn_train

# Re-exported: the catalog's entries are declared in catalog.py (readable without torch); the
# code they name is here.
__all__ = ["ACTIVATIONS", "ARCHITECTURES", "COMPARISONS", "TOWERS", "Architecture", "ModelOptions", "Tower"]


def activation(opts: ModelOptions) -> type[nn.Module]:
    """The configured hidden activation's module class (catalog.ACTIVATIONS)."""
    return resolve(ACTIVATIONS[opts.activation])


# A bias right before batch norm is removed by it (its gradient is pure rounding noise, which
# Adam would amplify into random steps), so layers followed by batch norm have none.


def _norm_1d(width: int, opts: ModelOptions) -> nn.Module:
    return nn.BatchNorm1d(width) if opts.batch_norm else nn.Identity()


def _norm_2d(channels: int, opts: ModelOptions) -> nn.Module:
    return nn.BatchNorm2d(channels) if opts.batch_norm else nn.Identity()


class ConvTrunk(nn.Sequential):
    """The lenet trunk's layers, in order. With fuse_first_stage on, training computes the first
    conv -> batch norm as one equivalent step (perf.conv_bn_train); prepare_model turns it on
    where that was measured to pay. The layers and their state_dict are the same either way."""

    fuse_first_stage = False

    def can_fuse_first_stage(self) -> bool:
        """Whether the first conv -> batch norm has the form perf.conv_bn_train computes."""
        return can_fuse_conv_bn(self[0], self[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.fuse_first_stage and self.training):
            return super().forward(x)
        x = conv_bn_train(self[0], self[1], x)
        for layer in itertools.islice(self, 2, None):  # not self[2:], which builds a new module every step
            x = layer(x)
        return x


def lenet_trunk(in_channels: int, opts: ModelOptions) -> nn.Sequential:
    """The study's trunk: two 3x3 convs, 14 -> 12 -> pool 6 -> 4 -> pool 2.

    Each stage is conv -> batch norm -> activation -> 2x2 max-pool, written with the pool
    before the activation: every activation here is non-decreasing, so max(f(a), f(b)) equals
    f(max(a, b)) exactly (values and gradients), and the activation then touches 4x fewer
    elements, a large saving on a CPU.
    """
    c1, c2 = opts.channels
    act = activation(opts)
    bias = not opts.batch_norm
    return ConvTrunk(
        nn.Conv2d(in_channels, c1, kernel_size=3, bias=bias),  # 14 -> 12
        _norm_2d(c1, opts),
        nn.MaxPool2d(2),  # 12 -> 6
        act(),
        nn.Conv2d(c1, c2, kernel_size=3, bias=bias),  # 6 -> 4
        _norm_2d(c2, opts),
        nn.MaxPool2d(2),  # 4 -> 2
        act(),
        nn.Flatten(),  # c2 * 2 * 2
    )


def deep_trunk(in_channels: int, opts: ModelOptions) -> nn.Sequential:
    """Three padded 3x3 convs: 14 -> 14 -> 14 -> pool 7 -> 7 -> pool 3 (pool before activation, as lenet)."""
    c1, c2 = opts.channels
    act = activation(opts)
    bias = not opts.batch_norm
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size=3, padding=1, bias=bias),
        _norm_2d(c1, opts),
        act(),
        nn.Conv2d(c1, c1, kernel_size=3, padding=1, bias=bias),
        _norm_2d(c1, opts),
        nn.MaxPool2d(2),  # 14 -> 7
        act(),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1, bias=bias),
        _norm_2d(c2, opts),
        nn.MaxPool2d(2),  # 7 -> 3
        act(),
        nn.Flatten(),  # c2 * 3 * 3
    )


def conv_trunk(in_channels: int, opts: ModelOptions) -> nn.Sequential:
    """The configured tower's trunk (TOWERS)."""
    return TOWERS[opts.tower].builder()(in_channels, opts)


def trunk_width(opts: ModelOptions) -> int:
    """Features out of conv_trunk."""
    return opts.channels[1] * TOWERS[opts.tower].cells


def mlp_head(in_features: int, out_features: int, opts: ModelOptions) -> nn.Sequential:
    """One hidden fully connected layer, then the output layer."""
    return nn.Sequential(
        nn.Linear(in_features, opts.hidden, bias=not opts.batch_norm),
        _norm_1d(opts.hidden, opts),
        activation(opts)(),
        nn.Dropout(opts.dropout) if opts.dropout > 0 else nn.Identity(),
        nn.Linear(opts.hidden, out_features),
    )


class FNN(nn.Module):
    """Fully connected: the flattened pair (392 pixels) -> hidden -> 2."""

    def __init__(self, opts: ModelOptions):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), mlp_head(2 * 14 * 14, 2, opts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.net(x), None


class CNN(nn.Module):
    """LeNet-like CNN on the two-channel image (the pair as channels) -> 2."""

    def __init__(self, opts: ModelOptions):
        super().__init__()
        self.trunk = conv_trunk(2, opts)
        self.head = mlp_head(trunk_width(opts), 2, opts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.head(self.trunk(x)), None


def digit_tower(opts: ModelOptions) -> nn.Sequential:
    """One digit [B, 1, 14, 14] -> its 10 class logits."""
    return nn.Sequential(conv_trunk(1, opts), mlp_head(trunk_width(opts), 10, opts))


def exact_comparison_logits(digit_logits: torch.Tensor) -> torch.Tensor:
    """Comparison logits from digit logits [B, 2, 10]: log P(d1 > d2), log P(d1 <= d2).

    P(d1 <= d2) = sum_{i <= j} p1(i) p2(j), computed in log space for stability.
    """
    log_p = torch.log_softmax(digit_logits, dim=-1)
    joint = log_p[:, 0, :, None] + log_p[:, 1, None, :]  # [B, 10, 10], entry (i, j)
    le = torch.ones(10, 10, dtype=torch.bool, device=joint.device).triu()  # i <= j
    log_le = torch.logsumexp(joint.masked_fill(~le, float("-inf")).flatten(1), dim=1)
    log_gt = torch.logsumexp(joint.masked_fill(le, float("-inf")).flatten(1), dim=1)
    return torch.stack((log_gt, log_le), dim=1)  # [B, 2]


class PairNet(nn.Module):
    """Classify each digit with a tower, then compare the two predictions.

    share_weights=True is the Siamese net: both digits go through the same tower.
    """

    def __init__(self, opts: ModelOptions, share_weights: bool):
        super().__init__()
        self.share_weights = share_weights
        self.towers = nn.ModuleList([digit_tower(opts)] if share_weights else [digit_tower(opts), digit_tower(opts)])
        self.compare = nn.Linear(20, 2) if opts.comparison == "learned" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = x.shape[0]
        if self.share_weights:
            # Both digits in one batch through the one tower: [B*2, 1, 14, 14] -> [B, 2, 10].
            digits = self.towers[0](x.reshape(B * 2, 1, 14, 14)).view(B, 2, 10)
        else:
            digits = torch.stack([tower(x[:, i : i + 1]) for i, tower in enumerate(self.towers)], dim=1)
        if self.compare is None:
            return exact_comparison_logits(digits), digits
        return self.compare(digits.flatten(1)), digits


class Ensemble(nn.Module):
    """Several trained models answering as one, under the same contract: the average of their
    probabilities, returned as log-probabilities (valid logits, whose softmax is that average),
    for the comparison and for the digits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = [member(x) for member in self.members]
        log_k = math.log(len(outputs))

        def mean_probs(logits: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([lg.log_softmax(-1) for lg in logits]).logsumexp(0) - log_k

        digits = None if outputs[0][1] is None else mean_probs([d for _, d in outputs])
        return mean_probs([c for c, _ in outputs]), digits


def split_cnn(opts: ModelOptions) -> PairNet:
    """One tower per digit (catalog.ARCHITECTURES["split_cnn"])."""
    return PairNet(opts, share_weights=False)


def siamese_cnn(opts: ModelOptions) -> PairNet:
    """Both digits through one tower (catalog.ARCHITECTURES["siamese_cnn"])."""
    return PairNet(opts, share_weights=True)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model in its fastest form for the device, computing the same function. On the CPU:
    channels_last (oneDNN's convolutions and max-pooling are much faster in it), and the fused
    first stage in every lenet trunk that reads one image channel."""
    if device.type != "cpu":
        return model
    for module in model.modules():
        if isinstance(module, ConvTrunk):
            module.fuse_first_stage = module.can_fuse_first_stage()
    return model.to(memory_format=torch.channels_last)


def get_architecture(name: str) -> Architecture:
    """The registry entry for name; an unknown name is a ValueError listing the valid ones."""
    return ARCHITECTURES[name]


def create_model(name: str, opts: ModelOptions | None = None) -> nn.Module:
    """Build the architecture registered under name (parameters drawn from torch's global RNG)."""
    return get_architecture(name).builder()(opts or ModelOptions())
