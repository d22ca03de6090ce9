"""Bad input of every kind: one line on stderr and exit 2 (or a valid answer), never a traceback,
a hang, lost results or a changed file that was not ours. Regression cases of the hardening issue."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from digitcmp import load_model
from digitcmp.app.errors import InputError
from digitcmp.cli import main
from digitcmp.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from digitcmp.core.config import RunConfig
from digitcmp.core.train import train_run
from digitcmp.testing.hostile_files import png_header_only
from digitcmp.testing.processes import scaled_wait

TINY = RunConfig(arch="siamese_cnn", aux_weight=1.0, epochs=1, pairs=60, test_pairs=20, batch_size=30)


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "m.safetensors"
    result, model, data = train_run(TINY, 0)
    save_checkpoint(path, model.state_dict(), TINY, data.mean, data.std, result)
    return path, model, data, result


def rewrite_checkpoint(src, dst, config_changes=None, metadata_changes=None, tensor_changes=None):
    """A copy of a checkpoint with parts of its metadata or tensors replaced (as a hostile file would)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["config"])
    config.update(config_changes or {})
    metadata["config"] = json.dumps(config)
    metadata.update(metadata_changes or {})
    tensors.update(tensor_changes or {})
    save_file(tensors, str(dst), metadata=metadata)
    return dst


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"tta": 10**9}, "tta must be an integer in [1, 64], got 1000000000"),
        ({"ensemble": 10**6}, "ensemble must be an integer in [1, 20]"),
        ({"hidden": 10**12}, "hidden must be an integer in [1, 4096]"),
        ({"channels": [1, 10**9]}, "channels must be integers in [1, 512]"),
        ({"lr": "NaN"}, "lr must be a number"),
        ({"arch": "no_such_name"}, "arch must be one of"),
    ],
)
def test_checkpoint_config_out_of_bounds_is_refused(trained, tmp_path, capsys, changes, expected, one_line_error):
    bad = rewrite_checkpoint(trained[0], tmp_path / "bad.safetensors", config_changes=changes)
    err = one_line_error(["predict", "--model", str(bad), str(tmp_path / "x.npy")], expected)
    assert str(bad) in err  # (a hang here fails by pytest-timeout)


@pytest.mark.parametrize(
    "metadata, expected",
    [
        ({"input_std": "0"}, "input normalization out of range"),
        ({"input_mean": "nan"}, "input_mean must be a finite number"),
        ({"input_std": "lots"}, "input_std missing or not a number"),
        ({"seed": "-3"}, "metadata seed must be an integer"),
        ({"config": "{not json"}, "damaged digitcmp metadata"),
        ({"config": "[1, 2]"}, "a run config must be a JSON object"),
    ],
)
def test_checkpoint_metadata_is_checked(trained, tmp_path, metadata, expected):
    bad = rewrite_checkpoint(trained[0], tmp_path / "bad.safetensors", metadata_changes=metadata)
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(")):
        load_checkpoint(bad)


def test_non_finite_or_misshapen_weights_are_refused(trained, tmp_path):
    path, model, _, _ = trained
    name = "towers.0.0.0.weight"
    weight = model.state_dict()[name].clone().contiguous()
    weight.view(-1)[0] = float("nan")
    bad = rewrite_checkpoint(path, tmp_path / "nan.safetensors", tensor_changes={name: weight})
    with pytest.raises(CheckpointError, match=f"tensor {name} holds values that are not finite"):
        load_checkpoint(bad)
    bad = rewrite_checkpoint(path, tmp_path / "shape.safetensors", tensor_changes={name: torch.zeros(64, 1, 3, 3)})
    with pytest.raises(CheckpointError, match=rf"tensor {name} has shape \[64, 1, 3, 3\]"):
        load_checkpoint(bad)


def test_a_diverged_training_is_not_saved_and_json_stays_json(tmp_path, capsys):
    argv = ["train", "--arch", "siamese_cnn", "--no-batch-norm", "--lr", "10", "--aux-weight", "100", "--epochs", "5"]
    argv += ["--pairs", "100", "--test-pairs", "50", "--json", "--save", str(tmp_path / "nan.safetensors")]
    code = main(argv)
    out, err = capsys.readouterr()
    record = json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert None in [e["loss"] for e in record["epochs"]]  # diverged: the losses that are not numbers are null
    assert code == 2 and "weight" in err and "not finite" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("where", ["folder", "under a file", "unwritable", "unwritable, missing folder"])
def test_save_destination_checked_before_training(tmp_path, capsys, monkeypatch, where, one_line_error):
    (tmp_path / "notes.txt").write_text("mine\n")
    target, expected = {
        "folder": (tmp_path, "cannot write checkpoint"),
        "under a file": (tmp_path / "notes.txt" / "m.safetensors", "notes.txt is a file, not a folder"),
        "unwritable": ("/proc/m.safetensors", "cannot write checkpoint"),  # not writable even for root
        "unwritable, missing folder": ("/proc/new/m.safetensors", "cannot create folder /proc/new"),
    }[where]

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the destination was checked")

    monkeypatch.setattr("digitcmp.core.train.train_run", no_training)
    one_line_error(["train", "--epochs", "25", "--pairs", "1000", "--save", str(target)], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created


def test_save_creates_missing_folders_and_a_failed_run_removes_them(tmp_path, capsys, monkeypatch, one_line_error):
    """Every writing flag creates the folders it needs (--db, --out, --checkpoints, --storage, --save);
    a command that fails before writing removes those it made."""
    target = tmp_path / "new" / "deeper" / "m.safetensors"
    argv = ["train", "--arch", "fnn", "--epochs", "1", "--pairs", "50", "--test-pairs", "50", "--save", str(target)]

    def fails(*args, **kwargs):
        raise OSError("the run failed")

    with monkeypatch.context() as m:
        m.setattr("digitcmp.core.train.train_run", fails)
        one_line_error(argv, "the run failed")
    assert list(tmp_path.iterdir()) == []
    assert main(argv) == 0
    assert target.is_file()


def test_python_api_raises_value_errors():
    assert load_model(None).config["tower"] == "deep"  # None: the shipped model
    with pytest.raises(ValueError, match="must be a string or path, got int"):
        load_model(5)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("/nonexistent.safetensors")


def test_predict_api_refuses_nonsense(predictor):
    """The Python API's checks are the answering graph's, whatever model it holds (the shipped one here)."""
    for bad, match in [
        (None, "got NoneType"),
        (5, "got int"),
        ([5], "each input must be a path"),
        ([], "no inputs"),
        (np.full((1, 2, 14, 14), np.nan), "NaN or infinite"),
        (torch.zeros(0, 2, 14, 14), "holds no pairs"),
        (np.ones((1, 2, 14, 14)) * 1000, "must be in 0..255"),
        (np.ones((1, 2, 14, 14), dtype=np.complex64), "real numbers"),
        (np.array([["a"] * 14] * 14), "real numbers"),
    ]:
        with pytest.raises(InputError, match=match):
            predictor.predict(bad)
    (blank,) = predictor.predict(np.zeros((2, 14, 14), dtype=np.uint8))  # one pair, unbatched, as uint8: accepted
    assert blank.unsure and blank.doubt.count("blank") == 2, blank


# ---------------------------------------------------------------- arrays and images


def npy_with_header(path, shape, dtype="<f4", data=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(data)
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("strings", "real numbers"),
        ("datetimes", "real numbers"),
        ("structured", "real numbers"),
        ("complex", "real numbers"),
        ("zero bytes", "not a readable .npy array"),
        ("npz renamed", "not a readable .npy array"),
        ("huge header", "at most 500000 in one file"),
        ("truncated", "is truncated"),
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("out of range", "must be in 0..255"),
        ("negative", "must be in 0..255"),
        ("empty", "holds no pairs"),
        ("wrong shape", "expected an array of shape"),
    ],
)
def test_bad_arrays_are_refused_before_work(trained, tmp_path, capsys, case, expected, one_line_error):
    path = tmp_path / "x.npy"
    good = np.zeros((3, 2, 14, 14), dtype=np.float32)
    if case == "strings":
        np.save(path, np.full((3, 2, 14, 14), "7"))
    elif case == "datetimes":
        np.save(path, np.zeros((3, 2, 14, 14), dtype="datetime64[s]"))
    elif case == "structured":
        np.save(path, np.zeros((3, 2, 14, 14), dtype=[("a", "f4"), ("b", "i4")]))
    elif case == "complex":
        np.save(path, good.astype(np.complex64))
    elif case == "zero bytes":
        path.write_bytes(b"")
    elif case == "npz renamed":
        np.savez(tmp_path / "x.npz", a=good)
        (tmp_path / "x.npz").rename(path)
    elif case == "huge header":
        npy_with_header(path, (10**11 // 392, 2, 14, 14))
    elif case == "truncated":
        npy_with_header(path, (400_000, 2, 14, 14), data=b"\0" * 1000)
    elif case in ("nan", "inf", "out of range", "negative"):
        good[1, 0, 3, 3] = {"nan": np.nan, "inf": np.inf, "out of range": 1e6, "negative": -5}[case]
        np.save(path, good)
    elif case == "empty":
        np.save(path, np.zeros((0, 2, 14, 14), dtype=np.float32))
    elif case == "wrong shape":
        np.save(path, np.zeros((3, 14, 14)))
    one_line_error(["predict", "--model", str(trained[0]), str(path), "--json"], expected)


@pytest.mark.parametrize("size", [(20000, 20000), (12000, 12000), (9000, 5000)])
def test_huge_images_refused_by_their_header(trained, tmp_path, capsys, size, one_line_error, decoded_sizes):
    big = png_header_only(tmp_path / "big.png", *size)
    small = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.pad(np.full((10, 4), 255, np.uint8), 9)).save(small)
    one_line_error(["predict", "--model", str(trained[0]), str(small), str(big)], "megapixels are accepted")
    assert size not in decoded_sizes  # refused from the header: its pixels were never decoded


@pytest.mark.parametrize("color", [0, 255, 128])
def test_an_image_without_ink_is_answered_blank_as_an_array_is(trained, tmp_path, capsys, color):
    """One rule on every surface: a blank side is an unsure answer that says so (image, array, .npy)."""
    from PIL import Image

    Image.new("L", (60, 60), color).save(tmp_path / "blank.png")
    Image.fromarray(np.pad(np.full((10, 4), 255, np.uint8), 9)).save(tmp_path / "one.png")
    pairs = np.zeros((1, 2, 14, 14), np.float32)
    pairs[0, 0, 3:11, 6:8] = 255  # a 1
    pairs[0, 1] = color  # the second side one flat color
    np.save(tmp_path / "pairs.npy", pairs)
    for inputs in ([str(tmp_path / "one.png"), str(tmp_path / "blank.png")], [str(tmp_path / "pairs.npy")]):
        assert main(["predict", "--json", "--model", str(trained[0]), *inputs]) == 0
        (record,) = json.loads(capsys.readouterr().out.splitlines()[-1])
        second = record["doubt"].split("; ")[-1]
        assert record["unsure"] and second in ("blank.png: blank: no digit to read", "second digit: blank: no digit to read")


def test_large_batches_answer_in_chunks(trained, tmp_path, capsys):
    x = np.random.default_rng(0).uniform(0, 255, (2300, 2, 14, 14)).astype(np.float32)
    np.save(tmp_path / "many.npy", x)
    assert main(["predict", "--model", str(trained[0]), str(tmp_path / "many.npy"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 2300 and all(0 <= r["p_le"] <= 1 for r in records)


# ---------------------------------------------------------------- stores


def small_store(tmp_path, reproduce_argv):
    assert main(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1)) == 0
    return tmp_path / "r.sqlite"


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("ALTER TABLE runs RENAME COLUMN test_error TO err", "table runs lacks column(s) test_error"),
        ("ALTER TABLE runs DROP COLUMN host", "table runs lacks column(s) host"),
        ("UPDATE runs SET test_error = 'oops'", "runs.test_error are not real or integer"),
        ("UPDATE runs SET train_seconds = NULL", "runs.train_seconds are not real or integer"),
        ("UPDATE sweeps SET experiments = '{{'", "experiments are not a list of names"),
        # text that only fails when it is decoded (found by the hardening probe after a sweep row was written)
        ("UPDATE runs SET engine = CAST(x'ff00fe' AS TEXT)", "runs.engine holds text that is not UTF-8"),
        ("UPDATE runs SET host = CAST(x'c328' AS TEXT) WHERE id = 1", "runs.host holds text that is not UTF-8"),
        ("UPDATE sweeps SET command = CAST(x'80' AS TEXT)", "sweeps.command holds text that is not UTF-8"),
        ("UPDATE runs SET git_commit = CAST(x'e282' AS TEXT)", "runs.git_commit holds text that is not UTF-8"),
    ],
)
def test_damaged_stores_are_refused_by_every_command(tmp_path, capsys, reproduce_argv, damage, expected, one_line_error):
    db = small_store(tmp_path, reproduce_argv)
    capsys.readouterr()
    conn = sqlite3.connect(db)
    if "NOT NULL" not in damage and "NULL" in damage:  # a NULL where the schema forbids it: rebuild without the constraint
        conn.executescript(
            "PRAGMA writable_schema=ON; UPDATE sqlite_master SET sql = replace(sql, 'train_seconds REAL NOT NULL', "
            "'train_seconds REAL') WHERE name = 'runs'; PRAGMA writable_schema=OFF;"
        )
        conn.close()
        conn = sqlite3.connect(db)
    conn.execute(damage)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = md5(db)
    one_line_error(["report", "--db", str(db), "--out", str(tmp_path / "o")], expected)
    one_line_error(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1), expected)
    assert md5(db) == before


def test_a_store_with_damaged_pages_is_refused(tmp_path, capsys, reproduce_argv, one_line_error):
    db = small_store(tmp_path, reproduce_argv)
    capsys.readouterr()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    raw = bytearray(db.read_bytes())
    page = 4096
    raw[page + 100 : 2 * page] = os.urandom(page - 100)  # a damaged b-tree page after the first
    db.write_bytes(bytes(raw))
    before = md5(db)
    one_line_error(["report", "--db", str(db), "--out", str(tmp_path / "o")])
    one_line_error(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1))
    assert md5(db) == before


def test_reproduce_refuses_a_foreign_sqlite_file_untouched(tmp_path, capsys, reproduce_argv, one_line_error):
    foreign = tmp_path / "r.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()
    before = md5(foreign)
    one_line_error(reproduce_argv(tmp_path, ["table1"], seeds=1, epochs=1), "not a digitcmp results store")
    assert md5(foreign) == before and not (tmp_path / "r.sqlite-wal").exists()


def test_a_full_disk_is_one_line_and_the_store_resumes(tmp_path, capsys, reproduce_argv, monkeypatch, one_line_error):
    from digitcmp.study import store as store_module

    argv = reproduce_argv(tmp_path, ["table1"], seeds=8, epochs=1)
    real_init = store_module.Store.__init__

    def small_disk(self, *args, **kwargs):  # SQLite's own "database or disk is full" after a few pages
        real_init(self, *args, **kwargs)
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        self.conn.execute(f"PRAGMA max_page_count = {pages + 1}")

    monkeypatch.setattr(store_module.Store, "__init__", small_disk)
    one_line_error(argv, "database or disk is full")
    monkeypatch.undo()
    stored = store_module.Store(tmp_path / "r.sqlite", read_only=True).count()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert stored < 16 and f"{16 - stored} trained, {stored} already stored" in out


# ---------------------------------------------------------------- processes


def children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found |= {int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # sweeps, training or processes in subprocesses
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_when_their_parent_is_killed(tmp_path, reproduce_argv, sig):
    cmd = [sys.executable, "-m", "digitcmp"] + reproduce_argv(tmp_path, ["table3"], seeds=6, epochs=5, jobs=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + scaled_wait(60)
    workers: set[int] = set()
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = {c for c in children(proc.pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()}
    assert len(workers) >= 2, "workers did not start"
    time.sleep(1.0)
    proc.send_signal(sig)  # the parent only, not its process group
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and err.strip() == "digitcmp: terminated"
    deadline = time.time() + scaled_wait(10)
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:  # never leave them behind, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not left
