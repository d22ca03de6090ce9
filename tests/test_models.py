import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from digitcmp.models import (
    ACTIVATIONS,
    ARCHITECTURES,
    ModelOptions,
    create_model,
    exact_comparison_logits,
    get_architecture,
)

CASES = list(itertools.product(ARCHITECTURES, ACTIVATIONS, [True, False], ["lenet"])) + [
    (arch, "relu", True, "deep") for arch in ARCHITECTURES
]


@pytest.mark.parametrize("arch, activation, batch_norm, tower", CASES)
def test_contract_shapes_finite_and_every_parameter_learns(arch, activation, batch_norm, tower):
    torch.manual_seed(0)
    model = create_model(arch, ModelOptions(activation=activation, batch_norm=batch_norm, tower=tower))
    x = torch.randn(8, 2, 14, 14)
    cmp, digits = model(x)
    assert cmp.shape == (8, 2) and torch.isfinite(cmp).all()
    loss = F.cross_entropy(cmp, torch.randint(0, 2, (8,)))
    if get_architecture(arch).has_digit_logits:
        assert digits.shape == (8, 2, 10) and torch.isfinite(digits).all()
        loss = loss + F.cross_entropy(digits.flatten(0, 1), torch.randint(0, 10, (16,)))
    else:
        assert digits is None
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_siamese_has_one_towers_parameters():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    split, siamese = create_model("split_cnn"), create_model("siamese_cnn")
    compare = 20 * 2 + 2
    assert count(split) - compare == 2 * (count(siamese) - compare)
    assert len(siamese.towers) == 1


def test_siamese_applies_the_same_tower_to_both_digits():
    torch.manual_seed(0)
    model = create_model("siamese_cnn").eval()
    x = torch.randn(4, 2, 14, 14)
    swapped = x.flip(1)
    _, d = model(x)
    _, d_swapped = model(swapped)
    torch.testing.assert_close(d[:, 0], d_swapped[:, 1])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: fnn, cnn, split_cnn, siamese_cnn"):
        create_model("resnet")
    with pytest.raises(ValueError, match="valid: relu, leaky_relu, sigmoid"):
        ModelOptions(activation="tanh")


def test_exact_comparison_matches_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 10, dtype=torch.float64)
    p = logits.softmax(-1)
    brute = torch.tensor([sum(p[b, 0, i] * p[b, 1, j] for i in range(10) for j in range(10) if i <= j) for b in range(5)])
    out = exact_comparison_logits(logits).exp()
    torch.testing.assert_close(out[:, 1], brute.to(out.dtype))
    torch.testing.assert_close(out.sum(1), torch.ones(5, dtype=out.dtype))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_pool_before_activation_equals_activation_before_pool(activation):
    """The trunk pools before activating; for these monotone activations that is exact."""
    torch.manual_seed(0)
    x = torch.randn(6, 32, 12, 12, dtype=torch.float64, requires_grad=True)
    act = ACTIVATIONS[activation]()
    a = F.max_pool2d(act(x), 2)
    b = act(F.max_pool2d(x, 2))
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    (ga,) = torch.autograd.grad(a, x, g)
    (gb,) = torch.autograd.grad(b, x, g)
    assert torch.equal(ga, gb)


def test_options_change_the_layers():
    model = create_model("cnn", ModelOptions(batch_norm=False, activation="sigmoid", hidden=50))
    kinds = {type(m) for m in model.modules()}
    assert nn.Sigmoid in kinds and nn.BatchNorm2d not in kinds and nn.BatchNorm1d not in kinds
    assert model.head[0].out_features == 50
