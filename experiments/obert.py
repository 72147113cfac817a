"""Gradual oBERT against PINS, PLATON and magnitude at 90% on small_repro's SST-2 protocol
(``experiments/configs/obert.py``): runs what is missing, one after the other on the same
machine and code, then writes ``experiments/results/obert/table.md`` and copies each run's
``result.json`` beside it.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\
        .venv/bin/python experiments/obert.py [--report-only]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil

from jaxprune import recipes
from jaxprune.recipes.job import load_module
from jaxprune.train.loop import CHECKPOINT_DIR

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = load_module(HERE / "configs" / "obert.py")
ORDER = (
    "sst2-90-obert",
    "sst2-90-obert-every10",
    "sst2-90-obert-every10-no-update",
    "sst2-90-pins",
    "sst2-90-platon",
    "sst2-90-magnitude",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/obert")
    p.add_argument("--out", default=str(HERE / "results" / "obert"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    workdir, out = pathlib.Path(args.workdir), pathlib.Path(args.out)
    if not args.report_only:
        for name in ORDER:
            if (out / "runs" / name / "result.json").exists():
                continue
            recipes.run(CONFIG.VARIANTS[name], workdir / name)
            (out / "runs" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(workdir / name / "result.json", out / "runs" / name / "result.json")
            shutil.rmtree(workdir / name / CHECKPOINT_DIR, ignore_errors=True)
    table = out / "table.md"
    table.write_text(markdown(out / "runs"))
    print(table.read_text())


def markdown(runs: pathlib.Path) -> str:
    rows = []
    for name in ORDER:
        path = runs / name / "result.json"
        if not path.exists():
            rows.append(f"| {name.removeprefix('sst2-90-')} | (not run) | | |")
            continue
        r = json.loads(path.read_text())
        options = r["job"]["method_options"]
        note = ", ".join(f"{k}={_plain(v)}" for k, v in options.items()) or "preset"
        rows.append(
            f"| {r['job']['method']} | {100 * r['dev']['accuracy']:.1f} | "
            f"{100 * r['sparsity']:.1f} | {note} |"
        )
    return "\n".join(
        [
            "# Gradual oBERT, PINS, PLATON and magnitude at 90% (SST-2, all-MiniLM-L6-v2)",
            "",
            "small_repro's SST-2 protocol: the 9,600-sentence training subset, 300 steps of 32,"
            " AdamW 5e-5 with 10% warm-up and linear decay, length 64, packed rows, seed 0;",
            "dev accuracy on the 872 sentences (dense fine-tuned: 84.7). One run each, all "
            "one after the other on the same 2-core CPU. Produced by",
            "",
            "    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 JAXPRUNE_DATA_DIR=../shared/data \\",
            "        .venv/bin/python experiments/obert.py",
            "",
            "| method | dev accuracy | sparsity (%) | options |",
            "|---|---:|---:|---|",
            *rows,
            "",
        ]
    )


def _plain(value: object) -> str:
    """Options as they were set (``criterion_args`` pairs as ``name=value``)."""
    if isinstance(value, list | tuple) and all(isinstance(v, list | tuple) for v in value):
        return "(" + ", ".join(f"{k}={v}" for k, v in value) + ")"
    return str(value)


if __name__ == "__main__":
    main()
