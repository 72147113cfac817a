"""``masked_optimizer``: an optax transformation that prunes while it optimizes.

    tx = jaxprune.masked_optimizer(
        optax.adamw(2e-5),
        criterion=jaxprune.criteria.magnitude(),
        schedule=jaxprune.schedules.cubic(0.9, begin_step=100, end_step=1000),
        prunable=jaxprune.paths.BERT_ENCODER_KERNELS,
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)   # pruned entries are exactly 0

Each step: the inner optimizer sees the raw gradients (its state is whatever it is: no list
of known state types); the criterion updates its scores; on due steps the masks are
recomputed from the scores at the scheduled sparsity; then the update of every pruned entry
is replaced by ``-param``, so ``apply_updates`` lands it on exactly 0 (``p + (-p) == 0`` in
IEEE arithmetic). A pruned entry may come back at a later mask update if its score rises
(PINS, PLATON, movement); with ``magnitude`` it scores 0 and stays pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxprune import masks as masks_lib
from jaxprune import paths
from jaxprune.criteria import Criterion

MaskRule = Callable[[Any, chex.Array], Any]


class MaskedOptimizerState(NamedTuple):
    """State of :func:`masked_optimizer`."""

    step: chex.Array  # shape=(), int32: optimizer steps taken
    masks: chex.ArrayTree  # bool, shaped like params (True = kept); None where not prunable
    criterion: Any  # the criterion's state, over the prunable leaves
    inner: optax.OptState  # the inner optimizer's state, untouched


def _prunable_subtree(tree: Any, selection: Any) -> Any:
    """``tree`` with ``None`` in place of every leaf that is not selected."""
    return jax.tree.map(lambda keep, x: x if keep else None, selection, tree)


def _is_none(x: Any) -> bool:
    return x is None


def _injected_learning_rate(inner_state: optax.OptState) -> chex.Array | None:
    """The ``learning_rate`` hyperparameter of an ``optax.inject_hyperparams`` state, if any."""
    found = [
        s.hyperparams["learning_rate"]
        for s in jax.tree.leaves(inner_state, is_leaf=lambda x: hasattr(x, "hyperparams"))
        if isinstance(getattr(s, "hyperparams", None), dict) and "learning_rate" in s.hyperparams
    ]
    if len(found) > 1:
        raise ValueError(
            f"found {len(found)} injected learning rates in the inner optimizer's state; "
            "pass learning_rate= to masked_optimizer"
        )
    return found[0] if found else None


def masked_optimizer(
    inner: optax.GradientTransformation,
    *,
    criterion: Criterion,
    schedule: optax.Schedule | float,
    prunable: paths.Prunable,
    scope: Literal["global", "local"] = "global",
    update_every: int | Callable[[chex.Array], chex.Array] = 10,
    mask_rule: MaskRule | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    lr_step_offset: int = 0,
    hold_pruned: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so that the selected parameters are pruned on a schedule.

    Args:
      inner: any optax transformation (``optax.adamw(...)``, a chain, an
        ``inject_hyperparams`` optimizer, ...).
      criterion: importance scores, from :mod:`jaxprune.criteria`.
      schedule: step -> sparsity in [0, 1) (from :mod:`jaxprune.schedules`), or a constant.
      prunable: regex on ``/``-joined leaf paths, or predicate ``(path, leaf) -> bool``
        (presets in :mod:`jaxprune.paths`).
      scope: ``"global"``: one ranking over all prunable entries; ``"local"``: each leaf
        pruned to the scheduled sparsity on its own.
      update_every: recompute masks on steps divisible by this, or a predicate
        ``step -> bool`` such as :func:`jaxprune.schedules.every`.
      mask_rule: replaces the top-k rule: ``(scores, sparsity) -> masks``, e.g.
        ``lambda s, _: jaxprune.masks.nm(s, 2, 4, axis=0)``.
      learning_rate: the learning rate (float or schedule) for criteria that need it
        (PINS). When omitted, it is read from ``inner``'s state, which works when ``inner``
        is built with ``optax.inject_hyperparams``.
      lr_step_offset: evaluate ``learning_rate`` at ``step + offset``; the PINS code
        uses the next step's rate (offset 1).
      hold_pruned: True (default): pruned entries are exactly 0 after every step. False
        reproduces the PLATON and PINS code, where masks are applied only on mask-update
        steps and pruned weights train, and may regrow, in between.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs ``params``.
    """
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    if not callable(schedule):
        from jaxprune import schedules

        schedule = schedules.constant(float(schedule))
    if isinstance(update_every, int):
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        every = update_every

        def due(step):
            return step % every == 0

    else:
        due = update_every
    if mask_rule is None:

        def mask_rule(scores, sparsity):
            return masks_lib.topk(scores, sparsity, scope=scope)

    inner = optax.with_extra_args_support(inner)

    def lr_at(step, inner_state):
        if not criterion.needs_lr:
            return None
        if learning_rate is not None:
            if callable(learning_rate):
                return jnp.asarray(learning_rate(step + lr_step_offset), jnp.float32)
            return jnp.asarray(learning_rate, jnp.float32)
        return jnp.asarray(_injected_learning_rate(inner_state), jnp.float32)

    def init_fn(params: optax.Params) -> MaskedOptimizerState:
        selection = paths.select(params, prunable)
        sub = _prunable_subtree(params, selection)
        inner_state = inner.init(params)
        if (
            criterion.needs_lr
            and learning_rate is None
            and _injected_learning_rate(inner_state) is None
        ):
            raise ValueError(
                "this criterion needs the learning rate: pass learning_rate= to "
                "masked_optimizer, or build the inner optimizer with optax.inject_hyperparams"
            )
        return MaskedOptimizerState(
            step=jnp.zeros((), jnp.int32),
            masks=jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bool_), sub),
            criterion=criterion.init(sub),
            inner=inner_state,
        )

    def update_fn(
        updates: optax.Updates,
        state: MaskedOptimizerState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, MaskedOptimizerState]:
        if params is None:
            raise ValueError(
                "masked_optimizer needs the parameters: call tx.update(grads, state, params)"
            )
        paths.check_same_structure(params, updates, what="gradients")
        selection = paths.select(params, prunable)
        inner_updates, inner_state = inner.update(updates, state.inner, params, **extra_args)
        lr = lr_at(state.step, inner_state)
        scored = params
        if criterion.after_step:
            scored = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, inner_updates)
        crit_state = criterion.update(
            state.criterion,
            _prunable_subtree(scored, selection),
            _prunable_subtree(updates, selection),
            lr=lr,
        )

        def recompute():
            scores = criterion.scores(crit_state, _prunable_subtree(scored, selection))
            return mask_rule(scores, schedule(state.step))

        is_due = due(state.step)
        new_masks = lax.cond(is_due, recompute, lambda: state.masks)

        def apply(m, u, p):
            if m is None:
                return u
            keep = m if hold_pruned else m | ~is_due
            return jnp.where(keep, u, (-p).astype(u.dtype))

        masked = jax.tree.map(
            apply,
            new_masks,
            inner_updates,
            params,
            is_leaf=_is_none,
        )
        return masked, MaskedOptimizerState(state.step + 1, new_masks, crit_state, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def masks_of(opt_state: optax.OptState) -> Any:
    """The current masks inside any optimizer state that contains a ``masked_optimizer``.

    Finds the state through ``optax.chain``, ``optax.MultiSteps``,
    ``optax.inject_hyperparams`` and any other nesting of NamedTuples and tuples.

    Returns:
      A bool pytree shaped like params (True = kept), ``None`` where not prunable.
    """
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, MaskedOptimizerState))
        if isinstance(s, MaskedOptimizerState)
    ]
    if not found:
        raise ValueError("no masked_optimizer state found in this optimizer state")
    if len(found) > 1:
        raise ValueError(f"found {len(found)} masked_optimizer states; pass the one you want")
    return found[0].masks
