"""A Ctrl-C that Python swallows (it lands in a __del__ or a weakref callback) still ends the command."""

import subprocess
import sys
import textwrap

import pytest

from digitcmp.testing.processes import sigint_as_usual

pytestmark = pytest.mark.slow  # commands in subprocesses, interrupted: outside the fast tier (pytest -m "not slow")

# `digitcmp list`, with the command replaced by work during which SIGINT lands inside a __del__: Python
# reports such an exception as "ignored" and goes on. Then the training loop's check, then the end.
SCRIPT = textwrap.dedent(
    """
    import dataclasses, os, signal, sys
    from digitcmp import cli
    from digitcmp.common import interrupts

    class SwallowsInterrupts:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, and its KeyboardInterrupt is ignored
                pass

    def command(args):
        SwallowsInterrupts()
        print("swallowed" if interrupts.requested() else "not requested", flush=True)
        if sys.argv[1] == "train":
            interrupts.check()  # what every training step does
            print("went on", flush=True)

    cli.COMMANDS["list"] = dataclasses.replace(cli.COMMANDS["list"], run=command)
    sys.exit(cli.main(["list"]))
    """
)


def run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, preexec_fn=sigint_as_usual
    )


def test_a_swallowed_ctrl_c_ends_the_command_as_interrupted():
    done = run("end")
    assert done.stdout == "swallowed\n"  # the work went on after the interrupt, as Python does
    assert done.returncode == 130 and done.stderr.strip() == "digitcmp: interrupted", done.stderr


def test_a_swallowed_ctrl_c_stops_the_training_at_its_next_step():
    done = run("train")
    assert "went on" not in done.stdout
    assert done.returncode == 130 and done.stderr.strip() == "digitcmp: interrupted", done.stderr
