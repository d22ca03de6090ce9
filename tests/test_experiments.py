import pytest
import torch

from digitcmp.core.train import build_model
from digitcmp.study.experiments import EXPERIMENTS, STUDY_EXPERIMENTS, Experiment, Row, get_experiment, grid
from digitcmp.study.plan import expand


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_expands_and_every_config_builds(name):
    planned = expand([name], seeds=2)
    experiment = get_experiment(name)
    assert len({(p.config.config_hash(), p.seed) for p in planned}) == len(planned)
    assert len(planned) == 2 * len({experiment.config(r).config_hash() for r in experiment.rows})
    for p in planned:
        assert p.config.test_pairs == 1000  # the standard test protocol everywhere
        if name in STUDY_EXPERIMENTS:
            assert p.config.epochs == 25 and p.config.pairs == 1000
        model = build_model(p.config, p.seed).eval()
        cmp, _ = model(torch.zeros(3, 2, 14, 14))
        assert cmp.shape == (3, 2)


def test_claims_refer_to_declared_rows():
    for experiment in EXPERIMENTS.values():
        for claim in experiment.claims:
            for ref in (claim.better, claim.worse):
                exp_name, row = ref.split("/", 1)
                get_experiment(exp_name).row(row)


def test_beyond_the_study_experiments():
    from digitcmp.core.config import RunConfig
    from digitcmp.study.experiments import (
        ABLATION_ROWS,
        ABLATION_STEPS,
        HAND_PICKED_STEPS,
        LEARNING_CURVE_PAIRS,
        PRESETS,
        STUDY_PROTOCOL,
    )

    kept = ABLATION_ROWS[: len(ABLATION_STEPS)]
    assert kept[0].overrides == {} and {**PRESETS["study_best"], **kept[-1].overrides} == PRESETS["best"]
    for before, after in zip(kept, kept[1:]):  # each kept row adds its own ingredient, nothing else changes
        added = {k: v for k, v in after.overrides.items() if before.overrides.get(k) != v}
        assert added and all(after.overrides.get(k) == v for k, v in before.overrides.items())
    assert kept == ABLATION_ROWS  # every ingredient of the recipe, and nothing else
    assert {**PRESETS["study_best"], **ABLATION_ROWS[len(HAND_PICKED_STEPS) - 1].overrides} == PRESETS["hand_picked"]
    best = get_experiment("best")
    assert best.config(best.row("best recipe")) == RunConfig(**{**STUDY_PROTOCOL, **PRESETS["best"]})
    assert best.config(best.row("hand-picked recipe (before the search)")) == RunConfig(
        **{**STUDY_PROTOCOL, **PRESETS["hand_picked"]}
    )
    curve = expand(["learning_curve"])
    assert {p.config.pairs for p in curve} == set(LEARNING_CURVE_PAIRS) and {p.seed for p in curve} == set(range(5))
    assert get_experiment("table5").config(get_experiment("table5").row("Adam + Leaky")) == get_experiment(
        "ablation"
    ).config(ABLATION_ROWS[0])  # the ablation starts exactly at the study's best row


def test_shared_configs_are_trained_once_across_tables():
    planned = expand(list(STUDY_EXPERIMENTS), seeds=10)
    # table4 == table5 "SGD + ReLU" == factorial "shared + aux 1"; table3 == factorial "separate + aux 1"
    assert len(planned) == 12 * 10


def test_epochs_override_and_seed_pairing():
    planned = expand(["table5"], seeds=3, epochs=2)
    assert {p.config.epochs for p in planned} == {2} and {p.seed for p in planned} == {0, 1, 2}
    assert {p.row for p in planned} == {
        "SGD + Sigmoid",
        "SGD + ReLU",
        "SGD + Leaky",
        "Adam + Sigmoid",
        "Adam + ReLU",
        "Adam + Leaky",
    }


def test_grid_is_a_product_of_named_axes():
    rows = grid(a=[("A1", {"epochs": 1}), ("A2", {"epochs": 2})], b=[("B", {"pairs": 10})])
    assert [r.name for r in rows] == ["A1 + B", "A2 + B"] and rows[1].overrides == {"epochs": 2, "pairs": 10}


def test_unknown_experiment_lists_valid_names():
    with pytest.raises(ValueError, match="unknown experiment 'table9'; valid: table1"):
        get_experiment("table9")


@pytest.mark.parametrize(
    "rows, match",
    [
        ((Row("x", {"archh": "cnn"}),), "row 'x': unknown config field.*archh"),
        ((Row("x", {"arch": "no_such_name"}),), "row 'x': arch must be one of fnn, cnn.*got 'no_such_name'"),
        ((Row("x", {"epochs": -1}),), r"row 'x': epochs must be an integer in \[1, 10000\], got -1"),
        ((Row("x"), Row("x")), "duplicate row names"),
        ((), "declares no rows"),
    ],
)
def test_malformed_declarations_are_named(rows, match):
    with pytest.raises(ValueError, match=match):
        Experiment(name="mine", title="Mine", description="", base={}, rows=rows)


def test_test_error_curves_only_where_a_figure_uses_them():
    planned = {(p.experiment, p.row): p.test_error_curve for p in expand(list(STUDY_EXPERIMENTS), seeds=1)}
    assert planned[("table1", "FNN")] and planned[("table4", "SIAM + CNN + BN + AUX")]
    assert not planned[("table5", "Adam + Leaky")] and not planned[("factorial", "shared + aux 0")]
    assert ("table5", "SGD + ReLU") not in planned  # the same config as Table 4's row: trained once, with its curve


def test_table5_tuned_changes_only_the_learning_rates():
    from digitcmp.core.config import DEFAULT_LR
    from digitcmp.study.experiments import TABLE5_ROW_LR

    table5, tuned = get_experiment("table5"), get_experiment("table5_tuned")
    assert [r.name for r in tuned.rows] == [r.name for r in table5.rows]
    new_configs = 0
    for row in table5.rows:
        original, retuned = table5.config(row), tuned.config(tuned.row(row.name))
        assert retuned.lr == TABLE5_ROW_LR[row.name]
        assert retuned.replace(lr=original.lr) == original  # nothing else differs
        new_configs += retuned.lr != DEFAULT_LR[original.optimizer]
    # rows whose own rate is the shared one are the same runs (trained once): only the rest are new
    assert new_configs == 2
    assert len(expand(["table5", "table5_tuned"], seeds=10)) == (len(table5.rows) + new_configs) * 10
