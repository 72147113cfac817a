"""Sparsity schedules: step -> fraction of prunable entries set to zero.

Every schedule is an ``optax.Schedule`` (a pure, jittable function of the step count) that
returns a float32 sparsity in [0, 1). Mask-update predicates (step -> bool) live here too,
since they are part of how a paper schedules its pruning.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax.numpy as jnp
import optax


def _check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def constant(sparsity: float) -> optax.Schedule:
    """The same sparsity at every step (one-shot pruning when used with ``update_every``)."""
    _check_sparsity("sparsity", sparsity)

    def schedule(step: chex.Numeric) -> chex.Numeric:
        return jnp.full(jnp.shape(step), sparsity, jnp.float32)

    return schedule


def cubic(
    final_sparsity: float,
    *,
    begin_step: float,
    end_step: float,
    initial_sparsity: float = 0.0,
    power: float = 3,
) -> optax.Schedule:
    """Zhu & Gupta's gradual schedule ("To prune, or not to prune", 2017).

    ``s(t) = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** power``
    for ``begin_step <= t <= end_step``; ``s_i`` before (warm-up), ``s_f`` after (final
    phase). Density decays polynomially, fast at first and slowly near the target. The
    PLATON / PINS / movement-pruning code writes the same curve on the remaining ratio with
    ``begin_step = initial_warmup * warmup_steps`` and
    ``end_step = total_steps - final_warmup * warmup_steps`` (see :func:`warmup_cubic`).

    Args:
      final_sparsity: ``s_f`` in [0, 1).
      begin_step: last step of the warm-up; the curve starts here.
      end_step: first step at ``s_f``; must be greater than ``begin_step``.
      initial_sparsity: ``s_i`` in [0, 1).
      power: exponent of the decay (3 in every paper here).

    Returns:
      A jittable ``step -> float32 sparsity``.
    """
    _check_sparsity("final_sparsity", final_sparsity)
    _check_sparsity("initial_sparsity", initial_sparsity)
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must be greater than begin_step ({begin_step})")
    if begin_step < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    span = end_step - begin_step

    def schedule(step: chex.Numeric) -> chex.Numeric:
        progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) / span, 0.0, 1.0)
        remaining = (1.0 - progress) ** power
        return (final_sparsity + (initial_sparsity - final_sparsity) * remaining).astype(
            jnp.float32
        )

    return schedule


def warmup_cubic(
    final_sparsity: float,
    *,
    total_steps: int,
    warmup_steps: int,
    initial_warmup: float = 1,
    final_warmup: float = 2,
) -> optax.Schedule:
    """The cubic schedule as PLATON, PINS and movement pruning parameterise it.

    Dense for ``t <= initial_warmup * warmup_steps``, at ``final_sparsity`` for
    ``t > total_steps - final_warmup * warmup_steps``, cubic in between (their
    ``schedule_threshold``), all steps counted from 0.
    """
    begin = initial_warmup * warmup_steps
    end = total_steps - final_warmup * warmup_steps
    if end <= begin:
        raise ValueError(
            f"total_steps={total_steps} leaves no cubic phase after "
            f"initial_warmup*warmup_steps={begin} and final_warmup*warmup_steps="
            f"{final_warmup * warmup_steps}"
        )
    return cubic(final_sparsity, begin_step=begin, end_step=end)


def every(n: int, *, final_from: int | None = None) -> Callable[[chex.Numeric], chex.Array]:
    """Mask-update predicate: True on steps divisible by ``n``, and every step after ``final_from``.

    ``every(10, final_from=end_step)`` is PLATON's and PINS's rule: masks are recomputed every
    ``deltaT`` steps in the cubic phase and at every step of the final phase.
    """
    if n < 1:
        raise ValueError(f"update interval must be >= 1, got {n}")

    def predicate(step: chex.Numeric) -> chex.Array:
        due = jnp.asarray(step) % n == 0
        if final_from is not None:
            due = due | (jnp.asarray(step) > final_from)
        return due

    return predicate


__all__ = [
    "constant",
    "cubic",
    "every",
    "warmup_cubic",
]
