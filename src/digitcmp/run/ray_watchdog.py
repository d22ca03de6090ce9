"""Nothing of a local Ray instance outlives the command that started it, however that command ends.

ray.shutdown() stops the raylet and the GCS, but Ray's agents (DashboardAgent, RuntimeEnvAgent)
only notice some seconds later, and after a kill -9 of the driver no shutdown runs at all. So the
driver starts this watchdog (a process of its own) before Ray: while the driver lives, the watchdog
notes every process below it; when the driver is gone, it kills the ones it noted that still run
(each checked by its start time, so a reused pid is never hit). The driver also calls
kill_leftovers() itself after a shutdown. Linux (/proc); elsewhere the watchdog does nothing.

Run as `python -m digitcmp.run.ray_watchdog DRIVER_PID BEFORE` (BEFORE: JSON of pid -> start time).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

POLL_S = 0.25


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a running process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    if fields[0] == "Z":  # a zombie has ended
        return None
    return int(fields[1]), int(fields[19])


def descendants(*roots: int) -> dict[int, int]:
    """Every running process below any of the roots (one pass over /proc): pid -> start time."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (facts := _stat(int(entry))) is not None:
            children.setdefault(facts[0], []).append(int(entry))
            started[int(entry)] = facts[1]
    found, stack = {}, list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = started[child]
                stack.append(child)
    return found


def kill_leftovers(noted: dict[int, int]) -> int:
    """SIGKILL the noted processes (and what runs below them) that still run as the same
    process; returns how many were killed."""
    targets = {**descendants(*noted), **noted}
    killed = 0
    for pid, start in targets.items():
        facts = _stat(pid)
        if facts is not None and facts[1] == start and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def start(before: dict[int, int]) -> subprocess.Popen | None:
    """Start the watchdog for this process (the driver), which will spare the processes `before`
    (the driver's own, noted before Ray started: the watchdog itself may start after Ray's first
    processes); returns its Popen, or None off Linux."""
    import json
    import subprocess

    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "digitcmp.run.ray_watchdog", str(os.getpid()), json.dumps(before)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a Ctrl-C or kill of the group spares it
    )


def new_descendants(root: int, before: dict[int, int]) -> dict[int, int]:
    """The processes below root that were not there (as the same process) in `before`."""
    return {pid: start for pid, start in descendants(root).items() if before.get(pid) != start and pid != os.getpid()}


def watch(driver: int, before: dict[int, int]) -> None:
    """Until the driver ends, note what runs below it (the processes `before` excepted); then kill
    what is left of it."""
    facts = _stat(driver)
    if facts is None:
        return
    driver_start, noted = facts[1], {}
    while True:
        now = _stat(driver)
        if now is None or now[1] != driver_start:
            kill_leftovers(noted)
            return
        noted = new_descendants(driver, before)  # the latest view: processes that ended drop out
        time.sleep(POLL_S)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ends with its driver, not with a terminal's Ctrl-C
    import json

    watch(int(sys.argv[1]), {int(pid): start for pid, start in json.loads(sys.argv[2]).items()})
