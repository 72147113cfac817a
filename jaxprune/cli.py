"""The ``jaxprune`` command: train a config, evaluate a model, report finished runs.

    jaxprune list   experiments/configs/smp_table1.py
    jaxprune train  --config experiments/configs/smp_table1.py:mnli-10-smp_l [--set steps=100]
                    [--workdir runs] [--distributed | --coordinator H:P --num-processes N
                    --process-id I]
    jaxprune eval   --run runs/smp_table1/mnli-10-smp_l          # its exported model
    jaxprune eval   --model runs/.../export --set task=rte
    jaxprune report runs/smp_table1 [--out DIR] [--reference experiments/reference]

``train`` writes ``<workdir>/<config name>/<variant>/`` (config.json, logs, checkpoints,
result.json, export/) and resumes there if interrupted. It runs on every device JAX sees;
on several hosts start the same command on each (``--distributed`` lets JAX find the
cluster on Cloud TPU, SLURM and the like; elsewhere pass the coordinator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import sys

REFERENCE = pathlib.Path("experiments") / "reference"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxprune", description=__doc__.splitlines()[0])
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
    tr.add_argument("--workdir", default="runs", help="runs go to WORKDIR/<config>/<variant>")
    tr.add_argument(
        "--distributed",
        action="store_true",
        help="jax.distributed.initialize() with the cluster auto-detected",
    )
    tr.add_argument("--coordinator", help="HOST:PORT of process 0 (explicit multi-host)")
    tr.add_argument("--num-processes", type=int)
    tr.add_argument("--process-id", type=int)

    ev = sub.add_parser("eval", help="dev metrics of a model on a task")
    what = ev.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a finished run folder: evaluates its export/")
    what.add_argument("--model", help="a checkpoint folder, 'minilm' or a Hub id")
    what.add_argument("--config", help="path/to/config.py[:variant]: its model as is")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    rp = sub.add_parser("report", help="Markdown table and plot of finished runs")
    rp.add_argument("runs", nargs="+", help="run folders (searched for result.json)")
    rp.add_argument("--out", help="output folder (default: the first run folder)")
    rp.add_argument("--reference", default=str(REFERENCE), help="published numbers folder")
    return p


def _distributed(args: argparse.Namespace) -> None:
    import jax

    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise SystemExit("--coordinator, --num-processes and --process-id go together")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()


def _overridden(job, assignments: list[str]):
    from jaxprune import recipes

    try:
        return recipes.override(job, assignments)
    except ValueError as err:
        raise SystemExit(f"jaxprune: {err}") from None


def _job(spec: str, assignments: list[str]):
    """The config variant ``spec`` with ``--set`` applied; bad input exits with its reason."""
    from jaxprune import recipes

    try:
        variant, job = recipes.load(spec)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise SystemExit(f"jaxprune: {err.args[0] if isinstance(err, KeyError) else err}") from None
    return variant, _overridden(job, assignments)


def _train(args: argparse.Namespace) -> dict:
    from jaxprune import recipes

    _distributed(args)
    variant, job = _job(args.config, args.set)
    name = pathlib.Path(args.config.partition(":")[0]).stem
    run_dir = pathlib.Path(args.workdir) / name / variant
    logging.getLogger("jaxprune").info("run %s: %s", run_dir, job)
    result = recipes.run(job, run_dir)
    return {
        "run": str(run_dir),
        "dev": result["dev"],
        "sparsity": result["sparsity"],
        "export": result["export"],
        "seconds": result["seconds"],
    }


def _eval(args: argparse.Namespace) -> dict:
    from jaxprune import recipes

    if args.run:
        path = pathlib.Path(args.run) / "result.json"
        if not path.exists():
            raise SystemExit(f"{path} does not exist: is {args.run} a finished run?")
        fields = {f.name for f in dataclasses.fields(recipes.Job)}
        saved = json.loads(path.read_text())["job"]
        saved["method_options"] = tuple(sorted(saved.get("method_options", {}).items()))
        job = recipes.Job(**{k: v for k, v in saved.items() if k in fields})
        job = dataclasses.replace(job, model=str(pathlib.Path(args.run) / "export"))
    elif args.config:
        job = _job(args.config, [])[1]
    else:
        job = recipes.Job(model=args.model)
    job = _overridden(dataclasses.replace(job, method="dense"), args.set)
    return {"model": job.model, "task": job.task, "dev": recipes.evaluate(job)}


def _report(args: argparse.Namespace) -> dict:
    from jaxprune import report

    out = pathlib.Path(args.out or args.runs[0])
    table, figure = report.write(args.runs, out, args.reference)
    print(table.read_text())
    return {"table": str(table), "plot": str(figure)}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "list":
        from jaxprune.recipes import job

        for name, variant in job.load_module(args.config).VARIANTS.items():
            print(f"{name:32s} {variant.task:10s} {variant.method:14s} {variant.sparsity:.2f}")
        return 0
    run = {"train": _train, "eval": _eval, "report": _report}[args.command]
    print(json.dumps(run(args), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
