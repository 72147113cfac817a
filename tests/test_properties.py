"""Properties of masked_optimizer over seeded random trees, criteria, scopes, wrappers, dtypes.

For every combination, at every step:

- the update is the inner optimizer's update where the mask keeps an entry, ``-param``
  where it prunes one, and the inner update unchanged on every leaf that is not selected;
- pruned entries are exactly 0 after ``optax.apply_updates``;
- the kept count is exactly ``round((1 - s) * n)`` of the scheduled ``s`` (over all
  selected entries, or per leaf for ``scope="local"``);
- no mask update prunes before the criterion has evidence: such a schedule is refused.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune
from jaxprune import criteria, schedules
from jaxprune.optim import NoEvidenceError

CRITERIA = {
    "magnitude": criteria.magnitude,
    "taylor": lambda: criteria.taylor(ema=0.5),
    "movement": criteria.movement,
    "platon": lambda: criteria.platon(window=2),
    "pins": lambda: criteria.pins(window=2),
}
WRAPPERS = ["plain", "chain", "inject", "multisteps"]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
STEPS = 8


def random_tree(rng: np.random.Generator, dtype) -> dict:
    """2-4 selected leaves (``.../w``) of random 1-D / 2-D shapes and one other (``bias``)."""
    tree = {"bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    for i in range(rng.integers(2, 5)):
        shape = tuple(int(d) for d in rng.integers(1, 9, size=rng.integers(1, 3)))
        tree[f"layer{i}"] = {"w": jnp.asarray(rng.normal(size=shape), dtype)}
    return tree


def inner_of(wrapper: str) -> optax.GradientTransformation:
    if wrapper == "chain":
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    if wrapper == "inject":
        return optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    return optax.adam(1e-2)


CASES = list(itertools.product(CRITERIA, WRAPPERS))
# The default run takes every criterion and every wrapper once (the diagonal); the other
# combinations run with -m slow.
DIAGONAL = {(c, WRAPPERS[i % len(WRAPPERS)]) for i, c in enumerate(CRITERIA)}


@pytest.mark.parametrize(
    ("name", "wrapper"),
    [
        pytest.param(c, w, id=f"{c}-{w}", marks=() if (c, w) in DIAGONAL else pytest.mark.slow)
        for c, w in CASES
    ],
)
def test_masked_updates_counts_and_zeros(name, wrapper):
    seed = CASES.index((name, wrapper))
    rng = np.random.default_rng(seed)
    dtype = DTYPES[seed % len(DTYPES)]
    scope = ("global", "local")[seed % 2]
    final = float(rng.choice([0.3, 0.5, 0.8]))
    params = random_tree(rng, dtype)
    schedule = schedules.cubic(final, begin_step=2, end_step=5)
    inner = inner_of(wrapper)
    masked = jaxprune.masked_optimizer(
        inner,
        criterion=CRITERIA[name](),
        schedule=schedule,
        prunable=r"/w$",
        scope=scope,
        update_every=1,
        learning_rate=None if wrapper == "inject" else 1e-2,
    )
    every_k = 2 if wrapper == "multisteps" else 1
    tx = optax.MultiSteps(masked, every_k_schedule=every_k) if every_k > 1 else masked
    state, ref_state = tx.init(params), inner.init(params)

    def loss(p, x):
        return sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32) * x)) for leaf in jax.tree.leaves(p))

    @jax.jit
    def step(params, state, ref_state, x):
        grads = jax.grad(loss)(params, x)
        updates, state = tx.update(grads, state, params)
        ref_updates, ref_state = inner.update(grads, ref_state, params)
        return updates, state, ref_updates, ref_state

    for t in range(STEPS * every_k):
        x = jnp.float32(1 + 0.1 * t)
        updates, state, ref_updates, ref_state = step(params, state, ref_state, x)
        if (t + 1) % every_k:  # MultiSteps accumulates: no update yet
            continue
        found = jaxprune.masked_state(state)
        mask_tree = found.masks
        # the inner optimizer on the same trajectory (under MultiSteps it saw each
        # micro-batch, the masked optimizer their mean: only counts and zeros are compared)
        if every_k == 1:
            for path, u, r, m, p in zip(
                jaxprune.paths.leaf_paths(params),
                jax.tree.leaves(updates),
                jax.tree.leaves(ref_updates),
                jax.tree.leaves(mask_tree, is_leaf=lambda x: x is None),
                jax.tree.leaves(params),
                strict=True,
            ):
                expected = r if m is None else jnp.where(m, r, (-p).astype(r.dtype))
                # the same computation fused differently rounds differently (~1 ulp);
                # pruned entries must be exactly -param
                tol = 4 * float(jnp.finfo(u.dtype).eps)
                np.testing.assert_allclose(
                    np.asarray(u, np.float32),
                    np.asarray(expected, np.float32),
                    rtol=tol,
                    atol=tol * 1e-2,
                    err_msg=path,
                )
                if m is not None:
                    np.testing.assert_array_equal(u[~m], (-p[~m]).astype(u.dtype), err_msg=path)
        params = optax.apply_updates(params, updates)
        sparsity = float(np.float32(schedule(int(found.step) - 1)))
        selected = [m for m in jax.tree.leaves(mask_tree)]
        if scope == "global":
            n = sum(m.size for m in selected)
            want = int(np.clip(np.round(np.float32(1.0 - np.float32(sparsity)) * n), 0, n))
            assert sum(int(m.sum()) for m in selected) == want, (t, sparsity)
        else:
            for m in selected:
                want = int(np.round(np.float32(1.0 - np.float32(sparsity)) * m.size))
                assert int(m.sum()) == want, (t, sparsity, m.shape)
        for leaf in params:
            if leaf != "bias":
                w, m = params[leaf]["w"], mask_tree[leaf]["w"]
                assert not bool(jnp.any(~m & (w != 0))), f"pruned entry of {leaf} is not 0"
        assert mask_tree["bias"] is None
    assert int(jaxprune.masked_state(state).step) == STEPS


@pytest.mark.parametrize("name", ["platon", "pins"])
def test_pruning_inside_the_window_is_refused_and_at_its_end_accepted(name):
    """window 2, a mask update every step: a cubic from step 0 prunes at step 1 (refused);
    one from step 1 first prunes at step 2, where the first window has been averaged."""

    def build(begin: int) -> optax.GradientTransformation:
        return jaxprune.masked_optimizer(
            optax.adam(1e-2),
            criterion=CRITERIA[name](),
            schedule=schedules.cubic(0.5, begin_step=begin, end_step=4),
            prunable=r"/w$",
            update_every=1,
            learning_rate=1e-2,
        )

    with pytest.raises(NoEvidenceError, match="mask update at step 1"):
        build(0)
    build(1)
