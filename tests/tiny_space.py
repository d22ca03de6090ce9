"""Search spaces small enough for tests (an FNN on 200 pairs, a few epochs), declared as a user
would declare one for a new architecture. conftest.py declares them once per test session; run as
a script, this is the `digitcmp` command with them known: `python tests/tiny_space.py tune tiny ...`."""

import sys

from digitcmp.tune.spaces import Choice, Floats, SearchSpace, Study, register_space


def declare() -> None:
    """Declare the test spaces (a second declaration is refused, as for any space)."""
    register_space(
        SearchSpace(
            name="tiny",
            description="an FNN's learning rate and width on 200 pairs",
            base=dict(arch="fnn", epochs=3, pairs=200),
            params={"lr": Floats(0.01, 1.0, log=True), "hidden": Choice((20, 60))},
            trials=4,
            seeds=2,
            in_use={"": {"lr": 0.1, "hidden": 20}},
        )
    )
    register_space(
        SearchSpace(
            name="tiny_grid",
            description="a grid of rates per optimizer, averaged over two architectures",
            base=dict(epochs=2, pairs=200),
            rows={"fnn": dict(arch="fnn"), "fnn, no bn": dict(arch="fnn", batch_norm=False)},
            studies={
                "sgd": Study({"optimizer": "sgd"}, {"lr": Choice((0.03, 0.3, 1.0))}),
                "adam": Study({"optimizer": "adam"}, {"lr": Choice((1e-3, 1e-2))}),
            },
            sampler="grid",
            seeds=2,
            in_use={"sgd": {"lr": 0.3}, "adam": {"lr": 1e-2}},
        )
    )
    register_space(
        SearchSpace(
            name="tiny_slow",
            description="as tiny, with trials long enough to be killed in the middle of one",
            base=dict(arch="fnn", epochs=60, pairs=300),
            params={"lr": Floats(0.01, 1.0, log=True)},
            trials=6,
            seeds=2,
        )
    )


if __name__ == "__main__":
    from digitcmp.cli import main

    declare()
    sys.exit(main(sys.argv[1:]))
