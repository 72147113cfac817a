"""The train state and the jitted train and eval steps.

A method supplies ``loss_fn(params, batch, rng, teacher, step) -> (loss, aux)`` where
``teacher`` is whatever frozen pytree the method needs (a dense teacher's params, the latest
student checkpoint, or None), ``step`` the int32 optimizer step (for schedules inside the
loss) and ``aux`` a dict of scalars to log. The step does the rest:
dropout RNG, gradient accumulation, the (masked) optimizer, and non-finite detection.

On a mesh with Explicit axes (``train.make_mesh``'s default) the loss and its gradients are
computed with every axis Auto, so losses and models written for Auto meshes run unchanged;
the gradients come out typed like their parameters and the optimizer runs in Explicit mode,
so its state is sharded like the parameters by construction. With ``update_sharding``
(:func:`state_shardings`, ``Sharding(shard_state=True)``) the optimizer sees gradients and
parameters resharded like its state, so each device updates its slice (ZeRO-1 style), and
the updates are gathered back to the parameters' layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from jaxprune.train import mesh as mesh_lib

LossFn = Callable[[Any, dict, jax.Array, Any, jax.Array], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree of arrays (checkpointed whole)."""

    step: chex.Array  # shape=(), int32: optimizer steps taken
    params: chex.ArrayTree
    opt_state: optax.OptState
    rng: chex.Array  # uint32[2] PRNG key for dropout, split every step


def init_state(params: Any, tx: optax.GradientTransformation, seed: int = 0) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
    )


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def state_shardings(
    layout: mesh_lib.Sharding, state: TrainState, params: Any, param_shardings: Any
) -> tuple[TrainState, Any]:
    """Shardings of ``state`` on ``layout``, and those its optimizer update runs in (the
    ``update_sharding`` of :func:`train_step_fn`: None unless ``layout.shard_state``).

    ``state.params`` is laid out like ``params`` (by path, see ``Sharding.like_params``);
    the optimizer state like :meth:`Sharding.for_state`; step and RNG replicated.
    """
    state_like = layout.for_state(param_shardings, params)
    shardings = TrainState(
        step=layout.replicated,
        params=layout.like_params(state.params, params, param_shardings),
        opt_state=layout.like_params(state.opt_state, params, state_like),
        rng=layout.replicated,
    )
    update = layout.like_params(state.params, params, state_like) if layout.shard_state else None
    return shardings, update


def _on_axes(entry: Any, axes: set[str]) -> Any:
    """A ``PartitionSpec`` entry restricted to mesh ``axes`` (None if none is left)."""
    names = [a for a in ((entry,) if isinstance(entry, str) else entry or ()) if a in axes]
    return None if not names else names[0] if len(names) == 1 else tuple(names)


def _constrained(tree: Any, shardings: Any, mesh: AbstractMesh) -> Any:
    """``tree`` laid out as ``shardings`` (a pytree of ``NamedSharding``): resharded on a
    mesh with Explicit axes, a sharding constraint on an Auto one."""

    def one(x: jax.Array, s: NamedSharding) -> jax.Array:
        if mesh.empty:
            return jax.lax.with_sharding_constraint(x, s)
        if mesh.explicit_axes:  # the spec on those axes only (the others are Auto)
            explicit = set(mesh.explicit_axes)
            spec = [_on_axes(entry, explicit) for entry in s.spec]
            return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(*spec)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, s.spec))

    return jax.tree.map(one, tree, shardings)


def train_step_fn(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    grad_accum: int = 1,
    on_nonfinite: Literal["stop", "skip"] = "stop",
    update_sharding: Any = None,
) -> Callable[[TrainState, dict, Any], tuple[TrainState, dict]]:
    """The (unjitted) train step ``(state, batch, teacher) -> (state, metrics)``.

    Args:
      loss_fn: the method's loss (see module docstring).
      tx: the optimizer, usually a ``masked_optimizer``.
      grad_accum: split the batch into this many micro-batches (leading axis) and average
        their gradients before one optimizer step.
      on_nonfinite: ``"stop"`` applies the update anyway and reports ``finite=False`` so the
        loop stops; ``"skip"`` keeps params and optimizer state unchanged for that step.
      update_sharding: ``NamedSharding`` per parameter (from :func:`state_shardings`): the
        optimizer update runs on gradients and parameters laid out so, its result is laid
        out like the parameters again. None: as the parameters are.

    Returns:
      A pure function; ``metrics`` holds ``loss``, ``grad_norm``, ``finite`` and ``aux``.
      Tracing it raises :class:`~jaxprune.train.MeshMismatchError` when the state, batch,
      teacher and ``jax.set_mesh`` context are not all on one mesh.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def grads_of(params, batch, rng, teacher, step):
        if grad_accum == 1:
            return grad_fn(params, batch, rng, teacher, step)

        def split(x):
            if x.shape[0] % grad_accum:
                raise ValueError(f"batch of {x.shape[0]} does not split into {grad_accum}")
            return x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:])

        micro = jax.tree.map(split, batch)
        rngs = jax.random.split(rng, grad_accum)

        def body(carry, inputs):
            (loss, aux), grads = grad_fn(params, inputs[0], inputs[1], teacher, step)
            total = jax.tree.map(jnp.add, carry, ((loss, aux), grads))
            return total, None

        zero = jax.eval_shape(
            grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs[0], teacher, step
        )
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
        total, _ = jax.lax.scan(body, zero, (micro, rngs))
        return jax.tree.map(lambda x: x / grad_accum, total)

    def step(state: TrainState, batch: dict, teacher: Any = None) -> tuple[TrainState, dict]:
        mesh = mesh_lib.typed_mesh(state=state, batch=batch, teacher=teacher)
        rng, dropout_rng = jax.random.split(state.rng)

        def out_sharding(mesh: AbstractMesh) -> tuple[NamedSharding, Any]:
            # (loss, aux) replicated, the gradients typed like their parameters
            typed = jax.tree.map(lambda p: mesh_lib.typed_sharding(mesh, p), state.params)
            return NamedSharding(mesh, PartitionSpec()), typed

        (loss, aux), grads = mesh_lib.auto_axes_call(
            grads_of, mesh, out_sharding, state.params, batch, dropout_rng, teacher, state.step
        )
        if update_sharding is None:
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
        else:
            updates, opt_state = tx.update(
                _constrained(grads, update_sharding, mesh),
                state.opt_state,
                _constrained(state.params, update_sharding, mesh),
            )
            if mesh.explicit_axes:  # back to the parameters' type (Auto: out_shardings)
                updates = jax.tree.map(
                    lambda u, p: jax.sharding.reshard(u, mesh_lib.typed_sharding(mesh, p)),
                    updates,
                    state.params,
                )
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        if on_nonfinite == "skip":
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite, **aux}
        return TrainState(state.step + 1, params, opt_state, rng), metrics

    return step


__all__ = [
    "LossFn",
    "TrainState",
    "init_state",
    "state_shardings",
    "train_step_fn",
]
