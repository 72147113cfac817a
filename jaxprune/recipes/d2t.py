"""Data-to-text (E2E, WebNLG, DART) with a causal LM (:data:`jaxprune.hf.DECODERS`: GPT-2,
Llama, Qwen2, Mistral): LM fine-tuning, greedy decoding, BLEU & co."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxprune import data, metrics
from jaxprune.models import gpt2, llama
from jaxprune.recipes import common
from jaxprune.recipes.job import Job
from jaxprune.train import mesh as mesh_lib
from jaxprune.train.tasks import ModelFn

#: ``(params, ids (batch, prompt), lengths (batch,), max_new_tokens) -> (batch, prompt +
#: max_new_tokens)``, as :func:`jaxprune.models.gpt2.greedy_decode` (``max_new_tokens``
#: static).
Decode = Callable[[Any, jax.Array, jax.Array, int], jax.Array]


def rerun_decoding(model: Any, forward: ModelFn) -> Decode:
    """Greedy decoding that reruns ``forward`` on the whole buffer for every new token
    (:func:`jaxprune.models.gpt2.greedy_decode`): any causal LM, no cache."""
    del model
    logits_fn = lambda params, ids: forward(params, {"input_ids": ids}).logits  # noqa: E731
    return functools.partial(gpt2.greedy_decode, logits_fn)


def cached_decoding(model: Any, forward: ModelFn) -> Decode:
    """Greedy decoding with a KV cache (:func:`jaxprune.models.llama.greedy_decode`): the
    prompts run once, then one token at a time. It runs ``model``'s own prefill and decode
    steps on the params it is given, so ``forward`` must be the plain forward of ``model``
    (as every method's is on a causal LM)."""
    del forward
    graphdef = nnx.graphdef(model)

    def decode(params: Any, ids: jax.Array, lengths: jax.Array, max_new_tokens: int):
        mesh = mesh_lib.typed_mesh(params=params, batch=ids)

        def out_sharding(mesh):  # batch-leading, like the model's outputs (model_fn)
            return NamedSharding(mesh, PartitionSpec(*jax.typeof(ids).sharding.spec[:1]))

        def run(params, ids, lengths):  # padding rows (length 0) decode from their 1st slot
            module = nnx.merge(graphdef, params)
            return llama.greedy_decode(module, ids, jnp.maximum(lengths, 1), max_new_tokens)

        return mesh_lib.auto_axes_call(run, mesh, out_sharding, params, ids, lengths)

    return decode


#: decoder class -> its greedy decoding; a causal LM not listed reruns its forward
#: (:func:`rerun_decoding`).
DECODING: dict[type, Callable[[Any, ModelFn], Decode]] = {
    gpt2.GPT2LMHeadModel: rerun_decoding,
    llama.LlamaForCausalLM: cached_decoding,
}


def decoding_for(model: Any) -> Callable[[ModelFn], Decode]:
    """``forward -> decode`` for ``model`` (:data:`DECODING`)."""
    make = next((d for cls, d in DECODING.items() if isinstance(model, cls)), rerun_decoding)
    return functools.partial(make, model)


def evaluator(
    task: str,
    features,
    batches: data.Batcher,
    tokenizer,
    max_new_tokens: int,
    decoding: Callable[[ModelFn], Decode] | None = None,
):
    """``forward -> (params -> corpus BLEU, chrF, TER, ROUGE-L)`` from greedy
    decoding of every eval prompt (E2E scored lowercased, as its official script);
    ``decoding``: ``forward -> decode`` (:func:`decoding_for`; None: rerun ``forward``)."""
    eos = tokenizer.eos_token_id
    make = decoding or functools.partial(rerun_decoding, None)

    def text(tokens: np.ndarray) -> str:
        stop = np.flatnonzero(tokens == eos)
        return tokenizer.decode(tokens[: stop[0]] if stop.size else tokens).strip()

    def bind(forward: ModelFn):
        decode = jax.jit(make(forward), static_argnums=3)

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
    """A causal LM checkpoint (:data:`jaxprune.hf.DECODERS`) on ``job.task`` (e2e, webnlg or
    dart), scored on ``validation``; ``train``: also the training batches."""
    dev_rows = common.dev_split(job)
    train_rows = common.train_split(job) if train else None
    model, params, tokenizer = common.load_model(job, job.model, head="causal-lm")
    family = common.family_of(model)
    assert family.decoder  # head="causal-lm" loads decoders only
    common.check_length(job, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    positions = family.positions(model.cfg)  # type: ignore[attr-defined]
    prompt_room = positions - job.max_new_tokens
    if prompt_room < 1:
        raise ValueError(
            f"max_new_tokens={job.max_new_tokens} leaves no room for a prompt in the "
            f"{positions} positions of {job.model}"
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
        evaluate=evaluator(
            job.task,
            eval_features,
            eval_batches,
            tokenizer,
            job.max_new_tokens,
            decoding_for(model),
        ),
        kind="lm",
        load_teacher=load_teacher,
    )


__all__ = [
    "DECODING",
    "Decode",
    "cached_decoding",
    "decoding_for",
    "evaluator",
    "prepare",
    "rerun_decoding",
]
