import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune
from jaxprune import masks


def reference_topk(leaves, k):
    """Full-sort reference: descending score, ties by (leaf order, flat index)."""
    flat = np.concatenate([np.asarray(x, np.float32).ravel() for x in leaves])
    nan = np.isnan(flat)
    order = np.lexsort((np.arange(flat.size), -np.where(nan, 0, flat), nan))  # NaN last
    keep = np.zeros(flat.size, bool)
    keep[order[:k]] = True
    out, start = [], 0
    for x in leaves:
        out.append(keep[start : start + x.size].reshape(x.shape))
        start += x.size
    return out


def kept(tree):
    return sum(int(np.sum(m)) for m in jax.tree.leaves(tree))


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.97])
def test_global_ties_keep_exact_count_and_break_by_position(sparsity):
    scores = {"a": jnp.ones((4, 5)), "b": None, "c": jnp.ones((7,))}
    n = 27
    m = masks.topk(scores, sparsity)
    assert m["b"] is None
    k = round((1 - sparsity) * n)
    assert kept(m) == k
    # all tied: the first k positions in leaf order win
    expected = reference_topk([scores["a"], scores["c"]], k)
    np.testing.assert_array_equal(m["a"], expected[0])
    np.testing.assert_array_equal(m["c"], expected[1])


def test_local_ties_keep_exact_count_per_leaf():
    scores = {"a": jnp.zeros((4, 5)), "c": jnp.asarray([1.0, 1, 1, 2, 2, 0, 0])}
    m = masks.topk(scores, 0.5, scope="local")
    assert int(m["a"].sum()) == 10  # round(0.5 * 20)
    assert int(m["c"].sum()) == 4  # round(3.5) = 4 (half to even)
    np.testing.assert_array_equal(m["a"].ravel(), np.arange(20) < 10)
    np.testing.assert_array_equal(m["c"], [True, True, False, True, True, False, False])


@pytest.mark.parametrize("seed", range(6))
def test_global_search_equals_full_sort_on_random_trees(seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 17), (64,), (5, 4, 3), (1,), (33, 2)]
    leaves = []
    for i, shape in enumerate(shapes):
        x = rng.normal(size=shape).astype(np.float32) * 10.0 ** rng.integers(-30, 30)
        if i % 2:  # many ties, zeros and negative zeros
            x = np.round(x / np.abs(x).max() * 3).astype(np.float32)
            x[..., 0] = -0.0
        leaves.append(jnp.asarray(x))
    n = sum(x.size for x in leaves)
    for sparsity in rng.random(5):
        m = masks.topk(leaves, float(sparsity))
        k = round((1 - float(np.float32(sparsity))) * n)
        assert kept(m) == k
        for got, want in zip(m, reference_topk(leaves, k), strict=True):
            np.testing.assert_array_equal(got, want)


def test_local_search_equals_per_leaf_sort():
    rng = np.random.default_rng(7)
    leaves = [jnp.asarray(rng.integers(-3, 4, size=s).astype(np.float32)) for s in [(9, 9), (40,)]]
    m = masks.topk(leaves, 0.6, scope="local")
    for got, x in zip(m, leaves, strict=True):
        np.testing.assert_array_equal(got, reference_topk([x], round(0.4 * x.size))[0])


def test_special_values_rank_in_order():
    x = jnp.asarray([np.nan, -np.inf, -1.0, -0.0, 0.0, 1e-30, 3.0, np.inf], jnp.float32)
    order = [7, 6, 5, 3, 4, 2, 1, 0]  # -0.0 == +0.0, tie by index; NaN last
    for k in range(1, 9):
        m = masks.topk([x], 1 - k / 8)
        np.testing.assert_array_equal(np.flatnonzero(m[0]), sorted(order[:k]))


def test_denormals_rank_as_the_backend_compares_them():
    """Counts compare floats: where XLA flushes denormals (CPU, TPU) they tie with 0 (broken
    by position) and exactly k entries are still kept."""
    x = np.asarray([1e-45, 0.0, -1e-45, 2e-38, -0.0, 1e-40, 5.0, -3e-39], np.float32)
    flushes = not bool(jax.jit(lambda v: v > 0)(jnp.float32(1e-45)))
    ranked = np.where(np.abs(x) < np.finfo(np.float32).tiny, 0.0, x) if flushes else x
    for k in range(x.size + 1):
        got = grouped((0,))([jnp.asarray(x)], jnp.asarray([k], jnp.int32))[0]
        np.testing.assert_array_equal(got, reference_topk([ranked], k)[0], err_msg=f"k={k}")


def test_topk_under_jit_with_traced_sparsity():
    rng = np.random.default_rng(1)
    tree = {"w": jnp.asarray(rng.normal(size=(30, 30)), jnp.float32)}
    f = jax.jit(lambda s, sp: masks.topk(s, sp))
    for sp in [0.1, 0.5, 0.99]:
        assert kept(f(tree, jnp.float32(sp))) == round((1 - np.float32(sp)) * 900)


@functools.cache
def grouped(groups: tuple[int, ...]):
    """jit(grouped_topk) for one grouping, compiled once across seeds."""
    return jax.jit(lambda leaves, ks: masks.grouped_topk(leaves, list(groups), ks))


@pytest.mark.parametrize("seed", range(4))
def test_grouped_topk_equals_per_group_sort(seed):
    rng = np.random.default_rng(seed)
    shapes = [(64, 5), (7,), (64, 5), (3, 2, 2), (32,), (64, 5), ()]  # 32s: runs summed
    leaves = []
    for i, shape in enumerate(shapes):
        x = rng.normal(size=shape).astype(np.float32)
        if i % 2:  # ties across the cut; leaf 3 is all zeros of both signs
            x = np.round(x) * (-0.0 if i == 3 else 1.0)
        leaves.append(jnp.asarray(x, jnp.float32))
    for groups in ((0,) * 7, tuple(range(7)), (1, 0, 0, 1, 1, 0, 1)):
        members = [[i for i, g in enumerate(groups) if g == j] for j in range(max(groups) + 1)]
        ks = [int(rng.integers(0, sum(leaves[i].size for i in m) + 1)) for m in members]
        got = grouped(groups)(leaves, jnp.asarray(ks, jnp.int32))
        for m, k in zip(members, ks, strict=True):
            want = reference_topk([leaves[i] for i in m], k)
            for i, w in zip(m, want, strict=True):
                np.testing.assert_array_equal(got[i], w, err_msg=f"leaf {i}, groups {groups}")


def primitives(jaxpr) -> set[str]:
    """Names of every primitive in a jaxpr, its loops' and branches' bodies included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    names |= primitives(getattr(sub, "jaxpr", sub))
    return names


def test_global_topk_neither_sorts_nor_concatenates():
    tree = [jnp.ones((8, 8)), jnp.ones((16,))]
    used = primitives(jax.make_jaxpr(lambda s: masks.topk(s, 0.5))(tree).jaxpr)
    assert {"while", "cond", "reduce_sum"} <= used  # the search is seen, bodies included
    assert not used & {"sort", "argsort", "top_k", "concatenate"}


def test_many_leaves_of_one_shape_equal_full_sort():
    """Leaves of one shape are searched as stacks: ties across them, within groups that split
    a stack, and per leaf keep the reference's entries."""
    rng = np.random.default_rng(3)
    leaves = [jnp.asarray(np.round(rng.normal(size=(4, 3))), jnp.float32) for _ in range(9)]
    leaves += [jnp.asarray(np.round(rng.normal(size=(5,))), jnp.float32) for _ in range(3)]
    n = sum(x.size for x in leaves)

    def kept(sparsity, size):  # float32 arithmetic, as topk
        return int(np.round((np.float32(1) - np.float32(sparsity)) * np.float32(size)))

    for sparsity in (0.3, 0.77):
        want = reference_topk(leaves, kept(sparsity, n))
        for got, w in zip(masks.topk(leaves, sparsity), want, strict=True):
            np.testing.assert_array_equal(got, w)
        for got, x in zip(masks.topk(leaves, sparsity, scope="local"), leaves, strict=True):
            np.testing.assert_array_equal(got, reference_topk([x], kept(sparsity, x.size))[0])
    groups = tuple(i % 3 for i in range(len(leaves)))
    ks = [20, 7, 15]
    got = grouped(groups)(leaves, jnp.asarray(ks, jnp.int32))
    for g, k in enumerate(ks):
        members = [i for i, gi in enumerate(groups) if gi == g]
        for i, w in zip(members, reference_topk([leaves[i] for i in members], k), strict=True):
            np.testing.assert_array_equal(got[i], w)


def topk_fn(scope: str):
    def fn(tree):
        if scope == "grouped":  # a group of 4 leaves per layer
            ks = jnp.full((len(tree) // 4,), 10, jnp.int32)
            return masks.grouped_topk(tree, [i // 4 for i in range(len(tree))], ks)
        return masks.topk(tree, 0.5, scope=scope)

    return fn


def control_flow_eqns(jaxpr) -> int:
    """Equations inside the loop bodies and conditional branches of a jaxpr, nested ones
    included."""
    total = 0
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    inside = eqn.primitive.name in ("while", "cond")
                    total += (len(inner.eqns) if inside else 0) + control_flow_eqns(inner)
    return total


@pytest.mark.parametrize("scope", ["global", "local", "grouped"])
def test_program_grows_linearly_with_the_leaves(scope):
    """Issue 18: the search's loops and conditionals do not grow with the leaves (they held a
    count per leaf, and a tie search and a conditional per leaf or group: XLA's compile time
    grew with their square), and the whole program grows linearly."""
    fn = topk_fn(scope)
    trees = {n: [jnp.ones((8, 8))] * n for n in (16, 64)}
    inside = {n: control_flow_eqns(jax.make_jaxpr(fn)(t).jaxpr) for n, t in trees.items()}
    assert inside[64] == inside[16], inside
    chars = {n: len(jax.jit(fn).lower(t).as_text()) for n, t in trees.items()}
    assert chars[64] < 4.5 * chars[16], chars


def distinct_kernels(n_leaves: int, scope: str) -> int:
    """Fused computations of the compiled top-k that differ in more than their names."""
    tree = [jnp.ones((8, 8))] * n_leaves
    text = jax.jit(lambda t: masks.topk(t, 0.5, scope=scope)).lower(tree).compile().as_text()
    fusions = re.findall(r"^%fused_computation[^\n]*\{\n.*?\n\}", text, re.M | re.S)
    return len({re.sub(r"%?[A-Za-z_][\w\-]*(\.\d+)+|, metadata=\{[^}]*\}", "", f) for f in fusions})


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's fusion text")
@pytest.mark.parametrize("scope", ["global", "local"])
def test_leaves_of_one_shape_share_their_kernels(scope):
    """XLA:CPU compiles each distinct kernel (about 10 ms) and identical ones once: the masks
    of more leaves of one shape must not bring kernels of their own (a static slice per leaf
    would, a kernel per leaf: ``masks._leaf_rows``)."""
    assert distinct_kernels(64, scope) <= distinct_kernels(16, scope) + 2


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_topk_rejects_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        masks.topk([jnp.ones(4)], bad)


def test_topk_rejects_bad_scope_and_empty_tree():
    with pytest.raises(ValueError, match="scope"):
        masks.topk([jnp.ones(4)], 0.5, scope="row")
    with pytest.raises(ValueError, match="no arrays"):
        masks.topk({"a": None}, 0.5)


def test_nm_two_of_four():
    x = jnp.asarray([[4.0, 1, 3, 2, 0, 0, 0, 0], [1, 1, 1, 1, -1, 5, -2, 5]])
    m = masks.nm(x, 2, 4)
    np.testing.assert_array_equal(m, [[1, 0, 1, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 1, 0, 1]])
    # along axis 0 (the reduction axis of a Flax (in, out) kernel)
    k = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
    mk = masks.nm({"kernel": k, "bias": None}, 2, 4, axis=0)["kernel"]
    assert mk.shape == (8, 3)
    np.testing.assert_array_equal(mk.reshape(2, 4, 3).sum(axis=1), np.full((2, 3), 2))


def test_nm_rejects_indivisible_dims_and_bad_n():
    with pytest.raises(ValueError, match=r"layer/kernel.*not divisible by 4"):
        masks.nm({"layer": {"kernel": jnp.ones((3, 6))}}, 2, 4)
    with pytest.raises(ValueError, match="0 < n <= m"):
        masks.nm([jnp.ones(4)], 5, 4)


def test_sparsity_and_report():
    params = {"a": {"kernel": jnp.asarray([[0.0, 1.0], [2.0, 0.0]]), "bias": jnp.ones(2)}}
    assert float(jaxprune.sparsity(params["a"]["kernel"])) == 0.5
    mask_tree = {"a": {"kernel": jnp.asarray([[False, True], [True, False]]), "bias": None}}
    assert float(jaxprune.sparsity(mask_tree)) == 0.5
    report = jaxprune.sparsity_report(params, mask_tree)
    assert [r.path for r in report.rows] == ["a/kernel"]
    assert report.rows[0].kept == 2 and report.sparsity == 0.5 and report.other_params == 2
    text = str(report)
    assert "a/kernel" in text and "50.00%" in text and "2x2" in text
    full = jaxprune.sparsity_report(params)  # no masks: every leaf, non-zeros
    assert [r.kept for r in full.rows] == [2, 2]
    with pytest.raises(ValueError, match="masks"):
        jaxprune.sparsity_report(params, {"a": {"kernel": jnp.ones((3, 2), bool), "bias": None}})


def test_apply_zeroes_pruned_entries():
    params = {"w": jnp.asarray([1.0, -2.0, 3.0]), "b": jnp.asarray([5.0])}
    out = masks.apply(params, {"w": jnp.asarray([True, False, True]), "b": None})
    np.testing.assert_array_equal(out["w"], [1.0, 0.0, 3.0])
    np.testing.assert_array_equal(out["b"], [5.0])
