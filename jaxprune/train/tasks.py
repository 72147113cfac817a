"""Loss and evaluation statistics of the standard tasks, for a jaxprune model.

``model_fn(model)`` turns an NNX model into a pure ``(params, batch, *, train, rng) ->
Output``; the loss and stats factories below build on it. Batches are dicts of arrays:
``input_ids``, ``attention_mask``, optional ``token_type_ids``, ``labels`` and an optional
``weights`` or ``valid`` (1 / True for real examples, 0 for padding rows of a last batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune import losses
from jaxprune.models.heads import Output

ModelFn = Callable[..., Output]


def model_fn(model: nnx.Module) -> ModelFn:
    """A pure forward: ``f(params, batch, *, train=False, rng=None, **outputs)``."""
    graphdef = nnx.graphdef(model)

    def forward(params: Any, batch: dict, *, train: bool = False, rng=None, **outputs) -> Output:
        module = nnx.merge(graphdef, params)
        rngs = nnx.Rngs(dropout=rng) if train else None
        inputs = [batch["input_ids"], batch.get("attention_mask")]
        if "token_type_ids" in batch:
            inputs.append(batch["token_type_ids"])
        return module(*inputs, deterministic=not train, rngs=rngs, **outputs)

    return forward


def task_loss(logits: jax.Array, batch: dict, kind: str) -> jax.Array:
    """The task's training loss: ``kind`` is classification, regression, token or qa."""
    w = batch.get("weights", batch.get("valid"))
    if kind == "classification":
        return losses.classification(logits, batch["labels"], w)
    if kind == "regression":
        return losses.regression(logits, batch["labels"], w)
    if kind == "token":
        return losses.token_classification(logits, batch["labels"], w)
    if kind == "qa":
        return losses.question_answering(
            logits, batch["start_positions"], batch["end_positions"], w
        )
    raise ValueError(f"unknown task kind {kind!r}: classification, regression, token or qa")


def supervised_loss(forward: ModelFn, kind: str) -> Callable:
    """Plain fine-tuning loss ``(params, batch, rng, teacher, step) -> (loss, aux)``."""

    def loss_fn(params, batch, rng, teacher, step):
        del teacher, step
        logits = forward(params, batch, train=True, rng=rng).logits
        return task_loss(logits, batch, kind), {}

    return loss_fn


def classification_stats(forward: ModelFn, num_classes: int) -> Callable[[Any, dict], dict]:
    """``(params, batch) -> {confusion (C, C) int32, loss_sum, count}``; sums over batches
    and hosts give exact accuracy, F1 and MCC (rows: gold, columns: predicted)."""

    def stats(params, batch):
        logits = forward(params, batch).logits
        weights = batch.get("weights", batch.get("valid", jnp.ones(logits.shape[0], jnp.int32)))
        weights = weights.astype(jnp.int32)
        gold = jax.nn.one_hot(batch["labels"], num_classes, dtype=jnp.int32) * weights[:, None]
        pred = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.int32)
        ce = losses.classification(logits, batch["labels"], weights) * jnp.sum(weights)
        return {"confusion": gold.T @ pred, "loss_sum": ce, "count": jnp.sum(weights)}

    return stats
