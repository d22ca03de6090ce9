import json

import pytest
import torch

from digitcmp.core import data as data_module
from digitcmp.core.batches import prepare_data
from digitcmp.core.config import DEFAULT_LR, RunConfig
from digitcmp.core.inference import SingleModel
from digitcmp.core.train import Stepper, WeightAverage, build_model, train_run
from digitcmp.study.experiments import PRESETS

TINY = dict(pairs=200, test_pairs=200, epochs=4, batch_size=50)


def test_a_tiny_run_learns():
    config = RunConfig(arch="siamese_cnn", aux_weight=1.0, **TINY)
    result, _, _ = train_run(config, 0)
    losses = [e.loss for e in result.epochs]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]
    assert result.train_error < 0.2 and result.test_error < 0.35  # chance is ~0.45
    assert result.train_seconds > 0
    assert result.epochs[-1].test_error == pytest.approx(result.test_error)


@pytest.mark.parametrize("arch", ["fnn", "split_cnn"])
def test_same_seed_same_numbers(arch):
    config = RunConfig(arch=arch, aux_weight=1.0, optimizer="adam", **TINY)
    a, model_a, _ = train_run(config, 3)
    b, model_b, _ = train_run(config, 3)
    c, _, _ = train_run(config, 4)
    strip = lambda r: list(r.epochs)
    assert strip(a) == strip(b) and a.test_error == b.test_error
    for (k, va), vb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert strip(a) != strip(c)


def test_aux_loss_is_part_of_the_loss_only_when_weighted():
    base = RunConfig(arch="siamese_cnn", **TINY, aux_weight=0.0)
    r0, _, _ = train_run(base.replace(epochs=1), 0)
    r1, _, _ = train_run(base.replace(epochs=1, aux_weight=1.0), 0)
    e0, e1 = r0.epochs[0], r1.epochs[0]
    assert e0.loss == pytest.approx(e0.loss_main) and e0.loss_aux > 0
    assert e1.loss == pytest.approx(e1.loss_main + e1.loss_aux)


def _image_keys(x: torch.Tensor) -> set[bytes]:
    """Each single digit of pairs [N, 2, 14, 14] as bytes (MNIST's digits are distinct images)."""
    return {img.numpy().tobytes() for img in x.reshape(-1, 14, 14)}


@pytest.mark.parametrize("seed, pairs, validation_pairs", [(0, 1000, 10000), (7, 300, 2500), (123, 1000, 29000)])
def test_validation_pairs_are_other_training_digits_drawn_per_seed(monkeypatch, seed, pairs, validation_pairs):
    config = RunConfig(pairs=pairs, validation=True, validation_pairs=validation_pairs)
    loaded = data_module.load_mnist
    opened = []

    def only_training(split, *args, **kwargs):
        opened.append(split)
        assert split == "train", "validation mode opened MNIST's test split"
        return loaded(split, *args, **kwargs)

    monkeypatch.setattr(data_module, "load_mnist", only_training)
    data = prepare_data(config, seed)
    assert set(opened) == {"train"}
    monkeypatch.undo()
    reported = prepare_data(config.replace(validation=False), seed)  # the same seed's run under the study's protocol
    assert torch.equal(data.train_x, reported.train_x) and torch.equal(data.train_y, reported.train_y)  # training unchanged
    assert data.eval_x.shape[0] == validation_pairs
    train_digits, validation_digits = _image_keys(data.train_x), _image_keys(data.eval_x)
    assert len(validation_digits) == 2 * validation_pairs  # distinct digits
    assert not train_digits & validation_digits  # none of the run's own training digits
    assert torch.equal(prepare_data(config, seed).eval_x, data.eval_x)  # a fixed draw per seed
    assert not torch.equal(prepare_data(config, seed + 1).eval_x[:50], data.eval_x[:50])


def test_validation_pairs_beyond_the_training_split_are_refused():
    with pytest.raises(ValueError, match="training and validation pairs need"):
        RunConfig(pairs=20000, validation=True, validation_pairs=10001)
    RunConfig(pairs=20000, validation=True, validation_pairs=10000)  # 60000 digits in all: fits


def test_added_fields_at_their_default_keep_every_stored_identity():
    # Identities of configs stored before ema and validation_pairs were declared (printed by
    # `digitcmp train --json` at commit 6c982ec): stored runs must keep them.
    assert RunConfig(**PRESETS["hand_picked"]).config_hash() == "59ecf79776084b2a"  # the 'best' of that commit
    assert RunConfig(**PRESETS["hand_picked"]).replace(ema=0.99).config_hash() != "59ecf79776084b2a"


def test_weight_averaging_scores_the_averaged_weights():
    config = RunConfig(arch="cnn", pairs=100, epochs=2, batch_size=50)
    model = build_model(config, 0)
    stack = SingleModel(model)
    average = WeightAverage(stack, 0.9)
    before = [t.clone() for t in stack.parameters()]
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(1.0)
    average.update()
    for avg, old in zip(average.average[: len(before)], before):
        assert torch.allclose(avg, 0.9 * old + 0.1 * (old + 1.0))
    average.apply()
    assert all(torch.allclose(p, a) for p, a in zip(stack.parameters(), average.average))
    plain, _, _ = train_run(config, 0, track_errors=False)
    averaged, _, _ = train_run(config.replace(ema=0.9), 0, track_errors=False)
    assert plain.epochs[-1].loss == averaged.epochs[-1].loss  # training itself is unchanged
    assert plain.test_error != averaged.test_error or plain.train_error != averaged.train_error


def test_inputs_standardized_with_training_statistics():
    data = prepare_data(RunConfig(pairs=100, test_pairs=100), 0)
    assert data.mean == pytest.approx(data.train_x.mean().item())
    assert data.mean > 20 and data.std > 50  # raw pixel scale: statistics of 0..255 values
    assert abs(((data.eval_x - data.mean) / data.std).mean().item()) < 0.2


def test_config_validation_and_defaults():
    assert RunConfig(optimizer="adam").lr == DEFAULT_LR["adam"]
    assert RunConfig().replace(optimizer="adam").lr == DEFAULT_LR["adam"]
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        RunConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"epochs must be an integer in \[1, 10000\], got 0"):
        RunConfig(epochs=0)
    with pytest.raises(ValueError, match=r"lr must be a number in \(0, 10\]"):
        RunConfig(lr=-1.0)
    with pytest.raises(ValueError, match="pairs must be an integer"):
        RunConfig(pairs=40000)
    for bad in (float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="lr must be"):
            RunConfig(lr=bad)
    assert RunConfig(lr=1).lr == 1.0 and isinstance(RunConfig(lr=1).lr, float)
    assert RunConfig().config_hash() == RunConfig(lr=DEFAULT_LR["sgd"]).config_hash()
    assert RunConfig().config_hash() != RunConfig(aux_weight=1.0).config_hash()
    assert RunConfig.from_dict(RunConfig(arch="cnn").to_dict()) == RunConfig(arch="cnn")
    with pytest.raises(ValueError, match="unknown run-config field"):
        RunConfig.from_dict({"archh": "cnn"})


def test_recombined_epochs_reuse_every_labelled_digit_with_true_targets():
    from digitcmp.core.batches import BatchSampler

    config = RunConfig(pairs=100, test_pairs=10, batch_size=30, recombine=True)
    data = prepare_data(config, 0)
    batches = list(BatchSampler(data, config, 0).epoch())
    classes = torch.cat([c for _, _, c in batches])
    targets = torch.cat([y for _, y, _ in batches])
    assert torch.equal(targets, (classes[:, 0] <= classes[:, 1]).long())
    assert sorted(classes.flatten().tolist()) == sorted(data.train_classes.flatten().tolist())
    assert not torch.equal(classes, data.train_classes)  # a new pairing, not the stored one


def test_affine_augmentation_is_identity_at_zero_strength_and_moves_pixels_otherwise():
    from digitcmp.core.augment import affine_augment

    data = prepare_data(RunConfig(pairs=20, test_pairs=10), 0)
    x = data.train_x[:8]
    same = affine_augment(x, torch.Generator().manual_seed(0), strength=0.0)
    torch.testing.assert_close(same, x, atol=1e-3, rtol=0)
    moved = affine_augment(x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and (moved - x).abs().mean() > 1.0
    assert moved.sum() == pytest.approx(x.sum().item(), rel=0.15)  # ink is moved, not created


def test_tta_and_ensemble_runs():
    base = RunConfig(arch="siamese_cnn", comparison="exact", aux_weight=1.0, **TINY)
    single, _, _ = train_run(base, 0)
    tta, _, _ = train_run(base.replace(tta=4), 0)
    ensemble, _, _ = train_run(base.replace(ensemble=2), 0)
    assert tta.epochs == single.epochs  # only the final scoring changes: the same training ...
    _, model, data = train_run(base, 0)
    from digitcmp.core.inference import AnswerSpec, SingleModel, answer, error_rates

    views = answer(SingleModel(model), data.eval_x[None], [AnswerSpec(data.mean, data.std, 4, 0)]).p_le[0]
    assert tta.test_error == error_rates(views, data.eval_y).item()  # ... scored with its 4 views
    assert ensemble.members_test_error[0] == single.test_error  # member 0 is the single run
    assert len(ensemble.members_test_error) == 2  # two members trained (their time is a benchmark's, not a test's)
    assert 0 <= ensemble.test_error <= 0.5


@pytest.mark.parametrize("ensemble", [1, 2])
def test_a_validation_run_s_errors_are_named_validation_errors(tmp_path, ensemble):
    """Validation mode scores the validation pairs: its errors are validation errors (per epoch, the
    members' too), never test errors; the results store refuses it; a checkpoint records it so, and
    one saved before the two were told apart (its validation error under test_error) is read as the
    validation error it holds."""
    import json

    from digitcmp.core.checkpoint import load_checkpoint, save_checkpoint
    from digitcmp.core.records import RunResult, recorded_errors
    from digitcmp.study.store import Store, provenance

    config = RunConfig(arch="fnn", validation=True, validation_pairs=300, ensemble=ensemble, **TINY)
    result, model, data = train_run(config, 0)
    assert result.split == "validation" and result.test_error is None and 0 <= result.validation_error < 0.5
    assert result.held_out_error == result.validation_error
    assert all(e.test_error is None and e.validation_error is not None for e in result.epochs)
    assert (result.members_validation_error is None) == (ensemble == 1) and result.members_test_error is None
    as_json = result.to_dict()
    assert "test_error" not in as_json and "test_error" not in as_json["epochs"][0]
    assert RunResult.from_dict(json.loads(json.dumps(as_json))) == result
    test_run, _, _ = train_run(config.replace(validation=False), 0)
    assert test_run.split == "test" and test_run.validation_error is None and "validation_error" not in test_run.to_dict()

    store = Store(tmp_path / "s.sqlite")
    prov = provenance("cpu", "single")
    with pytest.raises(ValueError, match="scored on validation pairs; the store holds test runs"):
        store.add_run("x", "fnn", config, result, prov)
    assert store.add_run("x", "fnn", config.replace(validation=False), test_run, prov)
    store.close()

    save_checkpoint(tmp_path / "v.safetensors", model.state_dict(), config, data.mean, data.std, result)
    recorded = load_checkpoint(tmp_path / "v.safetensors").recorded_errors
    assert recorded == {"validation_error": result.validation_error, "train_error": result.train_error}
    older = {"config": json.dumps(config.to_dict()), "test_error": "0.125", "train_error": "0.05"}
    assert recorded_errors(older) == {"validation_error": 0.125, "train_error": 0.05}
    assert (
        recorded_errors({**older, "config": json.dumps(config.replace(validation=False).to_dict())})["test_error"] == 0.125
    )


def test_train_validation_prints_and_writes_a_validation_error(capsys):
    from digitcmp.cli import main

    argv = ["train", "--arch", "fnn", "--epochs", "2", "--pairs", "200", "--validation", "--validation-pairs", "300"]
    assert main(argv) == 0
    assert "fnn seed 0: validation error " in capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "validation_error" in out and "test_error" not in out and out["config"]["validation"] is True


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_stepper_sets_the_scheduled_rate_before_each_step(schedule):
    """Step k of n runs at lr * (1 + cos(pi k / n)) / 2 under 'cosine' (lr at the first step, never
    0), at lr under 'constant'; each step moves the parameters as the optimizer does at that rate."""
    import math

    p = torch.nn.Parameter(torch.tensor([3.0]))
    stepper = Stepper(torch.optim.SGD([p], lr=0.1), schedule, total_steps=4)
    for k in range(4):
        rate = 0.1 * (0.5 * (1 + math.cos(math.pi * k / 4)) if schedule == "cosine" else 1.0)
        before = p.item()
        stepper.step((p**2).sum())  # gradient 2p
        assert stepper.optimizer.param_groups[0]["lr"] == pytest.approx(rate)
        assert p.item() == pytest.approx(before - rate * 2 * before)
    assert stepper.steps_done == 4
