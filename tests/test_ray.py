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
from digitcmp.testing.ray_cluster import free_port, local_cluster, only_ours, ray_processes

pytestmark = pytest.mark.slow  # Ray instances and clusters: outside the fast tier (pytest -m "not slow")

# CI installs the extra (.ci/run): there a missing Ray is a failure, not a silent skip.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")


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
    which would end every Ray instance on the machine, another user's cluster included)."""
    with only_ours():
        yield


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
    from digitcmp.run import ray_backend

    monkeypatch.setattr(ray_backend, "__version__", "0.0-other")
    code = main(argv_for(tmp_path, "v", ["table1"], 1, 1, "--jobs", "1", "--backend", "ray"))
    err = capsys.readouterr().err
    assert code == 2 and "workers must run the driver's digitcmp 0.0-other" in err and err.count("\n") == 1


def test_without_ray_the_backend_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    code = main(argv_for(tmp_path, "none", ["table1"], 1, 1, "--backend", "ray"))
    err = capsys.readouterr().err
    assert code == 2 and "pip install -e .[ray]" in err and err.count("\n") == 1
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "nonsense"])
def test_an_address_where_no_cluster_answers_is_one_line(tmp_path, capsys, address):
    started = time.time()
    argv = argv_for(tmp_path, "gone", ["table1"], 1, 1, "--backend", "ray", "--address", address.format(port=free_port()))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("--address must be" in err or "no Ray cluster answers" in err), err
    assert time.time() - started < 60  # Ray alone would retry the address for minutes
    assert list(tmp_path.iterdir()) == []  # nothing written (no store, no sweep row, no report folder)


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


def _ray_task_pids() -> list[int]:
    return [pid for pid, cmd in ray_processes().items() if "ray::_call_on_worker" in cmd]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_is_retried_and_its_run_stored_once(tmp_path, no_ray_left):
    argv = argv_for(tmp_path, "kill", ["table3"], 3, 4, "--jobs", "2", "--backend", "ray")
    proc = subprocess.Popen([sys.executable, "-m", "digitcmp", *argv], stderr=subprocess.PIPE, text=True)
    try:
        deadline, victims = time.time() + 90, []
        while time.time() < deadline and not victims:
            time.sleep(0.2)
            victims = _ray_task_pids()
        assert victims, "no Ray task started"
        os.kill(victims[0], signal.SIGKILL)  # the worker process dies mid-task
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    runs = stored(tmp_path / "kill.sqlite")
    assert len(runs) == 3  # every run once, the killed one retried


def test_a_two_node_cluster_on_this_machine_trains_on_both_nodes(tmp_path, no_ray_left):
    with local_cluster(workers=1) as cluster:
        argv = argv_for(tmp_path, "two", ["table3"], 6, 2, "--backend", "ray", "--address", cluster.address)
        assert main(argv) == 0
        nodes = {host.split("ray node ")[1] for *_, host in stored(tmp_path / "two.sqlite").values()}
        assert len(nodes) == 2  # both nodes trained runs


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
    optuna = __import__("optuna") if os.environ.get("CI") else pytest.importorskip("optuna")

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

    elsewhere = set(ray_processes())  # another instance on this machine is not this test's to judge
    argv = argv_for(tmp_path, "end", ["table3"], 4, 8, "--jobs", "2", "--backend", "ray")
    proc = subprocess.Popen([sys.executable, "-m", "digitcmp", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_as_usual)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _ray_task_pids() and time.monotonic() < deadline:  # training has started in Ray tasks
            time.sleep(0.5)
        assert _ray_task_pids(), "the sweep never started its Ray tasks"
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how != "SIGKILL":
        expected = {"SIGTERM": (143, "digitcmp: terminated"), "SIGINT": (130, "digitcmp: interrupted")}[how]
        assert (proc.returncode, err.strip()) == expected, err  # our line alone: none of Ray's output
    deadline = time.monotonic() + 5
    left = lambda: {pid: cmd[:120] for pid, cmd in ray_processes().items() if pid not in elsewhere}
    while left() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left(), left()  # gone within 5 s, the agents too
