"""docs/cluster.md's walkthrough of an external cluster, run as written on a two-node Ray cluster on
loopback: its placeholders filled in (HEAD_IP 127.0.0.1, CPUS 1, /shared a temporary folder, a free
port for 6379), each `ray start` given a temporary folder of its own so that the test can end every
process of its cluster and nothing else, and `ray stop` left out (it ends every Ray process of the
machine, another user's cluster included)."""

import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from digitcmp.testing.extras import require
from digitcmp.testing.ray_cluster import LocalCluster, end_process_trees, free_port, ray_processes

pytestmark = pytest.mark.slow  # a Ray cluster, sweeps and a tuning study in subprocesses

require("ray")
require("optuna")

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"


def walkthrough_commands() -> list[str]:
    """The command lines between the walkthrough's markers (comments and blank lines left out)."""
    text = DOC.read_text()
    block = re.search(r"<!-- walkthrough: start -->\s*```bash\n(.*?)```\s*<!-- walkthrough: end -->", text, re.S)
    assert block, "docs/cluster.md has no walkthrough block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_walkthrough_is_what_a_user_would_run():
    """Its commands start a head and a worker, run a sweep twice and tune, and stop Ray: nothing
    that this test would have to leave out besides `ray stop`."""
    words = [shlex.split(line)[:2] for line in walkthrough_commands()]
    assert words == [["ray", "start"], ["ray", "start"], ["digitcmp", "reproduce"], ["digitcmp", "reproduce"],
                     ["digitcmp", "tune"], ["ray", "stop"]]  # fmt: skip


def test_the_walkthrough_runs_on_a_two_node_cluster_on_loopback(tmp_path):
    port = str(free_port())
    shared = tmp_path / "shared"
    shared.mkdir()
    temp = tempfile.mkdtemp(prefix="dcw-", dir="/tmp")  # short: Ray's socket paths live under it
    cluster = LocalCluster(f"127.0.0.1:{port}", temp)
    fill = {"HEAD_IP": "127.0.0.1", "CPUS": "1", "6379": port, "/shared": str(shared)}
    # Token auth off unless set: a token file that another Ray left in ~/.ray would be taken by the head alone.
    env = {"RAY_AUTH_MODE": "disabled", **os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    before = set(ray_processes())
    outputs = []
    try:
        for line in walkthrough_commands():
            for placeholder, value in fill.items():
                line = line.replace(placeholder, value)
            argv = shlex.split(line)
            if argv[:2] == ["ray", "stop"]:
                continue
            if argv[0] == "ray":
                argv = [sys.executable, "-m", "ray.scripts.scripts", *argv[1:], "--temp-dir", temp,
                        "--node-ip-address", "127.0.0.1"]  # fmt: skip
            else:
                argv = [sys.executable, "-m", "digitcmp", *argv[1:], "--no-progress"]
            out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, (line, out.stderr[-3000:])
            outputs.append((line, out))
    finally:
        end_process_trees(cluster.processes() - before)
    sweeps = [out.stdout for line, out in outputs if "digitcmp reproduce" in line]
    assert "4 runs planned, 4 trained, 0 already stored" in sweeps[0]
    assert "4 runs planned, 0 trained, 4 already stored" in sweeps[1]  # the rerun trains nothing
    with sqlite3.connect(tmp_path / "results" / "cluster.sqlite") as conn:
        hosts = {host for (host,) in conn.execute("SELECT host FROM runs WHERE backend = 'ray'")}
    conn.close()
    assert len(hosts) == 2, hosts  # both nodes trained runs
    (tune,) = [out for line, out in outputs if "digitcmp tune" in line]
    assert "lr/sgd: chose trial" in tune.stdout and "lr/adam: chose trial" in tune.stdout, tune.stdout
    assert (shared / "tuning.sqlite").is_file()
    assert all(out.stderr.strip() == "" for _, out in outputs if "digitcmp" in _), "digitcmp wrote to stderr"
