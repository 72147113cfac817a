"""The core on 8 simulated devices under Auto, Explicit and mixed mesh axes.

Each run is a subprocess (``tests/explicit_worker.py``) so that XLA_FLAGS is set before
jax is imported; the worker prints one line per case and exits with the failure count.
"""

import pathlib
import subprocess
import sys

import pytest

WORKER = pathlib.Path(__file__).with_name("explicit_worker.py")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["auto"], marks=pytest.mark.slow),  # Auto: also tests/test_engine.py
        pytest.param(["auto", "--no-set-mesh"], marks=pytest.mark.slow),
        ["explicit"],
        ["mixed"],
    ],
    ids=["auto", "auto-no-set-mesh", "explicit", "mixed"],
)
def test_core_on_meshes_of_every_axis_type(args):
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=600
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    failures = [line for line in lines if line.startswith("FAIL")]
    assert len(lines) == 16, done.stdout + done.stderr[-3000:]
    assert not failures and done.returncode == 0, "\n".join(failures) or done.stderr[-3000:]
