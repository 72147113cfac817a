"""One-shot pruning of a trained model on a task: calibrate, prune, evaluate, export.

    jaxprune oneshot --model runs/small_repro/sst2-dense/export --task sst2 \\
        --method sparsegpt --sparsity 0.5 [--calibration 128] [--out runs/oneshot/sst2-sg-50]

The calibration set is ``calibration`` training examples (a seeded subset, as
``Job.train_subset`` draws it) in unpacked batches of ``job.batch_size`` (data-to-text:
the training sequences, prompt and target, as the decoder is trained on); the model's
family's kernels are pruned (:data:`jaxprune.recipes.common.FAMILIES`) with
:func:`jaxprune.oneshot.prune`, the dev set scored with the task's metric, and the pruned
model exported with the dataset's label names.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np

from jaxprune import hf, oneshot
from jaxprune.recipes import common, labels
from jaxprune.recipes.job import Job


def run_oneshot(
    job: Job,
    *,
    method: oneshot.Method,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    calibration: int = 128,
    out: str | pathlib.Path | None = None,
) -> dict[str, Any]:
    """Prunes ``job.model`` once for ``job.task`` and returns (and with ``out`` writes to
    ``out/result.json``, the model to ``out/export``) the dev metrics, the sparsity reached
    and the seconds taken.

    Raises:
      ValueError: ``calibration`` not a positive multiple of ``job.batch_size``; what
        :func:`jaxprune.oneshot.prune` refuses.
    """
    from jaxprune.recipes import prepare

    if calibration < 1 or calibration % job.batch_size:
        raise ValueError(
            f"calibration={calibration} must be a positive multiple of batch_size="
            f"{job.batch_size} (whole calibration batches)"
        )
    job = dataclasses.replace(job, method="dense", method_options=(), pack=False)
    prepared = prepare(dataclasses.replace(job, train_subset=calibration), train=True)
    if prepared.train_batches is None:
        raise ValueError("no calibration batches")  # prepare(train=True) always makes them
    batches = [common.model_inputs(b) for b in prepared.train_batches(0)]
    prunable = common.family_of(prepared.model).kernels
    start = time.perf_counter()
    pruned, masks = oneshot.prune(
        prepared.model,
        prepared.params,
        batches,
        method=method,
        prunable=prunable,
        sparsity=sparsity,
        nm=nm,
    )
    pruned = jax.block_until_ready(pruned)
    seconds = time.perf_counter() - start
    kept = [np.asarray(m) for m in jax.tree.leaves(masks)]
    result = {
        "model": job.model,
        "task": job.task,
        "method": method,
        "sparsity": None if sparsity is None else float(sparsity),
        "nm": None if nm is None else list(nm),
        "calibration": calibration,
        "reached": 1.0 - sum(int(m.sum()) for m in kept) / sum(m.size for m in kept),
        "dev": prepared.dev_metrics(pruned),
        "prune_seconds": seconds,
    }
    if out is not None:
        out = pathlib.Path(out)
        hf.save_pretrained(
            prepared.model,
            jax.device_get(pruned),
            out / "export",
            tokenizer=prepared.tokenizer,
            labels=labels.dataset_labels(job.task),
        )
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


__all__ = ["run_oneshot"]
