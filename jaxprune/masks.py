"""Masks from scores: exact top-k (global or per leaf), N:M, and sparsity reports.

Score and mask pytrees may hold ``None`` where a parameter is not prunable; such leaves are
skipped. Masks are boolean arrays shaped like their scores (True = kept), so they take the
same sharding as the parameters.

The global top-k never concatenates or sorts the model. Scores are ordered by
order-preserving uint32 keys and the k-th largest key is found by bisection on its 32 bits:
each step is one count (a fused compare-and-sum over every leaf, comparing the scores with the
float32 of the candidate key), so the search is exact, costs O(n) per step and runs on sharded
leaves without gathering them. It stops as soon as a prefix has exactly k keys at or above it
(typically after 20 to 30 steps on continuous scores). Ties at the threshold are broken by
position (earlier leaf in ``jax.tree.leaves`` order, then lower flat index wins): only the one
leaf holding the cut among the ties is searched, by bisection on the index. NaN ranks lowest,
-0.0 ties with 0.0, and on backends that flush denormals (XLA:CPU, TPU) denormals tie with 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxprune import paths

_SIGN = np.uint32(0x80000000)
_POS_INF_KEY = np.uint32(0xFF800000)  # _keys(+inf)
_NEG_INF_KEY = np.uint32(0x007FFFFF)  # _keys(-inf)


def _keys(scores: jax.Array) -> jax.Array:
    """Order-preserving float32 -> uint32 map; NaN ranks lowest, -0.0 equals +0.0."""
    x = scores.astype(jnp.float32)
    x = jnp.where(x == 0, jnp.zeros_like(x), x)
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    keys = jnp.where(bits >= _SIGN, ~bits, bits | _SIGN)
    return jnp.where(jnp.isnan(x), jnp.uint32(0), keys)


def _kept_count(density: jax.Array, n: int) -> jax.Array:
    """``round(density * n)`` as int32, clipped to [0, n] (float32 arithmetic)."""
    return jnp.clip(jnp.round(density * n), 0, n).astype(jnp.int32)


def _check_sparsity(sparsity: Any) -> None:
    try:
        value = float(sparsity)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # traced: checked where the schedule is built
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {value}")


def grouped_topk(leaves: list[jax.Array], groups: list[int], ks: jax.Array) -> list[jax.Array]:
    """Keeps exactly ``ks[g]`` largest entries within each group of leaves (the engine of
    :func:`topk`; use it directly for per-matrix counts, e.g. SMP-S's ratios).

    Args:
      leaves: score arrays.
      groups: group index of every leaf (0..G-1).
      ks: int32[G], number of entries to keep per group.
    """
    n_groups = int(ks.shape[0])
    members = [[i for i, g in enumerate(groups) if g == j] for j in range(n_groups)]
    values = [s.astype(jnp.float32) for s in leaves]

    def count_ge(key: jax.Array, g: int) -> jax.Array:  # int32: group g's entries >= key
        return sum((_count(values[i] >= _key_value(key)) for i in members[g]), jnp.int32(0))

    def unfinished(state):
        bit, _, n_prefix = state
        return (bit < 32) & jnp.any(n_prefix != ks)

    def key_bit(state):
        bit, prefix, n_prefix = state
        cand = prefix | jnp.left_shift(jnp.uint32(1), (31 - bit).astype(jnp.uint32))
        n_ge = jnp.stack([count_ge(cand[g], g) for g in range(n_groups)])
        take = n_ge >= ks
        return bit + 1, jnp.where(take, cand, prefix), jnp.where(take, n_ge, n_prefix)

    # tau: the largest key prefix with at least ks[g] keys at or above it. The search stops
    # once every group has exactly ks[g] there (then the mask is keys >= tau); a group that
    # needs all 32 bits ends at its k-th largest key, tied across the cut.
    sizes = jnp.asarray([sum(leaves[i].size for i in m) for m in members], jnp.int32)
    start = (jnp.int32(0), jnp.zeros((n_groups,), jnp.uint32), sizes)
    _, tau, n_tau = lax.while_loop(unfinished, key_bit, start)

    def tie_bounds(g: int) -> list[jax.Array]:
        # Group g's k-th largest key is tied across the cut. Ties are kept in position order,
        # so only one leaf of the group is cut: earlier members keep all their ties, later
        # ones none. Bisect on the index inside that leaf only.
        m = members[g]
        above = [_above(values[i], tau[g]) for i in m]
        tied = [_at_least(values[i], tau[g]) & ~a for i, a in zip(m, above, strict=True)]
        need = ks[g] - sum(_count(a) for a in above)  # ties to keep
        ties = jnp.stack([_count(t) for t in tied])
        before = jnp.cumsum(ties) - ties
        holder = jnp.argmax(before + ties >= need)
        need_in = need - before[holder]
        branches = [functools.partial(_tie_bound, t, need_in) for t in tied]
        cut = lax.switch(holder, branches) if len(m) > 1 else branches[0]()
        return [
            jnp.where(j < holder, leaves[i].size, jnp.where(j == holder, cut, 0))
            for j, i in enumerate(m)
        ]

    # Per leaf, the index bound below which entries equal to tau are kept: all of them in a
    # group with exactly ks[g] keys >= tau (the usual case: the mask is then keys >= tau);
    # only the other groups run the tie search.
    bounds = [jnp.int32(s.size) for s in leaves]
    for g, m in enumerate(members):
        whole = [bounds[i] for i in m]
        cut = lax.cond(n_tau[g] == ks[g], lambda w=whole: w, functools.partial(tie_bounds, g))
        for i, b in zip(m, cut, strict=True):
            bounds[i] = b
    masks = []
    for i, s in enumerate(leaves):
        t = tau[groups[i]]
        index = jnp.arange(s.size, dtype=jnp.int32).reshape(s.shape)
        masks.append(_above(values[i], t) | (_at_least(values[i], t) & (index < bounds[i])))
    return masks


def _key_value(key: jax.Array) -> jax.Array:
    """The float32 ``v`` with ``x >= v  <=>  _keys(x) >= key`` for every float32 ``x``, for a
    uint32 ``key >= 1``: the search counts with float comparisons, which XLA:CPU runs about
    1.6x faster than computing keys (every pass is one compare-and-count over the scores).

    Keys with no float (NaN bit patterns) map to -inf below ``_keys(-inf)`` (every non-NaN
    entry passes, NaN never) and to NaN above ``_keys(+inf)`` (nothing passes). Backends that
    flush denormals (XLA:CPU, TPU) compare them as zeros: the search then treats them as ties
    of 0, and still keeps exactly k entries, since every count uses this one comparison."""
    bits = jnp.where(key >= _SIGN, key ^ _SIGN, ~key)
    value = lax.bitcast_convert_type(bits, jnp.float32)
    value = jnp.where(key < _NEG_INF_KEY, -jnp.inf, value)
    return jnp.where(key > _POS_INF_KEY, jnp.nan, value)


def _at_least(x: jax.Array, key: jax.Array) -> jax.Array:
    """``_keys(x) >= key`` for any uint32 ``key`` (all of x, NaN included, at key 0)."""
    return (x >= _key_value(key)) | (key == 0)


def _above(x: jax.Array, key: jax.Array) -> jax.Array:
    """``_keys(x) > key`` for any uint32 ``key``."""
    top = key == jnp.uint32(0xFFFFFFFF)
    return (x >= _key_value(jnp.where(top, key, key + 1))) & ~top


def _count(hits: jax.Array) -> jax.Array:
    """int32: the True entries of a bool array.

    XLA:CPU splits a sum over a long axis into a tree whose first level reads a stored copy of
    its input; summing runs of 32 entries of the first axis in int8 first keeps the comparison
    fused into one pass, twice as fast or more. Other backends, whose reductions fuse (and
    where splitting a sharded axis could move data), and first axes that do not split into
    runs of 32, take one int32 sum.
    """
    if jax.default_backend() == "cpu" and hits.ndim and hits.shape[0] % 32 == 0:
        runs = hits.reshape(hits.shape[0] // 32, 32, *hits.shape[1:])
        return jnp.sum(jnp.sum(runs, axis=1, dtype=jnp.int8), dtype=jnp.int32)
    return jnp.sum(hits, dtype=jnp.int32)


def _tie_bound(tied: jax.Array, need: jax.Array) -> jax.Array:
    """Smallest flat index bound J such that ``need`` True entries of ``tied`` lie below J."""
    bits = max(1, math.ceil(math.log2(tied.size + 1)))
    index = jnp.arange(tied.size, dtype=jnp.int32).reshape(tied.shape)  # no flattening:
    # that would gather a sharded leaf

    def pos_bit(b, lo):
        cand = lo + (jnp.int32(1) << (bits - 1 - b))
        return jnp.where(_count(tied & (index < cand)) < need, cand, lo)

    # lo ends as the largest J with fewer than `need` ties below it.
    return lax.fori_loop(0, bits, pos_bit, jnp.int32(0)) + 1


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
      scores: pytree of float arrays (``None`` leaves are skipped and stay ``None``).
      sparsity: fraction to prune, in [0, 1); may be traced.
      scope: one threshold over all leaves, or one per leaf.

    Returns:
      A pytree of bool arrays shaped like ``scores``.
    """
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    _check_sparsity(sparsity)
    if not jax.tree.leaves(scores):
        raise ValueError("topk got a score tree with no arrays")
    return _topk(scores, jnp.asarray(sparsity, jnp.float32), scope)


@functools.partial(jax.jit, static_argnums=2)
def _topk(scores: Any, sparsity: jax.Array, scope: str) -> Any:
    leaves, treedef = jax.tree.flatten(scores)
    density = 1.0 - sparsity
    if scope == "global":
        groups = [0] * len(leaves)
        ks = _kept_count(density, sum(s.size for s in leaves))[None]
    else:
        groups = list(range(len(leaves)))
        ks = jnp.stack([_kept_count(density, s.size) for s in leaves])
    return jax.tree.unflatten(treedef, grouped_topk(leaves, groups, ks))


def nm(scores: Any, n: int, m: int, axis: int = -1) -> Any:
    """N:M masks: in every run of ``m`` consecutive entries along ``axis``, keep the ``n`` best.

    Ties are broken by the lower index. ``nm(scores, 2, 4)`` gives the 2:4 pattern that sparse
    tensor cores accelerate (for a Flax kernel of shape (in, out), ``axis=0`` groups along the
    reduction dimension, as those kernels need).

    Raises:
      ValueError: if ``not 0 < n <= m`` or a leaf's ``axis`` is not divisible by ``m``.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < n <= m, got n={n}, m={m}")

    def one(path, s):
        s = jnp.asarray(s)
        ax = axis % s.ndim
        if s.shape[ax] % m:
            raise ValueError(
                f"N:M with m={m}: dimension {ax} of {paths.path_str(path)} has size "
                f"{s.shape[ax]}, not divisible by {m}"
            )
        moved = jnp.moveaxis(_keys(s), ax, -1)
        grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
        # Descending by key, ascending by index: stable sort of the negated order.
        order = jnp.argsort(~grouped, axis=-1, stable=True)
        rank = jnp.argsort(order, axis=-1, stable=True)
        keep = (rank < n).reshape(moved.shape)
        return jnp.moveaxis(keep, -1, ax)

    return jax.tree_util.tree_map_with_path(one, scores)


def apply(params: Any, masks: Any) -> Any:
    """Zeroes the pruned entries: ``where(mask, param, 0)``; leaves with a ``None`` mask pass."""
    return jax.tree.map(
        lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
        masks,
        params,
        is_leaf=lambda x: x is None,
    )


def sparsity(tree: Any) -> jax.Array:
    """Fraction of pruned entries over all leaves: False for bool masks, zeros otherwise."""
    leaves = [jnp.asarray(x) for x in jax.tree.leaves(tree)]
    if not leaves:
        raise ValueError("sparsity of an empty tree")
    total = sum(x.size for x in leaves)
    zeros = sum((jnp.sum(x == 0, dtype=jnp.float32) for x in leaves), jnp.float32(0))
    return zeros / total


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One leaf of a :class:`SparsityReport`."""

    path: str
    shape: tuple[int, ...]
    kept: int
    size: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-leaf kept counts of the prunable leaves; ``str()`` renders a table."""

    rows: tuple[ReportRow, ...]
    other_params: int  # entries of leaves that are not pruned

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.rows)

    @property
    def size(self) -> int:
        return sum(r.size for r in self.rows)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.size if self.size else 0.0

    def __str__(self) -> str:
        width = max([len(r.path) for r in self.rows] + [len("total (prunable)")])
        head = f"{'path':<{width}}  {'shape':>14}  {'kept':>11}  {'sparsity':>8}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(map(str, r.shape)) or "()"
            lines.append(f"{r.path:<{width}}  {shape:>14}  {r.kept:>11,}  {r.sparsity:>8.2%}")
        lines.append("-" * len(head))
        total = f"{'total (prunable)':<{width}}  {self.size:>14,}"
        lines.append(f"{total}  {self.kept:>11,}  {self.sparsity:>8.2%}")
        lines.append(f"not pruned: {self.other_params:,} entries in other leaves")
        return "\n".join(lines)


def sparsity_report(params: Any, masks: Any | None = None) -> SparsityReport:
    """Per-leaf table of path, shape, kept entries and sparsity.

    Args:
      params: parameter pytree.
      masks: mask pytree from :func:`jaxprune.masks_of` (``None`` leaves = not prunable). When
        omitted, every leaf is reported and its non-zeros count as kept.
    """
    flat_p, _ = jax.tree_util.tree_flatten_with_path(params)
    if masks is None:
        flat_m = [None] * len(flat_p)
        report_all = True
    else:
        paths.check_same_structure(
            params,
            jax.tree.map(
                lambda m, p: p if m is None else m, masks, params, is_leaf=lambda x: x is None
            ),
            what="masks",
        )
        flat_m = jax.tree.leaves(masks, is_leaf=lambda x: x is None)
        report_all = False
    rows, other = [], 0
    for (path, p), m in zip(flat_p, flat_m, strict=True):
        p = np.asarray(p)
        if m is None and not report_all:
            other += p.size
            continue
        kept = int(np.count_nonzero(np.asarray(m) if m is not None else p))
        rows.append(ReportRow(paths.path_str(path), tuple(p.shape), kept, int(p.size)))
    return SparsityReport(tuple(rows), other)
