"""Compressed checkpoints (jaxprune.export): bit-exact round trips, sizes, corruption."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from tiny import TINY_BERT

from jaxprune import export, masks, paths
from jaxprune.models import EncoderForTask


def pruned_tiny_params(sparsity: float) -> dict:
    """Tiny BERT params (int keys for layers, as nnx.to_pure_dict gives), encoder kernels
    pruned by global magnitude."""
    model = EncoderForTask(TINY_BERT, task="sequence-classification", rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    selected = paths.select(params, paths.BERT_ENCODER_KERNELS)
    scores = jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)
    return masks.apply(params, masks.topk(scores, sparsity))


def tree_items(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def assert_bit_exact(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(tree_items(a), jax.tree.leaves(b), strict=True):
        x = np.asarray(x)
        assert isinstance(y, np.ndarray), path
        assert (x.dtype, x.shape) == (y.dtype, y.shape), path
        assert x.tobytes() == y.tobytes(), paths.path_str(path)


def test_round_trip_is_bit_exact(tmp_path):
    params = pruned_tiny_params(0.9)
    odd = np.array([-0.0, 0.0, np.nan, -np.inf, 1e-45, 3.0], np.float32)
    odd_nan = odd.copy()
    odd_nan.view(np.uint32)[2] = 0x7FC00123  # a NaN payload
    params["extra"] = {
        "signed_zeros": odd_nan,
        "ints": np.array([[0, -3], [7, 0]], np.int32),
        "flags": np.array([True, False, False, True]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), np.float32),
        "half": np.array([0, 1.5, 0, 0, -2], jnp.bfloat16),
    }
    report = export.save(tmp_path / "ckpt.safetensors", params)
    assert_bit_exact(params, export.load(tmp_path / "ckpt.safetensors"))
    assert report.values_dtype is None
    assert report.file_bytes == (tmp_path / "ckpt.safetensors").stat().st_size


def test_each_leaf_takes_its_smallest_encoding(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(64, 128)).astype(np.float32)
    tree = {}
    for name, density in (("d100", 1.0), ("d50", 0.5), ("d10", 0.1), ("d03", 0.03)):
        tree[name] = np.where(rng.random(dense.shape) < density, dense, 0).astype(np.float32)
    report = export.save(tmp_path / "c.safetensors", tree)
    rows = {r.path: r for r in report.rows}
    n = dense.size
    for name, row in rows.items():
        nnz = int(np.count_nonzero(tree[name]))
        assert row.nonzeros == nnz
        sizes = {
            "dense": 4 * n,
            "bitmask": n // 8 + 4 * nnz,
            "csr": 4 * (64 + 1) + (2 + 4) * nnz,
        }
        assert row.encoding == min(sizes, key=sizes.get), name
        assert row.stored_bytes == sizes[row.encoding], name
    assert [rows[k].encoding for k in ("d100", "d50", "d10", "d03")] == [
        "dense",
        "bitmask",
        "bitmask",
        "csr",
    ]
    assert_bit_exact(tree, export.load(tmp_path / "c.safetensors"))


def test_ninety_percent_kernels_cost_under_fifteen_percent(tmp_path):
    params = pruned_tiny_params(0.9)
    report = export.save(tmp_path / "c.safetensors", params)
    kernels = report.ratio_of(paths.BERT_ENCODER_KERNELS)
    # 1 bit per entry + 10% of the values: 1/32 + 0.1 = 0.131 of fp32
    assert 0.12 < kernels < 0.15, kernels
    assert kernels < report.ratio < 1.0  # embeddings and norms are stored dense
    assert "bit-exact" in str(report)
    with pytest.raises(ValueError, match="matches none"):
        report.ratio_of(r"nothing-here")


def test_lossy_values_dtype(tmp_path):
    params = pruned_tiny_params(0.5)
    exact = export.save(tmp_path / "exact.safetensors", params)
    lossy = export.save(tmp_path / "bf16.safetensors", params, values_dtype="bfloat16")
    assert lossy.values_dtype == "bfloat16"
    stored = lambda report: sum(r.stored_bytes for r in report.rows)  # noqa: E731
    assert stored(lossy) < 0.6 * stored(exact)  # half the bytes per value, same bitmasks
    restored = export.load(tmp_path / "bf16.safetensors")
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(restored), strict=True):
        x = np.asarray(x)
        assert y.dtype == x.dtype
        np.testing.assert_array_equal(y == 0, x == 0)
        np.testing.assert_allclose(y, x, rtol=2**-8, atol=0)
    assert any(
        np.asarray(x).tobytes() != y.tobytes()
        for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(restored), strict=True)
    )


def test_corruption_names_the_file_and_leaf(tmp_path):
    path = tmp_path / "c.safetensors"
    export.save(path, {"only": {"kernel": np.arange(1, 65, dtype=np.float32).reshape(8, 8)}})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c\.safetensors: leaf only/kernel is corrupted"):
        export.load(path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(ValueError, match=r"cannot read .*c\.safetensors"):
        export.load(path)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="values_dtype"):
        export.save(tmp_path / "x", {"a": np.ones(3)}, values_dtype="int8")
    with pytest.raises(TypeError, match=r"nested dicts.*a/0"):
        export.save(tmp_path / "x", {"a": [np.ones(3)]})
    with pytest.raises(ValueError, match="no arrays"):
        export.save(tmp_path / "x", {})
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a jaxprune-compressed checkpoint"):
        export.load(tmp_path / "plain.safetensors")
