"""Refused mask updates: recorded in the optimizer state, raised on the host.

Some checks of a mask update depend on traced values: the schedule's sparsity, the scores
(out of [0, 1); NaN or infinite; all equal across a ranking; pruning before the criterion's
warmup).
Raising from inside a jitted step needs a host callback, and a program holding one ran
1.45-1.5x slower per step on an H200 even when the callback never fired (a BERT-base-sized
step: 25.8 ms against 18.8 ms without). So instead a failed check

- refuses the mask update: that step trains with the masks it had;
- freezes the optimizer from the next step on: zero updates, the whole optimizer state as
  it was, so nothing trained so far is lost and nothing trains on a wrong mask (the
  predicate of that freeze is a state scalar, so a live step pays nothing for it);
- records the first failure in :attr:`jaxprune.MaskedOptimizerState.failure`;

and :func:`jaxprune.check` raises it as a :class:`PruningError` naming the step, the value
and the leaf. :func:`jaxprune.masks_of` and :func:`jaxprune.masked_state` check before they
return, so a report or an export of a refused run raises too; the engine's loop checks
after every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

NONE, SPARSITY, NONFINITE, NO_EVIDENCE, TIED, TIED_LEAF = range(6)


class PruningError(ValueError):
    """A mask update was refused (see :mod:`jaxprune.failure`)."""


class Failure(NamedTuple):
    """The first refused mask update of a run (``code == NONE``: none)."""

    code: chex.Array  # int32: NONE, SPARSITY, NONFINITE, NO_EVIDENCE, TIED or TIED_LEAF
    step: chex.Array  # int32: the optimizer step of the refused mask update
    value: chex.Array  # float32: the sparsity, the pruned count or the tied score
    detail: chex.Array  # int32: the index among the masks' leaves of the tied (TIED_LEAF) or
    # non-finite (NONFINITE) leaf, the criterion's warmup (NO_EVIDENCE), else -1


def none() -> Failure:
    return Failure(
        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32),
        jnp.full((), -1, jnp.int32),
    )  # fmt: skip


def of_mask_update(
    sparsity: jax.Array,
    scores: Any,
    masks: Any,
    step: jax.Array,
    warmup: int,
    scope: str,
) -> Failure:
    """What is wrong with a mask update, if anything, in order of precedence: the sparsity is
    outside [0, 1) (NaN included); a score is NaN or infinite (non-finite gradients or params
    reached the criterion); entries are pruned before step ``warmup``, where the criterion's
    scores carry no evidence; the scores of a ranking group (all leaves, or each leaf for
    ``scope="local"``) are all equal while its masks keep some entries and prune others, so
    position decided.

    Args:
      sparsity: float32 scalar, the schedule's value.
      scores, masks: the criterion's scores and the rule's bool masks (None where not pruned).
      step: int32 scalar; warmup: the criterion's; scope: ``global`` or ``local``.
    """
    score_leaves = [s for s in jax.tree.leaves(scores) if s is not None]
    mask_leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    lo, hi, cut = _leaf_stats(score_leaves, mask_leaves)  # cut: pruned per leaf
    sizes = jnp.asarray([m.size for m in mask_leaves], jnp.int32)
    if scope == "global":
        pruned, n = jnp.sum(cut), int(sum(m.size for m in mask_leaves))
        tied = (jnp.min(lo) == jnp.max(hi)) & (pruned > 0) & (pruned < n)
        tied_leaf, tied_code = jnp.int32(-1), TIED
    else:
        flat = (lo == hi) & (cut > 0) & (cut < sizes)
        tied, tied_leaf, tied_code = jnp.any(flat), jnp.argmax(flat).astype(jnp.int32), TIED_LEAF
    bad_sparsity = ~((sparsity >= 0) & (sparsity < 1))
    bad_scores = ~jnp.all(jnp.isfinite(lo) & jnp.isfinite(hi))
    early = (step < warmup) & jnp.any(cut > 0)
    code = jnp.select(
        [bad_sparsity, bad_scores, early, tied],
        [SPARSITY, NONFINITE, NO_EVIDENCE, tied_code],
        NONE,
    ).astype(jnp.int32)
    value = jnp.select(
        [bad_sparsity, early],
        [sparsity, jnp.sum(cut).astype(jnp.float32)],
        lo[jnp.maximum(tied_leaf, 0)],
    )
    detail = jnp.select(
        [code == TIED_LEAF, code == NO_EVIDENCE, code == NONFINITE],
        [tied_leaf, warmup, jnp.argmax(~(jnp.isfinite(lo) & jnp.isfinite(hi)))],
        -1,
    )
    return Failure(
        code, step.astype(jnp.int32), value.astype(jnp.float32), detail.astype(jnp.int32)
    )


def _leaf_stats(scores: list[jax.Array], masks: list[jax.Array]) -> tuple[jax.Array, ...]:
    """Per leaf, the float32 min and max of its scores and the int32 count of its pruned
    entries. Leaves of one shape (and sharding) are stacked, so the program holds three
    reductions per shape, not per leaf: XLA's compile time grew faster than linearly with
    per-leaf reductions gathered into one vector (``benchmarks/compile_time.py``)."""
    by_type: dict[Any, list[int]] = {}
    for i, (s, m) in enumerate(zip(scores, masks, strict=True)):
        key = (s.shape, jax.typeof(s).sharding, jax.typeof(m).sharding)
        by_type.setdefault(key, []).append(i)
    out = [jnp.zeros(len(scores), d) for d in (jnp.float32, jnp.float32, jnp.int32)]
    for leaves in by_type.values():
        s = jnp.stack([scores[i].astype(jnp.float32) for i in leaves])
        m = jnp.stack([masks[i] for i in leaves])
        axes = tuple(range(1, s.ndim))
        pruned = jnp.sum(~m, axis=axes, dtype=jnp.int32)
        stats = jnp.min(s, axis=axes), jnp.max(s, axis=axes), pruned
        out = [o.at[np.asarray(leaves)].set(v) for o, v in zip(out, stats, strict=True)]
    return tuple(out)


def first(current: Failure, new: Failure) -> Failure:
    """``current`` if it records a failure, else ``new``."""
    return jax.tree.map(lambda c, n: jnp.where(current.code != NONE, c, n), current, new)


def message(failure: Failure, leaf_paths: list[str]) -> str:
    """The error text of a recorded failure (concrete values; ``leaf_paths`` of the masks)."""
    code, step, value = int(failure.code), int(failure.step), float(failure.value)
    head = f"masked_optimizer refused the mask update at step {step} and froze training there"
    if code == SPARSITY:
        return f"{head}: the schedule gave sparsity {value}; it must be in [0, 1)"
    if code == NONFINITE:
        return (
            f"{head}: the scores of {leaf_paths[int(failure.detail)]} hold NaN or infinity "
            "(non-finite gradients or params reached the criterion). Find the step whose "
            "loss or gradients went non-finite, or pass skip_nonfinite=True to skip such "
            "steps."
        )
    if code == NO_EVIDENCE:
        warmup = int(failure.detail)
        return (
            f"{head}: the mask rule pruned {int(value)} entries before the criterion has "
            f"evidence (step {warmup}: its scores are all equal until then). Begin pruning "
            f"at step >= {warmup}."
        )
    if code == TIED:
        return (
            f"{head}: the criterion gave every prunable entry the same score ({value}), so "
            "the mask would keep entries by position. Prune once the scores differ, or "
            "choose another criterion."
        )
    if code == TIED_LEAF:
        return (
            f"{head}: the criterion gave every entry of {leaf_paths[int(failure.detail)]} "
            f"the same score ({value}), so its mask would keep entries by position. Leave "
            "the leaf out of prunable, or prune once its scores differ."
        )
    raise ValueError(f"unknown failure code {code}")


__all__ = ["Failure", "PruningError", "first", "message", "none", "of_mask_update"]
