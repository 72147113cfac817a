"""One-shot pruning of fine-tuned all-MiniLM-L6-v2: magnitude, Wanda and SparseGPT against
dense, at 50, 60 and 70% and 2:4, from 128 training sentences (issue 20).

    jaxprune train --config experiments/configs/small_repro.py:sst2-dense   # dense first
    jaxprune train --config experiments/configs/small_repro.py:stsb-dense
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\
        .venv/bin/python experiments/oneshot.py [--tasks sst2 stsb] [--runs runs]

Each task's dense model is the small reproduction's (``runs/small_repro/<task>-dense/export``:
300 steps on a 9,600-sentence SST-2 subset, 84.7% dev; STS-B on its training set). The
calibration set is a seeded subset of 128 training examples at the task's length (SST-2 64,
STS-B 128); every encoder kernel (``paths.BERT_ENCODER_KERNELS``) is pruned, layer after
layer, and the whole dev set scored. Writes ``experiments/results/oneshot/`` ``results.json``
(the rows of tasks not rerun are kept), ``table.md`` and ``metric_vs_sparsity.png``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jaxprune import recipes
from jaxprune.recipes.oneshot import run_oneshot

OUT = pathlib.Path(__file__).parent / "results" / "oneshot"
LENGTH = {"sst2": 64, "stsb": 128}
METHODS = ("magnitude", "wanda", "sparsegpt")
AMOUNTS: tuple[tuple[str, float | None, tuple[int, int] | None], ...] = (
    ("50%", 0.5, None),
    ("60%", 0.6, None),
    ("70%", 0.7, None),
    ("2:4", None, (2, 4)),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(LENGTH), choices=list(LENGTH))
    parser.add_argument("--runs", default="runs", help="where small_repro's dense runs are")
    parser.add_argument("--calibration", type=int, default=128)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    saved = OUT / "results.json"
    old = json.loads(saved.read_text()) if saved.is_file() else []
    rows = [r for r in old if r["task"] not in args.tasks]  # other tasks' rows are kept
    for task in args.tasks:
        model = pathlib.Path(args.runs) / "small_repro" / f"{task}-dense" / "export"
        if not model.is_dir():
            raise FileNotFoundError(
                f"{model}: train it first (jaxprune train --config "
                f"experiments/configs/small_repro.py:{task}-dense)"
            )
        job = recipes.Job(
            model=str(model), task=task, method="dense", batch_size=32, max_length=LENGTH[task]
        )
        dense = recipes.evaluate(job)
        rows.append({"task": task, "method": "dense", "amount": "0%", "dev": dense})
        print(task, "dense", dense, flush=True)
        for method in METHODS:
            for name, sparsity, nm in AMOUNTS:
                start = time.perf_counter()
                result = run_oneshot(
                    job, method=method, sparsity=sparsity, nm=nm, calibration=args.calibration
                )
                result |= {"amount": name, "seconds": time.perf_counter() - start}
                rows.append(result)
                print(task, method, name, result["dev"], f"{result['prune_seconds']:.1f} s")
    saved.write_text(json.dumps(rows, indent=2) + "\n")
    write_table(rows)
    plot(rows)


def _primary(dev: dict) -> float:
    return 100 * dev[dev["primary"]]


def write_table(rows: list[dict]) -> None:
    lines = [
        "# One-shot pruning of fine-tuned all-MiniLM-L6-v2",
        "",
        "    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\",
        "        .venv/bin/python experiments/oneshot.py",
        "",
        "Dev metric (SST-2 accuracy, STS-B Pearson, x100) after pruning every encoder kernel",
        "once, from 128 training examples, no retraining; `s` is the seconds the pruning took",
        "(all 36 kernels, layer after layer, on the 2-core CPU).",
        "",
        "| task | method | dense | 50% | 60% | 70% | 2:4 | s (50%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        dense = next(r for r in rows if r["task"] == task and r["method"] == "dense")
        for method in METHODS:
            mine = {r["amount"]: r for r in rows if r["task"] == task and r["method"] == method}
            cells = [f"{_primary(mine[a]['dev']):.1f}" for a, _, _ in AMOUNTS]
            seconds = f"{mine['50%']['prune_seconds']:.1f}"
            dense_cell = f"{_primary(dense['dev']):.1f}"
            lines.append(f"| {task} | {method} | {dense_cell} | {' | '.join(cells)} | {seconds} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")


def plot(rows: list[dict]) -> None:
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        dense = next(r for r in rows if r["task"] == task and r["method"] == "dense")
        ax.axhline(_primary(dense["dev"]), color="gray", linestyle="--", label="dense")
        for method in METHODS:
            mine = {r["amount"]: r for r in rows if r["task"] == task and r["method"] == method}
            xs = [s for _, s, _ in AMOUNTS if s is not None]
            ys = [_primary(mine[a]["dev"]) for a, s, _ in AMOUNTS if s is not None]
            (line,) = ax.plot([100 * x for x in xs], ys, marker="o", label=method)
            ax.scatter([50], [_primary(mine["2:4"]["dev"])], marker="x", color=line.get_color())
        ax.set_title(f"{task} (x: 2:4 at 50%)")
        ax.set_xlabel("sparsity %")
        ax.set_ylabel(dense["dev"]["primary"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "metric_vs_sparsity.png", dpi=120)


if __name__ == "__main__":
    main()
