"""Importance criteria: pure functions that turn weights and gradients into scores.

A :class:`Criterion` is a NamedTuple of three pure functions, in the style of optax:

- ``init(params) -> state``
- ``update(state, params, grads, *, lr) -> state``, called once per optimizer step
- ``scores(state, params) -> pytree`` shaped like ``params``; higher means keep.

A criterion may also act at mask updates (``on_masks``: :func:`jaxprune.obert.obert` resets
its window and moves the kept weights there).

Every pytree here may contain ``None`` leaves (the parameters that are not pruned); they
are skipped. States are NamedTuples of arrays shaped (and sharded) like their parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp


class Criterion(NamedTuple):
    """An importance criterion.

    Attributes:
      init: ``params -> state``.
      update: ``(state, params, grads, *, lr) -> state``; ``lr`` is the learning rate of
        this step (a float32 scalar, or None when ``needs_lr`` is False).
      scores: ``(state, params) -> scores``, a pytree shaped like ``params``.
      needs_lr: True when ``update`` uses the learning rate (PINS).
      after_step: True when ``update`` wants the weights after the optimizer's step
        (PLATON scores the post-step weight), False for the weights the gradient was
        taken at.
      warmup: updates before the scores carry evidence: the scores after fewer updates are
        all equal (PINS and PLATON: 0 until their first window is averaged), so
        :func:`jaxprune.masked_optimizer` refuses to prune there.
      name: shown in error messages.
      on_masks: ``(state, params, old_masks, new_masks) -> (state, delta)``, for every
        mask update, after the new masks are chosen (oBERT restarts its Fisher window
        there); ``delta`` (shaped like ``params``, or None) is added to the kept weights'
        updates. Pure: its ``delta`` is computed on mask-update steps only, its ``state``
        traced every step and kept on mask-update steps (keep it cheap: flags and small
        arrays, as oBERT's lazy restart).
      moves_weights: True when ``on_masks`` returns a ``delta`` (oBERT's surgeon update).
    """

    init: Callable[[Any], Any]
    update: Callable[..., Any]
    scores: Callable[[Any, Any], Any]
    needs_lr: bool = False
    after_step: bool = False
    warmup: int = 0
    name: str = "custom"
    on_masks: Callable[[Any, Any, Any, Any], tuple[Any, Any]] | None = None
    moves_weights: bool = False


class MagnitudeState(NamedTuple):
    """Magnitude pruning keeps no state."""


def magnitude() -> Criterion:
    """Score ``|w|`` (Han et al., 2015; Zhu & Gupta, 2017). Pruned weights, held at zero,
    score lowest, so with ``masked_optimizer`` the mask only shrinks."""

    def update(state, params, grads, *, lr=None):
        del params, grads, lr
        return state

    return Criterion(
        init=lambda params: MagnitudeState(),
        update=update,
        scores=lambda state, params: jax.tree.map(jnp.abs, params),
        name="magnitude",
    )


class AccumulatedState(NamedTuple):
    """A running score per entry."""

    score: chex.ArrayTree  # shaped like params, float32


def _zeros(params: Any, dtype: Any = jnp.float32) -> Any:
    """Zeros (float32 unless told) shaped and sharded like every leaf."""
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)


def taylor(ema: float = 0.0) -> Criterion:
    """First-order Taylor importance ``|w * g|`` (Molchanov et al., 2017/2019).

    Args:
      ema: decay of an exponential moving average of the per-step score; 0 keeps only the
        latest step's ``|w * g|``.
    """
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {ema}")

    def update(state, params, grads, *, lr=None):
        del lr
        score = jax.tree.map(
            lambda s, p, g: ema * s + (1 - ema) * jnp.abs(p * g).astype(jnp.float32),
            state.score,
            params,
            grads,
        )
        return AccumulatedState(score)

    return Criterion(
        init=lambda params: AccumulatedState(_zeros(params)),
        update=update,
        scores=lambda state, params: state.score,
        name="taylor",
    )


def movement() -> Criterion:
    """Movement importance ``S = -sum_t w_t * g_t`` (Sanh et al., 2020, first-order form).

    Weights moving away from zero gain score. This is the accumulated score of the paper's
    derivation; the learned-score variant trained with a straight-through estimator is a
    method built on top.
    """

    def update(state, params, grads, *, lr=None):
        del lr
        score = jax.tree.map(
            lambda s, p, g: s - (p * g).astype(jnp.float32), state.score, params, grads
        )
        return AccumulatedState(score)

    return Criterion(
        init=lambda params: AccumulatedState(_zeros(params)),
        update=update,
        scores=lambda state, params: state.score,
        name="movement",
    )


class WindowedState(NamedTuple):
    """State of PLATON and PINS (the authors' ``ipt``, ``exp_avg_ipt``, ``exp_avg_unc``).

    The three statistics are stored in the criterion's ``state_dtype`` (float32: 12 bytes
    per prunable weight; bfloat16: 6) and computed in float32."""

    count: chex.Array  # shape=(), int32: updates so far (the code's global_step)
    window: chex.ArrayTree  # mean instantaneous score over the current window
    importance: chex.ArrayTree  # EMA of window means (I-bar)
    uncertainty: chex.ArrayTree  # EMA of |window mean - I-bar| (U-bar); zeros if unused


STATE_DTYPES = ("float32", "bfloat16")


def _state_dtype(state_dtype: Any) -> jnp.dtype:
    """The storage dtype of running statistics: float32 or bfloat16 (a name or a dtype)."""
    try:
        dtype = jnp.dtype(state_dtype)
    except TypeError as err:
        raise TypeError(f"state_dtype must be one of {STATE_DTYPES}, got {state_dtype!r}") from err
    if dtype.name not in STATE_DTYPES:
        # float16's range (6e-8 to 65504) loses the small scores; integers hold no statistic
        raise ValueError(f"state_dtype must be one of {STATE_DTYPES}, got {dtype.name}")
    return dtype


def _windowed(
    instant: Callable[[Any, Any, Any], Any],
    beta1: float,
    beta2: float,
    window: int,
    *,
    needs_lr: bool,
    after_step: bool,
    name: str,
    state_dtype: Any,
) -> Criterion:
    """Window averaging + EMA + uncertainty, shared by PLATON and PINS.

    At step t (from 0), with ``local = t % window``: when ``local == 0`` the previous
    window's mean is folded in, ``I <- b1*I + (1-b1)*ipt`` then (for 0 < b2 < 1)
    ``U <- b2*U + (1-b2)*|ipt - I|`` with the updated I, and the window restarts at the
    current score; otherwise ``ipt <- (ipt*local + s)/(local + 1)``. The final score is
    ``I*U`` for 0 < b2 < 1, ``I`` for b2 == 1 and ``I*|ipt - I|`` for b2 == 0.

    The first fold (step 0) folds the empty window, so every score is 0 until the fold at
    step ``window``: the criterion's ``warmup``.

    Every update reads the statistics as float32 and rounds the results to ``state_dtype``
    (to nearest) once; the scores are float32 products of the stored values.
    """
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
    if not 0.0 <= beta2 <= 1.0:
        raise ValueError(f"beta2 must be in [0, 1], got {beta2}")
    if not isinstance(window, int) or isinstance(window, bool):
        raise TypeError(f"window must be an int, got {window!r}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    use_unc = 0.0 < beta2 < 1.0
    dtype = _state_dtype(state_dtype)

    def init(params):
        # three separate buffers: aliased leaves could not be donated to a jitted step
        return WindowedState(
            jnp.zeros((), jnp.int32),
            _zeros(params, dtype),
            _zeros(params, dtype),
            _zeros(params, dtype),
        )

    def update(state, params, grads, *, lr=None):
        local = state.count % window
        fold = local == 0
        score = jax.tree.map(lambda p, g: instant(p, g, lr).astype(jnp.float32), params, grads)

        def leaf(ipt, imp, unc, s):
            ipt, imp, unc = (x.astype(jnp.float32) for x in (ipt, imp, unc))
            new_imp = jnp.where(fold, beta1 * imp + (1 - beta1) * ipt, imp)
            if use_unc:
                unc = jnp.where(fold, beta2 * unc + (1 - beta2) * jnp.abs(ipt - new_imp), unc)
            new_ipt = jnp.where(fold, s, (ipt * local + s) / (local + 1))
            return tuple(x.astype(dtype) for x in (new_ipt, new_imp, unc))

        out = jax.tree.map(leaf, state.window, state.importance, state.uncertainty, score)
        triple = jax.tree.structure((0, 0, 0))  # each leaf of out: (ipt, imp, unc)
        ipt, imp, unc = jax.tree.transpose(jax.tree.structure(state.window), triple, out)
        return WindowedState(state.count + 1, ipt, imp, unc)

    def scores(state, params):
        del params
        imp = jax.tree.map(lambda x: x.astype(jnp.float32), state.importance)
        if use_unc:
            return jax.tree.map(lambda i, u: i * u.astype(jnp.float32), imp, state.uncertainty)
        if beta2 == 1.0:
            return imp
        return jax.tree.map(lambda i, w: i * jnp.abs(w.astype(jnp.float32) - i), imp, state.window)

    return Criterion(
        init, update, scores, needs_lr=needs_lr, after_step=after_step, warmup=window, name=name
    )


def platon(
    beta1: float = 0.85,
    beta2: float = 0.95,
    window: int = 10,
    *,
    state_dtype: Any = "float32",
) -> Criterion:
    """PLATON (Zhang et al., ICML 2022): sensitivity ``|w * g|`` with upper confidence bound.

    The sensitivity uses the weight *after* the optimizer step, as the authors' code does
    (``after_step=True``). Defaults are PLATON's GLUE scripts (beta2 varies per task).
    ``state_dtype="bfloat16"`` stores the three running statistics in half the memory (6
    bytes per prunable weight instead of 12), computing in float32; float32 (default) is
    the authors' arithmetic. ``benchmarks/README.md`` measures what bfloat16 changes.
    """
    return _windowed(
        lambda p, g, lr: jnp.abs(p * g),
        beta1,
        beta2,
        window,
        needs_lr=False,
        after_step=True,
        name="platon",
        state_dtype=state_dtype,
    )


def pins(
    beta1: float = 0.85,
    beta2: float = 0.99,
    window: int = 10,
    *,
    signed: bool = False,
    state_dtype: Any = "float32",
) -> Criterion:
    """PINS (Ren & Zhu, 2023): the principled importance ``-w*g + lr*g^2``.

    It is the exact solution of the one-step 0-1 program (keep the k entries with the largest
    ``S = -w*g + lr*g**2``). The authors' code ranks ``|S|`` (default); ``signed=True`` ranks
    ``S`` as the derivation implies. Window averaging, EMA and uncertainty as PLATON's, on the
    weight *before* the step. ``lr`` is the learning rate passed by ``masked_optimizer``.
    Defaults follow the published RTE script (beta1 0.85, beta2 0.99, deltaT 10).

    For the authors' exact training loop, pair it with ``masked_optimizer(...,
    update_every=schedules.every(10, final_from=end), lr_step_offset=1, hold_pruned=False)``
    behind ``optax.clip_by_global_norm(1.0)``. One difference stays: the code zeroes scores
    strictly below the ``int(N*(1-r))``-th smallest, keeping about ``ceil(N*r) + 1`` entries
    and every tie; jaxprune keeps exactly ``round(N*r)``. ``state_dtype`` as for
    :func:`platon` (float32 by default).
    """

    def instant(p, g, lr):
        score = -p * g + lr * g * g
        return score if signed else jnp.abs(score)

    return _windowed(
        instant,
        beta1,
        beta2,
        window,
        needs_lr=True,
        after_step=False,
        name="pins",
        state_dtype=state_dtype,
    )


def by_name(name: str, **kwargs: Any) -> Criterion:
    """Builds a criterion from its name (for configs): magnitude, taylor, movement, platon,
    pins, obert."""
    from jaxprune.obert import obert

    table: dict[str, Callable[..., Criterion]] = {
        "obert": obert,
        "magnitude": magnitude,
        "taylor": taylor,
        "movement": movement,
        "platon": platon,
        "pins": pins,
    }
    if name not in table:
        raise ValueError(f"unknown criterion {name!r}; choose from {sorted(table)}")
    return table[name](**kwargs)


__all__ = [
    "STATE_DTYPES",
    "AccumulatedState",
    "Criterion",
    "MagnitudeState",
    "WindowedState",
    "by_name",
    "magnitude",
    "movement",
    "pins",
    "platon",
    "taylor",
]
