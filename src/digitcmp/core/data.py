"""MNIST from the original IDX files, and the study's pair sets built from it.

The four IDX files ship inside the package (see mnist/README.md for their attribution and
license). Each decompressed file is checked against the MD5 every MNIST loader knows, so a
corrupted or foreign copy is refused with the file's name instead of training on garbage.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import check_pair_count

DATA_DIR_ENV = "DIGITCMP_DATA_DIR"

# MD5 of each *uncompressed* original file (the ones torchvision and every other loader check).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Size of each uncompressed original file: a file (or what a .gz unpacks to) is read up to this and
# no further, so a small archive that unpacks to gigabytes costs a moment, not the machine's memory.
MNIST_BYTES = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
MAX_IDX_BYTES = max(MNIST_BYTES.values())
CHUNK = 1 << 20


class DataError(ValueError):
    """The MNIST files are missing, unreadable or not the original ones."""


def embedded_data_dir() -> Path:
    """The folder holding the four gzipped IDX files shipped with the package."""
    return Path(str(resources.files("digitcmp.core") / "mnist"))


def _find_file(data_dir: Path, name: str) -> Path:
    # Accept flat folders and torchvision's MNIST/raw/ layout, gzipped or not.
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"MNIST file {name} (or {name}.gz) not found in {data_dir} "
        "(accepted: the four IDX files, gzipped or not, flat or under MNIST/raw/)"
    )


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, gunzipped when it is gzip, read in chunks and refused as soon as there are
    more than max_bytes: memory and time stay bounded whatever the archive unpacks to."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic != b"\x1f\x8b" and os.fstat(raw.fileno()).st_size > max_bytes:
            raise DataError(f"MNIST file {path} is larger than any MNIST file ({max_bytes} bytes at most)")
        stream = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw
        content = bytearray()
        while chunk := stream.read(CHUNK):
            content += chunk
            if len(content) > max_bytes:
                raise DataError(
                    f"MNIST file {path} unpacks to more than {max_bytes} bytes, more than any MNIST file; "
                    "give the original IDX files"
                )
    return bytes(content)


def read_idx(path: Path, expected_md5: str | None = None, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (gzipped or not, at most max_bytes unpacked) into a uint8 array, checking
    its MD5 when given."""
    try:
        raw = _read_bounded(path, max_bytes)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read MNIST file {path}: {err}") from None
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise DataError(
                f"MNIST file {path} is corrupted or not the original: MD5 of its content is "
                f"{digest}, expected {expected_md5}"
            )
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"MNIST file {path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"MNIST file {path} is truncated: header says {tuple(dims)}")
    return data.reshape(tuple(dims)).copy()  # writable, detached from the file bytes


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder to read MNIST from: the argument, else $DIGITCMP_DATA_DIR, else the embedded copy."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or embedded_data_dir()
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"MNIST data folder {path} does not exist or is not a folder")
    return path.resolve()


@dataclass(frozen=True)
class MnistSplit:
    """One MNIST split: raw 28x28 images and their labels, plus the 14x14 pooled images."""

    images: np.ndarray  # [N, 28, 28] uint8
    labels: np.ndarray  # [N] uint8
    pooled: torch.Tensor  # [N, 1, 14, 14] float32, values 0..255


@lru_cache(maxsize=4)
def _load_split_cached(data_dir: Path, split: str) -> MnistSplit:
    image_name, label_name = SPLIT_FILES[split]
    images = read_idx(_find_file(data_dir, image_name), MNIST_MD5[image_name], MNIST_BYTES[image_name])
    labels = read_idx(_find_file(data_dir, label_name), MNIST_MD5[label_name], MNIST_BYTES[label_name])
    # Pool once per process: every pair set of every run is drawn from these.
    pooled = F.avg_pool2d(torch.from_numpy(images).float().unsqueeze(1), kernel_size=2)
    return MnistSplit(images=images, labels=labels, pooled=pooled)


def load_mnist(split: str, data_dir: str | os.PathLike | None = None) -> MnistSplit:
    """Load 'train' or 'test' (read and checked once per process, then cached)."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; valid: train, test")
    return _load_split_cached(resolve_data_dir(data_dir), split)


# A set of pairs: inputs [n, 2, 14, 14] (raw pixels 0..255), targets [n], classes [n, 2].
Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _draw_pairs(split: MnistSplit, nb: int, generator: torch.Generator) -> Pairs:
    return _pairs_of(split, torch.randperm(split.pooled.shape[0], generator=generator)[: 2 * nb])


def _pairs_of(split: MnistSplit, images: torch.Tensor) -> Pairs:
    """The pairs (inputs, targets, classes) of an even number of image indices, taken two by two."""
    order = images.view(-1, 2)
    pairs = torch.cat((split.pooled[order[:, 0]], split.pooled[order[:, 1]]), dim=1)  # [nb, 2, 14, 14]
    classes = torch.from_numpy(split.labels.astype(np.int64))[order]  # [nb, 2]
    target = (classes[:, 0] <= classes[:, 1]).long()  # [nb]
    return pairs, target, classes


def _check_count(split: str, count) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"number of {split} pairs must be a positive integer, got {count!r}")
    check_pair_count("train" if split == "validation" else split, count)


def draw_validation_pairs(
    nb: int, validation_nb: int, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[Pairs, Pairs]:
    """The training pairs of generate_pair_sets(nb, seed) and validation_nb pairs of MNIST
    training digits that those pairs do not use: (train, validation), each (inputs, targets,
    classes). Both come from one permutation of the 60000 training digits drawn from the seed: the
    training pairs take its first 2 nb digits (as every run of the seed does), the validation pairs
    the next 2 validation_nb, so the validation draw is fixed per seed and pairs count. MNIST's test
    split is never opened."""
    _check_count("train", nb)
    _check_count("validation", validation_nb)
    check_pair_count("train", nb + validation_nb, what="training and validation pairs")
    split = load_mnist("train", data_dir)
    order = torch.randperm(split.pooled.shape[0], generator=torch.Generator().manual_seed(seed))
    return _pairs_of(split, order[: 2 * nb]), _pairs_of(split, order[2 * nb : 2 * (nb + validation_nb)])


def generate_pair_sets(
    nb: int,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    test_nb: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Draw nb training pairs from MNIST train and nb (or test_nb) test pairs from MNIST test.

    Returns (train_input, train_target, train_classes, test_input, test_target, test_classes):
    inputs [nb, 2, 14, 14] float32 with raw pixel values 0..255, targets [nb] int64 equal to 1
    exactly when the first digit is <= the second, classes [nb, 2] int64. The test pairs of a
    seed do not depend on nb, and a larger nb extends the smaller one's training pairs.
    """
    test_nb = nb if test_nb is None else test_nb
    for split, count in (("train", nb), ("test", test_nb)):
        _check_count(split, count)
    generator = torch.Generator().manual_seed(seed)
    train = _draw_pairs(load_mnist("train", data_dir), nb, generator)
    test = _draw_pairs(load_mnist("test", data_dir), test_nb, generator)
    return (*train, *test)
