import copy
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from digitcmp.core.catalog import ACTIVATIONS, ARCHITECTURES, TOWERS
from digitcmp.core.models import (
    ConvTrunk,
    ModelOptions,
    activation,
    create_model,
    exact_comparison_logits,
    get_architecture,
    prepare_model,
)

# Every architecture with every activation, with and without batch norm, on the default tower;
# then every other tower under every architecture.
DEFAULT_TOWER = ModelOptions().tower
CASES = list(itertools.product(ARCHITECTURES, ACTIVATIONS, [True, False], [DEFAULT_TOWER])) + [
    (arch, "relu", True, tower) for arch in ARCHITECTURES for tower in TOWERS if tower != DEFAULT_TOWER
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
    count = lambda m: sum(p.numel() for p in m.parameters())
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
        create_model("no_such_name")
    with pytest.raises(ValueError, match="activation must be one of relu, leaky_relu, sigmoid"):
        ModelOptions(activation="tanh")


def test_exact_comparison_matches_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 10, dtype=torch.float64)
    p = logits.softmax(-1)
    brute = torch.tensor([sum(p[b, 0, i] * p[b, 1, j] for i in range(10) for j in range(10) if i <= j) for b in range(5)])
    out = exact_comparison_logits(logits).exp()
    torch.testing.assert_close(out[:, 1], brute.to(out.dtype))
    torch.testing.assert_close(out.sum(1), torch.ones(5, dtype=out.dtype))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_pool_before_activation_equals_activation_before_pool(name):
    """The trunk pools before activating; for these monotone activations that is exact."""
    torch.manual_seed(0)
    x = torch.randn(6, 32, 12, 12, dtype=torch.float64, requires_grad=True)
    act = activation(ModelOptions(activation=name))()
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


def _fused_and_plain(arch, **options):
    """Two float64 copies of one model on the CPU: prepared (fused first stages) and plain."""
    torch.manual_seed(0)
    plain = create_model(arch, ModelOptions(**options)).double()
    fused = prepare_model(copy.deepcopy(plain), torch.device("cpu"))
    return fused, plain


def test_prepare_model_fuses_only_one_channel_lenet_trunks_with_batch_norm():
    def fused_trunks(arch, **options):
        model = prepare_model(create_model(arch, ModelOptions(**options)), torch.device("cpu"))
        return [m.fuse_first_stage for m in model.modules() if isinstance(m, ConvTrunk)]

    assert fused_trunks("siamese_cnn") == [True]
    assert fused_trunks("split_cnn") == [True, True]
    assert fused_trunks("cnn") == [False]  # two input channels: measured no faster
    assert fused_trunks("siamese_cnn", batch_norm=False) == [False]
    assert fused_trunks("siamese_cnn", tower="deep") == []


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_fused_first_stage_trains_like_the_layers(activation):
    """Forward, every gradient and the running statistics agree with conv -> batch norm over a
    few SGD steps, with exact ties in the pooling (flat background) and a negative gamma."""
    fused, plain = _fused_and_plain("siamese_cnn", activation=activation)
    for model in (fused, plain):
        with torch.no_grad():
            model.towers[0][0][1].weight[:4] = -0.5  # negative scales flip the pooled maxima
        model.towers[0][0][1].momentum = None  # cumulative averages, the other update rule
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (fused, plain)]
    torch.manual_seed(1)
    for _ in range(3):
        x = torch.randn(16, 2, 14, 14, dtype=torch.float64)
        x[:, :, :5] = -0.42  # constant rows: many patches equal, so pooled values tie exactly
        target = torch.randint(0, 2, (16,))
        outputs = []
        for model, optimizer in zip((fused, plain), optimizers):
            cmp, digits = model(x)
            loss = F.cross_entropy(cmp, target) + digits.square().mean()
            optimizer.zero_grad()
            loss.backward()
            outputs.append((cmp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
            optimizer.step()
        (cmp_f, grads_f), (cmp_p, grads_p) = outputs
        torch.testing.assert_close(cmp_f, cmp_p, rtol=0, atol=1e-10)
        for name in grads_p:
            torch.testing.assert_close(grads_f[name], grads_p[name], rtol=0, atol=1e-10, msg=name)
    for (name, a), (_, b) in zip(fused.named_buffers(), plain.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    assert plain.towers[0][0].fuse_first_stage is False and fused.towers[0][0].fuse_first_stage is True


class _TinyTowerNet(nn.Module):
    """A new architecture as a user writes one: both digits through the configured tower."""

    def __init__(self, opts: ModelOptions):
        super().__init__()
        from digitcmp.core.models import conv_trunk, trunk_width

        self.tower = conv_trunk(1, opts)
        self.digits = nn.Linear(trunk_width(opts), 10)
        self.compare = nn.Linear(20, 2)

    def forward(self, x):
        B = x.shape[0]
        digits = self.digits(self.tower(x.reshape(B * 2, 1, 14, 14))).view(B, 2, 10)
        return self.compare(digits.flatten(1)), digits


def _tiny_trunk(in_channels: int, opts: ModelOptions) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, opts.channels[1], 14), nn.Flatten())


@pytest.fixture
def declared():
    """One architecture and one tower declared as the README says (one entry each), taken back after."""
    from digitcmp.core.catalog import Architecture, Tower

    ARCHITECTURES.register("tiny_towers", Architecture(_TinyTowerNet, True, "a test's own net", cost=2.0))
    TOWERS.register("one_conv", Tower(_tiny_trunk, 1, "a test's own trunk"))
    yield
    dict.pop(ARCHITECTURES, "tiny_towers")
    dict.pop(TOWERS, "one_conv")


def test_an_architecture_and_a_tower_declared_once_are_trained_scheduled_and_listed(declared, capsys):
    from digitcmp.cli import main
    from digitcmp.core.config import RunConfig
    from digitcmp.core.train import train_run
    from digitcmp.run.tasks import estimated_cost

    config = RunConfig(arch="tiny_towers", tower="one_conv", aux_weight=1.0, epochs=1, pairs=200, test_pairs=200)
    assert config.has_digit_logits
    result, model, _ = train_run(config, 0)
    assert isinstance(model, _TinyTowerNet) and isinstance(model.tower[0], nn.Conv2d)
    assert 0.0 <= result.test_error <= 1.0 and len(result.epochs) == 1
    assert estimated_cost(config) == 2.0 * estimated_cost(config.replace(arch="siamese_cnn")) / 8.0
    main(["list"])
    out = capsys.readouterr().out
    assert "tiny_towers" in out and "a test's own net" in out and "one_conv" in out
