"""SQuAD v1.1: extractive question answering, official EM/F1 on the dev set."""

from __future__ import annotations

import jax
import numpy as np

from jaxprune import data, metrics
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.train.tasks import ModelFn

_EVAL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def evaluator(examples, features, batches: data.Batcher):
    """``forward -> (params -> {exact_match, f1, primary})`` via
    :func:`jaxprune.data.postprocess_squad`."""

    def bind(forward: ModelFn):
        predict = jax.jit(lambda params, batch: forward(params, batch).logits)

        def evaluate(params) -> dict:
            starts: list[np.ndarray | None] = [None] * len(features)
            ends: list[np.ndarray | None] = [None] * len(features)
            for batch in batches(0):
                logits = np.asarray(predict(params, common.model_inputs(batch)))
                for row in np.flatnonzero(batch["valid"]):
                    starts[batch["index"][row]] = logits[row, :, 0]
                    ends[batch["index"][row]] = logits[row, :, 1]
            answers = data.postprocess_squad(
                examples,
                features,
                common.every_row(starts, "start logits"),
                common.every_row(ends, "end logits"),
            )
            return metrics.squad(answers, examples)

        return evaluate

    return bind


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """``job.model`` on SQuAD v1.1, scored on ``validation``; ``train``: also the training
    batches (windows of ``train``)."""
    dev_set = common.dev_split(job)
    train_rows = common.train_split(job) if train else None
    model, params, tokenizer = common.load_model(job, job.model, head="question-answering")
    common.check_length(job, model)
    dev_features = data.encode_squad_eval(dev_set, tokenizer, job.max_length, job.doc_stride)
    pad = tokenizer.pad_token_id
    encode = lambda ds: data.encode_squad_train(ds, tokenizer, job.max_length, job.doc_stride)  # noqa: E731
    columns = [c for c in _EVAL_COLUMNS if c in dev_features.column_names]
    dev_batches = data.Batcher(
        dev_features, job.eval_batch_size, shuffle=False, pad_id=pad, columns=columns
    )

    def load_teacher(folder: str):
        teacher, teacher_params, _ = common.load_model(
            job, folder, head="question-answering", teacher=True
        )
        return teacher, teacher_params

    return common.Prepared(
        model,
        params,
        tokenizer,
        train_batches=None
        if train_rows is None
        else common.training_batches(job, train_rows, encode, pad),
        evaluate=evaluator(dev_set, dev_features, dev_batches),
        kind="qa",
        load_teacher=load_teacher,
    )


__all__ = [
    "evaluator",
    "prepare",
]
