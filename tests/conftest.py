import pytest

from digitcmp.perf import configure_process

configure_process(1)  # as the CLI and sweep workers run


@pytest.fixture(scope="session")
def mnist_train():
    from digitcmp.data import load_mnist

    return load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    from digitcmp.data import load_mnist

    return load_mnist("test")


@pytest.fixture
def reproduce_argv():
    """Builds a small `digitcmp reproduce` command line writing under a given folder."""
    return _reproduce_argv


def _reproduce_argv(tmp_path, experiments, seeds=2, epochs=1, jobs=1):
    argv = ["reproduce"]
    for name in experiments:
        argv += ["--experiment", name]
    argv += [
        "--seeds",
        str(seeds),
        "--epochs",
        str(epochs),
        "--db",
        str(tmp_path / "r.sqlite"),
        "--out",
        str(tmp_path / "out"),
        "--jobs",
        str(jobs),
        "--no-progress",
    ]
    return argv
