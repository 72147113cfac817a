import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune
from jaxprune import criteria, schedules

STEPS = 200
FINAL = 0.9


def regression_problem(seed=0):
    """A 2-layer MLP on data from a sparse linear teacher; params as a nested dict."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    teacher = rng.normal(size=(16, 1)) * (rng.random((16, 1)) < 0.3)
    y = (x @ teacher).astype(np.float32)
    params = {
        "hidden": {
            "kernel": jnp.asarray(rng.normal(size=(16, 64)) / 4, jnp.float32),
            "bias": jnp.zeros(64),
        },
        "out": {
            "kernel": jnp.asarray(rng.normal(size=(64, 1)) / 8, jnp.float32),
            "bias": jnp.zeros(1),
        },
    }

    def loss(p):
        h = jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - y) ** 2)

    return params, loss, float(np.var(y))


def pruned_optimizer(criterion, inner=None, **kwargs):
    kwargs.setdefault("learning_rate", 1e-2)
    kwargs.setdefault("update_every", schedules.every(10, final_from=150))
    return jaxprune.masked_optimizer(
        inner if inner is not None else optax.adamw(1e-2),
        criterion=criterion,
        schedule=schedules.cubic(FINAL, begin_step=20, end_step=150),
        prunable=r"kernel$",
        **kwargs,
    )


def assert_pruned_are_zero(params, masks):
    for m, p in [
        (masks["hidden"]["kernel"], params["hidden"]["kernel"]),
        (masks["out"]["kernel"], params["out"]["kernel"]),
    ]:
        assert not bool(jnp.any(~m & (p != 0))), "a pruned weight is not exactly zero"


def run(tx, params, loss, steps=STEPS, jit=True):
    state = tx.init(params)

    def step(p, s):
        grads = jax.grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    step = jax.jit(step) if jit else step
    for _ in range(steps):
        params, state = step(params, state)
        assert_pruned_are_zero(params, jaxprune.masks_of(state))
    return params, state, float(loss(params))


N_PRUNABLE = 16 * 64 + 64


@pytest.mark.parametrize(
    "criterion",
    [
        criteria.magnitude(),
        criteria.taylor(),
        criteria.movement(),
        criteria.platon(),
        criteria.pins(),
    ],
    ids=["magnitude", "taylor", "movement", "platon", "pins"],
)
def test_adamw_run_reaches_scheduled_sparsity_exactly_and_fits(criterion):
    params, loss, variance = regression_problem()
    params, state, final_loss = run(pruned_optimizer(criterion), params, loss)
    masks = jaxprune.masks_of(state)
    kept = int(masks["hidden"]["kernel"].sum() + masks["out"]["kernel"].sum())
    assert kept == round((1 - np.float32(FINAL)) * N_PRUNABLE)
    assert masks["hidden"]["bias"] is None
    assert int(state.step) == STEPS
    # still fits: explained variance far above the mean predictor's
    assert final_loss < 0.1 * variance, (final_loss, variance)
    report = jaxprune.sparsity_report(params, masks)
    assert report.sparsity == pytest.approx(1 - kept / N_PRUNABLE)


def test_eager_and_jit_agree():
    params, loss, _ = regression_problem()
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-2),
        criterion=criteria.pins(window=2),
        schedule=schedules.cubic(0.5, begin_step=2, end_step=4),
        prunable="kernel",
        update_every=2,
        learning_rate=1e-2,
    )
    a, _, _ = run(tx, params, loss, steps=6, jit=True)
    b, _, _ = run(tx, params, loss, steps=6, jit=False)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6), a, b)


def test_multisteps_accumulation():
    params, loss, variance = regression_problem()
    tx = optax.MultiSteps(pruned_optimizer(criteria.magnitude()), every_k_schedule=2)
    params, state, final_loss = run(tx, params, loss, steps=2 * STEPS)
    masks = jaxprune.masks_of(state)
    kept = int(masks["hidden"]["kernel"].sum() + masks["out"]["kernel"].sum())
    assert kept == round((1 - np.float32(FINAL)) * N_PRUNABLE)
    assert final_loss < 0.1 * variance


def test_chain_with_clipping_and_inner_chain():
    params, loss, variance = regression_problem()
    inner = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(1e-4), optax.scale(-1e-2))
    tx = optax.chain(optax.clip_by_global_norm(1.0), pruned_optimizer(criteria.taylor(), inner))
    _, _, final_loss = run(tx, params, loss)
    assert final_loss < 0.1 * variance


def test_inject_hyperparams_learning_rate_is_read_from_inner_state():
    params, loss, _ = regression_problem()
    lr = optax.linear_schedule(1e-2, 1e-3, STEPS)
    explicit = pruned_optimizer(criteria.pins(), optax.adamw(lr), learning_rate=lr)
    injected = pruned_optimizer(
        criteria.pins(),
        optax.inject_hyperparams(optax.adamw)(learning_rate=lr),
        learning_rate=None,
    )
    a, state_a, _ = run(explicit, params, loss, steps=60)
    b, state_b, _ = run(injected, params, loss, steps=60)
    for x, y in zip(
        jax.tree.leaves(jaxprune.masks_of(state_a)),
        jax.tree.leaves(jaxprune.masks_of(state_b)),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    # the two AdamW paths round differently (schedule inside vs injected), nothing more
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-2, atol=1e-3), a, b)


def spy_criterion():
    """Its state is the learning rate it was last given."""
    return criteria.Criterion(
        lambda p: jnp.float32(jnp.nan), lambda s, p, g, *, lr: lr, lambda s, p: p, needs_lr=True
    )


def test_learning_rate_seen_by_the_criterion():
    params, loss, _ = regression_problem()
    grads = jax.grad(loss)(params)
    lr = optax.linear_schedule(1.0, 0.0, 4)  # 1.0, 0.75, 0.5, 0.25, 0, ...
    cases = [
        (dict(learning_rate=lr), [1.0, 0.75, 0.5]),
        (dict(learning_rate=lr, lr_step_offset=1), [0.75, 0.5, 0.25]),  # the PINS code's
        (dict(learning_rate=0.3), [0.3, 0.3, 0.3]),
        (
            dict(inner=optax.inject_hyperparams(optax.sgd)(learning_rate=lr), learning_rate=None),
            [1.0, 0.75, 0.5],
        ),
    ]
    for kwargs, expected in cases:
        tx = pruned_optimizer(spy_criterion(), **kwargs)
        state, seen = tx.init(params), []
        update = jax.jit(tx.update)
        for _ in range(3):
            _, state = update(grads, state, params)
            seen.append(float(state.criterion))
        assert seen == pytest.approx(expected), kwargs


def test_local_scope_and_nm_rule():
    params, loss, _ = regression_problem()
    tx = pruned_optimizer(criteria.magnitude(), scope="local")
    _, state, _ = run(tx, params, loss, steps=160)
    masks = jaxprune.masks_of(state)
    assert int(masks["hidden"]["kernel"].sum()) == round(0.1 * 1024)
    assert int(masks["out"]["kernel"].sum()) == round(0.1 * 64)

    tx = jaxprune.masked_optimizer(
        optax.adam(1e-2),
        criterion=criteria.magnitude(),
        schedule=0.5,
        prunable=r"kernel$",
        mask_rule=lambda s, _: jaxprune.masks.nm(s, 2, 4, axis=0),
    )
    _, state, _ = run(tx, params, loss, steps=3)
    m = jaxprune.masks_of(state)["hidden"]["kernel"]
    np.testing.assert_array_equal(m.reshape(4, 4, 64).sum(axis=1), 2)


def test_masks_of_finds_state_and_complains():
    params, _, _ = regression_problem()
    tx = optax.chain(optax.clip(1.0), pruned_optimizer(criteria.magnitude()))
    masks = jaxprune.masks_of(tx.init(params))
    assert masks["out"]["kernel"].dtype == jnp.bool_
    with pytest.raises(ValueError, match="no masked_optimizer"):
        jaxprune.masks_of(optax.adam(1e-3).init(params))


def test_bad_inputs_raise_clear_errors():
    params, loss, _ = regression_problem()
    with pytest.raises(ValueError, match=r"selects no leaf.*hidden/kernel"):
        jaxprune.masked_optimizer(
            optax.sgd(0.1), criterion=criteria.magnitude(), schedule=0.5, prunable="nothing"
        ).init(params)
    with pytest.raises(TypeError, match="prunable"):
        jaxprune.masked_optimizer(
            optax.sgd(0.1), criterion=criteria.magnitude(), schedule=0.5, prunable=3
        ).init(params)
    with pytest.raises(ValueError, match="sparsity"):
        jaxprune.masked_optimizer(
            optax.sgd(0.1), criterion=criteria.magnitude(), schedule=1.0, prunable="kernel"
        )
    with pytest.raises(ValueError, match="learning rate"):
        jaxprune.masked_optimizer(
            optax.sgd(0.1),
            criterion=criteria.pins(),
            schedule=0.5,
            prunable="kernel",
            update_every=lambda step: step >= 10,  # first mask update at step 10
        ).init(params)
    with pytest.raises(ValueError, match="scope"):
        pruned_optimizer(criteria.magnitude(), scope="everything")
    with pytest.raises(ValueError, match="update_every"):
        pruned_optimizer(criteria.magnitude(), update_every=0)

    tx = pruned_optimizer(criteria.magnitude())
    state = tx.init(params)
    grads = jax.grad(loss)(params)
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(grads, state)
    bad = {"hidden": grads["hidden"], "out": {"kernel": grads["out"]["kernel"]}}
    with pytest.raises(ValueError, match=r"gradients.*missing \['out/bias'\]"):
        tx.update(bad, state, params)
    wrong_shape = jax.tree.map(lambda g: g, grads)
    wrong_shape["out"]["kernel"] = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"gradients at out/kernel has shape \(2, 2\)"):
        tx.update(wrong_shape, state, params)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (criteria.platon, dict(beta1=1.0), "beta1"),
        (criteria.pins, dict(beta2=1.5), "beta2"),
        (criteria.pins, dict(window=0), "window"),
        (criteria.taylor, dict(ema=1.0), "ema"),
    ],
)
def test_criteria_reject_bad_hyperparameters(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_by_name():
    assert criteria.by_name("pins", window=3).needs_lr
    with pytest.raises(ValueError, match="unknown criterion"):
        criteria.by_name("oracle")


def test_hold_pruned_false_lets_pruned_weights_train_between_mask_updates():
    params, loss, _ = regression_problem()
    tx = jaxprune.masked_optimizer(
        optax.adam(1e-2),
        criterion=criteria.magnitude(),
        schedule=0.5,
        prunable="kernel",
        update_every=3,
        hold_pruned=False,
    )
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
    zeros_after = []
    for _ in range(6):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        pruned = ~jaxprune.masks_of(state)["hidden"]["kernel"]
        zeros_after.append(bool(jnp.all(params["hidden"]["kernel"][pruned] == 0)))
    # steps 0 and 3 update (and apply) the masks; in between pruned weights move again
    assert zeros_after == [True, False, False, True, False, False]
