"""Loss and evaluation statistics of the standard tasks, for a jaxprune model.

``model_fn(model)`` turns an NNX model into a pure ``(params, batch, *, train, rng) ->
Output``; the loss and stats factories below build on it. Batches are dicts of arrays:
``input_ids``, ``attention_mask``, optional ``token_type_ids``, ``labels`` and an optional
``weights`` or ``valid`` (1 / True for real examples, 0 for padding rows of a last batch).
Packed batches (``jaxprune.data.Batcher(..., pack=True)``) add ``segment_ids``,
``position_ids`` and ``cls_positions``; their ``labels`` and ``valid`` are ``(rows, S)``, one
per example slot, and so are the sequence-classification logits' leading axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from jaxprune import losses
from jaxprune.models.heads import Output
from jaxprune.train import mesh as mesh_lib

ModelFn = Callable[..., Output]
PACKING_INPUTS = ("position_ids", "segment_ids", "cls_positions")


def model_fn(model: nnx.Module) -> ModelFn:
    """A pure forward: ``f(params, batch, *, train=False, rng=None, **outputs)``.

    On a mesh with Explicit axes the model runs with every axis Auto and every output array
    (all have the batch as leading axis) comes back sharded like ``batch["input_ids"]``'s
    leading axis, replicated over the rest.

    Raises:
      MeshMismatchError: params, batch and the ``jax.set_mesh`` context disagree on the mesh.
    """
    graphdef = nnx.graphdef(model)

    def run(params: Any, batch: dict, rng: Any, train: bool, outputs: dict) -> Output:
        module = nnx.merge(graphdef, params)
        rngs = nnx.Rngs(dropout=rng) if train else None
        inputs = [batch["input_ids"], batch.get("attention_mask")]
        if "token_type_ids" in batch:
            inputs.append(batch["token_type_ids"])
        packing = {k: batch[k] for k in PACKING_INPUTS if k in batch}
        return module(*inputs, deterministic=not train, rngs=rngs, **packing, **outputs)

    def forward(params: Any, batch: dict, *, train: bool = False, rng=None, **outputs) -> Output:
        mesh = mesh_lib.typed_mesh(params=params, batch=batch)

        def out_sharding(mesh: AbstractMesh) -> NamedSharding:  # batch-leading outputs
            spec = jax.typeof(batch["input_ids"]).sharding.spec
            return NamedSharding(mesh, PartitionSpec(*spec[:1]))

        return mesh_lib.auto_axes_call(
            lambda p, b, r: run(p, b, r, train, outputs), mesh, out_sharding, params, batch, rng
        )

    return forward


def task_loss(logits: jax.Array, batch: dict, kind: str) -> jax.Array:
    """The task's training loss: ``kind`` is classification, regression, token, qa or lm."""
    w = batch.get("weights", batch.get("valid"))
    if kind == "classification":
        return losses.classification(logits, batch["labels"], w)
    if kind == "regression":
        return losses.regression(logits, batch["labels"], w)
    if kind == "token":
        return losses.token_classification(logits, batch["labels"], w)
    if kind == "lm":
        return losses.causal_lm(logits, batch["labels"], w)
    if kind == "qa":
        return losses.question_answering(
            logits, batch["start_positions"], batch["end_positions"], w
        )
    raise ValueError(f"unknown task kind {kind!r}: classification, regression, token, qa or lm")


def classes_view(
    logits: jax.Array, batch: dict, kind: str
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """A task's predictions as independent classification problems, for logit distillation.

    Returns ``(logits (N, C), labels (N,), weights (N,) or None)``: classification as is;
    token and lm: one problem per position (lm shifted: position ``i`` predicts token
    ``i + 1``), weight 0 where the label is ignored; qa: the start and the end distributions
    over positions, stacked (N = 2 batch, C = length), so a mean over problems is the mean of
    the start and end terms.
    """
    w = batch.get("weights", batch.get("valid"))
    if kind == "classification":  # packed (rows, S, C): one problem per slot
        flat = logits.reshape(-1, logits.shape[-1])
        return flat, batch["labels"].reshape(-1), None if w is None else w.reshape(-1)
    if kind in ("token", "lm"):
        labels = batch["labels"]
        if kind == "lm":
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != losses.IGNORE
        if w is not None:
            keep = keep & (w[:, None] > 0)
        flat = logits.reshape(-1, logits.shape[-1])
        return flat, jnp.where(keep, labels, 0).reshape(-1), keep.reshape(-1)
    if kind == "qa":
        both = jnp.concatenate([logits[..., 0], logits[..., 1]])
        labels = jnp.concatenate([batch["start_positions"], batch["end_positions"]])
        return both, labels, None if w is None else jnp.concatenate([w, w])
    raise ValueError(f"logit distillation needs class logits; task kind {kind!r} has none")


def supervised_loss(forward: ModelFn, kind: str) -> Callable:
    """Plain fine-tuning loss ``(params, batch, rng, teacher, step) -> (loss, aux)``."""

    def loss_fn(params, batch, rng, teacher, step):
        del teacher, step
        logits = forward(params, batch, train=True, rng=rng).logits
        return task_loss(logits, batch, kind), {}

    return loss_fn


def classification_stats(forward: ModelFn, num_classes: int) -> Callable[[Any, dict], dict]:
    """``(params, batch) -> {confusion (C, C) int32, loss_sum, count}``; sums over batches
    and hosts give exact accuracy, F1 and MCC (rows: gold, columns: predicted); replicated
    on the params' mesh."""

    def sums(params, batch):
        logits = forward(params, batch).logits  # (batch, C), packed (rows, S, C)
        logits = logits.reshape(-1, logits.shape[-1])
        labels = batch["labels"].reshape(-1)
        weights = batch.get("weights", batch.get("valid", jnp.ones(labels.shape, jnp.int32)))
        weights = weights.reshape(-1).astype(jnp.int32)
        gold = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * weights[:, None]
        pred = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.int32)
        ce = losses.classification(logits, labels, weights) * jnp.sum(weights)
        return {"confusion": gold.T @ pred, "loss_sum": ce, "count": jnp.sum(weights)}

    def stats(params, batch):
        mesh = mesh_lib.typed_mesh(params=params, batch=batch)
        replicated = lambda mesh: NamedSharding(mesh, PartitionSpec())  # noqa: E731
        return mesh_lib.auto_axes_call(sums, mesh, replicated, params, batch)

    return stats


__all__ = [
    "PACKING_INPUTS",
    "ModelFn",
    "classes_view",
    "classification_stats",
    "model_fn",
    "supervised_loss",
    "task_loss",
]
