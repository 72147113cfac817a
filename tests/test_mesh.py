"""Meshes of every axis type on one device: the engine's results equal the unplaced ones,
checkpoints keep the axis types, and misuse raises a named error before any step runs.
(tests/test_engine.py runs the same on 8 simulated devices and 2 processes.)"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, Mesh, PartitionSpec
from tiny import TINY_BERT

from jaxprune import train
from jaxprune.models import EncoderForTask, logical_axes

AUTO, EXPLICIT = AxisType.Auto, AxisType.Explicit
TYPES = {"auto": AUTO, "explicit": EXPLICIT, "mixed": (EXPLICIT, AUTO)}


def tiny():
    task = "sequence-classification"
    model = EncoderForTask(TINY_BERT, task=task, num_labels=3, rngs=nnx.Rngs(0))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def two_steps(state: train.TrainState, b: dict) -> tuple[train.TrainState, dict]:
    model, _ = tiny()
    loss = train.supervised_loss(train.model_fn(model), "classification")
    step = jax.jit(train.train_step_fn(loss, optax.adamw(1e-2)))
    return step(step(state, b, None)[0], b, None)


@pytest.fixture(scope="module")
def unplaced() -> tuple[train.TrainState, jax.Array]:
    """The state after two steps and the logits then, on unplaced arrays."""
    model, params = tiny()
    state = two_steps(train.init_state(params, optax.adamw(1e-2)), batch())[0]
    return state, train.model_fn(model)(state.params, batch()).logits


def batch(n: int = 8) -> dict:
    ids = np.random.default_rng(0).integers(1, 50, (n, 10)).astype(np.int32)
    mask = (np.arange(10) < 7).astype(np.int32)[None].repeat(n, 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids[:, 0] % 3}


def placed(axis_types):
    """(layout, train state placed on it, batch placed on it) for the tiny BERT, adamw."""
    model, params = tiny()
    layout = train.Sharding(train.make_mesh(1, 1, axis_types=axis_types))
    tx = optax.adamw(1e-2)
    state = train.init_state(params, tx)
    shardings = layout.like_params(state, params, layout.params(params, logical_axes(model)))
    b = {k: jax.device_put(v, layout.batch) for k, v in batch().items()}
    return layout, jax.device_put(state, shardings), b


def test_make_mesh_axis_types():
    assert train.make_mesh().axis_types == (EXPLICIT, EXPLICIT)  # as jax.make_mesh
    assert train.make_mesh(axis_types=AUTO).axis_types == (AUTO, AUTO)
    assert train.make_mesh(axis_types=(EXPLICIT, AUTO)).axis_types == (EXPLICIT, AUTO)
    with pytest.raises(ValueError, match="axis_types must be Auto or Explicit"):
        train.make_mesh(axis_types=AxisType.Manual)
    with pytest.raises(ValueError, match="axis_types must be Auto or Explicit"):
        train.make_mesh(axis_types=(EXPLICIT,) * 3)


@pytest.mark.parametrize("set_mesh", [False, True], ids=["no_mesh", "set_mesh"])
@pytest.mark.parametrize("axis_types", TYPES, ids=str)
def test_step_forward_and_stats_equal_unplaced(unplaced, axis_types, set_mesh):
    model, _ = tiny()
    forward = train.model_fn(model)
    layout, state, b = placed(TYPES[axis_types])
    with jax.set_mesh(layout.mesh) if set_mesh else contextlib.nullcontext():
        got, metrics = two_steps(state, b)
        logits = jax.jit(forward)(got.params, b).logits
        counts = jax.jit(train.classification_stats(forward, 3))(got.params, b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), got, unplaced[0])
    np.testing.assert_allclose(logits, unplaced[1], atol=1e-6)
    assert jax.typeof(metrics["loss"]).sharding.mesh == layout.mesh.abstract_mesh
    if axis_types != "auto":  # typed: sharded like the batch's leading axis
        assert jax.typeof(logits).sharding.spec == PartitionSpec("data", None)
    assert counts["confusion"].sum() == 8
    # the optimizer's state is typed (and placed) like its parameter
    path = ("bert", "encoder", "layer", 0, "attention", "self", "query", "kernel")
    kernel, mu = got.params, got.opt_state[0].mu
    for key in path:
        kernel, mu = kernel[key], mu[key]
    assert mu.sharding == kernel.sharding and jax.typeof(mu) == jax.typeof(kernel)


def test_gradient_accumulation_splits_a_sharded_batch():
    model, params = tiny()
    loss = train.supervised_loss(train.model_fn(model), "classification")
    tx = optax.adamw(1e-2)
    step = jax.jit(train.train_step_fn(loss, tx, grad_accum=2))
    want = step(train.init_state(params, tx), batch(), None)[0]
    for axis_types in (EXPLICIT, (EXPLICIT, AUTO)):
        _, state, b = placed(axis_types)
        got = step(state, b, None)[0]
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), got, want)


def test_checkpoints_keep_the_axis_types(tmp_path):
    for name, axis_types in TYPES.items():
        _, state, _ = placed(axis_types)
        ckpt = train.Checkpointer(tmp_path / name, every=1)
        ckpt.save(1, state, {"step": 1}, force=True)
        ckpt.wait()
        restored, _ = ckpt.restore(state)
        ckpt.close()
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
            assert a.sharding == b.sharding and jax.typeof(a) == jax.typeof(b)


def test_step_refuses_a_state_off_the_context_mesh():
    _, state, b = placed(AUTO)
    with (
        jax.set_mesh(train.make_mesh(1, 1, axis_types=EXPLICIT)),
        pytest.raises(train.MeshMismatchError, match=r"state/.* is on mesh \(data=1 Auto"),
    ):
        two_steps(state, b)


def test_forward_refuses_params_and_batch_on_different_meshes():
    model, _ = tiny()
    _, state, _ = placed(AUTO)
    _, _, b = placed(EXPLICIT)
    with pytest.raises(train.MeshMismatchError, match=r"batch/.* is on mesh \(data=1 Explicit"):
        train.model_fn(model)(state.params, b)


def test_sharding_refuses_a_mesh_without_the_engine_axes():
    with pytest.raises(ValueError, match=r"Sharding needs a mesh with axes \('data', 'model'\)"):
        train.Sharding(Mesh(np.asarray(jax.devices()[:1]), ("batch",)))
    grid = np.asarray(jax.devices()[:1]).reshape(1, 1)
    manual = Mesh(grid, ("data", "model"), axis_types=(AxisType.Manual,) * 2)
    with pytest.raises(ValueError, match="are Manual: use Auto or Explicit"):
        train.Sharding(manual)


def test_param_shardings_refuse_logical_axes_of_another_tree():
    model, params = tiny()
    layout = train.Sharding(train.make_mesh(1, 1))
    logical = logical_axes(model)
    del logical["classifier"]
    with pytest.raises(ValueError, match="logical axes are not shaped like the params"):
        layout.params(params, logical)
    too_long = {"w": PartitionSpec("embed", "mlp", "heads")}
    with pytest.raises(ValueError, match="name more dimensions than its shape"):
        layout.params({"w": np.zeros((4, 4))}, too_long)


def test_distributed_initialize_checks_its_arguments():
    with pytest.raises(ValueError, match="go together"):
        train.distributed.initialize("127.0.0.1:1", 2)
    with pytest.raises(ValueError, match="heartbeat_timeout_s must be >= 1"):
        train.distributed.initialize("127.0.0.1:1", 2, 0, heartbeat_timeout_s=0)
