"""The API's contract, checked by a client no one here wrote: Schemathesis reads /openapi.json from
a live `digitcmp serve` on 127.0.0.1 and sends what the schema allows and what it does not (bounded:
a fixed seed and example count, a timeout per request and in all). Every schema-valid request must
be answered as the schema says, every schema-violating one refused with a declared 4xx, never a 5xx.
The image parts are generated as images (tests/schemathesis_hooks.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitcmp.testing.extras import require

require("fastapi")
require("schemathesis")

from digitcmp.testing.live_server import serve_command  # noqa: E402

pytestmark = pytest.mark.slow  # Schemathesis against a live server: outside the fast tier (pytest -m "not slow")

TESTS = Path(__file__).parent


def test_schemathesis_finds_nothing_against_a_live_server(tmp_path):
    with serve_command() as (_, line):
        assert line.startswith("serving http://127.0.0.1:"), line
        url = line.split()[1]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(TESTS)}
        cli = Path(sys.executable).with_name("schemathesis")
        run = subprocess.run(
            [
                str(cli),
                "run",
                f"{url}openapi.json",
                "--max-examples",
                "60",
                "--seed",
                "20261201",
                "--request-timeout",
                "30",
                "--no-color",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
            cwd=tmp_path,  # fmt: skip
        )
        assert run.returncode == 0 and "No issues found" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
        assert "passed" in run.stdout and " 0 generated" not in run.stdout
