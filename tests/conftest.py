import ast
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from digitcmp.core.perf import configure_process

# Checkpoints answered in tests are converted to ONNX graphs and cached (app/export.py): in a folder
# of this session's own, removed at its end, never the user's ~/.cache.
TEST_CACHE = tempfile.mkdtemp(prefix="digitcmp-test-cache-")
os.environ["DIGITCMP_CACHE_DIR"] = TEST_CACHE

configure_process(1)  # as the CLI and sweep workers run
LOCAL = "http://127.0.0.1"  # the test client's address: the server answers only its own (loopback) host names


def pytest_configure(config) -> None:
    import tiny_space  # tests/: the search spaces small enough for tests

    tiny_space.declare()


def all_slow(path: Path) -> bool:
    """Whether a test module marks every test slow at its top (`pytestmark = pytest.mark.slow`)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return ast.unparse(node.value) == "pytest.mark.slow"
    return False


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """The fast tier (-m "not slow") does not even import a module whose every test is slow: that
    spares each worker importing what only those tests need (Ray, Playwright, Schemathesis's
    strategies, Optuna), the larger part of the fast tier's collection."""
    if config.getoption("markexpr", "") != "not slow" or collection_path.suffix != ".py":
        return None
    return True if collection_path.name.startswith("test_") and all_slow(collection_path) else None


def pytest_unconfigure(config) -> None:
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


@pytest.fixture
def one_line_error(capsys):
    """check(argv, expected=None): runs the CLI on argv and asserts that it failed as bad input
    must, exit 2 with one line on stderr (ours, no traceback) holding expected; returns the line."""
    from digitcmp.cli import main

    def check(argv: list[str], expected: str | None = None) -> str:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2, (code, out, err)
        assert err.count("\n") == 1 and err.startswith("digitcmp") and "Traceback" not in err, err
        if expected is not None:
            assert expected in err, err
        return err

    return check


@pytest.fixture(scope="session")
def predictor():
    """The shipped model, loaded once for every test that serves or predicts with it."""
    from digitcmp.app.predict import load_model

    return load_model()


@pytest.fixture(scope="session")
def client(predictor):
    """The app in FastAPI's test client (server errors come back as 500s, as a real client sees them)."""
    from fastapi.testclient import TestClient

    from digitcmp.app.server import create_app

    with TestClient(create_app(predictor, "deploy.safetensors"), base_url=LOCAL, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def mnist_train():
    from digitcmp.core.data import load_mnist

    return load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    from digitcmp.core.data import load_mnist

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


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The (width, height) of every image whose pixels Pillow decodes during the test (in this process,
    the server's reading threads included): a refusal from the header shows as a size never decoded."""
    from PIL import ImageFile

    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording_load(image):
        sizes.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return sizes
