"""The core on 8 simulated devices under Auto, Explicit and mixed mesh axes; a subprocess.

    python tests/explicit_worker.py AXES [--no-set-mesh]

AXES is ``auto``, ``explicit`` or ``mixed`` (Explicit ``data``, Auto ``model``);
``--no-set-mesh`` leaves ``jax.set_mesh`` out (Auto axes only: jit with Explicit axes needs
the mesh in context, and JAX says so). Every case
prints one line ``ok <case>`` or ``FAIL <case>: <error>``; the exit status is the number of
failures. Checked: ``masked_optimizer`` with magnitude, taylor, movement, PLATON and PINS,
global and local scope and an N:M rule; ``masks.topk``, ``grouped_topk`` and ``nm``
directly; the learned-score methods' masks; the state from ``init`` (masks, criterion) is
sharded like its parameter (eager ``init``; after ``jit``, the Explicit axes, which the
types carry: the Auto axes are the caller's ``out_shardings``, as for any optax state), and
the kept counts are exact.
"""

from __future__ import annotations

import os
import sys
import traceback

# XLA:CPU's concurrency-optimized scheduler can order the collectives inside a mask
# update's lax.cond differently on different simulated devices under load, and deadlock
# (seen with tests/engine_worker.py; the flag is set there too).
os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=8 "
    "--xla_cpu_enable_concurrency_optimized_scheduler=false"
)
os.environ["JAX_PLATFORMS"] = "cpu"

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxprune
from jaxprune import criteria, masks, methods, schedules

TYPES = {
    "auto": (AxisType.Auto, AxisType.Auto),
    "explicit": (AxisType.Explicit, AxisType.Explicit),
    "mixed": (AxisType.Explicit, AxisType.Auto),
}
SPECS = {
    "encoder/layer/0/attention/self/query/kernel": P(None, "model"),
    "encoder/layer/0/output/dense/kernel": P("model", "data"),
    "encoder/layer/0/output/dense/bias": P("data"),
    "classifier/kernel": P(),
}


def tree_of(values: dict) -> dict:
    out: dict = {}
    for path, v in values.items():
        node = out
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = v
    return out


def params_on(mesh) -> dict:
    rng = np.random.default_rng(0)
    shapes = {
        "encoder/layer/0/attention/self/query/kernel": (16, 32),
        "encoder/layer/0/output/dense/kernel": (32, 16),
        "encoder/layer/0/output/dense/bias": (16,),
        "classifier/kernel": (16, 2),
    }
    return tree_of(
        {
            k: jax.device_put(
                jnp.asarray(rng.normal(size=s), jnp.float32), NamedSharding(mesh, SPECS[k])
            )
            for k, s in shapes.items()
        }
    )


def spec_of(x) -> P:
    return x.sharding.spec


def same_layout(a, b) -> bool:
    """Same placement on the devices (specs written differently may place alike)."""
    return a.sharding.is_equivalent_to(b.sharding, a.ndim)


def explicit(mesh) -> bool:
    return AxisType.Explicit in mesh.axis_types


def typed_part(spec: P, mesh) -> P:
    """``spec`` with the Auto axes left out: what a type carries inside ``jit``."""
    kinds = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    return P(*(a if a is not None and kinds[a] == AxisType.Explicit else None for a in spec))


def check_typed_like_params(tree, params, mesh, what: str) -> None:
    """The Explicit axes of every leaf's sharding are its param's (after ``jit``)."""
    flat_p = dict(zip(jaxprune.paths.leaf_paths(params), jax.tree.leaves(params), strict=True))
    for path, leaf in zip(jaxprune.paths.leaf_paths(tree), jax.tree.leaves(tree), strict=True):
        key = next((k for k in flat_p if path.endswith(k)), None)
        if key is None or leaf.shape != flat_p[key].shape:
            continue
        want = typed_part(flat_p[key].sharding.spec, mesh)
        got = typed_part(leaf.sharding.spec, mesh)
        if tuple(got) + (None,) * (leaf.ndim - len(got)) != tuple(want) + (None,) * (
            leaf.ndim - len(want)
        ):
            raise AssertionError(f"{what} {path} has Explicit axes {got}, its param {want}")


def check_like_params(tree, params, what: str) -> None:
    """Every leaf of ``tree`` whose path ends with a param's path is laid out like it."""
    flat_p = dict(zip(jaxprune.paths.leaf_paths(params), jax.tree.leaves(params), strict=True))
    for path, leaf in zip(jaxprune.paths.leaf_paths(tree), jax.tree.leaves(tree), strict=True):
        key = next((k for k in flat_p if path.endswith(k)), None)
        if key is None:
            continue  # a scalar such as a step count
        if leaf.shape == flat_p[key].shape and not same_layout(leaf, flat_p[key]):
            raise AssertionError(
                f"{what} {path} is laid out as {spec_of(leaf)}, its param as {spec_of(flat_p[key])}"
            )


def optimizer_case(mesh, criterion, scope, rule) -> None:
    params = params_on(mesh)
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion=criterion,
        schedule=schedules.cubic(0.5, begin_step=2, end_step=4),
        prunable=r"encoder/.*(kernel|bias)$",
        scope=scope,
        update_every=1,
        learning_rate=1e-3,
        mask_rule=rule,
    )
    state = tx.init(params)  # eagerly: sharded like the params on any mesh
    check_like_params(state.masks, params, "mask")
    check_like_params(state.criterion, params, "criterion state")
    if explicit(mesh):  # under jit the types carry the Explicit axes' part
        jitted = jax.jit(tx.init)(params)
        check_typed_like_params(jitted.masks, params, mesh, "mask (jit)")
        check_typed_like_params(jitted.criterion, params, mesh, "criterion state (jit)")

    @jax.jit
    def step(p, s):
        grads = jax.tree.map(lambda x: jnp.sin(x) + 0.01, p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(5):
        params, state = step(params, state)
    if explicit(mesh):  # the Auto axes: out_shardings decide (as for optax's state)
        check_typed_like_params(state.masks, params, mesh, "mask after 5 steps")
        check_typed_like_params(params, params_on(mesh), mesh, "param after 5 steps")
    selected = [m for m in jax.tree.leaves(state.masks)]
    if rule is None and scope == "global":
        n = sum(m.size for m in selected)
        assert sum(int(m.sum()) for m in selected) == n // 2
    elif rule is None:
        assert all(int(m.sum()) == m.size // 2 for m in selected)
    flat_p = dict(zip(jaxprune.paths.leaf_paths(params), jax.tree.leaves(params), strict=True))
    for path, m in zip(
        jaxprune.paths.leaf_paths(state.masks), jax.tree.leaves(state.masks), strict=True
    ):
        assert not bool(jnp.any(~m & (flat_p[path] != 0))), path


def direct_case(mesh) -> None:
    params = params_on(mesh)
    scores = {"encoder": params["encoder"]}
    for scope in ("global", "local"):
        out = jax.jit(lambda s, scope=scope: masks.topk(s, 0.75, scope=scope))(scores)
        if explicit(mesh):
            check_typed_like_params(out, params, mesh, f"topk {scope}")
    leaves = jax.tree.leaves(scores)
    out = jax.jit(lambda ls: masks.grouped_topk(ls, [0, 1, 1], jnp.asarray([3, 7], jnp.int32)))(
        leaves
    )
    assert int(out[0].sum()) == 3 and sum(int(m.sum()) for m in out[1:]) == 7
    kernels = {"q": params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]}
    nm = jax.jit(lambda s: masks.nm(s, 2, 4, axis=0))(kernels)
    assert int(nm["q"].sum()) == kernels["q"].size // 2


def learned_case(mesh, name) -> None:
    params = params_on(mesh)
    method = methods.get(name)
    trainable = method.init(params)
    check_like_params(trainable["scores"], params, "scores")

    @jax.jit
    def final_masks(trainable):
        scores = jax.tree.map(  # distinct scores: the params' values
            lambda s, p: None if s is None else s + p,
            trainable["scores"],
            trainable["params"],
            is_leaf=lambda x: x is None,
        )
        return method.compute_masks(scores, 0.5, 0.5)

    out = final_masks(trainable)
    if explicit(mesh):
        check_typed_like_params(out, params, mesh, f"{name} masks")
    if name != "soft_movement":  # top-k at remaining ratio 0.5, per matrix or global
        selected = jax.tree.leaves(out)
        assert sum(int(m.sum()) for m in selected) == sum(m.size for m in selected) // 2


def main() -> int:
    axes = sys.argv[1]
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=TYPES[axes])
    use = contextlib.nullcontext() if "--no-set-mesh" in sys.argv else jax.set_mesh(mesh)
    cases = {
        f"{c}-{scope}": (
            lambda c=c, scope=scope: optimizer_case(
                mesh,
                criteria.by_name(c, **({"window": 2} if c in ("pins", "platon") else {})),
                scope,
                None,
            )
        )
        for c in ("magnitude", "taylor", "movement", "platon", "pins")
        for scope in ("global", "local")
    }
    cases["magnitude-nm"] = lambda: optimizer_case(
        mesh, criteria.magnitude(), "global", jaxprune.structured.nm_rule(2, 4)
    )
    cases["direct"] = lambda: direct_case(mesh)
    for name in ("movement", "smp_s", "smp_global", "soft_movement"):
        cases[name] = lambda name=name: learned_case(mesh, name)
    failures = 0
    with use:
        for name, case in cases.items():
            try:
                case()
                print(f"ok {name}", flush=True)
            except Exception as err:
                failures += 1
                last = " ".join(traceback.format_exception_only(err)).strip()
                print(f"FAIL {name}: {last[:400]}", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
