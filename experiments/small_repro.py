"""Runs the small-scale reproduction (``experiments/configs/small_repro.py``): for each task
its dense run first, then every method and sparsity. Each finished run's ``result.json`` is
copied to ``<out>/runs/<variant>/`` (kept in git); runs found there are skipped and
interrupted ones resume from ``--workdir``, so it can be spread over several sessions. A
finished run keeps its export but not its checkpoints (``--keep-checkpoints`` keeps them).
Ends with the report of everything in ``<out>/runs``.

    .venv/bin/python experiments/small_repro.py                        # everything (hours)
    .venv/bin/python experiments/small_repro.py --tasks rte --sparsities 0.9
    .venv/bin/python experiments/small_repro.py --report-only
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import time

from jaxprune import recipes, report
from jaxprune.recipes.job import load_module
from jaxprune.train.loop import CHECKPOINT_DIR

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = load_module(HERE / "configs" / "small_repro.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="*", default=list(CONFIG.TASKS))
    p.add_argument("--methods", nargs="*", default=list(CONFIG.METHODS))
    p.add_argument("--sparsities", nargs="*", type=float, default=[0.8, 0.9, 0.97])
    p.add_argument("--workdir", default="runs/small_repro")
    p.add_argument("--out", default=str(HERE / "results" / "small_repro"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep a finished run's checkpoints (about 0.6 GB a run; the grid has 152 runs)",
    )
    args = p.parse_args()
    workdir, done = pathlib.Path(args.workdir), pathlib.Path(args.out) / "runs"
    if not args.report_only:
        for task in args.tasks:
            names = [f"{task}-dense"] + [
                f"{task}-{round(s * 100)}-{m}" for s in args.sparsities for m in args.methods
            ]
            for name in names:
                if name not in CONFIG.VARIANTS:
                    continue
                finished = (done / name / "result.json").exists()
                # SparseBERT distils the dense run's export: redo the dense run if it is gone
                teacher_gone = name.endswith("-dense") and not (workdir / name / "export").exists()
                if finished and not (teacher_gone and "sparsebert" in args.methods):
                    continue
                started = time.time()
                result = recipes.run(CONFIG.VARIANTS[name], workdir / name)
                (done / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(workdir / name / "result.json", done / name / "result.json")
                if not args.keep_checkpoints:  # only an interrupted run needs them
                    shutil.rmtree(workdir / name / CHECKPOINT_DIR, ignore_errors=True)
                dev = result["dev"]
                print(
                    f"{name}: {dev['primary']} {dev[dev['primary']]:.4f}, sparsity "
                    f"{result['sparsity']:.4f}, {time.time() - started:.0f} s",
                    flush=True,
                )
    table, figure = report.write([done], args.out, HERE / "reference")
    grid = pathlib.Path(args.out) / "grid.md"
    grid.write_text(grid_markdown(report.rows(report.collect([done]), HERE / "reference")))
    print(grid.read_text())
    print(f"table: {table}\ngrid: {grid}\nplot: {figure}")


def grid_markdown(rows: list[dict]) -> str:
    """Per task, the primary metric of every method (rows) at every target sparsity
    (columns), dense on top; the measured sparsity is given where it is off the target."""
    out = []
    for task in CONFIG.TASKS:
        mine = [r for r in rows if r["task"] == task and r["primary"]]
        if not mine:
            continue
        targets = sorted({r["target"] for r in mine if r["method"] != "dense"})
        dense = [f"{r['ours']:.1f}" for r in mine if r["method"] == "dense"]
        out += [f"### {task} ({mine[0]['metric']}; dense {', '.join(dense) or 'not run'})", ""]
        out += ["| method | " + " | ".join(f"{t:.0%}" for t in targets) + " |"]
        out += ["|---|" + "---:|" * len(targets)]
        for method in [m for m in CONFIG.METHODS if any(r["method"] == m for r in mine)]:
            cells = []
            for t in targets:
                hit = [r for r in mine if r["method"] == method and r["target"] == t]
                off = hit and abs(hit[0]["sparsity"] - t) > 0.005
                cells.append(
                    ""
                    if not hit
                    else f"{hit[0]['ours']:.1f}"
                    + (f" (at {hit[0]['sparsity']:.0%})" if off else "")
                )
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
