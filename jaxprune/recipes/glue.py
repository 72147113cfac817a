"""GLUE: sequence classification (regression for STS-B) with the official metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, metrics
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.train.tasks import ModelFn


def evaluator(task: str, batches: data.Batcher):
    """``forward -> (params -> dev metrics)``: official GLUE metrics plus ``primary``."""
    regression = metrics.glue_task(task).num_classes is None

    def bind(forward: ModelFn):
        @jax.jit
        def predict(params, batch):
            logits = forward(params, batch).logits
            return logits[..., 0] if regression else jnp.argmax(logits, -1)

        def evaluate(params) -> dict:
            preds, gold = [], []
            for batch in batches(0):
                keep = batch["valid"]
                out = np.asarray(predict(params, common.model_inputs(batch)))
                preds.append(out[keep])
                gold.append(batch["labels"][keep])
            return metrics.glue(task, np.concatenate(preds), np.concatenate(gold))

        return evaluate

    return bind


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """``job.model`` on the GLUE task ``job.task``, scored on its dev set (MNLI: matched);
    ``train``: also the training batches."""
    spec = metrics.glue_task(job.task)
    num_labels = spec.num_classes or 1
    dev_rows = common.dev_split(job, "validation_matched" if job.task == "mnli" else "validation")
    train_rows = common.train_split(job) if train else None
    model, params, tokenizer = common.load_model(
        job, job.model, head="sequence-classification", num_labels=num_labels
    )
    common.check_length(job, model)
    encode = lambda ds: data.encode_glue(ds, tokenizer, job.task, job.max_length)  # noqa: E731
    pad = tokenizer.pad_token_id
    dev_batches = data.Batcher(encode(dev_rows), job.eval_batch_size, shuffle=False, pad_id=pad)

    def load_teacher(folder: str):
        teacher, teacher_params, _ = common.load_model(
            job, folder, head="sequence-classification", num_labels=num_labels, teacher=True
        )
        return teacher, teacher_params

    return common.Prepared(
        model,
        params,
        tokenizer,
        train_batches=None
        if train_rows is None
        else common.training_batches(job, train_rows, encode, pad, pack=job.pack),
        evaluate=evaluator(job.task, dev_batches),
        kind="regression" if spec.num_classes is None else "classification",
        load_teacher=load_teacher,
    )


__all__ = [
    "evaluator",
    "prepare",
]
