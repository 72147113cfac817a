"""Misuse of the core (masked_optimizer, criteria, masks, paths) is refused by a named error.

Each numbered case of issue 17 that gave a silent wrong result has its test here (the
docstring says which); ``docs/reliability.md`` lists every misuse with its test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune
from jaxprune import criteria, masks, methods, paths, schedules
from jaxprune.failure import PruningError
from jaxprune.optim import NoEvidenceError

JaxRuntimeError = jax.errors.JaxRuntimeError


def two_leaves(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "enc": {
            "a": {"kernel": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)},
            "b": {"kernel": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)},
        }
    }


def sgd_magnitude(**kwargs) -> optax.GradientTransformation:
    """``masked_optimizer(optax.sgd(0.1), criterion=magnitude(), **kwargs)``."""
    return jaxprune.masked_optimizer(optax.sgd(0.1), criterion=criteria.magnitude(), **kwargs)


def grads_of(params: dict) -> dict:
    return jax.tree.map(lambda p: 0.1 * p + 0.01, params)


def steps(tx, params, n: int, grads=grads_of):
    state = tx.init(params)
    update = jax.jit(lambda p, s: tx.update(grads(p), s, p))
    for _ in range(n):
        updates, state = update(params, state)
        params = optax.apply_updates(params, updates)
    jax.block_until_ready(state)
    return params, state


# 1. Ranking all-zero scores prunes by position --------------------------------------------


@pytest.mark.parametrize("criterion", [criteria.pins(), criteria.platon()], ids=["pins", "platon"])
def test_pruning_before_the_window_has_evidence_is_refused(criterion):
    """Issue 17 case 1: pins/platon at sparsity 0.5 from step 0 kept enc/a whole and pruned
    enc/b whole (scores all 0 before step `window`); now refused when built."""
    with pytest.raises(ValueError, match=r"scores every entry 0 before step 10.*step 0"):
        jaxprune.masked_optimizer(
            optax.adamw(1e-3),
            criterion=criterion,
            learning_rate=1e-3,
            schedule=0.5,
            prunable=r"enc/.*/kernel$",
        )


def test_pruning_from_the_window_on_ranks_real_scores():
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion=criteria.pins(),
        learning_rate=1e-3,
        schedule=schedules.cubic(0.5, begin_step=10, end_step=11),
        prunable=r"enc/.*/kernel$",
        update_every=schedules.every(10, final_from=10),
    )
    _, state = steps(tx, two_leaves(), 12)
    kept = jaxprune.masks_of(state)["enc"]
    a, b = int(kept["a"]["kernel"].sum()), int(kept["b"]["kernel"].sum())
    assert a + b == 64 and 0 < a < 64 and 0 < b < 64, (a, b)


def assert_refused_and_frozen(tx, params, n, match, grads=grads_of):
    """A mask update refused at step 0, then ``n - 1`` more steps: step 0 trains with the
    masks it had (all kept), every later step changes nothing; check() raises."""
    first, _ = steps(tx, params, 1, grads)
    after, state = steps(tx, params, n, grads)
    jax.tree.map(np.testing.assert_array_equal, after, first)
    with pytest.raises(PruningError, match=match):
        jaxprune.check(state)
    with pytest.raises(PruningError, match=match):
        jaxprune.masks_of(state)
    inspected = jaxprune.masked_state(state, checked=False)
    assert int(inspected.step) == 1 and all(bool(m.all()) for m in jax.tree.leaves(inspected.masks))
    return inspected


def test_custom_mask_rule_before_evidence_is_refused_when_it_runs():
    """A mask rule that ignores the schedule (N:M) cannot be checked when built."""
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion=criteria.pins(),
        learning_rate=1e-3,
        schedule=0.0,
        prunable=r"kernel$",
        mask_rule=jaxprune.structured.nm_rule(2, 4),
    )
    assert_refused_and_frozen(
        tx, two_leaves(), 3, r"step 0 .*pruned 64 entries before the criterion has evidence"
    )


def test_all_equal_scores_in_the_global_ranking_are_refused():
    """Taylor scores of a parameter with zero gradients are all 0: no ranking."""
    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion=criteria.taylor(), schedule=0.5, prunable=r"kernel$"
    )
    assert_refused_and_frozen(
        tx,
        two_leaves(),
        2,
        r"every prunable entry the same score \(0.0\)",
        grads=lambda p: jax.tree.map(jnp.zeros_like, p),
    )


def test_a_constant_leaf_in_local_scope_is_refused_naming_it():
    params = two_leaves()
    params["enc"]["b"]["kernel"] = jnp.ones((8, 8))
    tx = sgd_magnitude(
        schedule=0.5,
        prunable=r"kernel$",
        scope="local",
    )
    assert_refused_and_frozen(tx, params, 2, r"every entry of enc/b/kernel the same score")


# 3. Schedules outside [0, 1) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (optax.linear_schedule(0.0, 1.5, 4), r"at step 3 .* sparsity 1.125;"),
        (lambda step: jnp.float32(-0.5), r"at step 0 .* sparsity -0.5;"),
        (lambda step: jnp.float32(jnp.nan), r"at step 0 .* sparsity nan;"),
    ],
    ids=["above-1", "negative", "nan"],
)
def test_schedule_values_outside_the_unit_interval_are_refused_at_their_step(schedule, match):
    """Issue 17 case 3: 1.5 pruned everything, -0.5 nothing, silently. Now that mask update
    is refused (the step trains with the masks it had), training freezes after it, and
    check() names it."""
    tx = sgd_magnitude(
        schedule=schedule,
        prunable=r"kernel$",
        update_every=1,
    )
    params = two_leaves()
    before, _ = steps(tx, params, 4)
    after, state = steps(tx, params, 6)
    if "1.125" in match:  # steps 0-3 trained (3 with step 2's masks); 4 and 5 changed nothing
        jax.tree.map(np.testing.assert_array_equal, after, before)
        assert int(jaxprune.masked_state(state, checked=False).step) == 4
    with pytest.raises(PruningError, match=match):
        jaxprune.check(state)


def test_topk_with_a_traced_sparsity_outside_the_interval_fails():
    scores = two_leaves()
    with pytest.raises(JaxRuntimeError, match=r"masks.topk: sparsity must be in \[0, 1\)"):
        jax.block_until_ready(jax.jit(masks.topk)(scores, 1.25))


# 4. Integer leaves -------------------------------------------------------------------------


def test_integer_leaves_selected_as_prunable_are_refused_by_path():
    """Issue 17 case 4: [[1,2,3,4],[5,6,7,8]] came back as [[0,0,0,0],[5,6,7,8]]."""
    params = {"w": {"kernel": jnp.asarray([[1, 2, 3, 4], [5, 6, 7, 8]], jnp.int32)}}
    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion=criteria.magnitude(), schedule=0.5, prunable=r"kernel$"
    )
    with pytest.raises(TypeError, match=r"not floating point: w/kernel \(int32\)"):
        tx.init(params)


def test_learned_score_methods_refuse_integer_leaves():
    params = {
        "encoder": {
            "layer": {"0": {"intermediate": {"dense": {"kernel": jnp.ones((4, 4), jnp.int8)}}}}
        }
    }
    with pytest.raises(TypeError, match=r"intermediate/dense/kernel \(int8\)"):
        methods.get("movement").init(params)


@pytest.mark.parametrize("fn", [masks.topk, lambda s, _: masks.nm(s, 2, 4)], ids=["topk", "nm"])
def test_integer_scores_are_refused(fn):
    with pytest.raises(TypeError, match=r"scores at a have dtype int32"):
        fn({"a": jnp.arange(8, dtype=jnp.int32)}, 0.5)


# 5. NaN gradients --------------------------------------------------------------------------


def nan_gradients(params):
    return jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)


def test_nonfinite_gradients_are_skipped_and_counted():
    """Issue 17 case 5: NaN gradients reached params and criterion state unnoticed. The
    option: skip_nonfinite=True skips such a step and counts it."""
    params = two_leaves()
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-2),
        criterion=criteria.taylor(ema=0.5),
        schedule=0.5,
        prunable=r"kernel$",
        skip_nonfinite=True,
    )
    after, state = steps(tx, params, 1, grads=nan_gradients)
    jax.tree.map(np.testing.assert_array_equal, after, params)
    found = jaxprune.masked_state(state)
    assert int(found.nonfinite) == 1 and int(found.step) == 0
    jax.tree.map(lambda s: np.testing.assert_array_equal(s, 0), found.criterion.score)
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(found.masks))
    # the next finite step proceeds as the first step would have
    clean_params, clean = steps(tx, params, 1)
    resumed_params, resumed = steps(tx, after, 1)
    assert int(jaxprune.masked_state(resumed).step) == int(clean.step) == 1
    jax.tree.map(np.testing.assert_array_equal, resumed_params, clean_params)


def test_by_default_nonfinite_gradients_pass_and_the_next_mask_update_is_refused():
    """Issue 17 case 5, the default: NaN flows as in plain optax (no per-step cost), but no
    mask is ranked from NaN scores: the next mask update is refused, naming the leaf."""
    tx = sgd_magnitude(schedule=0.5, prunable=r"kernel$", update_every=1)
    after, state = steps(tx, two_leaves(), 1, grads=nan_gradients)
    kernel, kept = after["enc"]["a"]["kernel"], state.masks["enc"]["a"]["kernel"]
    assert bool(jnp.isnan(kernel[kept]).all()) and bool((kernel[~kept] == 0).all())
    assert int(state.nonfinite) == 0
    jaxprune.check(state)  # step 0 ranked the finite params before the update
    _, state = steps(tx, two_leaves(), 3, grads=nan_gradients)
    with pytest.raises(PruningError, match=r"at step 1 .*enc/a/kernel hold NaN or infinity"):
        jaxprune.check(state)


# 6. lr_step_offset with an injected learning rate -----------------------------------------


def test_lr_step_offset_needs_the_schedule():
    """Issue 17 case 6: with inject_hyperparams PINS got lr(step), not lr(step + 1)."""
    with pytest.raises(ValueError, match=r"lr_step_offset=1 needs learning_rate="):
        jaxprune.masked_optimizer(
            optax.inject_hyperparams(optax.sgd)(learning_rate=lambda step: step + 1.0),
            criterion=criteria.pins(),
            schedule=0.0,
            prunable=r"kernel$",
            lr_step_offset=1,
        )


def test_lr_step_offset_reaches_the_criterion_from_a_schedule():
    seen = []

    def spy(state, params, grads, *, lr):
        jax.debug.callback(seen.append, lr)
        return state

    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1),
        criterion=jaxprune.Criterion(lambda p: (), spy, lambda s, p: p, needs_lr=True),
        schedule=0.0,
        prunable=r"kernel$",
        learning_rate=lambda step: step + 1.0,
        lr_step_offset=1,
    )
    steps(tx, two_leaves(), 3)
    assert [float(x) for x in seen] == [2.0, 3.0, 4.0]


# 7. Float64 scores -------------------------------------------------------------------------


def test_float64_scores_rank_exactly():
    """Issue 17 case 7: float64 near-ties and values beyond float32's range ranked by
    position after a cast to float32."""
    with jax.enable_x64(True):
        near = jnp.asarray([1.0, 1.0 + 1e-12, 0.5, 0.25], jnp.float64)
        big = jnp.asarray([1e299, 1e300, -1e300, 0.0], jnp.float64)
        assert masks.topk({"a": near}, 0.75)["a"].tolist() == [False, True, False, False]
        assert masks.topk({"a": big}, 0.75)["a"].tolist() == [False, True, False, False]
        mixed = masks.topk({"a": near, "b": jnp.asarray([1.0], jnp.float32)}, 0.6)
        assert mixed["a"].tolist() == [True, True, False, False] and mixed["b"].tolist() == [False]
        assert masks.nm({"a": near}, 1, 4)["a"].tolist() == [False, True, False, False]
        tx = jaxprune.masked_optimizer(
            optax.sgd(0.0), criterion=criteria.magnitude(), schedule=0.75, prunable="w"
        )
        state = tx.init({"w": near})
        _, state = tx.update({"w": jnp.zeros(4, jnp.float64)}, state, {"w": near})
        assert state.masks["w"].tolist() == [False, True, False, False]


# Late or unreadable errors ----------------------------------------------------------------


def test_nm_on_a_scalar_leaf_names_it():
    with pytest.raises(ValueError, match=r"scale is a scalar"):
        masks.nm({"scale": jnp.float32(2.0)}, 2, 4)


def test_nm_axis_out_of_range_names_it():
    with pytest.raises(ValueError, match=r"axis=2 is out of range for w of shape \(8,\)"):
        masks.nm({"w": jnp.ones(8)}, 2, 4, axis=2)


def test_grouped_topk_group_without_leaves():
    leaves = [jnp.ones(4), jnp.ones(4)]
    with pytest.raises(ValueError, match=r"groups without leaves: \[1\]"):
        masks.grouped_topk(leaves, [0, 0], jnp.asarray([1, 1], jnp.int32))
    with pytest.raises(ValueError, match=r"one group index per leaf"):
        masks.grouped_topk(leaves, [0], jnp.asarray([1], jnp.int32))


@pytest.mark.parametrize("every", [2.5, True, "10"])
def test_update_every_of_the_wrong_type_is_refused_when_built(every):
    with pytest.raises(TypeError, match=r"update_every must be an int >= 1 or a predicate"):
        sgd_magnitude(
            schedule=0.5,
            prunable="kernel",
            update_every=every,
        )


def test_update_every_predicate_must_return_a_bool_scalar():
    tx = sgd_magnitude(
        schedule=0.5,
        prunable="kernel",
        update_every=lambda step: jnp.zeros(3, bool),
    )
    with pytest.raises(TypeError, match=r"must return a bool scalar, got bool\[3\]"):
        steps(tx, two_leaves(), 1)


def test_criterion_by_name_or_refused():
    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion="magnitude", schedule=0.5, prunable="kernel"
    )
    _, state = steps(tx, two_leaves(), 1)
    assert float(jaxprune.sparsity(state.masks)) == 0.5
    with pytest.raises(ValueError, match=r"unknown criterion 'pinz'"):
        jaxprune.masked_optimizer(optax.sgd(0.1), criterion="pinz", schedule=0.5, prunable="k")
    with pytest.raises(TypeError, match=r"criterion must be a jaxprune.Criterion"):
        jaxprune.masked_optimizer(optax.sgd(0.1), criterion=abs, schedule=0.5, prunable="k")


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        (lambda s, _: jax.tree.map(lambda x: x.astype(jnp.float32), s), r"float32\[8, 8\]"),
        (lambda s, _: jax.tree.map(lambda x: x[:4] > 0, s), r"bool\[4, 8\]"),
    ],
    ids=["floats", "shape"],
)
def test_a_mask_rule_returning_non_masks_is_refused(rule, match):
    tx = sgd_magnitude(
        schedule=0.5,
        prunable="kernel",
        mask_rule=rule,
    )
    with pytest.raises(TypeError, match=match + r" at enc/a/kernel; masks must be bool"):
        steps(tx, two_leaves(), 1)


def test_a_mask_rule_returning_another_tree_is_refused():
    tx = sgd_magnitude(
        schedule=0.5,
        prunable="kernel",
        mask_rule=lambda s, _: {"enc": {"a": {"kernel": s["enc"]["a"]["kernel"] > 0}}},
    )
    with pytest.raises(ValueError, match=r"the mask rule's masks do not match.*enc/b/kernel"):
        steps(tx, two_leaves(), 1)


def test_window_must_be_an_int():
    with pytest.raises(TypeError, match=r"window must be an int, got 2.5"):
        criteria.pins(window=2.5)


def test_lr_step_offset_must_be_an_int():
    with pytest.raises(TypeError, match=r"lr_step_offset must be an int, got 0.5"):
        jaxprune.masked_optimizer(
            optax.sgd(0.1),
            criterion="pins",
            schedule=0.0,
            prunable="k",
            lr_step_offset=0.5,
            learning_rate=0.1,
        )


# Reports and masks from other optimizer states ---------------------------------------------


def test_sparsity_report_with_masks_from_optax_masked():
    params = two_leaves()
    inner = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion=criteria.magnitude(), schedule=0.5, prunable="kernel"
    )
    tx = optax.masked(inner, {"enc": {"a": {"kernel": True}, "b": {"kernel": False}}})
    params, state = steps(tx, params, 1)
    found = jaxprune.masks_of(state)
    report = jaxprune.sparsity_report(params, found)
    assert [r.path for r in report.rows] == ["enc/a/kernel"] and report.sparsity == 0.5
    assert report.other_params == 64
    pruned = masks.apply(params, found)
    assert bool(jnp.all(pruned["enc"]["b"]["kernel"] == params["enc"]["b"]["kernel"]))


def test_sparsity_report_with_an_nnx_optimizer():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(8, 8, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.dense(x)

    model = Net()
    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion=criteria.magnitude(), schedule=0.5, prunable=r"kernel$"
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((2, 8))) ** 2))(model)
    optimizer.update(model, grads)
    report = jaxprune.sparsity_report(nnx.state(model, nnx.Param), jaxprune.masks_of(optimizer))
    assert [r.path for r in report.rows] == ["dense/kernel"] and report.sparsity == 0.5


def test_masks_of_chooses_among_several():
    params = two_leaves()
    a = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion="magnitude", schedule=0.25, prunable="enc/a"
    )
    b = jaxprune.masked_optimizer(
        optax.sgd(0.1), criterion="magnitude", schedule=0.75, prunable="enc/b"
    )
    tx = optax.multi_transform(
        {"a": a, "b": b}, {"enc": {"a": {"kernel": "a"}, "b": {"kernel": "b"}}}
    )
    params, state = steps(tx, params, 1)
    with pytest.raises(
        ValueError, match=r"found 2 masked_optimizer states; choose one with index="
    ):
        jaxprune.masks_of(state)
    first, second = jaxprune.masks_of(state, index=0), jaxprune.masks_of(state, index=1)
    assert jaxprune.sparsity_report(params, first).sparsity == 0.25
    assert jaxprune.sparsity_report(params, second).sparsity == 0.75
    with pytest.raises(ValueError, match=r"index=2 but the state holds 2"):
        jaxprune.masks_of(state, index=2)


def test_masks_from_another_model_are_refused_by_path():
    params = two_leaves()
    other = {"enc": {"a": {"kernel": jnp.ones((8, 8), bool)}, "c": {"kernel": None}}}
    with pytest.raises(ValueError, match=r"no mask for \['enc/b/kernel'\]"):
        jaxprune.sparsity_report(params, other)
    wrong = {"enc": {"a": {"kernel": jnp.ones((4, 8), bool)}, "b": {"kernel": None}}}
    with pytest.raises(ValueError, match=r"masks at enc/a/kernel has shape \(4, 8\)"):
        masks.apply(params, wrong)


def test_presets_match_nnx_state_paths():
    from flax import nnx
    from tiny import TINY_BERT

    from jaxprune.models import EncoderForTask

    model = EncoderForTask(
        TINY_BERT, task="sequence-classification", num_labels=2, rngs=nnx.Rngs(0)
    )
    chosen = paths.select(nnx.state(model, nnx.Param), paths.BERT_ENCODER_KERNELS)
    assert sum(jax.tree.leaves(chosen)) == 12  # six matrices in each of the two layers


def test_sparsity_says_what_it_counts():
    params = {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}}
    assert float(jaxprune.sparsity(params)) == pytest.approx(0.2)  # the zero bias counts
    assert float(jaxprune.sparsity(params, prunable="kernel")) == 0.0
    report = str(jaxprune.sparsity_report(params))
    assert report.startswith("kept = non-zero entries (no masks given")


def test_report_flags_pruned_weights_that_hold_values():
    """hold_pruned=False: between mask updates the params hold no zeros the masks prune."""
    params = two_leaves()
    tx = jaxprune.masked_optimizer(
        optax.sgd(0.1),
        criterion="magnitude",
        schedule=0.5,
        prunable="kernel",
        update_every=4,
        hold_pruned=False,
    )
    params, state = steps(tx, params, 2)
    report = jaxprune.sparsity_report(params, jaxprune.masks_of(state))
    assert report.sparsity == 0.5 and report.unmasked_nonzeros == 64
    assert "non-zero entries where the masks prune" in str(report)


@pytest.mark.parametrize("name", ["pins", "platon"])
def test_a_preset_pruning_before_its_window_names_the_option(name):
    """`jaxprune train ... demo.py:pins --set steps=10` reported 90% sparsity with layer 0
    dense and layers 1-5 empty; the preset now says which option to change."""
    run = methods.Run(total_steps=10)
    with pytest.raises(NoEvidenceError, match=r"begin >= 10 \(--set method_options.begin=10\)"):
        methods.get(name).optimizer(run, two_leaves())
    methods.get(name, begin=10, end=0.95).optimizer(methods.Run(total_steps=20), two_leaves())
