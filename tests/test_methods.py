"""Criterion-driven methods: presets, exact sparsity, objectives and the self-teacher."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny import TINY_BERT

from jaxprune import methods, train
from jaxprune.models import EncoderForTask

CFG = TINY_BERT
RUN = methods.Run(total_steps=30, learning_rate=1e-3, warmup_steps=3)


def tiny(seed=0):
    model = EncoderForTask(CFG, task="sequence-classification", num_labels=2, rngs=nnx.Rngs(seed))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def batch(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (8, 10)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "labels": (ids[:, 0] % 2).astype(np.int32),
    }


def train_method(method, steps=RUN.total_steps, dense_teacher=None):
    model, params = tiny()
    forward = train.model_fn(model)
    tx = method.optimizer(RUN, params)
    step = jax.jit(train.train_step_fn(method.loss(forward, RUN), tx))
    state = train.init_state(method.init(params), tx)
    teacher = method.initial_teacher(params, dense_teacher)
    for t in range(steps):
        state, metrics = step(state, batch(t), teacher)
        teacher = method.update_teacher(state, teacher, None)
        assert bool(metrics["finite"])
    return state, teacher


def kept_fraction(masks):
    leaves = [m for m in jax.tree.leaves(masks)]
    return sum(int(m.sum()) for m in leaves) / sum(m.size for m in leaves)


def test_registry_lists_presets_and_rejects_unknowns():
    assert {"magnitude", "taylor", "platon", "pins", "sparsebert", "sdp"} <= set(methods.names())
    pins = methods.get("pins", sparsity=0.97, teacher_mode="best")
    assert pins.sparsity == 0.97 and pins.teacher_mode == "best" and pins.teacher == "self"
    with pytest.raises(ValueError, match="unknown method 'obd'"):
        methods.get("obd")
    with pytest.raises(ValueError, match=r"no option\(s\) \['beta'\]"):
        methods.get("pins", beta=0.5)
    with pytest.raises(ValueError, match="sparsity"):
        methods.get("magnitude", sparsity=1.0)


@pytest.mark.parametrize("name", ["magnitude", "taylor", "platon", "pins"])
def test_criterion_methods_reach_the_final_sparsity_exactly(name):
    begin = 10 if name in ("platon", "pins") else 0.1  # their scores are 0 before step 10
    method = methods.get(name, sparsity=0.8, begin=begin, end=0.6, update_every=3)
    state, _ = train_method(method)
    params, masks = method.export(state.params, state.opt_state, RUN)
    chosen = [m for m in jax.tree.leaves(masks)]
    n = sum(m.size for m in chosen)
    kept = sum(int(m.sum()) for m in chosen)
    if method.scope == "global":
        assert kept == round(0.2 * n)
    else:
        assert all(int(m.sum()) == round(0.2 * m.size) for m in chosen)
    # every pruned entry is exactly zero in the exported params
    zeros = jax.tree.map(
        lambda m, p: 0 if m is None else int(jnp.sum(~m & (p != 0))),
        masks,
        params,
        is_leaf=lambda m: m is None,
    )
    assert sum(jax.tree.leaves(zeros)) == 0


def test_pins_latest_teacher_is_refreshed_on_schedule_and_never_newer():
    method = methods.get("pins", refresh_every=5)
    model, params = tiny()
    teacher = method.initial_teacher(params)
    history = {}
    state = train.init_state(params, method.optimizer(RUN, params))
    for t in range(1, 13):
        new_params = jax.tree.map(lambda p, t=t: p + t, params)  # a student that moves
        state = state._replace(step=jnp.int32(t), params=new_params)
        history[t] = new_params
        teacher = method.update_teacher(state, teacher, None)
        source = max((s for s in history if s % 5 == 0 and s <= t), default=None)
        expected = params if source is None else history[source]
        jax.tree.map(np.testing.assert_array_equal, teacher["params"], expected)
    del model


def test_pins_best_teacher_follows_dev_improvements_only():
    method = methods.get("pins", teacher_mode="best")
    _, params = tiny()
    teacher = method.initial_teacher(params)
    state = train.init_state(params, method.optimizer(RUN, params))
    for t, acc, should_copy in [(1, 0.6, True), (2, 0.5, False), (3, 0.7, True), (4, 0.7, False)]:
        moved = jax.tree.map(lambda p, t=t: p + t, params)
        state = state._replace(step=jnp.int32(t), params=moved)
        before = teacher
        teacher = method.update_teacher(state, teacher, {"accuracy": acc, "primary": "accuracy"})
        source = moved if should_copy else before["params"]
        jax.tree.map(np.testing.assert_array_equal, teacher["params"], source)
    assert float(teacher["best"]) == pytest.approx(0.7)


def test_distilling_methods_need_and_use_a_dense_teacher():
    _, teacher_params = tiny(seed=1)
    for name in ("sparsebert",):
        method = methods.get(name, sparsity=0.5)
        with pytest.raises(ValueError, match="dense teacher"):
            method.initial_teacher(teacher_params)
        state, _ = train_method(method, steps=4, dense_teacher=teacher_params)
        assert int(state.step) == 4


def test_sdp_trains_against_the_unpruned_network():
    method = methods.get("sdp", sparsity=0.5, begin=0.0, end=0.1, update_every=1)
    state, teacher = train_method(method, steps=6)
    _, params = tiny()
    # the teacher is the unpruned network as it started, frozen
    jax.tree.map(np.testing.assert_array_equal, teacher["params"], params)
    assert kept_fraction(method.export(state.params, state.opt_state, RUN)[1]) == pytest.approx(
        0.5, abs=1e-3
    )
