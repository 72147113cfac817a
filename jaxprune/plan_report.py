"""Plans of many config variants: one record per distinct program and layout, resumable,
and the Markdown table and JSON rows made from them (``jaxprune plan --out DIR``).

``DIR/plan.jsonl`` gets one line per (program, layout) as soon as it is compiled, so an
interrupted run resumes where it stopped; ``DIR/plan.md`` and ``DIR/plan.json`` are written
from every record there (``plan.json``: rows with ``config``, ``variants``, ``family``,
``model``, ``batch_size``, ``max_length``, ``devices``, ``layout`` and ``step_seconds`` per
chip, for the input-pipeline benchmark).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jaxprune import accelerators, hf, plan
from jaxprune.accelerators import GiB
from jaxprune.recipes import family
from jaxprune.recipes.job import Job

log = logging.getLogger(__name__)

#: Chips in the table's projection columns.
CHIPS = ("tpu-v4", "tpu-v5e", "tpu-v5p", "h100", "a100")


@dataclasses.dataclass(frozen=True)
class Program:
    """Config variants that compile to one program: ``job`` is the first of them."""

    config: str
    variants: tuple[str, ...]
    job: Job

    @property
    def key(self) -> str:
        return repr(plan.program_key(self.job))


def programs(config: str, variants: dict[str, Job]) -> tuple[list[Program], list[str]]:
    """``variants`` grouped by :func:`jaxprune.plan.program_key`, in first-seen order, and
    the variants that cannot be planned, each with the reason (a model or teacher that is
    neither a folder nor a published architecture, such as a run's export not made yet)."""
    groups: dict[tuple, list[str]] = {}
    unplannable = []
    for name, job in variants.items():
        try:
            for model in (job.model, job.teacher):
                if model is not None:
                    hf.config_of(model)
        except KeyError as e:
            unplannable.append(f"{config} {name}: {e.args[0]}")
            continue
        groups.setdefault(plan.program_key(job), []).append(name)
    found = [Program(config, tuple(names), variants[names[0]]) for names in groups.values()]
    return found, unplannable


def record(program: Program, result: plan.Plan, reference: bool) -> dict[str, Any]:
    """A JSON-able record of one plan (bytes per device, seconds, FLOPs)."""
    executable = dataclasses.asdict
    return {
        "key": program.key,
        "config": program.config,
        "variants": list(program.variants),
        "reference": reference,
        "job": result.job.as_dict(),
        "layout": dataclasses.asdict(result.layout) | {"name": result.layout.name},
        "steps": result.steps,
        "train": executable(result.train),
        "slope": None if result.slope is None else [executable(e) for e in result.slope],
        "eval": executable(result.eval),
        "state": result.state,
        "teacher": result.teacher,
    }


def read(path: pathlib.Path) -> list[dict[str, Any]]:
    """The records of ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(
    work: Iterable[tuple[Program, plan.Layout, bool, bool]],
    out: pathlib.Path | None,
    *,
    compile: bool = True,
    fast_codegen: bool = False,
) -> Iterator[dict[str, Any]]:
    """Plans each ``(program, layout, slope, reference)`` not yet in ``out/plan.jsonl`` and
    appends its record there (``out`` None: keeps nothing); yields every record, old and
    new. ``compile=False``: yields the old records only."""
    path = None if out is None else out / "plan.jsonl"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["key"], r["layout"]["name"]): r for r in read(path)} if path else {}
    slopes = {}
    for r in done.values():
        if r["slope"] is not None:
            old_plan = _plan_of(r)
            slopes[(repr(plan.slope_key(old_plan.job)), r["layout"]["name"])] = old_plan.slope
    for program, layout, slope, reference in work:
        old = done.get((program.key, layout.name))
        if old is not None and (old["slope"] is not None or not slope or not compile):
            yield old
            continue
        if not compile:
            continue
        start = time.perf_counter()
        slope_id = (repr(plan.slope_key(program.job)), layout.name)
        known = slopes.get(slope_id) if slope else None
        if old is not None:  # planned without the slope: compile only that
            known = known or plan.slope_executables(program.job, layout, fast_codegen=fast_codegen)
            result = dataclasses.replace(_plan_of(old), slope=known)
        else:
            result = plan.plan(program.job, layout, slope=known or slope, fast_codegen=fast_codegen)
        if result.slope is not None:
            slopes[slope_id] = result.slope
        new = record(program, result, reference)
        if path is not None:
            with path.open("a") as f:
                f.write(json.dumps(new) + "\n")
        done[(new["key"], layout.name)] = new
        log.info(
            "%s %s on %s: peak %.2f GiB, %.1f s",
            program.config,
            program.variants[0],
            layout.name,
            _peak(new["train"]) / GiB,
            time.perf_counter() - start,
        )
        yield new


def _peak(executable: dict[str, Any]) -> float:
    return plan.Executable(**executable).peak


def _plan_of(r: dict[str, Any]) -> plan.Plan:
    job = dict(r["job"])
    job["method_options"] = tuple(sorted(job["method_options"].items()))
    slope = r["slope"]
    return plan.Plan(
        job=Job(**job),
        layout=plan.Layout(
            r["layout"]["data"],
            r["layout"]["model"],
            r["layout"]["fsdp"],
            r["layout"].get("shard_state", False),
        ),
        steps=r["steps"],
        train=plan.Executable(**r["train"]),
        slope=None if slope is None else (plan.Executable(**slope[0]), plan.Executable(**slope[1])),
        eval=plan.Executable(**r["eval"]),
        state=r["state"],
        teacher=r["teacher"],
    )


def rows(records: Sequence[dict[str, Any]], utilization: float) -> list[dict[str, Any]]:
    """One table row per non-reference record, latest record per (program, layout)."""
    latest = {(r["key"], r["layout"]["name"]): r for r in records}
    out = []
    for r in latest.values():
        if r["reference"]:
            continue
        p = _plan_of(r)
        ref_key = repr(plan.program_key(plan.fine_tuning(p.job)))
        ref = latest.get((ref_key, p.layout.name))
        seconds = {c: p.step_seconds(c, utilization) for c in accelerators.ACCELERATORS}
        out.append(
            {
                "config": r["config"],
                "variants": r["variants"],
                "family": family(p.job.task),
                "model": p.job.model,
                "method": p.job.method,
                "batch_size": p.job.batch_size,
                "max_length": p.job.max_length,
                "devices": p.layout.devices,
                "layout": p.layout.name,
                "peak_gib": p.train.peak / GiB,
                "vs_fine_tuning": None if ref is None else p.train.peak / _peak(ref["train"]),
                "state_gib": {k: v / GiB for k, v in p.state.items()},
                "teacher_gib": p.teacher / GiB,
                "gflop_per_step": p.train.flops / 1e9,
                "compile_seconds": p.train.compile_seconds,
                "codegen": p.train.codegen,
                "eval_peak_gib": p.eval.peak / GiB,
                "steps": p.steps,
                "step_seconds": seconds,
                "run_hours": {c: s * p.steps / 3600 for c, s in seconds.items()},
                "fits": {
                    c: accelerators.fits(p.train.peak, a)
                    for c, a in accelerators.ACCELERATORS.items()
                },
                "largest_batch": {c: p.largest_batch(c) for c in accelerators.ACCELERATORS},
            }
        )
    return out


def _variants(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"


def markdown(table: Sequence[dict[str, Any]], utilization: float, command: str) -> str:
    """The table of :func:`rows` with its legend and the command that made it."""
    head = (
        "| config | variants | model | method | batch x len | layout | peak GiB | x FT | "
        "params | adam | masks | crit/scores | teacher | GFLOP/step | compile s | "
        "v5e: fits (max b/dev) | v4 step ms | v4 run h | H100 step ms | fits |"
    )
    lines = [
        "# Paper configs at real shapes: per-device memory, FLOPs, projected time",
        "",
        f"    {command}",
        "",
        "One row per distinct program (variants that differ only in sparsity, learning rates,",
        "schedule steps or seed share it; `(+n)`: n more variants) and layout (`dp8`: data",
        "parallel over 8 devices; `fsdp8`: parameters and optimizer state sharded over them",
        "too; `zero8`: parameters replicated, optimizer / pruning state and teacher sharded",
        "over them (ZeRO-1 style, `Job(shard_state=True)`); `dp16x2`: 16-way data x 2-way",
        "tensor parallel where the batch does not split 32 ways). Memory is per device, from",
        "XLA:CPU's compiled executable on simulated devices (`peak` = arguments + outputs -",
        "donated + temporaries); the state columns (GiB per device) are exact, the",
        "temporaries a projection for other backends.",
        "`x FT`: peak over plain dense fine-tuning (AdamW, no masks) of the same model, task,",
        "batch and layout. Step times are a roofline of XLA's FLOPs and bytes per device at",
        f"{utilization:.0%} of the chip's spec-sheet peak (jaxprune/accelerators.py); run time =",
        "step time x the run's steps. XLA:CPU counts the bytes of every operation it does",
        "not fuse, more than a TPU or GPU compiler leaves unfused, so where the bytes bound",
        "the step (most rows here: small per-device batches) the time is an upper bound.",
        "`max b/dev`: largest examples per device whose peak fits",
        f"{accelerators.USABLE_HBM:.0%} of HBM (dp rows; from compiles at "
        f"{plan.SLOPE_BATCHES[0]} and {plan.SLOPE_BATCHES[1]} per device). `fits`: chips",
        "whose usable HBM holds the peak (4 = v4, e = v5e, p = v5p, H = H100, A = A100).",
        "`compile s`: wall time of the train step's compile on the machine that made the",
        "table (2 CPU cores, shared with other jobs while it ran); `*`: compiled with",
        "LLVM at -O0 (`--fast-codegen`: the same memory, FLOPs and bytes, about half the",
        "compile time).",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    letters = {"tpu-v4": "4", "tpu-v5e": "e", "tpu-v5p": "p", "h100": "H", "a100": "A"}
    for row in table:
        state = row["state_gib"]
        ratio = row["vs_fine_tuning"]
        big = row["largest_batch"]["tpu-v5e"]
        v5e = ("yes" if row["fits"]["tpu-v5e"] else "**no**") + (
            f" ({big})" if big is not None else ""
        )
        cells = [
            row["config"],
            _variants(row["variants"]),
            row["model"],
            row["method"],
            f"{row['batch_size']} x {row['max_length']}",
            row["layout"],
            f"{row['peak_gib']:.2f}",
            "" if ratio is None else f"{ratio:.2f}",
            f"{state['params']:.2f}",
            f"{state['adam']:.2f}",
            f"{state['masks']:.2f}",
            f"{state['criterion'] + state['scores']:.2f}",
            f"{row['teacher_gib']:.2f}",
            f"{row['gflop_per_step']:.0f}",
            f"{row['compile_seconds']:.0f}" + ("*" if row.get("codegen") == "fast" else ""),
            v5e,
            f"{row['step_seconds']['tpu-v4'] * 1e3:.1f}",
            f"{row['run_hours']['tpu-v4']:.2f}",
            f"{row['step_seconds']['h100'] * 1e3:.1f}",
            "".join(letters[c] for c in CHIPS if row["fits"][c]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *time_table(table, utilization)]) + "\n"


def time_table(table: Sequence[dict[str, Any]], utilization: float) -> list[str]:
    """Step and whole-run time on every chip, for the rows on the first layout planned."""
    if not table:
        return []
    first = table[0]["layout"]
    head = "| config | variants | steps | " + " | ".join(f"{c} ms / h" for c in CHIPS) + " |"
    lines = [
        f"## Projected time on {first} ({utilization:.0%} of peak; ms a step / hours a run)",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for row in table:
        if row["layout"] != first:
            continue
        times = [f"{row['step_seconds'][c] * 1e3:.1f} / {row['run_hours'][c]:.2f}" for c in CHIPS]
        lines.append(
            f"| {row['config']} | {_variants(row['variants'])} | {row['steps']} | "
            + " | ".join(times)
            + " |"
        )
    return lines


def goals(table: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's goals checked on ``table``: PINS <= 1.6x and SMP <= 1.1x fine-tuning's
    peak, and every program fitting a v5e chip on 8 devices (else the layout that does)."""
    out = []
    for method, limit in (("pins", 1.6), ("smp", 1.1), ("smp_s", 1.1)):
        for kind in ("dp", "zero", "fsdp"):
            ratios = [
                r["vs_fine_tuning"]
                for r in table
                if r["method"] == method
                and re.fullmatch(rf"{kind}\d+(x\d+)?", r["layout"])
                and r["vs_fine_tuning"] is not None
            ]
            if ratios:
                verdict = "met" if max(ratios) <= limit else "**not met**"
                out.append(
                    f"- {method}, {kind} layouts: peak / fine-tuning {min(ratios):.2f}-"
                    f"{max(ratios):.2f}x over {len(ratios)} rows (goal <= {limit}x): {verdict}"
                )
    on8: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for r in table:
        if r["devices"] == 8:
            on8.setdefault((r["config"], tuple(r["variants"])), []).append(r)
    misses = []
    for (config, variants), layouts in on8.items():
        fitting = [r["layout"] for r in layouts if r["fits"]["tpu-v5e"]]
        if len(fitting) < len(layouts):
            where = (
                f"fits as {', '.join(fitting)}" if fitting else "fits no 8-device layout planned"
            )
            misses.append(f"{config} {_variants(variants)}: {where}")
    out.append(
        f"- v5e-8 (16 GiB a chip) at the paper's batch: {len(on8) - len(misses)} of {len(on8)} "
        f"programs fit in every planned layout"
        + ("" if not misses else "; the others: " + "; ".join(misses))
    )
    return out


def write(
    records: Sequence[dict[str, Any]],
    out: pathlib.Path,
    utilization: float,
    command: str,
    missing: Sequence[str] = (),
    unplannable: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``out/plan.md`` and ``out/plan.json`` from ``records``; returns the rows. ``missing``:
    the (program, layout) pairs asked for and not planned, listed under the goals;
    ``unplannable``: the variants that cannot be planned, with the reason."""
    table = rows(records, utilization)
    text = markdown(table, utilization, command)
    text += "\n## Goals\n\n" + "\n".join(goals(table)) + "\n"
    if missing:
        text += (
            f"\n## Not planned yet ({len(missing)})\n\n"
            + "\n".join(f"- {m}" for m in missing)
            + "\n"
        )
    if unplannable:
        text += (
            f"\n## Cannot be planned ({len(unplannable)})\n\n"
            + "\n".join(f"- {m}" for m in unplannable)
            + "\n"
        )
    (out / "plan.md").write_text(text)
    (out / "plan.json").write_text(json.dumps(table, indent=1))
    return table


__all__ = [
    "CHIPS",
    "Program",
    "goals",
    "markdown",
    "programs",
    "read",
    "record",
    "rows",
    "run",
    "time_table",
    "write",
]
