"""Masks from scores: exact top-k (global or per leaf), N:M, and sparsity reports.

Score and mask pytrees may hold ``None`` where a parameter is not prunable; such leaves are
skipped. Masks are boolean arrays shaped like their scores (True = kept), so they take the
same sharding as the parameters (also on meshes with ``Explicit`` axes, where every array
built here carries its score's sharding in its type).

The top-k never sorts. Scores are ordered by order-preserving unsigned keys and the k-th
largest key is found by bisection on its bits: each step is one count (a fused
compare-and-sum over every leaf, comparing the scores with the float of the candidate key),
so the search is exact, costs O(n) per step and runs on sharded leaves without gathering
them. It stops as soon as a prefix has exactly k keys at or above it (typically after 20 to
30 steps on continuous scores). Ties at the threshold are broken by position (earlier leaf in
``jax.tree.leaves`` order, then lower flat index wins): only the one leaf holding the cut
among the ties is searched, by bisection on the index. NaN ranks lowest, -0.0 ties with 0.0,
and on backends that flush denormals (XLA:CPU, TPU) denormals tie with 0.

The search runs on stacks: the leaves of one shape and sharding stacked along a new first
axis (a copy of the scores while the masks are computed, sharded like the leaves; on Auto
mesh axes, XLA may reshard a leaf whose sharding differs from its stack's). Its program is a
few operations per stack, and each leaf's mask one comparison that every leaf of its shape
shares, so compile time grows linearly with the number of leaves (XLA's passes grew with the
square of the operations in a loop body; ``benchmarks/compile_time.py``).

Scores are ranked exactly in their own precision: float16, bfloat16 and float32 as float32
(an exact widening), float64 (with ``jax_enable_x64``) on 64-bit keys; a group that mixes
float64 with narrower leaves is ranked in float64. Integer and boolean scores are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxprune import _checks, paths


class _KeyFormat(NamedTuple):
    """The order-preserving key of one float width: ``float`` values, ``uint`` keys."""

    float: Any
    uint: Any
    bits: int

    @property
    def sign(self) -> np.unsignedinteger:
        return self.uint.type(1) << self.uint.type(self.bits - 1)

    @property
    def pos_inf_key(self) -> np.unsignedinteger:  # _keys(+inf)
        inf = np.asarray(np.inf, self.float).view(self.uint)
        return self.uint.type(inf | self.sign)

    @property
    def neg_inf_key(self) -> np.unsignedinteger:  # _keys(-inf)
        return self.uint.type(~np.asarray(-np.inf, self.float).view(self.uint))

    @property
    def top(self) -> np.unsignedinteger:
        return self.uint.type(np.iinfo(self.uint).max)


_F32 = _KeyFormat(np.dtype(np.float32), np.dtype(np.uint32), 32)
_F64 = _KeyFormat(np.dtype(np.float64), np.dtype(np.uint64), 64)


def _format(leaves: list[jax.Array]) -> _KeyFormat:
    """float64 keys when any leaf is float64, else float32 (exact for every narrower float)."""
    return _F64 if any(jnp.dtype(s.dtype) == jnp.float64 for s in leaves) else _F32


def _check_scores(scores: Any) -> None:
    """TypeError naming the first leaf whose scores are not floating point."""
    for path, s in jax.tree_util.tree_flatten_with_path(scores)[0]:
        if not jnp.issubdtype(jnp.result_type(s), jnp.floating):
            raise TypeError(
                f"scores at {paths.path_str(path)} have dtype {jnp.result_type(s)}; scores "
                "must be floating point (cast them, e.g. .astype(jnp.float32))"
            )


def _keys(scores: jax.Array, fmt: _KeyFormat) -> jax.Array:
    """Order-preserving float -> unsigned map; NaN ranks lowest, -0.0 equals +0.0."""
    x = scores.astype(fmt.float)
    x = jnp.where(x == 0, jnp.zeros_like(x), x)
    bits = lax.bitcast_convert_type(x, fmt.uint)
    keys = jnp.where(bits >= fmt.sign, ~bits, bits | fmt.sign)
    return jnp.where(jnp.isnan(x), jnp.zeros_like(keys), keys)


def _kept_count(density: jax.Array, n: Any) -> jax.Array:
    """``round(density * n)`` as int32, clipped to [0, n] (float32 arithmetic), for a size
    ``n`` or an array of sizes."""
    n = np.asarray(n, np.float32)
    return jnp.clip(jnp.round(density * n), 0, n).astype(jnp.int32)


def _check_sparsity(sparsity: Any) -> None:
    try:
        value = float(sparsity)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # traced: checked when it runs (_checks.sparsity_in_range)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {value}")


def explicit_sharding(x: jax.Array) -> Any:
    """The sharding in ``x``'s type where its mesh has Explicit axes (arrays built to match
    ``x`` must carry it), else None (Auto axes: the compiler propagates shardings)."""
    sharding = jax.typeof(x).sharding
    types = getattr(sharding.mesh, "axis_types", ())
    return sharding if any(t == jax.sharding.AxisType.Explicit for t in types) else None


def placed_like(x: jax.Array, like: Any) -> jax.Array:
    """``x`` resharded to ``like``'s sharding type where ``like`` is on a mesh with Explicit
    axes (so that values built to stand for ``like`` match it, e.g. across ``lax.cond``
    branches); ``x`` as it is otherwise."""
    sharding = explicit_sharding(like) if isinstance(like, jax.Array) else None
    if sharding is not None and jax.typeof(x).sharding != sharding:
        return jax.sharding.reshard(x, sharding)
    return x


def _flat_index(x: jax.Array, start: int = 0) -> jax.Array:
    """int32 row-major flat index of every entry of ``x`` over its axes from ``start`` on,
    shaped and sharded like ``x`` (no flattening: that would gather a sharded leaf)."""
    sharding = explicit_sharding(x)
    index = jnp.zeros(x.shape, jnp.int32)
    stride = 1
    for dim in reversed(range(start, x.ndim)):
        iota = lax.broadcasted_iota(jnp.int32, x.shape, dim, out_sharding=sharding)
        index = index + iota * stride if dim < x.ndim - 1 else iota
        stride *= x.shape[dim]
    return index


class _Stack(NamedTuple):
    """The leaves of one shape and sharding, stacked along a new first axis (one row each)."""

    leaves: np.ndarray  # int: the rows' leaf indices, in leaf order
    groups: np.ndarray  # int: the rows' groups
    values: jax.Array  # (rows, *shape), the key format's float; sharded like the leaves


def _stacks(values: list[jax.Array], groups: list[int]) -> list[_Stack]:
    by_type: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        by_type.setdefault((v.shape, explicit_sharding(v)), []).append(i)
    return [
        _Stack(
            np.asarray(m),
            np.asarray(groups)[m],
            values[m[0]][None] if len(m) == 1 else jnp.stack([values[i] for i in m]),
        )
        for m in by_type.values()
    ]


def _along_rows(vector: jax.Array, like: jax.Array) -> jax.Array:
    """A vector with one entry per row of ``like``, shaped to broadcast against it."""
    return vector.reshape(-1, *(1,) * (like.ndim - 1))


def _leaf_rows(table: jax.Array) -> list[jax.Array]:
    """``list(table)``: the rows of a (leaves, k) table, each read by a one-hot selection.

    XLA:CPU compiles every distinct kernel (about 10 ms each) and identical kernels once. A
    static slice per row would make each leaf's mask a kernel of its own; a one-hot selection
    keeps the row's index in a constant outside the kernel, so that the masks of all leaves of
    one shape share their kernels. The rows are laid out on a grid of about sqrt(n) x sqrt(n),
    so that the one-hot constants total O(n) entries.
    """
    n = table.shape[0]
    cols = math.ceil(math.sqrt(n))
    lines = math.ceil(n / cols)
    grid = jnp.pad(table, ((0, lines * cols - n), (0, 0))).reshape(lines, cols, -1)
    zeros = jnp.zeros_like(grid)
    eye_lines, eye_cols = np.eye(lines, dtype=bool), np.eye(cols, dtype=bool)
    rows = []
    for i in range(n):
        line, col = divmod(i, cols)
        in_col = lax.broadcast_in_dim(eye_cols[col], grid.shape, (1,))
        in_line = lax.broadcast_in_dim(eye_lines[line], grid.shape, (0,))
        picked = lax.select(in_line, lax.select(in_col, grid, zeros), zeros)
        rows.append(jnp.max(picked, axis=(0, 1)))
    return rows


def _scattered_sum(values: list[jax.Array], indices: list[Any], size: int) -> jax.Array:
    """int32[size]: every ``values[j]`` added at its ``indices[j]``."""
    total = jnp.zeros((size,), jnp.int32)
    for v, index in zip(values, indices, strict=True):
        total = total + jax.ops.segment_sum(v, index, size)
    return total


def _row_counts(hits: jax.Array) -> jax.Array:
    """int32[rows]: the True entries of every row (first axis) of a bool array.

    XLA:CPU splits a sum over a long axis into a tree whose first level reads a stored copy of
    its input; summing runs of 32 entries of a row's first axis in int8 first keeps the
    comparison fused into one pass, twice as fast or more. Other backends, whose reductions
    fuse (and where splitting a sharded axis could move data), axes that do not split into
    runs of 32, and arrays sharded in their type (Explicit mesh axes) take one int32 sum.
    """
    axes = tuple(range(1, hits.ndim))
    if (
        jax.default_backend() == "cpu"
        and hits.ndim > 1
        and hits.shape[1] % 32 == 0
        and explicit_sharding(hits) is None
    ):
        runs = hits.reshape(hits.shape[0], hits.shape[1] // 32, 32, *hits.shape[2:])
        return jnp.sum(jnp.sum(runs, axis=2, dtype=jnp.int8), axis=axes, dtype=jnp.int32)
    return jnp.sum(hits, axis=axes, dtype=jnp.int32)


def grouped_topk(leaves: list[jax.Array], groups: list[int], ks: jax.Array) -> list[jax.Array]:
    """Keeps exactly ``ks[g]`` largest entries within each group of leaves (the engine of
    :func:`topk`; use it directly for per-matrix counts, e.g. SMP-S's ratios).

    Leaves of one shape (and sharding) are searched as one stack: the search is a few
    operations per distinct shape, and compile time grows linearly with the leaves. The stacks
    are one copy of the scores while the masks are computed (on XLA:CPU about 14% of the
    search's time for BERT-base's 85M scores).

    Args:
      leaves: floating-point score arrays.
      groups: group index of every leaf (0..G-1); every group needs at least one leaf.
      ks: int32[G], number of entries to keep per group (clipped to the group's size).

    Raises:
      ValueError: ``groups`` and ``leaves`` differ in length, or a group has no leaf.
      TypeError: a leaf is not floating point.
    """
    n_groups = int(ks.shape[0]) if jnp.ndim(ks) == 1 else -1
    if n_groups < 1 or len(groups) != len(leaves):
        raise ValueError(
            f"grouped_topk needs one group index per leaf and ks of shape (G,): got "
            f"{len(leaves)} leaves, {len(groups)} group indices, ks of shape {jnp.shape(ks)}"
        )
    empty = sorted(set(range(n_groups)) - set(groups))
    stray = sorted({g for g in groups if not 0 <= g < n_groups})
    if empty or stray:
        raise ValueError(
            f"grouped_topk: every group 0..{n_groups - 1} needs at least one leaf; "
            f"groups without leaves: {empty}, group indices out of range: {stray}"
        )
    _check_scores(leaves)
    fmt = _format(leaves)
    values = [s.astype(fmt.float) for s in leaves]
    stacks = _stacks(values, groups)
    group_of = np.asarray(groups)
    size_of = np.asarray([s.size for s in leaves], np.int32)
    sizes = jnp.asarray(np.bincount(group_of, size_of, n_groups), jnp.int32)
    ks = jnp.clip(jnp.asarray(ks, jnp.int32), 0, sizes)

    def unfinished(state):
        bit, _, n_prefix = state
        return (bit < fmt.bits) & jnp.any(n_prefix != ks)

    def key_bit(state):
        bit, prefix, n_prefix = state
        one = jnp.ones((), fmt.uint)
        cand = prefix | jnp.left_shift(one, (fmt.bits - 1 - bit).astype(fmt.uint))
        value = _key_value(cand, fmt)
        hits = [s.values >= _along_rows(value[s.groups], s.values) for s in stacks]
        n_ge = _scattered_sum([_row_counts(h) for h in hits], [s.groups for s in stacks], n_groups)
        take = n_ge >= ks
        return bit + 1, jnp.where(take, cand, prefix), jnp.where(take, n_ge, n_prefix)

    # tau: the largest key prefix with at least ks[g] keys at or above it. The search stops
    # once every group has exactly ks[g] there (then the mask is keys >= tau); a group that
    # needs every bit ends at its k-th largest key, tied across the cut.
    start = (jnp.int32(0), jnp.zeros((n_groups,), fmt.uint), sizes)
    _, tau, n_tau = lax.while_loop(unfinished, key_bit, start)

    # Per leaf, the index bound below which entries equal to tau are kept: all of them in a
    # group with exactly ks[g] keys >= tau (the usual case: the mask is then keys >= tau);
    # the tie search runs only when some group needs it.
    full = jnp.asarray(size_of)
    tie_search = functools.partial(_tie_bounds, stacks, group_of, size_of, tau, n_tau, ks, fmt)
    bounds = lax.cond(jnp.any(n_tau != ks), tie_search, lambda: full)
    # The masks, one fused comparison per leaf: keys above tau, and keys equal to it below the
    # leaf's bound.
    key = tau[group_of]
    bits = functools.partial(lax.bitcast_convert_type, new_dtype=fmt.uint)
    columns = [bits(_above_value(key, fmt)), bits(_key_value(key, fmt)), key == 0, bounds]
    rows = _leaf_rows(jnp.stack([c.astype(fmt.uint) for c in columns], axis=1))
    index: dict[int, jax.Array] = {}
    for s in stacks:  # one flat index per shape and sharding
        index |= dict.fromkeys(s.leaves.tolist(), _flat_index(values[s.leaves[0]]))
    masks = []
    for i, (v, row) in enumerate(zip(values, rows, strict=True)):
        above, at_least = lax.bitcast_convert_type(row[:2], fmt.float)
        bound = row[3].astype(jnp.int32)
        at_cut = ((v >= at_least) | (row[2] > 0)) & (index[i] < bound)
        masks.append((v >= above) | at_cut)
    return masks


def _tie_bounds(
    stacks: list[_Stack],
    group_of: np.ndarray,
    size_of: np.ndarray,
    tau: jax.Array,
    n_tau: jax.Array,
    ks: jax.Array,
    fmt: _KeyFormat,
) -> jax.Array:
    """int32[leaves]: the flat index bound below which a leaf keeps its entries equal to its
    group's ``tau``, for groups whose k-th largest key is tied across the cut (``n_tau[g] >
    ks[g]``; every other leaf keeps them all).

    Ties are kept in position order, so only one leaf of a group is cut, its holder: earlier
    members keep all their ties, later ones none. The cut is a bisection on the index inside
    the holders only (a stack with more rows than there are groups is searched on its
    holders' rows alone)."""
    n, n_groups = len(group_of), len(ks)
    above = [_above(s.values, _along_rows(tau[s.groups], s.values), fmt) for s in stacks]
    tied = [
        _at_least(s.values, _along_rows(tau[s.groups], s.values), fmt) & ~a
        for s, a in zip(stacks, above, strict=True)
    ]
    groups = [s.groups for s in stacks]
    need = ks - _scattered_sum([_row_counts(a) for a in above], groups, n_groups)
    ties = _scattered_sum([_row_counts(t) for t in tied], [s.leaves for s in stacks], n)
    # ties in the earlier leaves of each group: a cumsum in (group, leaf) order
    order = np.argsort(group_of, kind="stable")
    first = np.searchsorted(group_of[order], group_of[order])
    exclusive = jnp.cumsum(ties[order]) - ties[order]
    before = jnp.zeros_like(ties).at[order].set(exclusive - exclusive[first])
    need_of = need[group_of]
    holder = (before < need_of) & (need_of <= before + ties)
    holder_of = jax.ops.segment_max(jnp.where(holder, jnp.arange(n), -1), group_of, n_groups)
    h = jnp.maximum(holder_of, 0)
    need_in = need - before[h]  # ties to keep inside the holder

    # the rows searched per stack: (bool rows, group per row, row holds its group's cut)
    stack_of, row_of = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for j, s in enumerate(stacks):
        stack_of[s.leaves], row_of[s.leaves] = j, np.arange(len(s.leaves))
    searched = []
    for j, (s, t) in enumerate(zip(stacks, tied, strict=True)):
        if len(s.leaves) <= n_groups:
            searched.append((t, s.groups, holder[s.leaves]))
        else:
            rows = jnp.take(t, jnp.asarray(row_of)[h], axis=0, mode="clip")
            searched.append((rows, np.arange(n_groups), jnp.asarray(stack_of)[h] == j))
    # one row's index, broadcast over the rows (a stack's worth of int32 would be live
    # through the search: BERT-base's is 0.32 GiB)
    index = [_flat_index(t[:1], start=1) for t, _, _ in searched]
    bits = max(1, math.ceil(math.log2(int(size_of.max()) + 1)))

    def pos_bit(b, lo):
        cand = lo + (jnp.int32(1) << (bits - 1 - b))
        below = [
            jnp.where(cuts, _row_counts(t & (i < _along_rows(cand[g], t))), 0)
            for (t, g, cuts), i in zip(searched, index, strict=True)
        ]
        below_total = _scattered_sum(below, [g for _, g, _ in searched], n_groups)
        return jnp.where(below_total < need_in, cand, lo)

    # lo ends as the largest J with fewer than need_in ties below J in the holder.
    cut = lax.fori_loop(0, bits, pos_bit, jnp.zeros((n_groups,), jnp.int32)) + 1
    bound = jnp.where(holder, cut[group_of], jnp.where(before + ties < need_of, size_of, 0))
    return jnp.where((n_tau == ks)[group_of], size_of, bound).astype(jnp.int32)


def _key_value(key: jax.Array, fmt: _KeyFormat) -> jax.Array:
    """The float ``v`` with ``x >= v  <=>  _keys(x) >= key`` for every float ``x`` of the
    format, for a key ``>= 1``: the search counts with float comparisons, which XLA:CPU runs
    about 1.6x faster than computing keys (every pass is one compare-and-count over the
    scores).

    Keys with no float (NaN bit patterns) map to -inf below ``_keys(-inf)`` (every non-NaN
    entry passes, NaN never) and to NaN above ``_keys(+inf)`` (nothing passes). Backends that
    flush denormals (XLA:CPU, TPU) compare them as zeros: the search then treats them as ties
    of 0, and still keeps exactly k entries, since every count uses this one comparison."""
    bits = jnp.where(key >= fmt.sign, key ^ fmt.sign, ~key)
    value = lax.bitcast_convert_type(bits, fmt.float)
    value = jnp.where(key < fmt.neg_inf_key, -jnp.inf, value)
    return jnp.where(key > fmt.pos_inf_key, jnp.nan, value)


def _at_least(x: jax.Array, key: jax.Array, fmt: _KeyFormat) -> jax.Array:
    """``_keys(x) >= key`` for any ``key`` (all of x, NaN included, at key 0)."""
    return (x >= _key_value(key, fmt)) | (key == 0)


def _above_value(key: jax.Array, fmt: _KeyFormat) -> jax.Array:
    """The float ``v`` with ``x >= v  <=>  _keys(x) > key`` for any ``key`` (NaN, which no
    comparison passes, at the top key)."""
    return _key_value(jnp.where(key == fmt.top, key, key + 1), fmt)


def _above(x: jax.Array, key: jax.Array, fmt: _KeyFormat) -> jax.Array:
    """``_keys(x) > key`` for any ``key``."""
    return x >= _above_value(key, fmt)


def topk(
    scores: Any,
    sparsity: chex.Numeric,
    *,
    scope: Literal["global", "local"] = "global",
) -> Any:
    """Boolean masks keeping the highest scores.

    Keeps exactly ``round((1 - sparsity) * n)`` entries, where ``n`` counts every entry of
    every leaf (``scope="global"``) or of each leaf separately (``scope="local"``). The count
    is computed in float32, so it is exact for ``n < 2**24`` and within ``n * 2**-24`` of the
    real-valued product beyond that. Ties are broken by position: earlier leaf, then lower
    flat index. NaN scores rank below everything.

    Args:
      scores: pytree of floating-point arrays (``None`` leaves are skipped and stay ``None``).
      sparsity: fraction to prune, in [0, 1); may be traced (a traced value outside [0, 1)
        raises when the computation runs: a ``JaxRuntimeError`` carrying the ValueError).
      scope: one threshold over all leaves, or one per leaf.

    Returns:
      A pytree of bool arrays shaped like ``scores``.
    """
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    _check_sparsity(sparsity)
    if not jax.tree.leaves(scores):
        raise ValueError("topk got a score tree with no arrays")
    _check_scores(scores)
    return _topk(scores, jnp.asarray(sparsity, jnp.float32), scope)


@functools.partial(jax.jit, static_argnums=2)
def _topk(scores: Any, sparsity: jax.Array, scope: str) -> Any:
    _checks.sparsity_in_range(sparsity, "masks.topk")
    return topk_unchecked(scores, sparsity, scope)


def topk_unchecked(scores: Any, sparsity: jax.Array, scope: str) -> Any:
    """:func:`topk` for callers that have checked ``scores`` and the traced ``sparsity``."""
    leaves, treedef = jax.tree.flatten(scores)
    density = 1.0 - sparsity
    if scope == "global":
        groups = [0] * len(leaves)
        ks = _kept_count(density, sum(s.size for s in leaves))[None]
    else:
        groups = list(range(len(leaves)))
        ks = _kept_count(density, [s.size for s in leaves])
    return jax.tree.unflatten(treedef, grouped_topk(leaves, groups, ks))


def nm(scores: Any, n: int, m: int, axis: int = -1) -> Any:
    """N:M masks: in every run of ``m`` consecutive entries along ``axis``, keep the ``n`` best.

    Ties are broken by the lower index. ``nm(scores, 2, 4)`` gives the 2:4 pattern that sparse
    tensor cores accelerate (for a Flax kernel of shape (in, out), ``axis=0`` groups along the
    reduction dimension, as those kernels need).

    Raises:
      ValueError: if ``not 0 < n <= m``, a leaf is a scalar, or a leaf's ``axis`` is not
        divisible by ``m`` (the path is named).
      TypeError: a leaf is not floating point.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < n <= m, got n={n}, m={m}")
    _check_scores(scores)

    def one(path, s):
        s = jnp.asarray(s)
        if s.ndim == 0:
            raise ValueError(
                f"N:M groups entries along an axis; {paths.path_str(path)} is a scalar "
                "(leave it out of the prunable selection)"
            )
        if not -s.ndim <= axis < s.ndim:
            raise ValueError(
                f"N:M axis={axis} is out of range for {paths.path_str(path)} of shape {s.shape}"
            )
        ax = axis % s.ndim
        if s.shape[ax] % m:
            raise ValueError(
                f"N:M with m={m}: dimension {ax} of {paths.path_str(path)} has size "
                f"{s.shape[ax]}, not divisible by {m}"
            )
        moved = jnp.moveaxis(_keys(s, _format([s])), ax, -1)
        grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
        # Descending by key, ascending by index: stable sort of the negated order.
        order = jnp.argsort(~grouped, axis=-1, stable=True)
        rank = jnp.argsort(order, axis=-1, stable=True)
        keep = (rank < n).reshape(moved.shape)
        return jnp.moveaxis(keep, -1, ax)

    return jax.tree_util.tree_map_with_path(one, scores)


def _is_unpruned(x: Any) -> bool:
    """A mask leaf that stands for "not pruned": ``None``, or the ``optax.MaskedNode`` that
    ``optax.masked`` / ``optax.multi_transform`` put where their inner state has no leaf."""
    return x is None or isinstance(x, optax.MaskedNode)


def _by_path(masks: Any, params: Any) -> list[Any]:
    """The mask of every leaf of ``params`` (None where not pruned), matched by path so that
    masks from an ``nnx.Optimizer`` state (leaves under ``.../value``) and from
    ``optax.masked`` (``MaskedNode`` where not pruned) line up with plain params.

    Raises:
      ValueError: the two trees do not have the same paths, or a mask's shape differs.
    """
    flat_m = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_unpruned)[0]
    by_path = {paths.path_str(k): None if _is_unpruned(m) else m for k, m in flat_m}
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    names = [paths.path_str(k) for k, _ in flat_p]
    missing = [n for n in names if n not in by_path]
    extra = sorted(set(by_path) - set(names))
    if missing or extra:
        raise ValueError(
            "masks do not match the tree of params: "
            + "; ".join(
                part
                for part in (
                    f"no mask for {missing[:5]}" if missing else "",
                    f"masks for paths params lack: {extra[:5]}" if extra else "",
                )
                if part
            )
        )
    out = []
    for name, (_, p) in zip(names, flat_p, strict=True):
        m = by_path[name]
        if m is not None and np.shape(m) != np.shape(p):
            raise ValueError(
                f"masks at {name} has shape {np.shape(m)}, expected {np.shape(p)} as in params"
            )
        out.append(m)
    return out


def apply(params: Any, masks: Any) -> Any:
    """Zeroes the pruned entries: ``where(mask, param, 0)``; leaves with a ``None`` mask pass.

    Masks are matched to params by path (see :func:`sparsity_report`). On Explicit mesh
    axes a mask laid out otherwise than its param (``Sharding(shard_state=True)`` splits
    masks over ``data``, not params) is resharded to the param's layout first."""
    flat, treedef = jax.tree.flatten(params)

    def one(m: Any, p: Any) -> Any:
        if m is None:
            return p
        return jnp.where(placed_like(m, p), p, jnp.zeros_like(p))

    return jax.tree.unflatten(
        treedef, [one(m, p) for m, p in zip(_by_path(masks, params), flat, strict=True)]
    )


def sparsity(tree: Any, prunable: paths.Prunable | None = None) -> jax.Array:
    """Fraction of entries that are pruned: False in bool masks, exact zeros otherwise.

    Every leaf counts, so on a params tree a fresh model's zero-initialised biases count as
    pruned; pass ``prunable`` (the selection given to :func:`jaxprune.masked_optimizer`) to
    count only the pruned leaves, or use :func:`sparsity_report` with the masks.
    """
    if prunable is not None:
        chosen = jax.tree.leaves(paths.select(tree, prunable))
        leaves = [jnp.asarray(x) for x, k in zip(jax.tree.leaves(tree), chosen, strict=True) if k]
    else:
        leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree)]
    if not leaves:
        raise ValueError("sparsity of an empty tree")
    total = sum(x.size for x in leaves)
    zeros = sum((jnp.sum(x == 0, dtype=jnp.float32) for x in leaves), jnp.float32(0))
    return zeros / total


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One leaf of a :class:`SparsityReport`: ``kept`` entries of ``size`` (the mask's True
    entries, or the non-zeros when no masks are given) and the leaf's non-zero ``nonzero``
    entries."""

    path: str
    shape: tuple[int, ...]
    kept: int
    size: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-leaf kept counts of the prunable leaves; ``str()`` renders a table that says what
    it counts.

    Attributes:
      rows: one per reported leaf.
      other_params: entries of leaves that are not pruned.
      counted: ``"masks"`` (kept = True mask entries) or ``"nonzeros"`` (kept = non-zero
        parameter entries: no masks were given).
    """

    rows: tuple[ReportRow, ...]
    other_params: int
    counted: Literal["masks", "nonzeros"] = "masks"

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.rows)

    @property
    def size(self) -> int:
        return sum(r.size for r in self.rows)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.size if self.size else 0.0

    @property
    def unmasked_nonzeros(self) -> int:
        """Non-zero parameter entries beyond what the masks keep: pruned weights that still
        hold values (``hold_pruned=False`` between mask updates, or params never masked)."""
        return sum(max(r.nonzero - r.kept, 0) for r in self.rows)

    def __str__(self) -> str:
        width = max([len(r.path) for r in self.rows] + [len("total (prunable)")])
        head = f"{'path':<{width}}  {'shape':>14}  {'kept':>11}  {'sparsity':>8}"
        what = (
            "kept = entries the masks keep (True)"
            if self.counted == "masks"
            else "kept = non-zero entries (no masks given: every leaf, zero biases count as pruned)"
        )
        lines = [what, head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(map(str, r.shape)) or "()"
            lines.append(f"{r.path:<{width}}  {shape:>14}  {r.kept:>11,}  {r.sparsity:>8.2%}")
        lines.append("-" * len(head))
        total = f"{'total (prunable)':<{width}}  {self.size:>14,}"
        lines.append(f"{total}  {self.kept:>11,}  {self.sparsity:>8.2%}")
        lines.append(f"not pruned: {self.other_params:,} entries in other leaves")
        if self.counted == "masks" and self.unmasked_nonzeros:
            lines.append(
                f"note: the params hold {self.unmasked_nonzeros:,} non-zero entries where the "
                "masks prune (pruned weights that train between mask updates, "
                "hold_pruned=False); jaxprune.masks.apply(params, masks) zeroes them"
            )
        return "\n".join(lines)


def sparsity_report(params: Any, masks: Any | None = None) -> SparsityReport:
    """Per-leaf table of path, shape, kept entries and sparsity.

    Args:
      params: parameter pytree (plain, or an ``nnx.State``).
      masks: mask pytree from :func:`jaxprune.masks_of` (``None`` leaves = not prunable),
        matched to ``params`` by path: masks from an ``nnx.Optimizer``'s state and from
        ``optax.masked`` / ``optax.multi_transform`` (``MaskedNode`` where not prunable)
        work too. When omitted, every leaf is reported and its non-zeros count as kept.

    Raises:
      ValueError: masks and params have different paths or shapes (the paths are named).
    """
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_m = [None] * len(flat_p) if masks is None else _by_path(masks, params)
    rows, other = [], 0
    for (path, p), m in zip(flat_p, flat_m, strict=True):
        p = np.asarray(p)
        if m is None and masks is not None:
            other += p.size
            continue
        nonzero = int(np.count_nonzero(p))
        kept = nonzero if m is None else int(np.count_nonzero(np.asarray(m)))
        rows.append(ReportRow(paths.path_str(path), tuple(p.shape), kept, int(p.size), nonzero))
    return SparsityReport(tuple(rows), other, "nonzeros" if masks is None else "masks")


__all__ = [
    "ReportRow",
    "SparsityReport",
    "apply",
    "explicit_sharding",
    "grouped_topk",
    "nm",
    "placed_like",
    "sparsity",
    "sparsity_report",
    "topk",
    "topk_unchecked",
]
