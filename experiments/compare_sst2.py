"""Every method on the real MiniLM and real SST-2 at 90% sparsity, same budget.

    .venv/bin/python experiments/compare_sst2.py                      # all methods
    .venv/bin/python experiments/compare_sst2.py --methods pins smp --steps 300

A dense fine-tuning run comes first: it is the dense reference and the fine-tuned teacher of
the distilling methods (SparseBERT). Every run trains ``--steps`` optimizer steps on the
same seeded ``--train-subset`` of SST-2 train (batch 32, max length 64, AdamW with linear
warm-up and decay) and is scored on the full SST-2 dev set. Finished runs are skipped, so
the script resumes where it stopped. Results: ``experiments/results/sst2_minilm_90/``
(``results.json``, ``table.md``, ``accuracy.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

from jaxprune import methods
from jaxprune.recipes import Job, run

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "results" / "sst2_minilm_90"
ORDER = ["magnitude", "taylor", "platon", "pins", "sparsebert", "sdp", "movement",
         "soft_movement", "smp", "smp_s"]  # fmt: skip


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="*", default=None, help=f"default: {' '.join(ORDER)}")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--train-subset", type=int, default=9600)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--runs", default=str(HERE.parent / "runs" / "sst2_minilm_90"))
    p.add_argument("--data-dir", default=os.environ.get("JAXPRUNE_DATA_DIR"))
    return p.parse_args()


def job(args: argparse.Namespace, method: str, teacher: str | None) -> Job:
    return Job(
        model="minilm",
        task="sst2",
        method=method,
        sparsity=args.sparsity,
        steps=args.steps,
        batch_size=32,
        max_length=64,
        learning_rate=args.learning_rate,
        train_subset=args.train_subset,
        data_dir=args.data_dir,
        teacher=teacher,
    )


def run_once(args: argparse.Namespace, name: str, teacher: str | None) -> dict:
    run_dir = pathlib.Path(args.runs) / name
    done = run_dir / "result.json"
    if done.exists() and json.loads(done.read_text())["job"] == job(args, name, teacher).as_dict():
        return json.loads(done.read_text())  # finished with these settings
    started = time.time()
    result = run(job(args, name, teacher), run_dir)
    print(
        f"{name}: dev accuracy {result['dev']['accuracy']:.4f}, sparsity "
        f"{result['sparsity']:.4f}, {time.time() - started:.0f} s",
        flush=True,
    )
    return result


def write(results: dict[str, dict], args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))
    dense = results["dense"]["dev"]["accuracy"]
    lines = [
        f"MiniLM-L6 (all-MiniLM-L6-v2) on SST-2, {args.steps} steps x batch 32 on a "
        f"{args.train_subset}-example subset; dev accuracy on all 872 dev sentences.",
        "",
        "| method | sparsity | dev accuracy | vs dense | minutes |",
        "|---|---|---|---|---|",
    ]
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["dev"]["accuracy"]):
        acc = r["dev"]["accuracy"]
        lines.append(
            f"| {name} | {r['sparsity']:.1%} | {acc:.2%} | {acc - dense:+.2%} | "
            f"{r['seconds'] / 60:.1f} |"
        )
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in sorted(results, key=lambda n: -results[n]["dev"]["accuracy"])]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names[::-1], [results[n]["dev"]["accuracy"] for n in names[::-1]], color="tab:blue")
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"SST-2 dev accuracy ({args.sparsity:.0%} sparse encoder, dense for 'dense')")
    ax.set_xlim(0.45, 1.0)
    ax.set_title(f"MiniLM on SST-2, {args.steps} steps per method")
    fig.tight_layout()
    fig.savefig(OUT / "accuracy.png", dpi=120)
    print((OUT / "table.md").read_text())


def main() -> None:
    args = parse()
    chosen = args.methods or ORDER
    unknown = sorted(set(chosen) - set(methods.names()))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {methods.names()}")
    results = {"dense": run_once(args, "dense", None)}
    teacher = str(pathlib.Path(args.runs) / "dense" / "export")
    for name in chosen:  # the teacher goes to the methods that distil from one
        uses_teacher = methods.get(name).teacher != "none"
        results[name] = run_once(args, name, teacher if uses_teacher else None)
        write(results, args)


if __name__ == "__main__":
    main()
