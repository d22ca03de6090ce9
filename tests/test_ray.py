"""The Ray backend: the same runs as the local backend, a killed worker retried and stored once,
a two-node cluster on this machine using both nodes, and a clear line without Ray. Every Ray
process a test starts is stopped by it."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from digitcmp.cli import main
from digitcmp.testing.extras import require
from digitcmp.testing.processes import scaled_wait
from digitcmp.testing.ray_cluster import free_port, local_cluster, only_ours, processes_of, ray_processes

pytestmark = pytest.mark.slow  # Ray instances and clusters: outside the fast tier (pytest -m "not slow")

ray = require("ray")


def stored(db) -> dict:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT config_hash, seed, test_error, train_error, backend, host FROM runs").fetchall()
    conn.close()
    return {(h, s): (test, train, backend, host) for h, s, test, train, backend, host in rows}


def argv_for(tmp_path, name, experiments, seeds, epochs, *extra):
    argv = ["reproduce", "--seeds", str(seeds), "--epochs", str(epochs), "--no-progress"]
    for e in experiments:
        argv += ["--experiment", e]
    return argv + ["--db", str(tmp_path / f"{name}.sqlite"), "--out", str(tmp_path / name), *extra]


@pytest.fixture
def no_ray_left():
    """The Ray processes the test started are ended afterwards, and only those (never `ray stop`,
    which would end every Ray instance on the machine, another user's cluster included); yields the
    temp folder of the test's own instances (processes_of)."""
    with only_ours() as temp:
        yield temp


def test_ray_backend_stores_what_the_local_backend_stores(tmp_path, no_ray_left, capsys):
    experiments = ["table1", "table3"]  # batched FNN seeds and single Siamese-like runs
    assert main(argv_for(tmp_path, "local", experiments, 2, 1, "--jobs", "2")) == 0
    assert main(argv_for(tmp_path, "ray", experiments, 2, 1, "--jobs", "2", "--backend", "ray")) == 0
    local, remote = stored(tmp_path / "local.sqlite"), stored(tmp_path / "ray.sqlite")
    assert local.keys() == remote.keys() and len(local) == 6
    for key in local:
        assert local[key][:2] == remote[key][:2], key  # identical test and train errors
        assert local[key][2] == "local" and remote[key][2] == "ray" and "ray node" in remote[key][3]
    assert not ray.is_initialized()  # the instance started for the sweep is gone


def test_mismatched_worker_version_is_one_line(tmp_path, no_ray_left, capsys, monkeypatch):
    from digitcmp.run import ray_connect

    monkeypatch.setattr(ray_connect, "__version__", "0.0-other")
    code = main(argv_for(tmp_path, "v", ["table1"], 1, 1, "--jobs", "1", "--backend", "ray"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "every node must run the driver's digitcmp and torch release" in err and "(the driver 0.0-other)" in err
    assert not (tmp_path / "v").exists()  # nothing trained, no report


def test_a_worker_with_another_torch_release_is_refused_naming_both(tmp_path, no_ray_left, capsys, monkeypatch):
    """The driver's torch said to be 2.0.1+cu118: its workers (this machine's torch) are refused,
    each version named; a build label alone (+cpu, +cu130: GPU nodes install their own) is not."""
    import torch

    from digitcmp.run.ray_connect import version_mismatches

    monkeypatch.setattr(torch, "__version__", "2.0.1+cu118")
    code = main(argv_for(tmp_path, "t", ["table1"], 1, 1, "--jobs", "1", "--backend", "ray"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "(the driver 2.0.1+cu118)" in err and "has torch 2.13.0" in err
    same = [("0.1.0", "2.13.0+cu130", "gpu-node"), ("0.1.0", "2.13.0+cpu", "cpu-node")]
    assert version_mismatches(same, "0.1.0", "2.13.0+cpu") == []
    assert version_mismatches([("0.1.0", "2.12.0+cpu", "n")], "0.1.0", "2.13.0") == [
        "n has torch 2.12.0+cpu (the driver 2.13.0)"
    ]


def test_cuda_is_asked_of_the_cluster_not_of_the_driver(tmp_path, no_ray_left, capsys):
    """--device cuda from a machine without a GPU: the driver no longer refuses it (a CPU head may
    have GPU workers); a cluster none of whose nodes offers a GPU is one line saying so, before any
    run is stored."""
    if torch_has_cuda():
        pytest.skip("this machine has a GPU: the case is a cluster without one")
    argv = argv_for(tmp_path, "gpu", ["table1"], 1, 1, "--jobs", "1", "--backend", "ray", "--device", "cuda")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "none of its nodes offers one" in err and "no CUDA GPU is available" not in err
    assert not (tmp_path / "gpu.sqlite").exists() or stored(tmp_path / "gpu.sqlite") == {}


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_without_ray_the_backend_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    code = main(argv_for(tmp_path, "none", ["table1"], 1, 1, "--backend", "ray"))
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e .[ray]" in err and err.count("\n") == 1
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.timeout(300)  # Ray alone would retry the address for minutes: that hang fails here
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "nonsense"])
def test_an_address_where_no_cluster_answers_is_one_line(tmp_path, capsys, address):
    argv = argv_for(tmp_path, "gone", ["table1"], 1, 1, "--backend", "ray", "--address", address.format(port=free_port()))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("--address must be" in err or "no Ray cluster answers" in err), err
    assert list(tmp_path.iterdir()) == []  # nothing written (no store, no sweep row, no report folder)


def test_tune_writes_no_storage_before_the_cluster_is_reached(tmp_path, capsys):
    require("optuna")
    argv = ["tune", "tiny", "--storage", str(tmp_path / "t.sqlite"), "--backend", "ray", "--address"]
    assert main([*argv, f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Ray cluster answers" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", b"SSH-2.0-OpenSSH\r\n"],
                         ids=["silent", "a web server", "another protocol"])  # fmt: skip
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_that_answers_but_is_not_ray_is_one_line(tmp_path, capsys, answer, scheme):
    """Something listens there, but not a Ray cluster: one line within seconds (Ray itself would
    wait for ever), and nothing written."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(30)
    held = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)
        if answer is not None:
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        address = f"{scheme}127.0.0.1:{server.getsockname()[1]}"
        code = main(argv_for(tmp_path, "other", ["table1"], 1, 1, "--backend", "ray", "--address", address))
    finally:
        server.close()
        for conn in held:
            conn.close()
        thread.join(timeout=10)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not a Ray cluster" in err, err
    assert list(tmp_path.iterdir()) == []


def _ray_task_pids(temp_dir: str) -> list[int]:
    """The workers running our tasks in the Ray instance of temp_dir, and in no other (another test's,
    another user's)."""
    return [pid for pid, cmd in processes_of(temp_dir).items() if "ray::_call_on_worker" in cmd]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_is_retried_and_its_run_stored_once(tmp_path, no_ray_left):
    argv = argv_for(tmp_path, "kill", ["table3"], 3, 4, "--jobs", "2", "--backend", "ray")
    proc = subprocess.Popen([sys.executable, "-m", "digitcmp", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline, victims = time.time() + scaled_wait(90), []
        while time.time() < deadline and not victims:
            time.sleep(0.2)
            victims = _ray_task_pids(no_ray_left)
        assert victims, "no Ray task started"
        os.kill(victims[0], signal.SIGKILL)  # the worker process dies mid-task
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err == "", err  # Ray's report of the death (tens of lines) went to Ray's log folder
    runs = stored(tmp_path / "kill.sqlite")
    assert len(runs) == 3  # every run once, the killed one retried


def test_a_lost_head_is_one_line_of_ours_and_the_stored_runs_stay(tmp_path, no_ray_left):
    """The head of an external cluster stops mid-sweep (its GCS and raylet killed, as `ray stop`
    on its machine would): our line, naming Ray's log folder, and exit 1, not Ray's 60 s wait and
    C++ lines; the same command then resumes on a cluster started again."""
    with local_cluster(workers=1) as cluster:
        argv = argv_for(tmp_path, "head", ["table3"], 4, 15, "--backend", "ray", "--address", cluster.address)
        proc = subprocess.Popen([sys.executable, "-m", "digitcmp", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + scaled_wait(120)
            while not _ray_task_pids(cluster.temp_dir) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _ray_task_pids(cluster.temp_dir), "the sweep never started its Ray tasks"
            for pid in cluster.head_processes():
                os.kill(pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=50)  # Ray alone: 60 s of silence first
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "the Ray head at" in err and "stopped answering" in err and "run the same command to resume" in err
    log = err.split("Ray's messages: ")[1].rstrip(")\n")
    assert log.endswith(".err") and "Failed to connect to GCS" not in err
    with local_cluster(workers=0) as again:
        argv = argv_for(tmp_path, "head", ["table3"], 4, 15, "--backend", "ray", "--address", again.address)
        assert main(argv) == 0
    assert len(stored(tmp_path / "head.sqlite")) == 4


def test_a_cluster_that_wants_a_token_this_driver_lacks_is_one_line(tmp_path, no_ray_left, monkeypatch):
    """A token-authenticated cluster, a driver without the token (none, or another): one line
    that says authentication and how to set it, exit 2, and nothing written."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "c" * 32)
    with local_cluster(workers=0) as cluster:
        driver = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        for name, env in (("none", driver), ("other", {**driver, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "d" * 32})):
            argv = argv_for(tmp_path, name, ["table1"], 1, 1, "--backend", "ray", "--address", cluster.address)
            out = subprocess.run([sys.executable, "-m", "digitcmp", *argv], capture_output=True, text=True, env=env,
                                 timeout=240)  # fmt: skip
            assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
            assert "requires token authentication" in out.stderr and "RAY_AUTH_MODE=token" in out.stderr
        assert list(tmp_path.iterdir()) == []  # no store, no sweep row, no report folder


def test_a_two_node_cluster_on_this_machine_trains_on_both_nodes(tmp_path, no_ray_left):
    with local_cluster(workers=1) as cluster:
        argv = argv_for(tmp_path, "two", ["table3"], 6, 2, "--backend", "ray", "--address", cluster.address)
        assert main(argv) == 0
        nodes = {host.split("ray node ")[1] for *_, host in stored(tmp_path / "two.sqlite").values()}
        assert len(nodes) == 2  # both nodes trained runs
        with sqlite3.connect(tmp_path / "two.sqlite") as conn:  # the versions each node reported
            versions = set(conn.execute("SELECT package_version, torch_version FROM runs").fetchall())
        conn.close()
        assert versions == {(__import__("digitcmp").__version__, __import__("torch").__version__)}


def test_the_tests_end_their_own_cluster_and_spare_anyone_elses(tmp_path):
    """A cluster someone else runs on this machine (a stand-in started here) outlives a test's own
    cluster and a test's own local instance: only what a test started is ended."""
    with local_cluster(workers=0) as theirs:
        with local_cluster(workers=0) as ours:  # (a worker node of a second cluster on one host fails Ray's auth)
            assert ours.address != theirs.address
            mine = ours.processes()
            assert mine and not (mine & theirs.processes())
        assert not (set(ray_processes()) & mine)  # ours is gone, all of it
        others = theirs.processes()
        with only_ours():
            ray.init(address="local", num_cpus=1, include_dashboard=False)
            assert ray.is_initialized()
        assert others and all(os.path.exists(f"/proc/{pid}") for pid in others)  # theirs still runs


def test_tune_runs_its_trials_as_ray_tasks(tmp_path, no_ray_left, capsys):
    optuna = require("optuna")

    storage = tmp_path / "t.sqlite"
    argv = ["tune", "tiny", "--trials", "3", "--jobs", "2", "--backend", "ray", "--storage", str(storage), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").get_trials()
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 3 <= len(done) <= 4 and not ray.is_initialized()  # the Ray instance started for it is gone


@pytest.mark.parametrize("command", ["reproduce", "tune"])
@pytest.mark.parametrize("backend", [[], ["--backend", "local"]])
def test_an_address_without_the_ray_backend_is_one_line(tmp_path, capsys, command, backend):
    argv = ["tune", "tiny", "--storage", str(tmp_path / "t.sqlite")] if command == "tune" else argv_for(
        tmp_path, "a", ["table1"], 1, 1)  # fmt: skip
    assert main([*argv, *backend, "--address", "127.0.0.1:6379"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address needs --backend ray" in err
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_however_reproduce_ends_nothing_of_its_ray_instance_is_left(tmp_path, no_ray_left, how):
    from digitcmp.testing.processes import sigint_as_usual

    argv = argv_for(tmp_path, "end", ["table3"], 4, 8, "--jobs", "2", "--backend", "ray")
    proc = subprocess.Popen([sys.executable, "-m", "digitcmp", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_usual)  # fmt: skip
    try:
        deadline = time.monotonic() + scaled_wait(120)
        while not _ray_task_pids(no_ray_left) and time.monotonic() < deadline:  # training has started in Ray tasks
            time.sleep(0.5)
        assert _ray_task_pids(no_ray_left), "the sweep never started its Ray tasks"
        mine = set(processes_of(no_ray_left))  # this test's instance: another one here is not its to judge
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how != "SIGKILL":
        expected = {"SIGTERM": (143, "digitcmp: terminated"), "SIGINT": (130, "digitcmp: interrupted")}[how]
        assert (proc.returncode, err.strip()) == expected, err  # our line alone: none of Ray's output
    deadline = time.monotonic() + scaled_wait(5)
    left = lambda: {pid: cmd[:120] for pid, cmd in ray_processes().items() if pid in mine or no_ray_left in cmd}
    while left() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left(), left()  # gone within 5 s, the agents too
