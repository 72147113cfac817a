"""One-shot pruning of a trained layer from calibration inputs: magnitude, Wanda, SparseGPT.

A dense layer ``y = x @ kernel`` (Flax layout: ``kernel`` is (in, out)) is pruned once, no
retraining, from statistics of its inputs ``x`` over a few calibration batches:

- :func:`accumulate` sums ``X^T X`` (in, in) over the calibration tokens (padding left out),
  the only statistic either method needs (Wanda reads its diagonal);
- :func:`magnitude`: ``|W|``, one threshold over the layer (the papers' baseline);
- :func:`wanda` (Sun et al., ICLR 2024): score ``|W_ij| * ||X_i||_2``, each output's inputs
  ranked on their own (``int(in * sparsity)`` pruned per output), weights left as they are;
- :func:`sparsegpt` (Frantar & Alistarh, ICML 2023): column-wise optimal brain surgeon on the
  damped Hessian ``X^T X + lambda I``: input columns are pruned left to right, the error of
  each pruned weight is spread over the not yet visited inputs of its output through the
  upper Cholesky factor of the inverse Hessian, in blocks of ``blocksize`` columns with lazy
  updates of the rest; the mask is chosen per block from ``w^2 / [H^-1]_cc^2`` (adaptive
  mask selection), or per group of ``m`` inputs for N:M.

Each returns ``(kernel, mask)``: the pruned kernel with exact zeros and the bool mask (True =
kept), both (in, out). ``sparsity`` is the fraction pruned; ``nm=(n, m)`` keeps ``n`` of every
``m`` consecutive inputs of each output (axis 0 of the kernel, as
:func:`jaxprune.masks.nm`: the 2:4 pattern of sparse tensor cores).

:func:`prune` does a whole model: layer after layer (the ``.../layer/<i>/`` index of the
paths), each layer's statistics taken with the layers before it already pruned, as the
papers do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from jaxprune import masks as masks_lib
from jaxprune import paths


class InputStats(NamedTuple):
    """Calibration statistics of one layer's inputs."""

    gram: chex.Array  # (in, in) float32: sum over calibration tokens of x x^T
    tokens: chex.Array  # () float32: how many tokens were summed


def init_stats(in_features: int) -> InputStats:
    return InputStats(jnp.zeros((in_features, in_features), jnp.float32), jnp.zeros(()))


def accumulate(stats: InputStats, x: chex.Array, weights: chex.Array | None = None) -> InputStats:
    """Adds inputs ``x`` (..., in) to ``stats``; ``weights`` (...) of 0/1 leaves out padding.

    Under ``jit`` on a mesh, a batch sharded over ``data`` gives per-device partial sums that
    XLA reduces: the statistic is the same as on one device.
    """
    rows = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    if weights is None:
        count = jnp.asarray(rows.shape[0], jnp.float32)
    else:
        w = weights.reshape(-1).astype(jnp.float32)
        rows, count = rows * w[:, None], w.sum()
    typed = masks_lib.explicit_sharding(rows)  # Explicit axes: the sum comes out replicated
    out = None if typed is None else NamedSharding(typed.mesh, PartitionSpec())
    gram = jnp.matmul(rows.T, rows, out_sharding=out)
    return InputStats(stats.gram + gram, stats.tokens + count)


def _check(kernel: chex.Array, sparsity: float | None, nm: tuple[int, int] | None) -> None:
    if kernel.ndim != 2:
        raise ValueError(f"one-shot pruning takes an (in, out) kernel, got shape {kernel.shape}")
    if (sparsity is None) == (nm is None):
        raise ValueError("give either sparsity= (unstructured) or nm=(n, m), not both or none")
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if nm is not None:
        n, m = nm
        if not 0 < n <= m:
            raise ValueError(f"nm=(n, m) needs 0 < n <= m, got {nm}")
        if kernel.shape[0] % m:
            raise ValueError(f"nm={nm}: the kernel's {kernel.shape[0]} inputs do not split by {m}")


def _check_stats(kernel: chex.Array, stats: InputStats) -> None:
    if stats.gram.shape != (kernel.shape[0],) * 2:
        raise ValueError(
            f"input statistics of {stats.gram.shape[0]} features for a kernel of "
            f"{kernel.shape[0]} inputs: accumulate this layer's own inputs"
        )


def _apply(kernel: chex.Array, keep: chex.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.where(keep, kernel, jnp.zeros_like(kernel)), keep


def magnitude(
    kernel: chex.Array, *, sparsity: float | None = None, nm: tuple[int, int] | None = None
) -> tuple[jax.Array, jax.Array]:
    """``|W|``: the layer's ``sparsity`` smallest entries (one threshold), or N:M groups."""
    _check(kernel, sparsity, nm)
    scores = jnp.abs(kernel)
    if nm is not None:
        return _apply(kernel, masks_lib.nm(scores, *nm, axis=0))
    return _apply(kernel, masks_lib.topk(scores, sparsity))


def _per_output(scores: jax.Array, sparsity: float) -> jax.Array:
    """Prunes the ``int(in * sparsity)`` lowest scores of every output (column); ties go to
    the lower input index first, as a stable sort puts them."""
    pruned = int(scores.shape[0] * sparsity)
    rank = jnp.argsort(jnp.argsort(scores, axis=0, stable=True), axis=0, stable=True)
    return rank >= pruned


def wanda(
    kernel: chex.Array,
    stats: InputStats,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Wanda: scores ``|W_ij| * ||X_i||_2`` (input ``i``'s norm over the calibration tokens),
    compared within each output; the kept weights are not changed."""
    _check(kernel, sparsity, nm)
    _check_stats(kernel, stats)
    norms = jnp.sqrt(jnp.clip(jnp.diag(stats.gram), 0.0))
    scores = jnp.abs(kernel.astype(jnp.float32)) * norms[:, None]
    if nm is not None:
        return _apply(kernel, masks_lib.nm(scores, *nm, axis=0))
    assert sparsity is not None  # _check: one of the two is given
    return _apply(kernel, _per_output(scores, sparsity))


def _inverse_factor(gram: jax.Array, percdamp: float) -> tuple[jax.Array, jax.Array]:
    """(upper Cholesky factor ``U`` of the damped inverse Hessian, ``H^-1 = U^T U``; inputs
    never seen). Dead inputs (zero diagonal) get a unit diagonal, as in the authors' code."""
    dead = jnp.diag(gram) == 0
    h = gram + jnp.diag(dead.astype(gram.dtype))
    h = h + percdamp * jnp.mean(jnp.diag(h)) * jnp.eye(h.shape[0], dtype=h.dtype)
    lower = jnp.linalg.cholesky(h)
    inverse = jax.scipy.linalg.cho_solve((lower, True), jnp.eye(h.shape[0], dtype=h.dtype))
    return jnp.linalg.cholesky(inverse).T, dead


def sparsegpt(
    kernel: chex.Array,
    stats: InputStats,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[jax.Array, jax.Array]:
    """SparseGPT: prunes and reconstructs the kernel column by column (see module docstring).

    Args:
      kernel: (in, out).
      stats: the layer's :class:`InputStats`.
      sparsity / nm: unstructured fraction per block of inputs, or N:M along the inputs.
      blocksize: inputs per lazy-update block (and per mask selection); the paper's 128.
      percdamp: dampening, a fraction of the Hessian's mean diagonal; the paper's 0.01.

    Returns:
      ``(kernel, mask)``: reconstructed with exact zeros at the pruned entries, (in, out).
    """
    _check(kernel, sparsity, nm)
    _check_stats(kernel, stats)
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize={blocksize} must be a multiple of m={nm[1]}")
    dtype = kernel.dtype
    factor, dead = _inverse_factor(stats.gram.astype(jnp.float32), percdamp)
    w = jnp.where(dead[None, :], 0.0, kernel.T.astype(jnp.float32))  # (out, in) as the paper
    cols = w.shape[1]
    pruned_blocks = []
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block, inv = w[:, start:end], factor[start:end, start:end]
        diag = jnp.diag(inv)
        if sparsity is not None:
            saliency = (block / diag[None, :]) ** 2
            threshold = jnp.sort(saliency.ravel())[int(saliency.size * sparsity)]
            pruned = saliency <= threshold if sparsity > 0 else jnp.zeros_like(block, bool)
        else:
            pruned = jnp.zeros_like(block, bool)

        def column(i, carry, inv=inv, diag=diag):
            block, errors, pruned = carry
            if nm is not None:
                n, m = nm

                def choose(pruned):
                    group = lax.dynamic_slice_in_dim(block, i, m, axis=1)
                    d = lax.dynamic_slice_in_dim(diag, i, m)
                    keep = masks_lib.nm((group / d[None, :]) ** 2, n, m, axis=1)
                    return lax.dynamic_update_slice_in_dim(pruned, ~keep, i, axis=1)

                pruned = lax.cond(i % m == 0, choose, lambda p: p, pruned)
            weight = block[:, i]
            kept = jnp.where(pruned[:, i], 0.0, weight)
            error = (weight - kept) / inv[i, i]
            block = block - error[:, None] * inv[i][None, :]  # inv is upper: columns >= i
            block = block.at[:, i].set(kept)
            return block, errors.at[:, i].set(error), pruned

        start_carry = (block, jnp.zeros_like(block), pruned)
        block, errors, pruned = lax.fori_loop(0, end - start, column, start_carry)
        w = w.at[:, start:end].set(block)
        w = w.at[:, end:].add(-errors @ factor[start:end, end:])
        pruned_blocks.append(pruned)
    keep = ~jnp.concatenate(pruned_blocks, axis=1).T
    return jnp.where(keep, w.T, 0.0).astype(dtype), keep


Method = Literal["magnitude", "wanda", "sparsegpt"]
_LAYER = re.compile(r"/(?:layer|layers|h)/(\d+)/")


def _groups(kernels: list[str]) -> list[list[str]]:
    """The kernels' paths by layer index, in layer order; paths without one come last."""
    by_layer: dict[int, list[str]] = {}
    for path in kernels:
        match = _LAYER.search("/" + path)
        by_layer.setdefault(int(match.group(1)) if match else 1 << 30, []).append(path)
    return [by_layer[i] for i in sorted(by_layer)]


def _calibrator(forward: Any, params: Any, wanted: list[str]) -> Any:
    """``(params, batches) -> {path: InputStats}`` for the ``wanted`` kernels' inputs, from
    the :class:`jaxprune.models.layers.Dense` calls of one forward pass per batch; compiled
    once for every layer's pass."""
    from jaxprune.models import layers

    flat = {paths.path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    empty = {p: init_stats(flat[p].shape[0]) for p in wanted}

    @jax.jit
    def add(params: Any, batch: dict, stats: dict[str, InputStats]) -> dict[str, InputStats]:
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        by_id = {id(v): paths.path_str(k) for k, v in leaves if paths.path_str(k) in stats}
        out = dict(stats)
        mask = batch.get("attention_mask")

        def tap(kernel: jax.Array, x: jax.Array) -> None:
            path = by_id.get(id(kernel))
            if path is not None:
                weights = mask if mask is not None and mask.shape == x.shape[:-1] else None
                out[path] = accumulate(out[path], x, weights)

        with layers.tap_inputs(tap):
            forward(params, batch)
        return out

    def calibrate(params: Any, batches: list[dict]) -> dict[str, InputStats]:
        stats = empty
        for batch in batches:
            stats = add(params, batch, stats)
        return stats

    return calibrate


def _reached(stats: dict[str, InputStats], group: list[str]) -> None:
    for path in group:
        if float(stats[path].tokens) == 0:
            raise ValueError(
                f"no calibration input reached {path}: is it a kernel the model applies "
                f"(through jaxprune.models.layers.Dense), and do the batches hold tokens?"
            )


_OPTIONS = ("sparsity", "nm", "blocksize", "percdamp")
_JITTED = {
    "magnitude": jax.jit(magnitude, static_argnames=_OPTIONS[:2]),
    "wanda": jax.jit(wanda, static_argnames=_OPTIONS[:2]),
    "sparsegpt": jax.jit(sparsegpt, static_argnames=_OPTIONS),
}


def prune(
    model: Any,
    params: Any,
    batches: Iterable[dict],
    *,
    method: Method,
    prunable: paths.Prunable,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[Any, Any]:
    """One-shot pruning of a jaxprune model's selected kernels from calibration batches.

    Layers are pruned in order of the layer index in their paths; the statistics of a
    layer's kernels come from forward passes over all ``batches`` with the layers before it
    already pruned (SparseGPT's and Wanda's sequential setting). Padding tokens
    (``attention_mask`` 0) are left out of the statistics.

    Args:
      model: the jaxprune model (``hf.load_pretrained(...).model``) whose forward is run.
      params: its parameters (the tree ``prunable`` selects from).
      batches: model inputs (``input_ids``, ``attention_mask``, ...), iterated once per
        layer; 128 sentences of the training set in the papers' setting.
      method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
      prunable: regex or predicate on paths (:mod:`jaxprune.paths` presets); only 2-D
        kernels may be selected.
      sparsity / nm: the fraction of every selected kernel pruned, or ``(n, m)``.
      blocksize, percdamp: SparseGPT's (see :func:`sparsegpt`).

    Returns:
      ``(params, masks)``: params with exact zeros at the pruned entries (the others, and
      SparseGPT's reconstructed kept weights, as computed); bool masks shaped like params
      (True = kept), ``None`` where not selected.

    Raises:
      ValueError: an unknown method; a selected leaf that is not a 2-D kernel; nothing
        selected; a selected kernel that no calibration input reaches; the checks of
        :func:`wanda` / :func:`sparsegpt`.
    """
    if method not in ("magnitude", "wanda", "sparsegpt"):
        raise ValueError(f"method must be magnitude, wanda or sparsegpt, got {method!r}")
    from jaxprune.train.tasks import model_fn

    selection = paths.select(params, prunable)
    paths.check_floating(params, selection)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    picked = zip(flat, jax.tree.leaves(selection), strict=True)
    chosen = [paths.path_str(k) for (k, _), keep in picked if keep]  # select: not empty
    values = {paths.path_str(k): v for k, v in flat}
    for path in chosen:
        if jnp.ndim(values[path]) != 2:
            raise ValueError(
                f"{path} has shape {jnp.shape(values[path])}: one-shot methods prune 2-D "
                f"kernels (select them with e.g. jaxprune.paths.BERT_ENCODER_KERNELS)"
            )
    batches = list(batches)
    calibrate = _calibrator(model_fn(model), params, chosen) if method != "magnitude" else None
    options: dict[str, Any] = {"sparsity": sparsity, "nm": nm}
    if method == "sparsegpt":
        options |= {"blocksize": blocksize, "percdamp": percdamp}
    fn = _JITTED[method]
    masks: dict[str, jax.Array] = {}
    for group in _groups(chosen):
        for path in group:  # the checks, before any compile
            _check(values[path], sparsity, nm)
        stats: dict[str, InputStats] = {}
        if calibrate is not None:
            current = jax.tree_util.tree_unflatten(
                treedef, [values[paths.path_str(k)] for k, _ in flat]
            )
            stats = calibrate(current, batches)
            _reached(stats, group)
        for path in group:
            args = (values[path],) if calibrate is None else (values[path], stats[path])
            values[path], masks[path] = fn(*args, **options)
    leaves = [values[paths.path_str(k)] for k, _ in flat]
    mask_leaves = [masks.get(paths.path_str(k)) for k, _ in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves), jax.tree_util.tree_unflatten(
        treedef, mask_leaves
    )


__all__ = [
    "InputStats",
    "Method",
    "accumulate",
    "init_stats",
    "magnitude",
    "prune",
    "sparsegpt",
    "wanda",
]
