"""Learned-score methods: movement, soft movement and SMP (STE, schedules, masks, export)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny import TINY_BERT

from jaxprune import losses, masks, methods, paths, train
from jaxprune.methods import learned
from jaxprune.models import EncoderForTask

CFG = TINY_BERT
RUN = methods.Run(total_steps=12, learning_rate=1e-3, warmup_steps=1)
HEAD = "classifier/"


@functools.cache
def tiny(task="sequence-classification", seed=0):
    model = EncoderForTask(CFG, task=task, num_labels=2, rngs=nnx.Rngs(seed))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def batch(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (8, 10)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "labels": (ids[:, 0] % 2).astype(np.int32),
    }


def train_method(method, run=RUN, on_step=None):
    """Trains ``run.total_steps`` steps; ``on_step(t, state_before, metrics)``."""
    model, params = tiny()
    tx = method.optimizer(run, params)
    step = jax.jit(train.train_step_fn(method.loss(train.model_fn(model), run), tx))
    state = train.init_state(method.init(params), tx)
    for t in range(run.total_steps):
        before = state
        state, metrics = step(state, batch(t), None)
        assert bool(metrics["finite"])
        if on_step is not None:
            on_step(t, before, metrics)
    return state


def flat(tree):
    return dict(zip(paths.leaf_paths(tree), jax.tree.leaves(tree), strict=True))


def random_scores(method, params, seed=0):
    trainable = method.init(params)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 100))
    scores = jax.tree.map(lambda s: jax.random.normal(next(keys), s.shape), trainable["scores"])
    return {"params": params, "scores": scores}


def first_update(method, trainable):
    """The optimizer's first update for all-ones gradients (a run without LR warm-up)."""
    tx = method.optimizer(methods.Run(total_steps=10), None)
    grads = jax.tree.map(jnp.ones_like, trainable)
    return jax.jit(lambda g, t: tx.update(g, tx.init(t), t)[0])(grads, trainable)


def assert_exported(params, export_params, export_masks):
    """Pruned entries exactly 0, kept ones and unmasked leaves untouched."""
    for path, p in flat(params).items():
        out = flat(export_params)[path]
        m = flat(export_masks).get(path)
        if m is None:
            np.testing.assert_array_equal(out, p)
        else:
            out, m, p = np.asarray(out), np.asarray(m), np.asarray(p)
            assert np.all(out[~m] == 0)
            np.testing.assert_array_equal(out[m], p[m])


# ------------------------------------------------------------------------- registry


def test_registry_has_the_presets_and_their_overrides():
    assert {"movement", "soft_movement", "smp", "smp_s", "smp_global"} <= set(methods.names())
    smp_s = methods.get("smp_s", sparsity=0.97)
    assert isinstance(smp_s, learned.ScoreMethod)
    assert (smp_s.sparsity, smp_s.mask, smp_s.teacher, smp_s.p) == (0.97, "smp_s", "none", 1.0)
    assert methods.get("smp_s", sparsity=0.2).p == 4.0  # the scripts' p at v >= 0.7
    assert methods.get("smp", objective="kd").teacher == "dense"
    assert methods.get("soft_movement").sparsity is None
    with pytest.raises(ValueError, match="no target sparsity"):
        methods.get("soft_movement", sparsity=0.9)
    with pytest.raises(ValueError, match="sparsity"):
        methods.get("movement", sparsity=1.0)
    with pytest.raises(ValueError, match="dense teacher"):
        methods.get("movement", objective="kd").initial_teacher(tiny()[1])


def test_scores_cover_exactly_the_prunable_kernels():
    _, params = tiny()
    trainable = methods.get("smp").init(params)
    scores = flat(trainable["scores"])
    assert len(scores) == 12 and all(p.endswith("/kernel") for p in scores)
    assert all(s.dtype == jnp.float32 and not s.any() for s in scores.values())
    for path, s in scores.items():
        assert s.shape == flat(params)[path].shape


# ---------------------------------------------------------------------------- STE


@functools.cache
def effective_weight_grad():
    """jit(d task loss / d W') on the tiny model, compiled once."""
    forward = train.model_fn(tiny()[0])

    def task(weights, data, rng):
        logits = forward(weights, data, train=True, rng=rng).logits
        return train.task_loss(logits, data, "classification")

    return jax.jit(jax.grad(task))


@pytest.mark.parametrize("name", ["movement", "soft_movement"])
def test_straight_through_gradient_is_weight_times_effective_weight_gradient(name):
    model, params = tiny()
    extra = {"tau_final": 0.5} if name == "soft_movement" else {"sparsity": 0.6}
    method = methods.get(name, final_lambda=0.0, begin=0, end=4, **extra)
    trainable = random_scores(method, params)
    data, rng, step = batch(0), jax.random.PRNGKey(1), 2
    loss_fn = method.loss(train.model_fn(model), RUN)
    grads = jax.jit(jax.grad(lambda tr: loss_fn(tr, data, rng, None, step)[0]))(trainable)

    hard = method.masks_at(trainable["scores"], RUN, step)
    g_eff = effective_weight_grad()(masks.apply(params, hard), data, rng)
    pruned, pruned_with_gradient = 0, 0
    for path, m in flat(hard).items():
        w, ge, gs = flat(params)[path], flat(g_eff)[path], flat(grads["scores"])[path]
        # exactly W * dL/dW' (no sigmoid derivative for soft movement), pruned entries included
        np.testing.assert_allclose(gs, w * ge, rtol=1e-5, atol=1e-9)
        pruned += int(jnp.sum(~m))
        pruned_with_gradient += int(jnp.sum(~m & (gs != 0)))
        # dL/dW = dL/dW' * M: pruned weights get no gradient
        np.testing.assert_allclose(flat(grads["params"])[path], ge * m, rtol=1e-5, atol=1e-9)
    assert pruned > 0 and pruned_with_gradient > 0.9 * pruned


# ---------------------------------------------------------------------------- SMP


def test_smp_trains_only_the_scores_and_the_new_head():
    method = methods.get("smp", sparsity=0.7, end=0.5)
    state = train_method(method)
    _, params = tiny()
    for path, p in flat(params).items():
        after = flat(state.params["params"])[path]
        if path.startswith(HEAD):
            assert not np.array_equal(after, p)
        else:  # bit-identical, including the pruned kernels
            np.testing.assert_array_equal(after, p)
    assert all(s.any() for s in jax.tree.leaves(state.params["scores"]))
    exported, final = method.export(state.params, state.opt_state, RUN)
    for m in jax.tree.leaves(final):
        assert int(m.sum()) == round(0.3 * m.size)
    assert_exported(state.params["params"], exported, final)


def test_frozen_params_get_exactly_zero_gradients():
    model, params = tiny()
    method = methods.get("smp", sparsity=0.5, begin=0, end=2)
    trainable = random_scores(method, params)
    loss_fn = method.loss(train.model_fn(model), RUN)
    rng = jax.random.PRNGKey(0)
    grads = jax.jit(jax.grad(lambda tr: loss_fn(tr, batch(0), rng, None, 3)[0]))(trainable)
    vectors = 0
    for path, g in flat(grads["params"]).items():
        if path.startswith(HEAD):
            assert np.any(np.asarray(g) != 0), path
        else:  # biases and LayerNorm through learned._zero_grad, matrices stop_gradient
            np.testing.assert_array_equal(g, 0, err_msg=path)
            vectors += g.ndim == 1
    assert vectors > 10
    x = jnp.asarray([1.0, -2.0, 3.0])
    value, grad = jax.value_and_grad(lambda v: jnp.sum(learned._zero_grad(v) * x))(x)
    assert float(value) == 14.0 and not np.any(np.asarray(grad))


def test_smp_without_head_training_gives_zero_updates_to_every_param():
    _, params = tiny()
    method = methods.get("smp", train_head=False)
    trainable = method.init(params)
    updates = first_update(method, trainable)
    assert all(not u.any() for u in jax.tree.leaves(updates["params"]))
    assert all(u.all() for u in jax.tree.leaves(updates["scores"]))
    with pytest.raises(ValueError, match="head_params"):
        methods.get("smp", head_params="^nothing/").optimizer(RUN, params).init(trainable)


def test_smp_schedules_at_the_boundary_steps():
    run = methods.Run(total_steps=100)
    method = methods.get("smp", sparsity=0.9, end=0.7)  # N = 70, T = 100
    v, n, t_total = 0.1, 70, 100
    r = lambda t: float(method.remaining(run, t))  # noqa: E731
    lam = lambda t: float(method.regularization(run, t))  # noqa: E731
    assert r(0) == 1.0
    assert r(35) == pytest.approx(v + (1 - v) * 0.5**3)
    assert r(n) == pytest.approx(v) and r(t_total - 1) == pytest.approx(v)
    assert r(n) == np.float32(v)  # exactly the target at and after N
    assert lam(0) == 0.0
    assert lam(n) == pytest.approx(400 * (1 - (1 - n / t_total) ** 3))
    assert lam(t_total - 1) == pytest.approx(400 * (1 - (1 / t_total) ** 3))
    held = methods.get("smp", regu_ramp_steps=50)
    assert float(held.regularization(run, 25)) == pytest.approx(400 * (1 - 0.5**3))
    assert float(held.regularization(run, 50)) == float(held.regularization(run, 99)) == 400.0


def _hand_scores(query0, query1, inter0, inter1):
    def layer(q, i):
        return {
            "attention": {"self": {"query": {"kernel": q}}},
            "intermediate": {"dense": {"kernel": i, "bias": None}},
        }

    return {"encoder": {"layer": {"0": layer(query0, inter0), "1": layer(query1, inter1)}}}


def test_smp_s_ratios_on_a_hand_example():
    ones = jnp.ones((4, 4), jnp.float32)
    scores = _hand_scores(0.0 * ones, 10.0 * ones, -1000.0 * ones, -1000.0 * ones)
    ratios = flat(learned.smp_s_ratios(scores, 0.8))
    m0, m1 = 0.5, float(jax.nn.sigmoid(10.0))
    q0, q1 = (
        ratios["encoder/layer/0/attention/self/query/kernel"],
        ratios["encoder/layer/1/attention/self/query/kernel"],
    )
    assert float(q0) == pytest.approx(m0 / (m0 + m1) * 2 * 0.8, rel=1e-6)
    assert float(q1) == pytest.approx(m1 / (m0 + m1) * 2 * 0.8, rel=1e-6)
    assert float(q1) > 1.0  # no cap
    for i in (0, 1):  # sigmoid(-1000) == 0: the denominator is 0, fall back to r_t
        assert float(ratios[f"encoder/layer/{i}/intermediate/dense/kernel"]) == np.float32(0.8)
    # the temperature p divides the scores
    hot = flat(learned.smp_s_ratios(scores, 0.8, temperature=4.0))
    m1_hot = float(jax.nn.sigmoid(2.5))
    assert float(hot["encoder/layer/1/attention/self/query/kernel"]) == pytest.approx(
        m1_hot / (0.5 + m1_hot) * 1.6, rel=1e-6
    )
    # the masks: the matrix with a ratio above 1 keeps everything
    method = methods.get("smp_s", sparsity=0.2, smp_s_temperature=1.0)
    kept = {p: int(m.sum()) for p, m in flat(method.compute_masks(scores, 0.8)).items()}
    assert kept["encoder/layer/1/attention/self/query/kernel"] == 16
    assert kept["encoder/layer/0/attention/self/query/kernel"] == round(float(q0) * 16)
    assert kept["encoder/layer/0/intermediate/dense/kernel"] == round(0.8 * 16)
    assert learned.type_key("bert/encoder/layer/11/output/dense/kernel") == (
        "bert/encoder/layer/output/dense/kernel"
    )


def test_smp_global_keeps_one_global_count():
    _, params = tiny()
    method = methods.get("smp_global", sparsity=0.8)
    scores = random_scores(method, params)["scores"]
    kept = [m for m in jax.tree.leaves(method.final_masks(scores))]
    total = sum(m.size for m in kept)
    assert sum(int(m.sum()) for m in kept) == round(0.2 * total)
    assert len({round(float(m.mean()), 3) for m in kept}) > 1  # not the same in every matrix


# ----------------------------------------------------------------------- movement


def test_movement_keeps_the_scheduled_count_per_matrix_and_ends_exact():
    run = methods.Run(total_steps=10, learning_rate=1e-3, warmup_steps=1)
    method = methods.get("movement", sparsity=0.75, begin=2, end=7)
    counted = []

    def check(t, before, metrics):
        p = np.clip((t - 2) / 5, 0.0, 1.0)
        ratio = 0.25 + 0.75 * (1 - p) ** 3
        assert float(metrics["remaining"]) == pytest.approx(ratio, rel=1e-6)
        if t in (0, 4, 7, 9):  # the masks the step used, per matrix
            hard = method.masks_at(before.params["scores"], run, t)
            for m in jax.tree.leaves(hard):
                assert int(m.sum()) == round(float(np.float32(ratio)) * m.size)
            counted.append(t)
        if t >= 7:
            n = sum(m.size for m in jax.tree.leaves(before.params["scores"]))
            expected = sum(
                m.size - round(0.25 * m.size) for m in jax.tree.leaves(before.params["scores"])
            )
            assert float(metrics["sparsity"]) == pytest.approx(expected / n)

    state = train_method(method, run, on_step=check)
    assert counted == [0, 4, 7, 9]
    _, params = tiny()
    changed = {
        path: not np.array_equal(flat(state.params["params"])[path], p)
        for path, p in flat(params).items()
    }
    assert not any(c for path, c in changed.items() if "/embeddings/" in path)  # frozen
    assert changed["bert/encoder/layer/0/attention/self/query/kernel"] and changed[HEAD + "kernel"]
    exported, final = method.export(state.params, state.opt_state, run)
    for m in jax.tree.leaves(final):
        assert int(m.sum()) == round(0.25 * m.size)
    assert_exported(state.params["params"], exported, final)
    report = masks.sparsity_report(exported, final)
    assert report.sparsity == pytest.approx(0.75, abs=1e-3)


# ------------------------------------------------------------------ soft movement


def test_soft_movement_sparsity_is_driven_by_the_regulariser():
    run = methods.Run(total_steps=8, learning_rate=1e-3)
    results = {}
    for lam in (400.0, 0.0):
        method = methods.get(
            "soft_movement", final_lambda=lam, score_lr=0.3, tau_final=0.45, begin=0, end=4
        )
        state = train_method(method, run)
        exported, final = method.export(state.params, state.opt_state, run)
        assert_exported(state.params["params"], exported, final)
        results[lam] = masks.sparsity_report(exported, final).sparsity
    assert results[400.0] > results[0.0] + 0.1


def test_soft_movement_schedules_and_lambda_follow_tau():
    run = methods.Run(total_steps=100)
    method = methods.get("soft_movement", begin=0.1, end=0.8)
    for t in (0, 10, 30, 80, 99):
        tau = float(method.threshold(run, t))
        assert float(method.regularization(run, t)) == pytest.approx(400 * tau / 0.1, abs=1e-3)
    assert float(method.threshold(run, 10)) == 0.0
    assert float(method.threshold(run, 80)) == pytest.approx(0.1)


def test_soft_movement_safety_floor_keeps_the_top_scores():
    method = methods.get("soft_movement")
    rng = np.random.default_rng(0)
    low = jnp.asarray(rng.permutation(1000).reshape(40, 25) / 1000 - 20.0, jnp.float32)
    some = jnp.asarray(np.full((20, 50), -20.0), jnp.float32).at[0, :10].set(5.0)
    scores = {"a": {"kernel": low}, "b": {"kernel": some}, "c": None}
    final = method.final_masks(scores)
    assert final["c"] is None
    a, b = np.asarray(final["a"]["kernel"]), np.asarray(final["b"]["kernel"])
    floor = int(0.005 * 1000) + 1
    assert a.sum() == floor and np.all(np.asarray(low)[a] >= np.sort(np.asarray(low).ravel())[-6])
    assert b.sum() == 10 and b[0, :10].all()  # 10 >= the floor of 6: the threshold decides


# -------------------------------------------------------------------- objectives


def test_kd_objective_mixes_ce_and_the_teacher_kl():
    model, params = tiny()
    _, teacher = tiny(seed=1)
    forward = train.model_fn(model)
    method = methods.get("movement", objective="kd", final_lambda=0.0)
    data = batch(3)
    total, aux = method.loss(forward, RUN)(
        method.init(params), data, jax.random.PRNGKey(0), teacher, 0
    )
    student = forward(params, data).logits  # step 0: dense
    kl = losses.kd_kl(student, forward(teacher, data).logits, 2.0)
    assert float(total) == pytest.approx(0.5 * float(aux["task"]) + 0.5 * float(kl), rel=1e-5)


def test_kd_ignores_padding_rows():
    model, params = tiny()
    _, teacher = tiny(seed=1)
    forward = train.model_fn(model)
    method = methods.get("movement", objective="kd", final_lambda=0.0)
    loss = method.loss(forward, RUN)
    data = batch(3)
    padded = {k: np.concatenate([v, v[:2]]) for k, v in data.items()}
    padded["input_ids"][-2:] = 7  # junk rows the loss must not see
    padded["valid"] = np.arange(10) < 8
    rng = jax.random.PRNGKey(0)
    full, _ = loss(method.init(params), {**data, "valid": np.ones(8, bool)}, rng, teacher, 0)
    with_padding, _ = loss(method.init(params), padded, rng, teacher, 0)
    assert float(with_padding) == pytest.approx(float(full), rel=1e-5)


def test_label_word_head_reads_the_mlm_logits_of_the_label_words():
    model, params = tiny("masked-lm")
    forward = train.model_fn(model)
    method = methods.get("smp", head="label_words", label_word_ids=(5, 7), mask_token_id=0)
    data = batch(0)
    data["input_ids"][1, 4] = 0  # only row 1 has a [MASK] (id 0), at position 4
    full = forward(params, data).logits
    picked = method.head_forward(forward, RUN)(params, data).logits
    np.testing.assert_array_equal(picked[0], full[0, 0, [5, 7]])
    np.testing.assert_array_equal(picked[1], full[1, 4, [5, 7]])
    updates = first_update(method, method.init(params))  # the MLM head is frozen too
    assert all(not u.any() for u in jax.tree.leaves(updates["params"]))
    with pytest.raises(ValueError, match="masked-lm"):
        method.init(tiny()[1])
    with pytest.raises(ValueError, match="label_word_ids"):
        methods.get("smp", head="label_words")
