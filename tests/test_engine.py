"""The engine across devices, mesh axis types, processes and interruptions, each run in a
subprocess.

Every run trains the same tiny BERT with PINS pruning (tests/engine_worker.py) for 20 steps
and saves its final params and masks; runs are compared with the one-device run. The default
run keeps to what fits in about two minutes on two cores; ``-m slow`` runs the rest.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("engine_worker.py")
TIMEOUT = 240


def run_worker(tmp: Path, name: str, *extra: str, wait: bool = True, run_dir: str | None = None):
    out = tmp / f"{name}.npz"
    run = str(tmp / (run_dir or name))
    cmd = [sys.executable, str(WORKER), "--out", str(out), "--run-dir", run, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not wait:
        return out, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def assert_same(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith("masks/") or tol == 0:  # masks always agree exactly
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], atol=tol, rtol=0, err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    return load(run_worker(tmp, "one_device", "--checkpoint-every", "100"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAYOUTS = {  # 8 devices: flags, and the specs of the query kernel (heads on `model`) and of
    # its state (mask, criterion, Adam moments)
    "dp": (["--data", "8"], "P(None, 'model')", "P(None, 'model')"),
    "tp": (["--data", "4", "--model", "2"], "P(None, 'model')", "P(None, 'model')"),
    "fsdp": (["--data", "4", "--model", "2", "--fsdp"], "P('data', 'model')", "P('data', 'model')"),
    "zero": (
        ["--data", "4", "--model", "2", "--shard-state"],
        "P(None, 'model')",
        "P('data', 'model')",
    ),
}
AXIS_TYPES = {  # mesh axis types (data, model) each --axis-types gives
    "auto": ["Auto", "Auto"],
    "explicit": ["Explicit", "Explicit"],
    "mixed": ["Explicit", "Auto"],
}
# (axis types, layout, under jax.set_mesh): every axis type in every layout; the default run
# covers each axis type and each layout once, with and without jax.set_mesh.
MATRIX = [
    ("explicit", "tp", True),
    ("mixed", "fsdp", False),
    ("auto", "dp", True),
    ("explicit", "zero", False),
]
SLOW_MATRIX = [
    ("auto", "zero", True),
    ("mixed", "zero", False),
    ("explicit", "dp", False),
    ("explicit", "fsdp", True),
    ("mixed", "dp", True),
    ("mixed", "tp", False),
    ("auto", "tp", False),
    ("auto", "fsdp", False),
]


@pytest.mark.parametrize(
    "axis_types, layout, set_mesh",
    MATRIX + [pytest.param(*case, marks=pytest.mark.slow) for case in SLOW_MATRIX],
    ids=lambda v: ("set_mesh" if v else "no_mesh") if isinstance(v, bool) else v,
)
def test_sharded_step_matches_one_device(tmp_path, reference, axis_types, layout, set_mesh):
    flags, spec, state_spec = LAYOUTS[layout]
    flags = ["--devices", "8", *flags, "--axis-types", axis_types, "--checkpoint-every", "100"]
    out = run_worker(tmp_path, "sharded", *flags, *(["--set-mesh"] if set_mesh else []))
    assert_same(load(out), reference, tol=1e-5)
    seen = json.loads(out.with_suffix(".json").read_text())
    assert seen["axis_types"] == AXIS_TYPES[axis_types]
    # the masks, the criterion state and Adam's moments are sharded alike (and like the
    # params but for `zero`, where they are split over `data` too)
    assert seen["query_kernel"] == spec
    state = ("query_mask", "query_importance", "query_adam_mu")
    assert {key: seen[key] for key in state} == dict.fromkeys(state, state_spec)
    assert seen["addressable_shards"] == 8


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, reference):
    port = free_port()
    procs = [
        run_worker(
            tmp_path,
            f"proc{i}",
            "--devices",
            "4",
            "--data",
            "8",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            wait=False,
            run_dir="shared_run_dir",  # one checkpoint directory for both hosts
        )
        for i in range(2)
    ]
    for _, proc in procs:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for _, p in procs:
                p.kill()
            pytest.fail("two-process run timed out")
        assert proc.returncode == 0, output.decode()[-3000:]
    assert_same(load(procs[0][0]), reference, tol=1e-5)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = TIMEOUT) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"worker exited early: {proc.stdout.read().decode()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"{path} never appeared")
        time.sleep(0.2)


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
    out, proc = run_worker(tmp_path, "run", "--sleep-at", "10", wait=False)
    wait_for(tmp_path / "run" / "paused", proc)
    wait_for(tmp_path / "run" / "checkpoints" / "latest" / "9", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()
    resumed = run_worker(tmp_path, "run")  # same run dir: resumes from step 9
    assert_same(load(resumed), reference, tol=0)


@pytest.mark.slow
@pytest.mark.parametrize("pause", [10, 11], ids=["between_saves", "on_a_save_step"])
def test_sigterm_saves_before_exiting(tmp_path, reference, pause):
    _, proc = run_worker(
        tmp_path, "run", "--sleep-at", str(pause), "--sleep-seconds", "3", wait=False
    )
    wait_for(tmp_path / "run" / "paused", proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143, output.decode()[-3000:]
    # saves every 3 steps: step 11 was saved because of SIGTERM, step 12 only once
    assert (tmp_path / "run" / "checkpoints" / "latest" / str(pause + 1)).is_dir()
    resumed = run_worker(tmp_path, "run")
    assert_same(load(resumed), reference, tol=0)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path, reference):
    """JAX's preemption service makes both hosts save the same step, though only one hears."""
    port = free_port()
    flags = ["--devices", "4", "--data", "8", "--coordinator", f"127.0.0.1:{port}"]
    flags += ["--num-processes", "2", "--sleep-at", "10", "--sleep-seconds", "3"]

    def start(i: int) -> subprocess.Popen:
        return run_worker(
            tmp_path, f"proc{i}", *flags, "--process-id", str(i), wait=False, run_dir="run"
        )[1]

    procs = [start(0), start(1)]
    try:
        wait_for(tmp_path / "run" / "paused", procs[0])
        wait_for(tmp_path / "run" / "paused.1", procs[1])
        procs[1].send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=TIMEOUT)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [143, 143], outputs[0][-2000:] + outputs[1][-2000:]
    # both were paused after step 10, so the agreed step is 11, which no schedule saves
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints" / "latest")) == ["11", "9"]
    resumed = [start(0), start(1)]
    for p in resumed:
        output, _ = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, output.decode()[-3000:]
    assert_same(load(tmp_path / "proc0.npz"), reference, tol=1e-5)


def test_dead_process_stops_the_other_within_heartbeat_timeout(tmp_path):
    """Process 1 is SIGKILLed mid-run while process 0 trains on: JAX's coordination service
    misses process 1's heartbeats and ends process 0 (non-zero) within the timeout, saying so.
    """
    port, heartbeat = free_port(), 10
    flags = ["--devices", "4", "--data", "8", "--coordinator", f"127.0.0.1:{port}"]
    flags += ["--num-processes", "2", "--heartbeat-timeout", str(heartbeat), "--sleep-at", "2"]

    def start(i: int, sleep: str) -> subprocess.Popen:
        return run_worker(
            tmp_path,
            f"proc{i}",
            *flags,
            "--process-id",
            str(i),
            "--sleep-seconds",
            sleep,
            wait=False,
            run_dir="run",
        )[1]

    procs = [start(0, "1"), start(1, "600")]  # process 0 then waits in step 2's all-reduce
    try:
        wait_for(tmp_path / "run" / "paused.1", procs[1])
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        output = procs[0].communicate(timeout=heartbeat + 60)[0].decode()
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode != 0, output[-3000:]
    assert waited < heartbeat + 30, f"process 0 took {waited:.0f} s to stop"
    assert "another task died" in output, output[-3000:]
    assert re.search(r"stopped sending heartbeats\):\s+1\n", output), output[-3000:]  # names 1


def test_nan_stops_with_step_and_last_checkpoint(tmp_path):
    cmd = [
        sys.executable,
        str(WORKER),
        "--out",
        str(tmp_path / "x.npz"),
        "--run-dir",
        str(tmp_path / "run"),
        "--nan-at",
        "7",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode != 0
    assert "non-finite loss or gradients at step 7" in proc.stderr
    assert "checkpoints/latest/6" in proc.stderr


def test_a_recipe_with_sharded_state_exports_what_data_parallel_exports(tmp_path):
    """``Job(shard_state=True)`` on 8 devices (PINS: masks, criterion, Adam moments and the
    self-teacher split over ``data``, params replicated) trains, refreshes its teacher,
    evaluates and exports the data-parallel run's model (before the fix, the export's
    ``masks.apply`` of split masks on replicated params failed on Explicit axes)."""
    worker = Path(__file__).with_name("recipe_worker.py")
    for flags in ([], ["--shard-state"]):
        done = subprocess.run(
            [sys.executable, str(worker), str(tmp_path), "pins", *flags],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=worker.parent,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    zero, dp = load(tmp_path / "pins-zero.npz"), load(tmp_path / "pins-dp.npz")
    for key in dp:  # every exported tensor, pruned zeros included
        np.testing.assert_array_equal(zero[key] == 0, dp[key] == 0, err_msg=key)
        np.testing.assert_allclose(zero[key], dp[key], atol=1e-6, rtol=0, err_msg=key)
    results = [json.loads((tmp_path / f"pins-{k}.json").read_text()) for k in ("zero", "dp")]
    assert results[0]["sparsity"] == results[1]["sparsity"] == 0.5
    assert results[0]["dev"] == results[1]["dev"]
    assert results[0]["job"]["shard_state"] and not results[1]["job"]["shard_state"]
