"""What bfloat16 running statistics change in PINS and PLATON (``criterion_args``
``state_dtype``; ``experiments/configs/state_dtype.py``): runs what is missing, one after the
other on the same machine and code, then compares each method's bfloat16 run with its
float32 run: the fraction of mask entries that differ at every saved step, and the dev
accuracy of both. Writes ``experiments/results/state_dtype/{table.md, mask_difference.png,
runs/<name>/result.json, runs/<name>/differences.json}``.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\
        .venv/bin/python experiments/state_dtype.py [--report-only]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

import numpy as np

from jaxprune import recipes
from jaxprune.recipes.job import load_module
from jaxprune.train import mask_history
from jaxprune.train.loop import CHECKPOINT_DIR

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = load_module(HERE / "configs" / "state_dtype.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/state_dtype")
    p.add_argument("--out", default=str(HERE / "results" / "state_dtype"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    workdir, out = pathlib.Path(args.workdir), pathlib.Path(args.out)
    for method in CONFIG.METHODS:
        names = [f"sst2-90-{method}-{d}" for d in CONFIG.DTYPES]
        if not args.report_only:
            for name in names:
                if not (out / "runs" / name / "result.json").exists():
                    recipes.run(CONFIG.VARIANTS[name], workdir / name)
                    (out / "runs" / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy(workdir / name / "result.json", out / "runs" / name)
                    shutil.rmtree(workdir / name / CHECKPOINT_DIR, ignore_errors=True)
        if (workdir / names[0]).is_dir() and (workdir / names[1]).is_dir():
            rows = differences(workdir / names[0], workdir / names[1])
            (out / "runs" / names[1] / "differences.json").write_text(json.dumps(rows, indent=1))
    (out / "table.md").write_text(markdown(out / "runs"))
    plot(out / "runs", out / "mask_difference.png")
    print((out / "table.md").read_text())


def differences(reference: pathlib.Path, other: pathlib.Path) -> list[dict]:
    """Per step saved in both runs: the sparsity of each, the fraction of mask entries that
    differ, and the fraction of the reference's kept entries that the other run prunes."""
    a, b = mask_history.load(reference), mask_history.load(other)
    rows = []
    for step in sorted(set(a) & set(b)):
        kept = sum(int(m.sum()) for m in a[step].values())
        size = sum(m.size for m in a[step].values())
        dropped = sum(int(np.count_nonzero(a[step][k] & ~b[step][k])) for k in a[step])
        rows.append(
            {
                "step": step,
                "sparsity": 1 - kept / size,
                "sparsity_other": 1 - sum(int(m.sum()) for m in b[step].values()) / size,
                "differ": mask_history.difference(a[step], b[step]),
                "differ_of_kept": dropped / max(kept, 1),
            }
        )
    return rows


def _result(runs: pathlib.Path, name: str) -> dict | None:
    path = runs / name / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def markdown(runs: pathlib.Path) -> str:
    lines = [
        "# PINS and PLATON with float32 and bfloat16 running statistics (SST-2, 90%)",
        "",
        "small_repro's SST-2 protocol (all-MiniLM-L6-v2, the 9,600-sentence training subset, "
        "300 steps of 32, AdamW 5e-5, seed 0); the criterion's three statistics stored in "
        "float32 (12 B per prunable weight) or bfloat16 (6 B), computed in float32. Mask "
        "entries differing: between the two runs of a method, after the same step, of "
        "all prunable entries (the encoder's kernels and biases; in brackets: the float32 "
        "run's kept entries that the bfloat16 run prunes). One run "
        "each, one after the other on the same 2-core CPU. Produced by",
        "",
        "    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\",
        "        .venv/bin/python experiments/state_dtype.py",
        "",
        "| method | dev acc. float32 | dev acc. bfloat16 | sparsity | entries differing: "
        "first pruning update | step 150 | step 300 | most kept entries differing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in CONFIG.METHODS:
        ref, other = (_result(runs, f"sst2-90-{method}-{d}") for d in CONFIG.DTYPES)
        path = runs / f"sst2-90-{method}-bfloat16" / "differences.json"
        if ref is None or other is None or not path.exists():
            lines.append(f"| {method} | (not run) | | | | | | |")
            continue
        rows = [r for r in json.loads(path.read_text()) if r["sparsity"] > 0]
        by_step = {r["step"]: r for r in rows}

        def cell(r: dict | None) -> str:
            if r is None:
                return ""
            return f"{100 * r['differ']:.3f}% ({100 * r['differ_of_kept']:.2f}%)"

        largest = max(rows, key=lambda r: r["differ_of_kept"], default=None)
        lines.append(
            f"| {method} | {100 * ref['dev']['accuracy']:.1f} | "
            f"{100 * other['dev']['accuracy']:.1f} | {100 * other['sparsity']:.1f}% | "
            f"{cell(rows[0] if rows else None)} | {cell(by_step.get(150))} | "
            f"{cell(by_step.get(300))} | "
            f"{cell(largest)}{'' if largest is None else ' at ' + str(largest['step'])} |"
        )
    return "\n".join([*lines, "", "![mask entries differing](mask_difference.png)", ""])


def plot(runs: pathlib.Path, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method in CONFIG.METHODS:
        f = runs / f"sst2-90-{method}-bfloat16" / "differences.json"
        if f.exists():
            rows = json.loads(f.read_text())
            steps = np.asarray([r["step"] for r in rows])
            ax.plot(steps, [100 * r["differ_of_kept"] for r in rows], marker=".", label=method)
    ax.set_xlabel("step")
    ax.set_ylabel("float32's kept entries\npruned by bfloat16 (%)")
    ax.set_title("bfloat16 against float32 criterion state, SST-2 at 90%")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
