"""`digitcmp serve --workers N`: N processes answer on one port, each request answered whole and
right, and when the command is stopped no worker outlives it; a bad model is refused before any
worker starts."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from digitcmp.testing.extras import require

require("fastapi")

import httpx  # noqa: E402

from digitcmp.testing.live_server import serve_command  # noqa: E402
from digitcmp.testing.processes import scaled_wait  # noqa: E402

pytestmark = pytest.mark.slow  # real server processes


def _children(pid: int) -> set[int]:
    """The processes pid started (Linux: /proc/<pid>/task/*/children)."""
    from pathlib import Path

    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_answer_concurrent_requests_on_one_port_and_stop_with_the_command():
    x = np.zeros((2, 2, 14, 14))
    x[0, 0, 3:11, 6:8] = 255  # a 1 against a blank
    x[1, :, 3:11, 6:8] = 255  # two 1s
    with serve_command("--workers", "2") as (proc, line):
        assert "2 processes" in line, line
        url = line.split()[1].rstrip("/")
        workers = set()
        with httpx.Client(timeout=30) as client:

            def ask(i):
                return client.post(f"{url}/api/compare", json={"pairs": x[i % 2 : i % 2 + 1].tolist()})

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(ask, range(64)))
            workers = _children(proc.pid)
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:1]
        assert {a.json()["answers"][0]["unsure"] for a in answers[1::2]} == {False}  # two 1s: sure
        assert len(workers) >= 2
    assert proc.returncode is not None and "Traceback" not in proc.stderr_text, proc.stderr_text
    # The workers are ended before the command returns; multiprocessing's resource tracker (also a
    # child) ends when it sees the command gone, a moment later.
    deadline = time.monotonic() + scaled_wait(10)
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]


def test_a_bad_model_is_refused_before_any_worker_starts(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    done = subprocess.run([sys.executable, "-m", "digitcmp", "serve", "--port", "0", "--workers", "2", "--model", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "serving" not in done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "not a readable ONNX graph" in done.stderr


@pytest.mark.parametrize("workers", ["0", "65", "two"])
def test_a_bad_worker_count_is_one_line(workers, capsys):
    from digitcmp.cli import main

    assert main(["serve", "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workers" in err and "integer in [1, 64]" in err
