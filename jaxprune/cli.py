"""The ``jaxprune`` command: train a config, evaluate a model, report finished runs.

    jaxprune list   experiments/configs/smp_table1.py
    jaxprune train  --config experiments/configs/smp_table1.py:mnli-10-smp_l [--set steps=100]
                    [--workdir runs] [--restart] [--random-init] [--distributed | --coordinator H:P
                    --num-processes N --process-id I] [--heartbeat-timeout S]
    jaxprune plan   --config experiments/configs/pins_glue.py:rte-80-pins [--devices 8 32]
                    [--layout dp fsdp zero] [--out experiments/results/scale]
    jaxprune eval   --run runs/smp_table1/mnli-10-smp_l          # its exported model
    jaxprune eval   --model runs/.../export --set task=rte
    jaxprune oneshot --model runs/small_repro/sst2-dense/export --task sst2 --method sparsegpt
                    --sparsity 0.5 | --nm 2:4 [--calibration 128] [--out DIR]
    jaxprune report runs/smp_table1 [--out DIR] [--reference experiments/reference]

``train`` writes ``<workdir>/<config name>/<variant>/`` (config.json, logs, checkpoints,
result.json, export/) and resumes there if interrupted; a folder holding another config's
checkpoints is refused (``--restart`` deletes them and starts afresh). It runs on every
device JAX sees; on several hosts start the same command on each (``--distributed`` lets
JAX find the cluster on Cloud TPU, SLURM and the like; elsewhere pass the coordinator).

A mistake in the input (a config, a ``--set``, a folder, the data) ends the command with one
line, ``jaxprune: <what is wrong>``, and exit status 1, before anything expensive runs;
``--traceback`` shows where it was raised.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys

REFERENCE = pathlib.Path("experiments") / "reference"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxprune", description=__doc__.splitlines()[0])
    p.add_argument("--traceback", action="store_true", help="show the traceback of an input error")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="the variants of a config file")
    ls.add_argument("config", help="path/to/config.py")

    tr = sub.add_parser("train", help="run a config variant")
    tr.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a Job field (or method_options.NAME); repeatable",
    )
    tr.add_argument(
        "--random-init",
        action="store_true",
        help="random weights of the model's (and teacher's) architecture: a smoke run at real "
        "shapes (same as --set random_init=True)",
    )
    tr.add_argument("--workdir", default="runs", help="runs go to WORKDIR/<config>/<variant>")
    tr.add_argument(
        "--restart",
        action="store_true",
        help="delete what an earlier run left in the run folder and start from step 0",
    )
    tr.add_argument(
        "--distributed",
        action="store_true",
        help="jax.distributed.initialize() with the cluster auto-detected",
    )
    tr.add_argument("--coordinator", help="HOST:PORT of process 0 (explicit multi-host)")
    tr.add_argument("--num-processes", type=int)
    tr.add_argument("--process-id", type=int)
    tr.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        metavar="S",
        help="multi-host: a process silent this many seconds ends the run (default 100)",
    )

    pl = sub.add_parser(
        "plan", help="compile and size config variants at real shapes (no weights, no accelerator)"
    )
    pl.add_argument(
        "--config", action="append", required=True, help="path/to/config.py[:variant]; repeatable"
    )
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--devices", type=int, nargs="+", default=[8], help="simulated device counts")
    pl.add_argument(
        "--layout",
        nargs="+",
        choices=("dp", "fsdp", "zero"),
        default=["dp"],
        help="dp: data parallel; fsdp: params and state sharded over data; zero: params "
        "replicated, optimizer / pruning state and teacher sharded over data",
    )
    pl.add_argument("--utilization", type=float, default=0.4, help="of each chip's peak")
    pl.add_argument(
        "--no-slope", action="store_true", help="skip the compiles that find the largest batch"
    )
    pl.add_argument("--out", help="folder for plan.jsonl (resumable), plan.md and plan.json")
    pl.add_argument(
        "--fast-codegen",
        action="store_true",
        help="LLVM at -O0: the same memory and FLOPs in about half the compile time",
    )
    pl.add_argument(
        "--cached", action="store_true", help="compile nothing: tabulate what --out holds"
    )

    ev = sub.add_parser("eval", help="dev metrics of a model on a task")
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a finished run folder: evaluates its export/")
    what.add_argument("--model", help="a checkpoint folder, 'minilm' or a Hub id")
    what.add_argument("--config", help="path/to/config.py[:variant]: its model as is")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    on = sub.add_parser(
        "oneshot", help="prune a trained model once from calibration batches, evaluate, export"
    )
    on.add_argument("--model", required=True, help="a fine-tuned checkpoint folder or Hub id")
    on.add_argument("--task", required=True)
    on.add_argument("--method", required=True, choices=("magnitude", "wanda", "sparsegpt"))
    amount = on.add_mutually_exclusive_group(required=True)
    amount.add_argument("--sparsity", type=float, help="fraction of every kernel pruned")
    amount.add_argument("--nm", metavar="N:M", help="keep N of every M inputs, e.g. 2:4")
    on.add_argument("--calibration", type=int, default=128, help="training examples")
    on.add_argument("--out", help="folder for result.json and export/")
    on.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    rp = sub.add_parser("report", help="Markdown table and plot of finished runs")
    rp.add_argument("runs", nargs="+", help="run folders (searched for result.json)")
    rp.add_argument("--out", help="output folder (default: the first run folder)")
    rp.add_argument("--reference", default=str(REFERENCE), help="published numbers folder")
    return p


def _distributed(args: argparse.Namespace) -> None:
    from jaxprune.train import distributed

    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError("--coordinator, --num-processes and --process-id go together")
        distributed.initialize(*explicit, heartbeat_timeout_s=args.heartbeat_timeout)
    elif args.distributed:
        distributed.initialize(heartbeat_timeout_s=args.heartbeat_timeout)


def _job(spec: str, assignments: list[str]):
    """The config variant ``spec`` with ``--set`` applied."""
    from jaxprune import recipes

    variant, job = recipes.load(spec)
    return variant, recipes.override(job, assignments)


def _train(args: argparse.Namespace) -> dict:
    from jaxprune import recipes

    variant, job = _job(args.config, args.set + (["random_init=True"] if args.random_init else []))
    _distributed(args)  # before anything touches a device (recipes.run validates the mesh)
    name = pathlib.Path(args.config.partition(":")[0]).stem
    run_dir = pathlib.Path(args.workdir) / name / variant
    logging.getLogger("jaxprune").info("run %s: %s", run_dir, job)
    result = recipes.run(job, run_dir, restart=args.restart)
    return {
        "run": str(run_dir),
        "dev": result["dev"],
        "sparsity": result["sparsity"],
        "export": result["export"],
        "seconds": result["seconds"],
    }


def _finished_run(folder: str):
    """The job of the finished run ``folder``, pointed at its exported model."""
    from jaxprune import recipes
    from jaxprune.train.loop import has_checkpoint

    run = pathlib.Path(folder)
    path = run / "result.json"
    if not path.is_file():
        unfinished = " (it has checkpoints: finish it with jaxprune train)"
        raise FileNotFoundError(
            f"{path} does not exist: {run} is not a finished run"
            + (unfinished if has_checkpoint(run) else "")
        )
    try:
        saved = json.loads(path.read_text())["job"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a result file ({type(err).__name__}: {err})") from err
    if not (run / "export").is_dir():
        raise FileNotFoundError(f"{run / 'export'} does not exist: the run's model is gone")
    fields = {f.name for f in dataclasses.fields(recipes.Job)}
    saved["method_options"] = tuple(sorted(saved.get("method_options", {}).items()))
    job = recipes.Job(**{k: v for k, v in saved.items() if k in fields})
    return dataclasses.replace(job, model=str(run / "export"))


def _eval(args: argparse.Namespace) -> dict:
    from jaxprune import recipes

    if args.run:
        job = _finished_run(args.run)
    elif args.config:
        job = _job(args.config, [])[1]
    else:
        job = recipes.Job(model=args.model)
    job = dataclasses.replace(job, method="dense", method_options=(), teacher=None)
    job = recipes.override(job, args.set)
    return {"model": job.model, "task": job.task, "dev": recipes.evaluate(job)}


def _oneshot(args: argparse.Namespace) -> dict:
    from jaxprune import recipes
    from jaxprune.recipes.oneshot import run_oneshot

    nm = None
    if args.nm is not None:
        n, sep, m = args.nm.partition(":")
        if not (sep and n.isdigit() and m.isdigit()):
            raise ValueError(f"--nm takes N:M such as 2:4, got {args.nm!r}")
        nm = (int(n), int(m))
    job = recipes.override(recipes.Job(model=args.model, task=args.task, method="dense"), args.set)
    return run_oneshot(
        job,
        method=args.method,
        sparsity=args.sparsity,
        nm=nm,
        calibration=args.calibration,
        out=args.out,
    )


def _plan(args: argparse.Namespace) -> dict | None:
    import jax

    if min(args.devices) < 1:
        raise ValueError(f"--devices must be >= 1, got {args.devices}")
    jax.config.update("jax_num_cpu_devices", max(args.devices))  # before JAX starts

    from jaxprune import plan, plan_report
    from jaxprune.recipes import job as job_lib

    out = pathlib.Path(args.out) if args.out else None
    groups, skipped = [], []
    for spec in args.config:
        path, _, variant = spec.partition(":")
        variants = job_lib.load_module(path).VARIANTS
        if variant:
            variants = {variant: _job(spec, [])[1]}
        variants = {k: job_lib.override(v, args.set) for k, v in variants.items()}
        found, unplannable = plan_report.programs(pathlib.Path(path).stem, variants)
        groups.extend(found)
        skipped.extend(unplannable)
    if not groups:
        raise ValueError("nothing to plan: " + "; ".join(skipped))
    layouts = [
        (d, kind == "fsdp", kind == "zero") for d in sorted(args.devices) for kind in args.layout
    ]

    def work():  # every layout first, then the largest batch on the first one
        for devices, fsdp, shard_state in layouts:
            for program in groups:
                layout = plan.layout_for(program.job, devices, fsdp, shard_state)
                ref = plan_report.Program(
                    program.config, ("fine-tuning",), plan.fine_tuning(program.job)
                )
                yield ref, layout, False, True
                yield program, layout, False, False
        for program in [] if args.no_slope else groups:
            yield program, plan.layout_for(program.job, *layouts[0]), True, False

    if args.cached and out is None:
        raise ValueError("--cached tabulates the plans in --out: give --out")
    records = list(
        plan_report.run(work(), out, compile=not args.cached, fast_codegen=args.fast_codegen)
    )
    planned = {(r["key"], r["layout"]["name"]) for r in records}
    missing = [
        f"{program.config} {program.variants[0]} on {layout.name}"
        for program, layout, _, reference in work()
        if not reference and (program.key, layout.name) not in planned
    ]
    argv = sys.argv[2:] if args.argv is None else args.argv[1:]
    command = "jaxprune plan " + " ".join(
        a for a in argv if a not in ("--cached", "--fast-codegen")
    )
    if out is None:
        table = plan_report.rows(records, args.utilization)
        print(plan_report.markdown(table, args.utilization, command))
        print("\n".join(plan_report.goals(table)))
        print("\n".join(f"cannot be planned: {s}" for s in skipped))
        return None
    plan_report.write(records, out, args.utilization, command, sorted(set(missing)), skipped)
    print((out / "plan.md").read_text())
    return {"table": str(out / "plan.md"), "rows": str(out / "plan.json")}


def _report(args: argparse.Namespace) -> dict:
    from jaxprune import report

    out = pathlib.Path(args.out or args.runs[0])
    table, figure = report.write(args.runs, out, args.reference)
    print(table.read_text())
    return {"table": str(table), "plot": str(figure)}


def _list(args: argparse.Namespace) -> dict | None:
    from jaxprune.recipes import job

    for name, variant in job.load_module(args.config).VARIANTS.items():
        print(f"{name:32s} {variant.task:10s} {variant.method:14s} {variant.sparsity:.2f}")
    return None


def _input_error(err: BaseException) -> bool:
    """Whether ``err`` reports a mistake in the command's input (one line, no traceback)."""
    from jaxprune.train.checkpoint import CheckpointError
    from jaxprune.train.loop import NonFiniteError

    return isinstance(err, ValueError | KeyError | OSError | CheckpointError | NonFiniteError)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
    args.argv = argv
    commands = {
        "list": _list,
        "train": _train,
        "plan": _plan,
        "eval": _eval,
        "oneshot": _oneshot,
        "report": _report,
    }
    command = commands[args.command]
    try:
        out = command(args)
        if out is not None:
            print(json.dumps(out, indent=2, default=str))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
    except Exception as err:
        if args.traceback or not _input_error(err):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise SystemExit(f"jaxprune: {' '.join(str(message).split())}") from None
    return 0


__all__ = [
    "REFERENCE",
    "main",
]


if __name__ == "__main__":
    sys.exit(main())
