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

from jaxprune import criteria, failure, paths
from jaxprune import masks as masks_lib
from jaxprune.criteria import Criterion

MaskRule = Callable[[Any, chex.Array], Any]


class NoEvidenceError(ValueError):
    """A mask update would prune before the criterion's scores carry evidence (they are all
    equal there, so the mask would keep entries by position)."""


class MaskedOptimizerState(NamedTuple):
    """State of :func:`masked_optimizer`."""

    step: chex.Array  # shape=(), int32: optimizer steps taken (skipped steps not counted)
    masks: chex.ArrayTree  # bool, shaped like params (True = kept); None where not prunable
    criterion: Any  # the criterion's state, over the prunable leaves
    inner: optax.OptState  # the inner optimizer's state, untouched
    nonfinite: chex.Array  # shape=(), int32: steps skipped for non-finite gradients
    failure: failure.Failure  # the first refused mask update (jaxprune.failure); frozen after


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


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _as_criterion(criterion: Criterion | str) -> Criterion:
    if isinstance(criterion, str):
        return criteria.by_name(criterion)
    if not isinstance(criterion, Criterion):
        raise TypeError(
            "criterion must be a jaxprune.Criterion (e.g. jaxprune.criteria.pins()) or its "
            f"name, got {type(criterion).__name__}"
        )
    return criterion


def _due_predicate(update_every: Any) -> Callable[[chex.Array], Any]:
    if isinstance(update_every, int) and not isinstance(update_every, bool):
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        every = update_every
        return lambda step: step % every == 0
    if callable(update_every):
        return update_every
    raise TypeError(
        "update_every must be an int >= 1 or a predicate step -> bool (e.g. "
        f"jaxprune.schedules.every(10)), got {type(update_every).__name__} {update_every!r}"
    )


def _refuse_pruning_without_evidence(
    criterion: Criterion,
    schedule: optax.Schedule,
    due: Callable[[chex.Array], Any],
    total_steps: int | None,
) -> None:
    """NoEvidenceError when the top-k rule would prune at a step (of the run) before the
    criterion's scores carry evidence (steps < ``criterion.warmup``: PINS and PLATON score 0
    until their first window is averaged), which would rank all-equal scores, i.e. keep
    entries by position."""
    last = criterion.warmup if total_steps is None else min(criterion.warmup, total_steps)
    for t in range(last):
        step = jnp.asarray(t, jnp.int32)
        sparsity = float(schedule(step))
        if bool(due(step)) and sparsity > 0:
            raise NoEvidenceError(
                f"criterion {criterion.name!r} scores every entry 0 before step "
                f"{criterion.warmup} (its first window of {criterion.warmup} updates), but a "
                f"mask update at step {t} asks for sparsity {sparsity:.4g}: ranking all-zero "
                f"scores would keep entries by position. Begin pruning at step >= "
                f"{criterion.warmup} (e.g. schedules.cubic(..., begin_step={criterion.warmup}))"
                " or use a shorter window."
            )


def _checked_masks(new: Any, old: Any) -> Any:
    """The masks of a mask rule, checked against the state's (structure, dtype, shape) and
    given their sharding type (Explicit mesh axes), so both ``lax.cond`` branches agree."""
    new_flat, new_def = jax.tree_util.tree_flatten_with_path(new, is_leaf=_is_none)
    old_flat, old_def = jax.tree_util.tree_flatten_with_path(old, is_leaf=_is_none)
    if not paths.same_treedef(new_def, old_def):
        paths.check_same_structure(old, new, what="the mask rule's masks", ref_name="the masks")
    out: list[Any] = []
    for (path, m), (_, o) in zip(new_flat, old_flat, strict=True):
        if (m is None) != (o is None):
            raise ValueError(
                f"the mask rule returned {'None' if m is None else 'an array'} at "
                f"{paths.path_str(path)}, where the prunable selection has "
                f"{'no leaf' if o is None else 'a leaf'}"
            )
        if m is None:
            out.append(None)
            continue
        m = jnp.asarray(m)
        if m.dtype != jnp.bool_ or m.shape != o.shape:
            raise TypeError(
                f"the mask rule returned {m.dtype}{list(m.shape)} at {paths.path_str(path)}; "
                f"masks must be bool (True = kept) shaped like the parameter, {list(o.shape)}"
            )
        out.append(masks_lib.placed_like(m, o))
    return jax.tree_util.tree_unflatten(old_def, out)


def _no_move(criterion: Criterion, sub: Any) -> Any:
    """Zeros shaped (and placed) like the prunable params for a criterion that moves weights
    at mask updates, None otherwise."""
    if not criterion.moves_weights:
        return None
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), sub)


def _like(move: Any, zeros: Any) -> Any:
    """A criterion's weight move, checked against the prunable params' structure and shapes
    and given their sharding type, so both ``lax.cond`` branches agree."""
    if zeros is None:
        if move is not None:
            raise ValueError("the criterion moved weights but declares moves_weights=False")
        return None
    paths.check_same_structure(zeros, move, what="the criterion's weight move")

    def one(d, z):
        return None if z is None else masks_lib.placed_like(jnp.asarray(d, jnp.float32), z)

    return jax.tree.map(one, move, zeros, is_leaf=_is_none)


def masked_optimizer(
    inner: optax.GradientTransformation,
    *,
    criterion: Criterion | str,
    schedule: optax.Schedule | float,
    prunable: paths.Prunable,
    scope: Literal["global", "local"] = "global",
    update_every: int | Callable[[chex.Array], chex.Array] = 10,
    mask_rule: MaskRule | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    lr_step_offset: int = 0,
    hold_pruned: bool = True,
    skip_nonfinite: bool = False,
    total_steps: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``inner`` so that the selected parameters are pruned on a schedule.

    Misuse is refused, never ranked silently. Raised when the optimizer is built, its state
    initialised or its update traced: a mask update (top-k rule) due before the criterion's
    scores carry evidence (``criterion.warmup``: PINS and PLATON score 0 for their first
    window; :class:`NoEvidenceError`), integer leaves selected as prunable, a mask rule
    returning anything but bool masks shaped like the parameters. Found only when a step
    runs (traced values): a schedule value outside [0, 1), NaN or infinite scores, a mask
    rule pruning before the warmup, scores all equal across a ranking (the mask would keep
    entries by position).
    Such a mask update is refused (the step trains with the masks it had) and the optimizer
    frozen from the next step on (zero updates, state unchanged: nothing is lost);
    :func:`jaxprune.check` raises it, and :func:`masks_of` and :func:`masked_state` check
    first (see :mod:`jaxprune.failure`).

    Args:
      inner: any optax transformation (``optax.adamw(...)``, a chain, an
        ``inject_hyperparams`` optimizer, ...).
      criterion: importance scores, from :mod:`jaxprune.criteria` (or its name).
      schedule: step -> sparsity in [0, 1) (from :mod:`jaxprune.schedules`), or a constant.
      prunable: regex on ``/``-joined leaf paths, or predicate ``(path, leaf) -> bool``
        (presets in :mod:`jaxprune.paths`); only floating-point leaves may be selected.
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
        uses the next step's rate (offset 1). Needs ``learning_rate=``: the rate injected
        into ``inner``'s state is the current step's only.
      hold_pruned: True (default): pruned entries are exactly 0 after every step. False
        reproduces the PLATON and PINS code, where masks are applied only on mask-update
        steps and pruned weights train, and may regrow, in between.
      skip_nonfinite: False (default): gradients are passed on as they are, as plain optax
        does; if a NaN or an infinity reaches the scores, the next mask update is refused
        (:func:`jaxprune.check` names the leaf), so no mask is ranked from them. True: a
        step whose gradients hold a NaN or an infinity changes nothing (zero updates;
        inner, criterion and masks as they were; the step count does not advance) and is
        counted in the state's ``nonfinite`` field (:func:`masked_state`); it costs a
        reduction over every gradient per step (about 2-4% of a MiniLM step on CPU).
      total_steps: the run's length, when known: the check that no mask update prunes
        before the criterion's warmup then looks at the run's steps only.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` needs ``params``.
    """
    criterion = _as_criterion(criterion)
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    if not callable(schedule):
        from jaxprune import schedules

        schedule = schedules.constant(float(schedule))
    due = _due_predicate(update_every)
    if not isinstance(lr_step_offset, int) or isinstance(lr_step_offset, bool):
        raise TypeError(f"lr_step_offset must be an int, got {lr_step_offset!r}")
    if criterion.needs_lr and lr_step_offset and learning_rate is None:
        raise ValueError(
            f"lr_step_offset={lr_step_offset} needs learning_rate= (the schedule): the rate "
            "injected into the inner optimizer's state is the current step's only"
        )
    if mask_rule is None:
        _refuse_pruning_without_evidence(criterion, schedule, due, total_steps)

        def mask_rule(scores, sparsity):
            return masks_lib.topk_unchecked(scores, sparsity, scope)

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
        paths.check_floating(params, selection)
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
            masks=jax.tree.map(lambda p: jnp.ones_like(p, dtype=jnp.bool_), sub),
            criterion=criterion.init(sub),
            inner=inner_state,
            nonfinite=jnp.zeros((), jnp.int32),
            failure=failure.none(),
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
        is_due = jnp.asarray(due(state.step))
        if is_due.shape or not jnp.issubdtype(is_due.dtype, jnp.bool_):
            raise TypeError(
                f"update_every's predicate must return a bool scalar, got {is_due.dtype}"
                f"{list(is_due.shape)}"
            )

        def live() -> tuple[optax.Updates, MaskedOptimizerState]:
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

            scored_sub = _prunable_subtree(scored, selection)
            no_move = _no_move(criterion, scored_sub)

            def recompute():
                sparsity = jnp.asarray(schedule(state.step), jnp.float32)
                scores = criterion.scores(crit_state, scored_sub)
                new = _checked_masks(mask_rule(scores, sparsity), state.masks)
                found = failure.of_mask_update(
                    sparsity, scores, new, state.step, criterion.warmup, scope
                )
                # a refused update keeps the masks it had
                kept = jax.tree.map(
                    lambda n, o: jnp.where(found.code == failure.NONE, n, o), new, state.masks
                )
                if criterion.on_masks is None:
                    return kept, found, no_move
                _, move = criterion.on_masks(crit_state, scored_sub, state.masks, kept)
                return kept, found, _like(move, no_move)

            # Only the masks and the weight move leave the conditional: a state returned
            # unchanged by its other branch would be copied there every step.
            new_masks, found, move = lax.cond(
                is_due, recompute, lambda: (state.masks, failure.none(), no_move)
            )
            if criterion.on_masks is not None:  # its move, computed above, is dropped here
                after, _ = criterion.on_masks(crit_state, scored_sub, state.masks, new_masks)
                crit_state = jax.tree.map(lambda a, c: jnp.where(is_due, a, c), after, crit_state)

            def apply(m, u, p, d):
                if m is None:
                    return u
                keep = m if hold_pruned else m | ~is_due
                kept_update = u if d is None else u + d.astype(u.dtype)
                return jnp.where(keep, kept_update, (-p).astype(u.dtype))

            moves = jax.tree.map(lambda _: None, new_masks) if move is None else move
            masked = jax.tree.map(apply, new_masks, inner_updates, params, moves, is_leaf=_is_none)
            return masked, MaskedOptimizerState(
                state.step + 1,
                new_masks,
                crit_state,
                inner_state,
                state.nonfinite,
                failure.first(state.failure, found),
            )

        # The inner optimizer may change dtypes (bf16 -> f32): the frozen branch needs live's
        # output types. Jitted, live is traced once, for both (its trace costs time per leaf).
        live_once = jax.jit(live)
        out = jax.eval_shape(live_once)

        def frozen() -> tuple[optax.Updates, MaskedOptimizerState]:
            zeros = jax.tree.map(lambda u, o: jnp.zeros_like(u, dtype=o.dtype), updates, out[0])
            return zeros, jax.tree.map(lambda x, o: x.astype(o.dtype), state, out[1])

        # Frozen after a refused mask update. Neither predicate reads a gradient: one waiting
        # on a reduction over every gradient cost an H200 about 2 ms per BERT-base step
        # (GPUs read a conditional's predicate on the host).
        new_updates, new_state = lax.cond(state.failure.code == failure.NONE, live_once, frozen)
        if not skip_nonfinite:
            return new_updates, new_state
        finite = _all_finite(updates)
        kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_state, state)
        skipped = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        return skipped, kept._replace(nonfinite=state.nonfinite + (~finite).astype(jnp.int32))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _masked_states(opt_state: optax.OptState) -> list[MaskedOptimizerState]:
    return [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, MaskedOptimizerState))
        if isinstance(s, MaskedOptimizerState)
    ]


def check(opt_state: optax.OptState) -> None:
    """Raises :class:`jaxprune.failure.PruningError` if any ``masked_optimizer`` in
    ``opt_state`` refused a mask update (and froze training there); a no-op otherwise, also
    for states that hold no ``masked_optimizer``. Reads one scalar per state from the
    device."""
    for state in _masked_states(opt_state):
        if int(state.failure.code) != failure.NONE:
            raise failure.PruningError(
                failure.message(jax.device_get(state.failure), paths.leaf_paths(state.masks))
            )


def masked_state(
    opt_state: optax.OptState, index: int | None = None, *, checked: bool = True
) -> MaskedOptimizerState:
    """The :class:`MaskedOptimizerState` inside any optimizer state.

    Finds it through ``optax.chain``, ``optax.MultiSteps``, ``optax.inject_hyperparams``,
    ``optax.masked`` / ``optax.multi_transform``, ``nnx.Optimizer``'s state and any other
    nesting of NamedTuples, tuples and dicts.

    Args:
      opt_state: an optimizer state.
      index: which one, in ``jax.tree.leaves`` order, when the state holds several.
      checked: raise if it refused a mask update (:func:`check`); False to inspect it.

    Raises:
      ValueError: none found, several found and no ``index``, or ``index`` out of range.
      jaxprune.failure.PruningError: it refused a mask update (``checked``).
    """
    found = _masked_states(opt_state)
    if not found:
        raise ValueError("no masked_optimizer state found in this optimizer state")
    if index is None:
        if len(found) > 1:
            raise ValueError(
                f"found {len(found)} masked_optimizer states; choose one with index= "
                f"(0..{len(found) - 1}, in jax.tree.leaves order)"
            )
        index = 0
    if not -len(found) <= index < len(found):
        raise ValueError(f"index={index} but the state holds {len(found)} masked_optimizer states")
    if checked:
        check(found[index])
    return found[index]


def masks_of(opt_state: optax.OptState, index: int | None = None) -> Any:
    """The current masks inside any optimizer state that contains a ``masked_optimizer``
    (found and checked as by :func:`masked_state`; ``index`` chooses among several).

    Returns:
      A bool pytree shaped like params (True = kept), ``None`` where not prunable.
    """
    return masked_state(opt_state, index).masks


__all__ = [
    "MaskRule",
    "MaskedOptimizerState",
    "NoEvidenceError",
    "check",
    "masked_optimizer",
    "masked_state",
    "masks_of",
]
