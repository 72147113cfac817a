"""Finished runs as a Markdown table beside the papers' numbers, and a plot.

A run directory holds ``result.json`` (written by :func:`jaxprune.recipes.run`); its job's
``reference`` (``<file>/<table>``) and ``label`` pick the published row in
``experiments/reference/<file>.json`` with the same task and remaining ratio.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any


def collect(roots: Iterable[str | pathlib.Path]) -> list[dict]:
    """Every ``result.json`` under ``roots`` (folders searched recursively), with its
    ``run`` folder added, sorted by path."""
    found = []
    for root in map(pathlib.Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"no run folder {root}")
        files = [root] if root.is_file() else sorted(root.rglob("result.json"))
        for path in files:
            try:
                result = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not a valid result file ({err})") from err
            found.append({**result, "run": str(path.parent)})
    return sorted(found, key=lambda r: r["run"])


def reference_value(job: dict, metric: str, reference_dir: pathlib.Path) -> float | None:
    """The published value of ``metric`` for the job's row, or None."""
    if not job.get("reference"):
        return None
    stem, _, table = job["reference"].partition("/")
    path = reference_dir / f"{stem}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} (named by the job's reference {job['reference']!r})")
    rows = json.loads(path.read_text())["tables"].get(table, {}).get("rows", [])
    remaining = round(1.0 - job["sparsity"], 4) if job["method"] != "dense" else 1.0
    for row in rows:
        if (
            row["method"] == job.get("label")
            and row["task"] == job["task"]
            and row["remaining"] is not None
            and abs(row["remaining"] - remaining) < 1e-6
            and row["metric"] == metric
        ):
            return float(row["value"])
    return None


def rows(results: Sequence[dict], reference_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """One row per run and metric: run, task, method, target and measured sparsity, ours and
    the paper's value (percent)."""
    reference_dir = pathlib.Path(reference_dir)
    out = []
    for result in results:
        job, dev = result["job"], result["dev"]
        for metric, value in dev.items():
            if metric == "primary" or not isinstance(value, int | float):
                continue
            paper = reference_value(job, metric, reference_dir)
            out.append(
                {
                    "run": pathlib.Path(result["run"]).name,
                    "task": job["task"],
                    "method": job.get("label") or job["method"],
                    "target": 0.0 if job["method"] == "dense" else job["sparsity"],
                    "sparsity": result["sparsity"],
                    "metric": metric,
                    "primary": metric == dev.get("primary"),
                    "ours": 100 * value,
                    "paper": paper,
                }
            )
    return out


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (values in percent; paper column blank when unknown)."""
    lines = [
        "| run | task | method | target sparsity | measured | metric | ours | paper | diff |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in table:
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        diff = "" if r["paper"] is None else f"{r['ours'] - r['paper']:+.1f}"
        lines.append(
            f"| {r['run']} | {r['task']} | {r['method']} | {100 * r['target']:.1f}% "
            f"| {100 * r['sparsity']:.1f}% | {r['metric']} | {r['ours']:.1f} | {paper} | {diff} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: Sequence[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
    """Primary metric against measured sparsity, one panel per task (three to a row), one
    line per method; the paper's values as hollow markers at their target sparsity, and each
    dense run (target 0) as a dashed horizontal line, so the axis spans the pruned runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    primary = [r for r in table if r["primary"]]
    tasks = sorted({r["task"] for r in primary})
    if not tasks:
        raise ValueError("no finished runs to plot")
    # one color and marker per method, the same in every panel (tab10 repeats past 10 lines)
    names = sorted({r["method"] for r in primary if r["target"] > 0})
    style = {
        m: (plt.get_cmap("tab20")(2 * (i % 10) + i // 10 % 2), "osD^vPX"[i % 7])
        for i, m in enumerate(names)
    }
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.5 * ncols + 1.5, 3.4 * nrows), squeeze=False, layout="constrained"
    )
    handles: dict[str, Any] = {}
    for ax, task in zip(axes.flat, tasks, strict=False):
        by_method: dict[str, list[dict]] = defaultdict(list)
        for r in primary:
            if r["task"] == task:
                by_method[r["method"]].append(r)
        for method, points in sorted(by_method.items()):
            for dense in (r for r in points if r["target"] == 0):
                line = ax.axhline(dense["ours"], color="black", ls="--", lw=1)
                handles.setdefault(f"{method} (sparsity 0)", line)
            points = sorted((r for r in points if r["target"] > 0), key=lambda r: r["sparsity"])
            if not points:
                continue
            color, marker = style[method]
            (handles[method],) = ax.plot(
                [100 * r["sparsity"] for r in points],
                [r["ours"] for r in points],
                marker + "-",
                color=color,
            )
            refs = [r for r in points if r["paper"] is not None]
            ax.plot(
                [100 * r["target"] for r in refs],
                [r["paper"] for r in refs],
                marker,
                mfc="none",
                color=color,
            )
        pruned = [100 * r["sparsity"] for r in primary if r["task"] == task and r["target"] > 0]
        if pruned:  # at least 10 points wide: one sparsity alone gets no offset ticks
            pad = max(2.0, (10 - max(pruned) + min(pruned)) / 2)
            ax.set_xlim(min(pruned) - pad, max(pruned) + pad)
        metric = next(r["metric"] for r in primary if r["task"] == task)
        ax.set(title=task, xlabel="sparsity (%)", ylabel=f"{metric} (%)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    fig.legend(
        handles.values(), handles.keys(), loc="outside right center", fontsize=8, frameon=False
    )
    fig.suptitle("dev metric against sparsity (filled: ours, hollow: paper)", fontsize=9)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(
    roots: Iterable[str | pathlib.Path],
    out_dir: str | pathlib.Path,
    reference_dir: str | pathlib.Path,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``out_dir/table.md`` and ``out_dir/metric_vs_sparsity.png``; returns both."""
    results = collect(roots)
    if not results:
        raise FileNotFoundError(f"no result.json under {list(map(str, roots))}")
    table = rows(results, reference_dir)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table.md"
    md.write_text(markdown(table))
    return md, plot(table, out / "metric_vs_sparsity.png")


__all__ = [
    "collect",
    "markdown",
    "plot",
    "reference_value",
    "rows",
    "write",
]
