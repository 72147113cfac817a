"""oBERT: the block Fisher inverse, saliency and surgeon update against dense float64
computations of the paper's equations, and the criterion inside masked_optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune import criteria, masked_optimizer, obert

BLOCK, M, DAMP = 6, 20, 1e-2


def gradients(shape, m=M, seed=0):
    return np.random.default_rng(seed).normal(size=(m, *shape)).astype(np.float32)


def dense_fisher(grads_col: np.ndarray, damp=DAMP, m=M) -> np.ndarray:
    """``damp I + (1/m) sum g g^T`` over one output's inputs, float64."""
    g = grads_col.astype(np.float64)
    return damp * np.eye(g.shape[1]) + g.T @ g / m


def built_inverse(w: np.ndarray, grads: np.ndarray, block=BLOCK) -> jax.Array:
    finv = obert.init_inverse(jnp.asarray(w), block, DAMP)
    for g in grads:
        finv = obert.add_gradient(finv, obert.to_blocks(jnp.asarray(g), block), M)
    return finv


def test_woodbury_inverse_equals_the_inverse_of_each_dense_block():
    w = np.zeros((14, 3), np.float32)  # 14 inputs: blocks of 6, 6 and 2 (+4 padding)
    grads = gradients(w.shape)
    finv = np.asarray(built_inverse(w, grads))
    assert finv.shape == obert.blocked_shape(w.shape, BLOCK) == (3, 3, BLOCK, BLOCK)
    for out in range(3):
        padded = np.pad(grads[:, :, out], ((0, 0), (0, 4)))
        full = dense_fisher(padded)
        for b in range(3):
            want = np.linalg.inv(full[b * 6 : (b + 1) * 6, b * 6 : (b + 1) * 6])
            np.testing.assert_allclose(finv[out, b], want, rtol=2e-4, atol=2e-4 * want.max())


def one_block(seed=1):
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(M, BLOCK))
    finv = np.linalg.inv(dense_fisher(grads))
    return finv, rng.normal(size=BLOCK)


def test_saliency_is_the_loss_increase_of_the_surgeon_move():
    finv, w = one_block()
    fisher = np.linalg.inv(finv)
    got = np.asarray(obert.saliency(jnp.asarray(finv), jnp.asarray(w)))
    np.testing.assert_allclose(got, w**2 / (2 * np.diag(finv)), rtol=1e-5)
    for q in range(BLOCK):
        pruned = np.arange(BLOCK) == q
        move = np.asarray(obert.surgeon_update(jnp.asarray(finv), jnp.asarray(w), pruned))
        np.testing.assert_allclose(move, -w[q] / finv[q, q] * finv[:, q], rtol=1e-5)
        assert move[q] == pytest.approx(-w[q], rel=1e-5)  # the pruned weight lands on 0
        # optimal: F @ move is zero off q (KKT of min 1/2 d^T F d s.t. d_q = -w_q) ...
        stationarity = fisher @ move
        assert np.abs(np.delete(stationarity, q)).max() < 1e-6 * np.abs(stationarity[q])
        # ... and its loss increase is the saliency
        assert 0.5 * move @ fisher @ move == pytest.approx(got[q], rel=1e-5)


def test_group_saliency_and_move_are_the_joint_surgeon_solution():
    finv, w = one_block(2)
    fisher = np.linalg.inv(finv)
    got = np.asarray(obert.saliency(jnp.asarray(finv), jnp.asarray(w), group=2))
    for start in range(0, BLOCK, 2):
        q = slice(start, start + 2)
        sub = finv[q, q]
        want = 0.5 * w[q] @ np.linalg.solve(sub, w[q])
        np.testing.assert_allclose(got[q], [want, want], rtol=1e-5)
        pruned = np.zeros(BLOCK, bool)
        pruned[q] = True
        move = np.asarray(obert.surgeon_update(jnp.asarray(finv), jnp.asarray(w), pruned, 2))
        np.testing.assert_allclose(move, -finv[:, q] @ np.linalg.solve(sub, w[q]), rtol=1e-5)
        np.testing.assert_allclose(move[q], -w[q], rtol=1e-5)
        assert 0.5 * move @ fisher @ move == pytest.approx(want, rel=1e-5)


def test_several_pruned_weights_of_a_block_sum_their_moves_as_the_authors_code():
    finv, w = one_block(3)
    pruned = np.array([True, False, True, False, False, False])
    both = np.asarray(obert.surgeon_update(jnp.asarray(finv), jnp.asarray(w), pruned))
    want = -(w[0] / finv[0, 0]) * finv[:, 0] - (w[2] / finv[2, 2]) * finv[:, 2]
    np.testing.assert_allclose(both, want, rtol=1e-5)


def step_fn(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def test_in_masked_optimizer_the_mask_update_moves_kept_weights_and_restarts_the_window():
    """A mask update at step 0 prunes a quarter; steps 1..6 add gradients; the mask update
    at step 6 prunes half the kernel by the window's saliency, moves the kept weights by
    the surgeon update from that window's Fisher (the inner optimizer is SGD at lr 0, so
    only the move changes them), and restarts the window; the next gradients skip the
    pruned entries."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 2)).astype(np.float32)
    params = {"kernel": jnp.asarray(w)}
    grads = gradients(w.shape, m=6, seed=4)
    tx = masked_optimizer(
        optax.sgd(0.0),
        criterion=obert.obert(block=4, num_grads=M, damp=DAMP),
        schedule=lambda step: jnp.where(step < 6, 0.25, 0.5),
        prunable="kernel",
        update_every=6,
    )
    state = tx.init(params)
    step = step_fn(tx)
    params, state = step(params, state, {"kernel": jnp.asarray(grads[0])})
    kept0 = np.asarray(state.masks["kernel"])
    w = np.asarray(params["kernel"])
    for g in grads[1:]:
        params, state = step(params, state, {"kernel": jnp.asarray(g)})
    assert int(state.criterion.count) == 5
    last = gradients(w.shape, m=1, seed=9)[0]
    window = np.concatenate([grads[1:], last[None]]) * kept0  # pruned entries masked out
    params, state = step(params, state, {"kernel": jnp.asarray(last)})

    want_move = np.zeros_like(w, dtype=np.float64)
    saliency = np.zeros_like(w, dtype=np.float64)
    for out in range(2):
        for b in range(3):
            rows = slice(4 * b, 4 * b + 4)
            finv = np.linalg.inv(dense_fisher(window[:, rows, out]))
            saliency[rows, out] = w[rows, out] ** 2 / (2 * np.diag(finv))
    keep = saliency >= np.sort(saliency.ravel())[12]
    np.testing.assert_array_equal(np.asarray(state.masks["kernel"]), keep)
    for out in range(2):
        for b in range(3):
            rows = slice(4 * b, 4 * b + 4)
            finv = np.linalg.inv(dense_fisher(window[:, rows, out]))
            pruned = kept0[rows, out] & ~keep[rows, out]
            v = np.where(pruned, w[rows, out] / np.diag(finv), 0.0)
            want_move[rows, out] = -finv @ v
    got = np.asarray(params["kernel"])
    assert np.all(got[~keep] == 0)
    np.testing.assert_allclose(got[keep], (w + want_move)[keep], rtol=1e-3, atol=1e-4)
    assert np.abs(want_move[keep]).max() > 1e-2  # the move is not negligible
    # the window restarted: identity / damp again, and the next gradient skips pruned entries
    assert int(state.criterion.count) == 0
    params, state = step(params, state, {"kernel": jnp.ones_like(params["kernel"])})
    finv = np.asarray(state.criterion.finv["kernel"])  # (2, 3, 4, 4)
    pruned_entry = np.argwhere(~keep)[0]
    b, i = divmod(int(pruned_entry[0]), 4)
    row = finv[pruned_entry[1], b, i]
    assert row[i] == pytest.approx(1 / DAMP) and np.all(np.delete(row, i) == 0)


def test_without_the_surgeon_update_kept_weights_only_train():
    w = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    tx = masked_optimizer(
        optax.sgd(0.0),
        criterion=criteria.by_name("obert", block=4, num_grads=4, obs_update=False),
        schedule=0.5,
        prunable="kernel",
        update_every=1,
    )
    params = {"kernel": jnp.asarray(w)}
    new, state = step_fn(tx)(params, tx.init(params), {"kernel": jnp.ones((8, 2))})
    keep = np.asarray(state.masks["kernel"])
    np.testing.assert_array_equal(np.asarray(new["kernel"])[keep], w[keep])
    assert keep.mean() == 0.5


def test_group_mask_rule_prunes_whole_groups_at_the_exact_sparsity():
    w = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    tx = masked_optimizer(
        optax.sgd(0.0),
        criterion=obert.obert(block=8, num_grads=4, group=4),
        mask_rule=obert.group_mask_rule(4),
        schedule=0.75,
        prunable="kernel",
        update_every=2,
    )
    params = {"kernel": jnp.asarray(w)}
    state = tx.init(params)
    step = step_fn(tx)
    for seed in range(3):
        params, state = step(params, state, {"kernel": jnp.asarray(gradients(w.shape, 1, seed)[0])})
    keep = np.asarray(state.masks["kernel"])
    groups = keep.T.reshape(3, 4, 4)  # (out, group, entry)
    assert np.all(groups.all(-1) | ~groups.any(-1))
    assert keep.sum() == 12
    assert np.all(np.asarray(params["kernel"])[~keep] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(block=50, group=3), "group=3 must divide block=50"),
        (dict(damp=0.0), "damp must be > 0"),
        (dict(num_grads=0), "num_grads must be an int >= 1"),
        (dict(block=2.5), "block must be an int >= 1"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        obert.obert(**kwargs)


def test_a_group_that_does_not_divide_a_leaf_is_refused_at_init():
    crit = obert.obert(block=8, group=4)
    with pytest.raises(ValueError, match=r"group=4 must divide axis 0 .* \(6, 2\)"):
        crit.init({"kernel": jnp.zeros((6, 2))})


def test_fisher_blocks_are_sharded_like_their_weight():
    """On a 2 x 4 mesh: a kernel's axes 1.. shard the blocks' leading axes and its axis 0
    shards the block count, or moves to an axis it divides."""
    from jax.sharding import PartitionSpec as P

    sizes = {"data": 2, "model": 4}
    assert obert.blocked_spec(P(None, "model"), (384, 1536), (1536, 8, 50, 50), sizes) == P(
        "model", None, None, None
    )
    assert obert.blocked_spec(P("model"), (384, 1536), (1536, 8, 50, 50), sizes) == P(
        None, "model", None, None
    )
    # 1536 inputs make 31 blocks, which 4 does not divide: the axis moves to the outputs
    assert obert.blocked_spec(P("model", None), (1536, 384), (384, 31, 50, 50), sizes) == P(
        "model", None, None, None
    )
    assert obert.blocked_spec(P(("data", "model")), (1536, 7), (7, 31, 50, 50), sizes) == P(
        None, None, None, None
    )


SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np, optax
from flax import nnx
from jax.sharding import PartitionSpec as P
import jaxprune
from jaxprune import train
from jaxprune.models import EncoderConfig, EncoderForTask, logical_axes

cfg = EncoderConfig(arch="bert", vocab_size=64, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
model = EncoderForTask(cfg, task="sequence-classification", num_labels=2, rngs=nnx.Rngs(0))
params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
tx = jaxprune.masked_optimizer(
    optax.adamw(1e-3), criterion=jaxprune.obert.obert(block=8, num_grads=3, damp=1e-4),
    schedule=jaxprune.schedules.cubic(0.75, begin_step=1, end_step=7),
    prunable=jaxprune.paths.BERT_ENCODER_KERNELS, update_every=3)
loss = train.supervised_loss(train.model_fn(model), "classification")
rng = np.random.default_rng(0)
batches = []
for _ in range(8):
    ids = rng.integers(1, 64, (16, 12)).astype(np.int32)
    batches.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                    "labels": (ids[:, 0] % 2).astype(np.int32)})

def run(mesh, shard_state):
    state = train.init_state(params, tx, seed=0)
    if mesh is None:
        step = jax.jit(train.train_step_fn(loss, tx))
        place = lambda b: b
    else:
        layout = train.Sharding(mesh, shard_state=shard_state)
        param_sh = layout.params(params, logical_axes(model))
        state_sh, update_sh = train.state_shardings(layout, state, params, param_sh)
        state = jax.device_put(state, state_sh)
        step = jax.jit(train.train_step_fn(loss, tx, update_sharding=update_sh),
                       out_shardings=(state_sh, layout.replicated))
        place = lambda b: {k: jax.device_put(v, layout.batch) for k, v in b.items()}
    for b in batches:
        state, _ = step(state, place(b), None)
    return state

def ffn_out(tree):
    (leaf,) = [x for k, x in jax.tree_util.tree_flatten_with_path(tree)[0]
               if jaxprune.paths.path_str(k).endswith("layer/0/output/dense/kernel")]
    return leaf

ref = run(None, False)
for shape, shard_state in (((4, 2), True),):
    mesh = train.make_mesh(*shape)
    with jax.set_mesh(mesh):
        got = run(mesh, shard_state)
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
    for a, b in zip(jax.tree.leaves(jaxprune.masks_of(ref.opt_state)),
                    jax.tree.leaves(jaxprune.masks_of(got.opt_state))):
        assert (np.asarray(a) == np.asarray(b)).all()
    finv = ffn_out(jaxprune.masked_state(got.opt_state).criterion.finv)
    kernel = ffn_out(got.params)
    assert kernel.sharding.spec == P("model", None), kernel.sharding.spec
    assert finv.shape == (32, 8, 8, 8), finv.shape
    assert finv.sharding.spec == P("data", "model", None, None), finv.sharding
print("ok")
"""


def test_sharded_runs_equal_one_device_and_the_blocks_follow_their_weight():
    """On 8 simulated devices (Explicit axes, data 4 x model 2, state split over data too):
    params and masks after 8 oBERT steps (mask updates with surgeon moves) equal the
    one-device run's, and the FFN output kernel's blocks (64 inputs: 8 blocks of 8) are
    split like it: its inputs on `model` shard the block count, `data` its outputs."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
