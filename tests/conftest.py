import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_train():
    from digitcmp.data import load_mnist

    return load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    from digitcmp.data import load_mnist

    return load_mnist("test")
