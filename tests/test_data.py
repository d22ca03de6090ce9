import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from digitcmp.core.data import MNIST_MD5, DataError, embedded_data_dir, generate_pair_sets, load_mnist, read_idx


def test_mnist_facts_from_its_readme(mnist_train, mnist_test):
    assert mnist_train.images.shape == (60000, 28, 28) and mnist_train.images.dtype == np.uint8
    assert mnist_test.images.shape == (10000, 28, 28)
    assert np.bincount(mnist_train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (mnist_train.images / 255).mean() == pytest.approx(0.1307, abs=1e-4)
    assert (mnist_test.images / 255).std() == pytest.approx(0.3105, abs=1e-4)


def test_pooled_images_are_2x2_means(mnist_test):
    raw = mnist_test.images[:50].astype(np.float64)
    brute = np.zeros((50, 14, 14))
    for i in range(14):
        for j in range(14):
            brute[:, i, j] = raw[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(mnist_test.pooled[:50, 0].numpy(), brute, rtol=0, atol=1e-4)


def _index_of_images(split):
    """Map each pooled image's bytes to its indices in the split (brute-force lookup table)."""
    table = {}
    for i, img in enumerate(split.pooled[:, 0].numpy()):
        table.setdefault(img.tobytes(), []).append(i)
    return table


@pytest.mark.parametrize("seed", [0, 3])
def test_pair_sets_by_brute_force(seed, mnist_train, mnist_test):
    nb = 300
    tr_x, tr_y, tr_c, te_x, te_y, te_c = generate_pair_sets(nb, seed)
    assert tr_x.shape == te_x.shape == (nb, 2, 14, 14) and tr_x.dtype == torch.float32
    assert tr_y.shape == (nb,) and tr_c.shape == (nb, 2) and tr_y.dtype == tr_c.dtype == torch.int64
    assert 0 <= tr_x.min() and tr_x.max() <= 255 and tr_x.max() > 200  # raw pixel values
    for x, y, c, split in ((tr_x, tr_y, tr_c, mnist_train), (te_x, te_y, te_c, mnist_test)):
        table = _index_of_images(split)
        used = set()
        for k in range(nb):
            assert int(y[k]) == int(c[k, 0] <= c[k, 1])
            for side in range(2):
                # Every image comes from this split, and its class is that image's label.
                indices = table[x[k, side].numpy().tobytes()]
                assert int(c[k, side]) in {int(split.labels[i]) for i in indices}
                used.add(indices[0])
        assert len(used) == 2 * nb  # the 2*nb images are distinct


def test_pairs_deterministic_per_seed_and_differ_across_seeds():
    a, b, c = generate_pair_sets(100, 5), generate_pair_sets(100, 5), generate_pair_sets(100, 6)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[3], c[3])


def test_test_pairs_do_not_depend_on_training_pair_count():
    small, big = generate_pair_sets(100, 1, test_nb=50), generate_pair_sets(400, 1, test_nb=50)
    assert torch.equal(small[3], big[3])
    assert torch.equal(small[0], big[0][:100])


@pytest.mark.parametrize("nb, match", [(5001, "at most 5000"), (0, "positive"), (30001, "at most 30000")])
def test_too_many_or_too_few_pairs(nb, match):
    with pytest.raises(ValueError, match=match):
        generate_pair_sets(nb, 0, test_nb=10 if nb == 30001 else None)


def _copy_files(dst, layout="flat", gz=True):
    folder = dst / "MNIST" / "raw" if layout == "torchvision" else dst
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        src = embedded_data_dir() / f"{name}.gz"
        if gz:
            shutil.copy(src, folder / f"{name}.gz")
        else:
            (folder / name).write_bytes(gzip.decompress(src.read_bytes()))
    return folder


def test_corrupted_copy_is_refused_naming_the_file(tmp_path):
    folder = _copy_files(tmp_path)
    raw = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] ^= 1
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*corrupted"):
        load_mnist("test", tmp_path)


def test_missing_file_is_named(tmp_path):
    _copy_files(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist("test", tmp_path)


def test_torchvision_layout_uncompressed_via_environment(tmp_path, monkeypatch, mnist_test):
    _copy_files(tmp_path, layout="torchvision", gz=False)
    monkeypatch.setenv("DIGITCMP_DATA_DIR", str(tmp_path))
    split = load_mnist("test")
    assert np.array_equal(split.images, mnist_test.images)


def test_read_idx_rejects_non_idx(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"hello world, not idx")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(bad)


# ---- compressed input bounded while it is read (a small archive that unpacks to gigabytes)


def _bomb(path, unpacked_mb: int, multi_member: bool, header: bytes = b"") -> None:
    """A .gz of `unpacked_mb` MB of zeros (after an optional real header): one member, or one small
    member repeated (gzip readers read concatenated members as one stream); a few MB on disk."""
    block = gzip.compress(bytes(16 << 20), compresslevel=1)
    with open(path, "wb") as fh:
        if header:
            fh.write(gzip.compress(header))
        if multi_member:
            for _ in range(unpacked_mb // 16):
                fh.write(block)
        else:
            fh.write(gzip.compress(bytes(unpacked_mb << 20), compresslevel=1))


# The peak is this process's own (VmHWM, reset by exec): ru_maxrss would include the parent's size
# at fork, which is pytest's.
BOMB_SCRIPT = """
import sys
from digitcmp.cli import main
code = main(["train", "--arch", "fnn", "--epochs", "1", "--pairs", "10", "--test-pairs", "10", "--data-dir", sys.argv[1]])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
peak_mb = int(status["VmHWM"].split()[0]) / 1024
print(code, round(peak_mb))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
@pytest.mark.parametrize(
    "name, unpacked_mb, multi_member, header",
    [
        ("train-images-idx3-ubyte", 2048, True, b""),  # the probe's case: 2 GB from a few MB
        ("train-labels-idx1-ubyte", 256, False, b""),  # a small file's bound is its own size
        ("train-images-idx3-ubyte", 1024, True, b"\x00\x00\x08\x03\x00\x00\xea\x60\x00\x00\x00\x1c\x00\x00\x00\x1c"),
    ],
)
@pytest.mark.slow  # archives unpacked to their bound
def test_a_gzip_that_unpacks_past_any_mnist_file_is_refused_in_bounded_memory(
    tmp_path, name, unpacked_mb, multi_member, header
):
    import subprocess
    import sys

    folder = _copy_files(tmp_path / "data")
    _bomb(folder / f"{name}.gz", unpacked_mb, multi_member, header)
    done = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(folder)], capture_output=True, text=True, timeout=300)
    code, peak_mb = done.stdout.split()
    assert code == "2", done
    assert done.stderr.count("\n") == 1 and f"{name}.gz unpacks to more than" in done.stderr, done.stderr
    assert float(peak_mb) < 1200  # torch and the process itself; the archive adds at most one MNIST file


def test_an_uncompressed_file_larger_than_any_mnist_file_is_refused_unread(tmp_path):
    folder = _copy_files(tmp_path, gz=False)
    with open(folder / "t10k-labels-idx1-ubyte", "r+b") as fh:
        fh.truncate(50 << 30)  # 50 GB, sparse: reading it would take minutes
    with pytest.raises(DataError, match="larger than any MNIST file"):
        load_mnist("test", tmp_path)


def test_a_truncated_or_damaged_gzip_is_one_error(tmp_path):
    folder = _copy_files(tmp_path)
    gz = folder / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist("test", tmp_path)
    raw = bytearray((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    raw[200:260] = bytes(60)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    gz.write_bytes(gzip.compress(gzip.decompress((embedded_data_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist("test", tmp_path)
