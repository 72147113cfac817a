"""tpu_setup/tpu.py: parsing, the generated gcloud/ssh argv lists, quoting, dry run."""

import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tpu_setup_tpu", ROOT / "tpu_setup" / "tpu.py")
tpu = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tpu  # dataclasses look the module up
_spec.loader.exec_module(tpu)

CONFIG = "experiments/configs/demo.py"
NODE = tpu.Tpu("my-tpu", "us-central2-b", "my-proj")
BASE = ["--name", "my-tpu", "--zone", "us-central2-b", "--project", "my-proj"]


def remote(argv: list[str]) -> str:
    """The shell string of a ``gcloud ... ssh --command=...`` argv."""
    (command,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
    return command


def commands(*args: str) -> list[list[str]]:
    """What the CLI would print for ``args``."""
    return tpu.commands_for(tpu.build_parser().parse_args(list(args)))


def test_create_plain_argv():
    assert tpu.create_commands(NODE, "v4-32", None, spot=False, queued=False) == [
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "create",
            "my-tpu",
            "--zone=us-central2-b",
            "--project=my-proj",
            "--accelerator-type=v4-32",
            "--version=tpu-ubuntu2204-base",
        ]
    ]


def test_create_queued_spot_argv():
    (cmd,) = tpu.create_commands(NODE, "v6e-16", None, spot=True, queued=True)
    assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "my-tpu-qr"]
    for flag in (
        "--node-id=my-tpu",
        "--zone=us-central2-b",
        "--project=my-proj",
        "--accelerator-type=v6e-16",
        "--runtime-version=v2-alpha-tpuv6e",
        "--spot",
    ):
        assert flag in cmd


@pytest.mark.parametrize(
    ("accelerator", "version"),
    [
        ("v2-8", "tpu-ubuntu2204-base"),
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_runtime_version_by_family(accelerator, version):
    assert tpu.runtime_version(accelerator) == version


@pytest.mark.parametrize("bad", ["v4", "v4_8", "V4-8", "tpu-v4-8", "v4-", "4-8", "v4-8 "])
def test_malformed_accelerator_type_is_refused(bad):
    with pytest.raises(ValueError, match="malformed"):
        tpu.create_commands(NODE, bad, "tpu-ubuntu2204-base", spot=False, queued=False)


def test_unknown_family_needs_explicit_version():
    with pytest.raises(ValueError, match=r"'v9'.*pass --version"):
        tpu.runtime_version("v9-8")
    (cmd,) = tpu.create_commands(NODE, "v9-8", "some-runtime", spot=False, queued=False)
    assert "--version=some-runtime" in cmd


def test_bad_tpu_name_is_refused():
    with pytest.raises(ValueError, match="TPU name 'My_TPU'"):
        tpu.Tpu("My_TPU", "us-central2-b")


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--accelerator-type", "v4-8"],
        ["install"],
        ["data", "--bucket", "gs://b/d"],
        ["launch", "--config", CONFIG],
        ["check"],
        ["stop"],
        ["collect"],
        ["delete"],
    ],
)
def test_every_gcloud_tpu_command_names_zone_and_project(args):
    tpu_commands = [c for c in commands(*args, *BASE) if c[:3] == ["gcloud", "compute", "tpus"]]
    assert tpu_commands
    for cmd in tpu_commands:
        assert "--zone=us-central2-b" in cmd and "--project=my-proj" in cmd


@pytest.mark.parametrize(
    "args",
    [
        ["install"],
        ["data", "--bucket", "gs://b/d"],
        ["launch", "--config", CONFIG],
        ["check"],
        ["stop"],
    ],
)
def test_pod_commands_reach_all_workers(args):
    remote_commands = [c for c in commands(*args, *BASE) if c[4] in ("ssh", "scp")]
    assert remote_commands
    assert all("--worker=all" in c for c in remote_commands)


def test_install_ships_head_and_pip_installs_with_constraints():
    archive, scp, ssh = tpu.install_commands(NODE, None, "main", "/tmp/j.tar.gz", "tpu", "3.11")
    assert archive == [
        "git",
        "-C",
        str(ROOT),
        "archive",
        "--format=tar.gz",
        "-o",
        "/tmp/j.tar.gz",
        "HEAD",
    ]
    assert scp[4:7] == ["scp", "/tmp/j.tar.gz", "my-tpu:"]
    words = shlex.split(remote(ssh))
    assert words[4:9] == ["tar", "-xzf", "j.tar.gz", "-C", "jaxprune"]
    pip = words.index("-e")
    assert words[pip - 5 : pip + 2] == [
        ".venv/bin/pip",
        "install",
        "-q",
        "-c",
        "constraints.txt",
        "-e",
        ".[tpu]",
    ]
    assert words[words.index("--python") + 1] == "3.11"


def test_install_from_git_clones_on_the_workers():
    (ssh,) = tpu.install_commands(NODE, "https://x.org/a b.git", "v1", "t.tgz", "tpu", "3.11")
    words = shlex.split(remote(ssh))
    assert words[words.index("clone") + 1] == "https://x.org/a b.git"
    assert words[words.index("fetch") : words.index("fetch") + 3] == ["fetch", "origin", "v1"]


def test_data_rsyncs_the_bucket_on_every_worker():
    (ssh,) = tpu.data_commands(NODE, "gs://bkt/data", "data")
    assert shlex.split(remote(ssh)) == [
        "mkdir",
        "-p",
        "data",
        "&&",
        "gcloud",
        "storage",
        "rsync",
        "--recursive",
        "gs://bkt/data",
        "data",
    ]


@pytest.mark.parametrize("bad", ["bkt/data", "/local/data", "gs://", "s3://bkt"])
def test_data_needs_a_gs_url(bad):
    with pytest.raises(ValueError, match="not a Cloud Storage URL"):
        tpu.data_commands(NODE, bad, "data")


def test_launch_quotes_overrides_with_spaces():
    (ssh,) = commands(
        "launch",
        *BASE,
        "--config",
        CONFIG,
        "--set",
        'run.name="value with spaces"',
        "--set",
        "optim.lr=3e-5",
        "--workdir",
        "runs/x",
    )
    words = shlex.split(remote(ssh))
    train = words[words.index("nohup") + 1 : words.index(">")]
    assert train == [
        ".venv/bin/python",
        "-m",
        "jaxprune.cli",
        "train",
        "--config",
        CONFIG,
        "--set",
        'run.name="value with spaces"',
        "--set",
        "optim.lr=3e-5",
        "--workdir",
        "runs/x",
        "--distributed",
    ]
    assert words[words.index(">") + 1] == "train.log"
    assert 'JAXPRUNE_DATA_DIR="$HOME"/data' in remote(ssh)


def test_background_command_runs_in_bash_with_env_and_exact_argv(tmp_path):
    """The string launch sends is real shell: run it here with a stand-in for the trainer."""
    script = "import os, sys; print(sys.argv[1:], os.environ['JAXPRUNE_DATA_DIR'], os.getcwd())"
    argv = [sys.executable, "-c", script, "--set", "k=\"value with spaces\" and 'quotes'"]
    env = tpu.env_assignments("data", ["EXTRA=a b"])
    command = tpu.background(str(tmp_path), argv, env, "out.log")
    started = subprocess.run(
        ["bash", "-c", command],
        env={"HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0 and "started pid" in started.stdout
    log = tmp_path / "out.log"
    for _ in range(200):
        if log.exists() and log.read_text().endswith("\n"):
            break
        time.sleep(0.05)
    expected = [argv[3], argv[4]]
    assert log.read_text() == f"{expected} {tmp_path}/data {tmp_path}\n"


def test_missing_config_file_is_refused():
    with pytest.raises(ValueError, match=r"config file 'experiments/configs/nope\.py' not found"):
        commands("launch", *BASE, "--config", "experiments/configs/nope.py:small")
    with pytest.raises(ValueError, match="relative to the repository root"):
        tpu.check_config(str(ROOT / CONFIG))
    assert tpu.check_config(f"{CONFIG}:variant") == f"{CONFIG}:variant"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "no-equals"], "--set 'no-equals': expected key=value"),
        (["--env", "1BAD=x"], "--env '1BAD=x': expected NAME=value"),
    ],
)
def test_bad_overrides_are_refused(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        commands("launch", *BASE, "--config", CONFIG, *args)


def test_empty_data_dir_leaves_the_hub():
    (ssh,) = commands("launch", *BASE, "--config", CONFIG, "--data-dir", "")
    assert "JAXPRUNE_DATA_DIR" not in remote(ssh)


def test_stop_pattern_matches_the_trainer_not_itself():
    (ssh,) = tpu.stop_commands(NODE)
    command = remote(ssh)
    pattern = shlex.split(command)[shlex.split(command).index("--full") + 1]
    assert re.search(pattern, ".venv/bin/python -m jaxprune.cli train --config x.py")
    assert not re.search(pattern, command)


def test_collect_from_worker_zero_or_bucket():
    mkdir, scp = commands("collect", *BASE)
    assert mkdir == ["mkdir", "-p", "runs-my-tpu"]
    assert scp[4:9] == [
        "scp",
        "--recurse",
        "my-tpu:jaxprune/runs",
        "my-tpu:jaxprune/train.log",
        "runs-my-tpu",
    ]
    assert "--worker=0" in scp
    _, rsync = commands("collect", *BASE, "--bucket", "gs://b/runs", "--dest", "out")
    assert rsync == ["gcloud", "storage", "rsync", "--recursive", "gs://b/runs", "out"]


def test_delete_plain_and_queued():
    (plain,) = commands("delete", *BASE)
    assert plain[4:6] == ["delete", "my-tpu"] and "--quiet" in plain
    (queued,) = commands("delete", *BASE, "--queued")
    assert queued[3:6] == ["queued-resources", "delete", "my-tpu-qr"] and "--force" in queued


def test_gpu_launch_here_needs_no_coordinator():
    (cmd,) = commands("gpu-launch", "--config", CONFIG, "--data-dir", "/data")
    assert cmd[:2] == ["bash", "-c"]
    assert "--coordinator" not in cmd[2] and "JAXPRUNE_DATA_DIR=/data" in cmd[2]


def test_gpu_launch_on_hosts_numbers_the_processes():
    cmds = commands(
        "gpu-launch", "--config", CONFIG, "--hosts", "me@gpu0,gpu1,gpu2", "--port", "9999"
    )
    assert [c[:2] for c in cmds] == [["ssh", "me@gpu0"], ["ssh", "gpu1"], ["ssh", "gpu2"]]
    for i, (_, _, command) in enumerate(cmds):
        words = shlex.split(command)
        assert words[words.index("--coordinator") + 1] == "gpu0:9999"
        assert words[words.index("--num-processes") + 1] == "3"
        assert words[words.index("--process-id") + 1] == str(i)


def test_gpu_launch_single_host_and_bad_port():
    ((_, _, command),) = commands("gpu-launch", "--config", CONFIG, "--hosts", "gpu0")
    assert "--coordinator" not in command
    with pytest.raises(ValueError, match="port 70000 is out of range"):
        commands("gpu-launch", "--config", CONFIG, "--hosts", "a,b", "--port", "70000")


def test_dry_run_prints_and_executes_nothing(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("dry run must not execute")

    monkeypatch.setattr(tpu.subprocess, "run", refuse)
    args = ["launch", *BASE, "--config", CONFIG, "--set", "a=b c"]
    assert tpu.main(args) == 0
    printed = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == commands(*args)


def test_run_executes_each_command_in_order(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(tpu.subprocess, "run", lambda argv, check: ran.append((argv, check)))
    tpu.main(["collect", *BASE, "--run"])
    assert ran == [(c, True) for c in commands("collect", *BASE)]


def test_cli_reports_bad_input_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tpu.main(["create", *BASE, "--accelerator-type", "v4_8"])
    assert exit_info.value.code == 2
    assert "accelerator type 'v4_8' is malformed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tpu.main(["create", "--zone", "z", "--accelerator-type", "v4-8"])  # no --name
    assert "--name" in capsys.readouterr().err
