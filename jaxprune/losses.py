"""Task losses on model outputs. All return a float32 scalar averaged over real examples.

``weights`` (batch,) marks real examples (1) and padding examples (0) of a padded batch, so
the loss of a padded final batch equals the loss of its real part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

IGNORE = -100  # label of positions that carry no loss (token tasks, prompt tokens)


def _mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
    per_example = per_example.astype(jnp.float32)
    if weights is None:
        return jnp.mean(per_example)
    weights = weights.astype(jnp.float32)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def classification(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy. logits (batch, classes); labels (batch,) int."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return _mean(ce, weights)


def regression(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error. logits (batch, 1) or (batch,); labels (batch,) float."""
    pred = logits.reshape(labels.shape).astype(jnp.float32)
    return _mean((pred - labels.astype(jnp.float32)) ** 2, weights)


def token_classification(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Cross-entropy over positions whose label is not ``IGNORE``, averaged over those
    positions. logits (batch, length, classes); labels (batch, length) int."""
    valid = labels != IGNORE
    if weights is not None:
        valid = valid & (weights[:, None] > 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0)
    )
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


def question_answering(
    logits: jax.Array,
    start_positions: jax.Array,
    end_positions: jax.Array,
    weights: jax.Array | None = None,
) -> jax.Array:
    """(start CE + end CE) / 2 as in BERT. logits (batch, length, 2); positions (batch,)."""
    start = classification(logits[..., 0], start_positions, weights)
    end = classification(logits[..., 1], end_positions, weights)
    return (start + end) / 2
