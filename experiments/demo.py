"""The main job (``make demo``): prune the embedded all-MiniLM-L6-v2 to 90% with PINS on
SST-2, then print the dense and pruned dev accuracy, the sparsity per layer and matrix, and
where the exported model and the plot are.

    make demo                                   # or:
    .venv/bin/python experiments/demo.py [--workdir runs/demo] [--set steps=300 ...]

Data: ``$JAXPRUNE_DATA_DIR`` (``make`` sets it to ``../shared/data`` when that folder exists
beside the checkout), else the Hugging Face Hub. The runs and their settings are the two
variants of ``experiments/configs/demo.py``; finished runs are reused, interrupted ones
resume, and a run folder of other settings is refused (``--restart`` starts both afresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import time

import numpy as np
from safetensors.numpy import load_file

from jaxprune import recipes

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "demo.py"
MATRICES = {
    "attention/self/query": "query",
    "attention/self/key": "key",
    "attention/self/value": "value",
    "attention/output/dense": "attn out",
    "intermediate/dense": "ffn in",
    "output/dense": "ffn out",
}


def run(
    variant: str, workdir: pathlib.Path, overrides: list[str], restart: bool, **changes
) -> dict:
    job = recipes.load(f"{CONFIG}:{variant}")[1]
    job = recipes.override(dataclasses.replace(job, **changes), overrides)
    done = workdir / variant / "result.json"
    if not restart and done.exists() and json.loads(done.read_text())["job"] == job.as_dict():
        return json.loads(done.read_text())
    return recipes.run(job, workdir / variant, restart=restart)


def layer_table(export: pathlib.Path) -> str:
    """Sparsity (%) of every encoder matrix of the exported model: layers x matrices."""
    weights = load_file(str(export / "model.safetensors"))
    grid: dict[int, dict[str, float]] = {}
    for key, value in weights.items():
        match = re.search(r"encoder\.layer\.(\d+)\.(.+)\.weight$", key)
        name = match and MATRICES.get(match.group(2).replace(".", "/"))
        if name:
            grid.setdefault(int(match.group(1)), {})[name] = 100 * float(np.mean(value == 0))
    head = "layer " + "".join(f"{m:>10}" for m in MATRICES.values())
    rows = [
        f"{i:>5} " + "".join(f"{grid[i][m]:>9.1f}%" for m in MATRICES.values())
        for i in sorted(grid)
    ]
    return "\n".join([head, *rows])


def plot(
    runs: dict[str, pathlib.Path], dev: dict[str, float], path: pathlib.Path, job: dict, metric: str
) -> None:
    """Training loss and PINS's sparsity by step; dense and pruned dev metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    lines = []
    for name, run_dir in runs.items():
        logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in logs if r.get("scope") == "train"]
        label = "PINS loss (with self-distillation)" if name == "pins" else f"{name} loss"
        lines += ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
        if name == "pins":
            twin = ax_loss.twinx()
            lines += twin.plot(
                [r["step"] for r in train],
                [100 * r["sparsity"] for r in train],
                "k--",
                label="PINS sparsity (right axis)",
            )
            twin.set_ylabel("sparsity (%)")
    ax_loss.set(xlabel="step", ylabel="training loss", title="training")
    # one legend under the axes, where it covers no curve
    ax_loss.legend(
        handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8
    )
    names = list(dev)
    bars = ax_acc.bar(names, [100 * dev[n] for n in names], color=["tab:blue", "tab:orange"])
    ax_acc.bar_label(bars, fmt="%.1f")
    ax_acc.margins(y=0.12)  # room for the labels above the bars
    ax_acc.set(ylabel=f"{job['task']} dev {metric} (%)", title=f"PINS at {job['sparsity']:.0%}")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override both runs' settings (Job fields)",
    )
    p.add_argument(
        "--restart", action="store_true", help="delete earlier runs in WORKDIR and start afresh"
    )
    args = p.parse_args()
    workdir = pathlib.Path(args.workdir)
    started = time.time()
    dense = run("dense", workdir, args.set, args.restart)
    pruned = run("pins", workdir, args.set, args.restart, teacher=dense["export"])
    export = pathlib.Path(pruned["export"])
    figure = workdir / "demo.png"
    job, metric = pruned["job"], pruned["dev"]["primary"]
    dev = {"dense": dense["dev"][metric], "PINS": pruned["dev"][metric]}
    plot({"dense": workdir / "dense", "pins": workdir / "pins"}, dev, figure, job, metric)
    name = "all-MiniLM-L6-v2" if job["model"] == "minilm" else job["model"]
    print(f"\n=== jaxprune demo: {name} on {job['task']}, PINS to {job['sparsity']:.0%} ===")
    print(f"dense fine-tuned  dev {metric}: {100 * dev['dense']:.2f}%  ({dense['steps']} steps)")
    print(f"PINS sparse       dev {metric}: {100 * dev['PINS']:.2f}%  ({pruned['steps']} steps)")
    print(f"encoder sparsity (prunable weights and biases): {100 * pruned['sparsity']:.2f}%")
    print("\nsparsity per layer and matrix (kernels):")
    print(layer_table(export))
    print(f"\nfull sparsity report:  {workdir / 'pins' / 'sparsity_report.txt'}")
    print(f"exported pruned model: {export}  (transformers loads it)")
    print(f"plot:                  {figure}")
    print(f"total time: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
