"""CoNLL-2003 named entity recognition: token classification, entity-level F1 (seqeval)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, metrics
from jaxprune.data.conll import NER
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.train.tasks import ModelFn


def word_predictions(labels: np.ndarray, predicted: np.ndarray, n_words: int) -> list[str]:
    """A sentence's predicted tags: the prediction at each labelled (first) sub-word, in order;
    words cut by truncation are predicted ``O``.

    Args:
      labels: (L,) the encoded labels, -100 off first sub-words.
      predicted: (L,) argmax class ids.
      n_words: words in the sentence.
    """
    tags = [NER[int(c)] for c in predicted[labels != -100]][:n_words]
    return tags + ["O"] * (n_words - len(tags))


def evaluator(sentences, batches: data.Batcher):
    """``forward -> (params -> entity precision/recall/F1, accuracy, primary)``."""
    gold = [[NER[t] for t in tags] for tags in sentences["ner_tags"]]

    def bind(forward: ModelFn):
        predict = jax.jit(lambda params, batch: jnp.argmax(forward(params, batch).logits, -1))

        def evaluate(params) -> dict:
            pred: list[list[str] | None] = [None] * len(gold)
            for batch in batches(0):
                out = np.asarray(predict(params, common.model_inputs(batch)))
                for row in np.flatnonzero(batch["valid"]):
                    i = int(batch["index"][row])
                    pred[i] = word_predictions(batch["labels"][row], out[row], len(gold[i]))
            return metrics.entity_f1(gold, common.every_row(pred, "predicted tags"))

        return evaluate

    return bind


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """``job.model`` on CoNLL-2003 NER, scored on ``validation``; ``train``: also the
    training batches."""
    dev_set = common.dev_split(job)
    train_rows = common.train_split(job) if train else None
    model, params, tokenizer = common.load_model(
        job, job.model, head="token-classification", num_labels=len(NER)
    )
    common.check_length(job, model)
    pad = tokenizer.pad_token_id
    encode = lambda ds: data.encode_ner(ds, tokenizer, job.max_length)  # noqa: E731
    dev_batches = data.Batcher(
        encode(dev_set),
        job.eval_batch_size,
        shuffle=False,
        pad_id=pad,
    )

    def load_teacher(folder: str):
        teacher, teacher_params, _ = common.load_model(
            job, folder, head="token-classification", num_labels=len(NER), teacher=True
        )
        return teacher, teacher_params

    return common.Prepared(
        model,
        params,
        tokenizer,
        train_batches=None
        if train_rows is None
        else common.training_batches(job, train_rows, encode, pad),
        evaluate=evaluator(dev_set, dev_batches),
        kind="token",
        load_teacher=load_teacher,
    )


__all__ = [
    "evaluator",
    "prepare",
    "word_predictions",
]
