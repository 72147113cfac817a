"""Data-to-text with GPT-2 (E2E, WebNLG, DART): LM fine-tuning, greedy decoding, BLEU & co."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import data, metrics
from jaxprune.models.gpt2 import GPT2LMHeadModel, greedy_decode
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.train.tasks import ModelFn


def evaluator(task: str, features, batches: data.Batcher, tokenizer, max_new_tokens: int):
    """``forward -> (params -> corpus BLEU, chrF, TER, ROUGE-L)`` from greedy
    decoding of every eval prompt (E2E scored lowercased, as its official script)."""
    eos = tokenizer.eos_token_id

    def text(tokens: np.ndarray) -> str:
        stop = np.flatnonzero(tokens == eos)
        return tokenizer.decode(tokens[: stop[0]] if stop.size else tokens).strip()

    def bind(forward: ModelFn):
        logits_fn = lambda params, ids: forward(params, {"input_ids": ids}).logits  # noqa: E731
        decode = jax.jit(functools.partial(greedy_decode, logits_fn), static_argnums=3)

        def evaluate(params) -> dict:
            outputs: list[str] = [""] * len(features)
            for batch in batches(0):
                lengths = batch["attention_mask"].sum(-1).astype(np.int32)
                ids = decode(params, jnp.asarray(batch["input_ids"]), lengths, max_new_tokens)
                ids = np.asarray(ids)
                for row in np.flatnonzero(batch["valid"]):
                    new = ids[row, lengths[row] : lengths[row] + max_new_tokens]
                    outputs[int(batch["index"][row])] = text(new)
            return metrics.generation(outputs, features["references"], lowercase=task == "e2e")

        return evaluate

    return bind


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """A GPT-2 checkpoint on ``job.task`` (e2e, webnlg or dart), scored on ``validation``;
    ``train``: also the training batches."""
    dev_rows = common.dev_split(job)
    train_rows = common.train_split(job) if train else None
    model, params, tokenizer = common.load_model(job, job.model, head="causal-lm")
    assert isinstance(model, GPT2LMHeadModel)  # head="causal-lm" loads GPT-2 only
    common.check_length(job, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_room = model.cfg.n_positions - job.max_new_tokens
    if prompt_room < 1:
        raise ValueError(
            f"max_new_tokens={job.max_new_tokens} leaves no room for a prompt in the "
            f"{model.cfg.n_positions} positions of {job.model}"
        )
    eval_features = data.encode_d2t(
        dev_rows, tokenizer, job.task, min(job.max_length, prompt_room), train=False
    )
    encode = lambda ds: data.encode_d2t(ds, tokenizer, job.task, job.max_length)  # noqa: E731
    eval_batches = data.Batcher(
        eval_features,
        job.eval_batch_size,
        shuffle=False,
        pad_id=pad,
        columns=["input_ids", "attention_mask"],
    )

    def load_teacher(folder: str):
        teacher, teacher_params, _ = common.load_model(job, folder, head="causal-lm", teacher=True)
        return teacher, teacher_params

    return common.Prepared(
        model,
        params,
        tokenizer,
        train_batches=None
        if train_rows is None
        else common.training_batches(job, train_rows, encode, pad),
        evaluate=evaluator(job.task, eval_features, eval_batches, tokenizer, job.max_new_tokens),
        kind="lm",
        load_teacher=load_teacher,
    )


__all__ = [
    "evaluator",
    "prepare",
]
