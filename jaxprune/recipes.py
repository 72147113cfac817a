"""End-to-end recipes: prune a Hugging Face checkpoint on a GLUE task with one method.

    result = jaxprune.recipes.prune_glue(GlueJob(model="minilm", task="sst2", method="pins",
                                                 sparsity=0.9, steps=600), "runs/pins")

loads the model and the task's data, builds the method, trains it with the engine
(checkpoints, logs, resumption), evaluates on the dev set, and exports the pruned model as a
Hugging Face folder (``run_dir/export``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, hf, methods, metrics, train
from jaxprune.masks import sparsity_report
from jaxprune.train.tasks import ModelFn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GlueJob:
    """One pruning run on a GLUE task.

    Attributes:
      model: checkpoint folder, ``minilm`` (embedded) or a Hub id.
      task: GLUE task (sst2, mrpc, rte, stsb, cola, qnli, ...).
      method: a :func:`jaxprune.methods.get` name, or ``dense`` for plain fine-tuning.
      method_options: overrides of the method's preset (e.g. ``{"teacher_mode": "best"}``).
      sparsity: final sparsity of the prunable weights.
      steps: optimizer steps (the budget); ``warmup_ratio`` of them warm the LR up.
      train_subset: use this many training examples (a fixed, seeded subset); None: all.
      teacher: folder of a fine-tuned dense checkpoint for methods that distil from one.
    """

    model: str = "minilm"
    task: str = "sst2"
    method: str = "pins"
    method_options: tuple[tuple[str, Any], ...] = ()
    sparsity: float = 0.9
    steps: int = 600
    batch_size: int = 32
    max_length: int = 64
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    train_subset: int | None = None
    eval_every: int | None = None
    seed: int = 0
    data_dir: str | None = None
    teacher: str | None = None


def _method(job: GlueJob) -> Any:
    options = dict(job.method_options)
    if job.method == "dense":
        return methods.get("magnitude", sparsity=0.0, update_every=10**9, **options)
    if methods.get(job.method).sparsity is None:  # soft movement: set by its regulariser
        return methods.get(job.method, **options)
    return methods.get(job.method, sparsity=job.sparsity, **options)


def _batches(batcher: data.Batcher):
    def stream(epoch: int, start: int):
        return itertools.islice(batcher(epoch), start, None)

    return stream


def evaluator(forward: ModelFn, task: str, batcher: data.Batcher):
    """``params -> dev metrics`` (official GLUE metrics plus ``primary``)."""
    spec = metrics.glue_task(task)
    regression = spec.num_classes is None

    @jax.jit
    def predict(params, batch):
        logits = forward(params, batch).logits
        return logits[..., 0] if regression else jnp.argmax(logits, -1)

    def evaluate(params) -> dict:
        preds, gold = [], []
        for batch in batcher(0):
            keep = batch["valid"]
            out = np.asarray(predict(params, _model_inputs(batch)))
            preds.append(out[keep])
            gold.append(batch["labels"][keep])
        return metrics.glue(task, np.concatenate(preds), np.concatenate(gold))

    return evaluate


def _has_scores(trainable: Any) -> bool:
    return isinstance(trainable, dict) and set(trainable) == {"params", "scores"}


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("index",)}


def prune_glue(job: GlueJob, run_dir: str | pathlib.Path) -> dict:
    """Runs ``job``; returns and writes (``run_dir/result.json``) its dev metrics, sparsity
    and timing."""
    run_dir = pathlib.Path(run_dir)
    spec = metrics.glue_task(job.task)
    num_labels = spec.num_classes or 1
    model, params, tokenizer = hf.load_pretrained(
        job.model, task="sequence-classification", num_labels=num_labels, seed=job.seed
    )
    train_set = data.load(job.task, "train", job.data_dir)
    if job.train_subset is not None and job.train_subset < len(train_set):
        train_set = train_set.shuffle(seed=job.seed).select(range(job.train_subset))
    dev_set = data.load(job.task, "validation", job.data_dir)
    encode = lambda ds: data.encode_glue(ds, tokenizer, job.task, job.max_length)  # noqa: E731
    pad = tokenizer.pad_token_id
    train_batches = data.Batcher(
        encode(train_set), job.batch_size, seed=job.seed, pad_id=pad, drop_last=True
    )
    dev_batches = data.Batcher(encode(dev_set), 64, shuffle=False, pad_id=pad)

    method = _method(job)
    run = methods.Run(
        total_steps=job.steps,
        learning_rate=job.learning_rate,
        warmup_steps=int(job.warmup_ratio * job.steps),
        weight_decay=job.weight_decay,
        task="regression" if spec.num_classes is None else "classification",
    )
    forward = train.model_fn(model)
    dense_teacher, teacher_forward = None, None
    if method.teacher == "dense" and job.teacher is None:
        raise ValueError(f"{job.method} distils from a fine-tuned dense teacher: set teacher=")
    if method.teacher != "none" and job.teacher is not None:  # PINS may start from one too
        teacher_model, dense_teacher, _ = hf.load_pretrained(
            job.teacher, task="sequence-classification", num_labels=num_labels
        )
        teacher_forward = train.model_fn(teacher_model)
    tx = method.optimizer(run, params)
    loss = method.loss(forward, run, teacher_forward)
    step = jax.jit(train.train_step_fn(loss, tx), donate_argnums=0)
    state = train.init_state(method.init(params), tx, seed=job.seed)
    head_forward = getattr(method, "head_forward", None)  # learned-score methods
    evaluate = evaluator(
        head_forward(forward, run) if head_forward else forward, job.task, dev_batches
    )

    def evaluate_trainable(trainable):  # learned-score methods train {"params", "scores"}
        return evaluate(method.eval_params(trainable) if _has_scores(trainable) else trainable)

    started = time.time()
    state, _ = train.fit(
        run_dir=run_dir,
        config=train.LoopConfig(
            steps=job.steps,
            steps_per_epoch=len(train_batches),
            log_every=max(1, job.steps // 50),
            eval_every=job.eval_every,
            checkpoint_every=max(50, job.steps // 10),
            best_metric=None,
        ),
        state=state,
        train_step=lambda s, b, t: step(s, _model_inputs(b), t),
        batches=_batches(train_batches),
        evaluate=evaluate_trainable,
        teacher=method.initial_teacher(params, dense_teacher),
        update_teacher=method.update_teacher if method.teacher == "self" else None,
        resolved_config=dataclasses.asdict(job),
        export=lambda trainable, opt_state: method.export(trainable, opt_state, run),
    )
    pruned, masks = method.export(state.params, state.opt_state, run)
    dev = evaluate(pruned)
    report = sparsity_report(jax.device_get(pruned), masks if job.method != "dense" else None)
    hf.save_pretrained(model, jax.device_get(pruned), run_dir / "export", tokenizer=tokenizer)
    result = {
        "job": dataclasses.asdict(job),
        "dev": {k: v for k, v in dev.items()},
        "sparsity": report.sparsity,
        "seconds": round(time.time() - started, 1),
        "export": str(run_dir / "export"),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result
