"""End-to-end recipes: prune a Hugging Face checkpoint on a task with one method.

    from jaxprune.recipes import Job, run
    result = run(Job(model="minilm", task="sst2", method="pins", sparsity=0.9, steps=600),
                 "runs/pins")

loads the model and the task's data, builds the method, trains it with the engine
(checkpoints, logs, resumption), evaluates on the dev set with the task's official metric,
and exports the pruned model as a Hugging Face folder (``run_dir/export``). Task families:
GLUE (:mod:`.glue`), SQuAD (:mod:`.squad`), CoNLL-2003 NER (:mod:`.ner`) and data-to-text
with GPT-2 (:mod:`.d2t`).
"""

from __future__ import annotations

import pathlib

from jaxprune.metrics import GLUE_TASKS
from jaxprune.recipes import common, d2t, glue, ner, squad
from jaxprune.recipes.job import Job, load, override, with_options

D2T_TASKS = ("e2e", "webnlg", "dart")


def family(task: str) -> str:
    """``glue``, ``squad``, ``ner`` or ``d2t``."""
    task = task.lower()
    if task in GLUE_TASKS:
        return "glue"
    if task == "squad":
        return "squad"
    if task == "conll2003":
        return "ner"
    if task in D2T_TASKS:
        return "d2t"
    raise ValueError(
        f"no recipe for task {task!r}: GLUE ({', '.join(GLUE_TASKS)}), squad, conll2003, "
        f"{', '.join(D2T_TASKS)}"
    )


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """Loads ``job.model`` and the task's data for ``job`` (``train``: the training set too)."""
    kind = family(job.task)
    if job.pack and kind != "glue":
        raise ValueError(f"pack=True packs sentence-level GLUE examples; {job.task} is {kind}")
    recipe = {"glue": glue, "squad": squad, "ner": ner, "d2t": d2t}[kind]
    return recipe.prepare(job, train=train)


def run(job: Job, run_dir: str | pathlib.Path) -> dict:
    """Runs ``job`` into ``run_dir`` (resuming if it holds a checkpoint); returns the result
    record also written to ``run_dir/result.json``."""
    return common.train_and_export(job, run_dir, prepare(job))


def evaluate(job: Job) -> dict:
    """Dev metrics of ``job.model`` as it is (e.g. an exported pruned folder) on ``job.task``."""
    return prepare(job, train=False).dev_metrics()


__all__ = [
    "D2T_TASKS",
    "Job",
    "evaluate",
    "family",
    "load",
    "override",
    "prepare",
    "run",
    "with_options",
]
