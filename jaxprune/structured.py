"""Structured pruning of BERT-family encoders: whole attention heads and FFN neurons.

Any criterion's per-weight scores become one score per structure, the sum over the weights
that only that structure uses:

- head ``h`` of a layer: its ``head_dim`` columns of the query, key and value kernels and
  biases, and its ``head_dim`` rows of the attention-output kernel;
- FFN neuron ``j``: column ``j`` of the FFN-input kernel, entry ``j`` of its bias and row
  ``j`` of the FFN-output kernel.

Only the leaves present in the score tree count (``None`` leaves, the parameters that are
not prunable, are skipped), and only those are masked. The attention-output and FFN-output
biases belong to no single structure and are never masked. Structures are ranked with
:func:`jaxprune.masks.topk`, heads and neurons separately (their sums are on different
scales), then the decisions are broadcast back to weight masks. A pruned structure becomes
exactly removable by :func:`jaxprune.compact.compact` once its attention-output rows or
FFN-output row are zero, which the masks guarantee when those kernels are prunable.

Kernels are (in, out), so a head's query/key/value part is a block of columns and its
attention-output part a block of rows. Paths follow :mod:`jaxprune.paths`; BERT, RoBERTa,
ELECTRA and DistilBERT layouts are recognised.
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxprune import masks as masks_lib
from jaxprune import paths
from jaxprune.optim import MaskRule


class LayerParts(NamedTuple):
    """Sub-paths (inside ``.../layer/<i>/``) of one layer's six matrices."""

    query: str
    key: str
    value: str
    attn_out: str
    ffn_in: str
    ffn_out: str


BERT_PARTS = LayerParts(
    "attention/self/query",
    "attention/self/key",
    "attention/self/value",
    "attention/output/dense",
    "intermediate/dense",
    "output/dense",
)
DISTIL_PARTS = LayerParts(
    "attention/q_lin",
    "attention/k_lin",
    "attention/v_lin",
    "attention/out_lin",
    "ffn/lin1",
    "ffn/lin2",
)

# sub-path -> (structure kind, kernel axis indexed by the structure, whether the bias is too)
_ROLES: dict[str, tuple[str, int, bool]] = {}
for _parts in (BERT_PARTS, DISTIL_PARTS):
    for _name in ("query", "key", "value"):
        _ROLES[getattr(_parts, _name)] = ("heads", 1, True)
    _ROLES[_parts.attn_out] = ("heads", 0, False)
    _ROLES[_parts.ffn_in] = ("neurons", 1, True)
    _ROLES[_parts.ffn_out] = ("neurons", 0, False)

_LAYER_LEAF = re.compile(r"^(.*(?:encoder|transformer)/layer)/(\d+)/(.+)/(kernel|bias)$")


class StructureScores(NamedTuple):
    """Per-structure scores, keyed by layer index (layers with no scored leaf are absent)."""

    heads: dict[int, jax.Array]  # layer -> (heads,) float32
    neurons: dict[int, jax.Array]  # layer -> (neurons,) float32


class _Member(NamedTuple):
    """How one leaf belongs to a structure."""

    kind: str  # heads | neurons
    layer: int
    axis: int  # axis of the leaf indexed by the structure
    group: int  # entries per structure along that axis: head_dim or 1
    stack: str  # path of the layer stack, e.g. bert/encoder/layer


def _member(path: str, shape: tuple[int, ...], head_dim: int) -> _Member | None:
    match = _LAYER_LEAF.match(path)
    if match is None or match.group(3) not in _ROLES:
        return None
    kind, axis, with_bias = _ROLES[match.group(3)]
    if match.group(4) == "bias":
        if not with_bias:
            return None
        axis = 0
    group = head_dim if kind == "heads" else 1
    if shape[axis] % group:
        raise ValueError(
            f"{path} has {shape[axis]} entries along axis {axis}, not a multiple of "
            f"head_dim={head_dim}"
        )
    return _Member(kind, int(match.group(2)), axis, group, match.group(1))


def _members(tree: Any, head_dim: int) -> list[tuple[Any, Any, _Member | None]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    out, stacks = [], set()
    for keypath, leaf in flat:
        path = paths.path_str(keypath)
        member = _member(path, leaf.shape, head_dim)
        if member is not None:
            stacks.add(member.stack)
        out.append((keypath, leaf, member))
    if len(stacks) > 1:
        raise ValueError(f"scores hold several layer stacks ({sorted(stacks)}); pass one model")
    return out


def structure_scores(scores: Any, head_dim: int) -> StructureScores:
    """Sums per-weight scores over every head and every FFN neuron.

    Args:
      scores: pytree shaped like params (``None`` where not scored), e.g.
        ``criterion.scores(state, params)``.
      head_dim: width of one head (``cfg.head_dim``; 32 in MiniLM).

    Raises:
      ValueError: no head or neuron leaf is scored, or two leaves of a layer disagree on its
        head or neuron count.
    """
    sums: dict[tuple[str, int], jax.Array] = {}
    for keypath, leaf, m in _members(scores, head_dim):
        if m is None:
            continue
        s = jnp.asarray(leaf, jnp.float32)
        per_entry = s if s.ndim == 1 else s.sum(axis=1 - m.axis)
        per_structure = per_entry.reshape(-1, m.group).sum(axis=1)
        key = (m.kind, m.layer)
        if key in sums and sums[key].shape != per_structure.shape:
            raise ValueError(
                f"{paths.path_str(keypath)} has {per_structure.size} {m.kind}, but other "
                f"leaves of layer {m.layer} have {sums[key].size}"
            )
        sums[key] = sums.get(key, 0.0) + per_structure
    if not sums:
        raise ValueError(
            "no attention or FFN leaf of a BERT-family layer is scored: select the encoder "
            "kernels (jaxprune.paths.BERT_ENCODER_KERNELS)"
        )
    by_kind: dict[str, dict[int, Any]] = {"heads": {}, "neurons": {}}
    for (kind, layer), v in sorted(sums.items()):
        by_kind[kind][layer] = v
    return StructureScores(by_kind["heads"], by_kind["neurons"])


def expand(
    like: Any, head_dim: int, heads: dict[int, jax.Array], neurons: dict[int, jax.Array]
) -> Any:
    """Weight masks from per-structure keep decisions.

    Args:
      like: pytree shaped like params (``None`` leaves stay ``None``).
      head_dim: width of one head.
      heads / neurons: layer -> bool (structures,), True = kept; missing layers are kept.

    Returns:
      Bool masks shaped like ``like``: a leaf's entries follow their head or neuron; leaves
      that belong to no structure are all True.
    """
    decided = {"heads": heads, "neurons": neurons}

    def one(keypath, leaf):
        m = _member(paths.path_str(keypath), leaf.shape, head_dim)
        keep = None if m is None else decided[m.kind].get(m.layer)
        if m is None or keep is None:
            return jnp.ones(leaf.shape, jnp.bool_)
        entries = jnp.repeat(jnp.asarray(keep, jnp.bool_), m.group)
        shape = [1] * leaf.ndim
        shape[m.axis] = entries.size
        return jnp.broadcast_to(entries.reshape(shape), leaf.shape)

    return jax.tree_util.tree_map_with_path(one, like)


def structure_masks(
    scores: Any,
    head_dim: int,
    *,
    head_sparsity: chex.Numeric | None,
    neuron_sparsity: chex.Numeric | None,
    scope: Literal["global", "local"] = "global",
) -> Any:
    """Weight masks that remove whole heads and FFN neurons with the lowest summed scores.

    Args:
      scores: per-weight scores (``None`` where not prunable).
      head_dim: width of one head.
      head_sparsity / neuron_sparsity: fraction of heads / of FFN neurons to remove, in
        [0, 1) (may be traced); None keeps them all.
      scope: ``"global"`` ranks the structures of all layers together (a layer may lose
        every head); ``"local"`` removes the fraction from every layer.

    Returns:
      Bool masks shaped like ``scores`` (True = kept).
    """
    per = structure_scores(scores, head_dim)
    keep: dict[str, dict[int, Any]] = {"heads": {}, "neurons": {}}
    for kind, sparsity in (("heads", head_sparsity), ("neurons", neuron_sparsity)):
        if sparsity is not None and getattr(per, kind):
            keep[kind] = masks_lib.topk(getattr(per, kind), sparsity, scope=scope)
    return expand(scores, head_dim, keep["heads"], keep["neurons"])


def mask_rule(
    head_dim: int,
    *,
    heads: bool = True,
    neurons: bool = True,
    scope: Literal["global", "local"] = "global",
) -> MaskRule:
    """A ``masked_optimizer`` mask rule: the scheduled sparsity is the fraction of heads
    (``heads=True``) and of FFN neurons (``neurons=True``) removed.

        tx = jaxprune.masked_optimizer(
            optax.adamw(2e-5), criterion=jaxprune.criteria.taylor(0.9),
            schedule=jaxprune.schedules.cubic(0.5, begin_step=0, end_step=1000),
            prunable=jaxprune.paths.BERT_ENCODER_KERNELS_AND_BIASES,
            mask_rule=jaxprune.structured.mask_rule(cfg.head_dim),
        )
    """
    if not (heads or neurons):
        raise ValueError("mask_rule needs heads=True, neurons=True or both")

    def rule(scores: Any, sparsity: chex.Array) -> Any:
        return structure_masks(
            scores,
            head_dim,
            head_sparsity=sparsity if heads else None,
            neuron_sparsity=sparsity if neurons else None,
            scope=scope,
        )

    return rule


def nm_rule(n: int = 2, m: int = 4) -> MaskRule:
    """A ``masked_optimizer`` mask rule keeping ``n`` of every ``m`` consecutive entries
    along axis 0 of every 2-D leaf: the input (reduction) axis of an (in, out) kernel, the
    axis along which sparse tensor cores take their 2:4 pattern (PyTorch's
    ``to_sparse_semi_structured`` on a (out, in) ``Linear.weight`` groups the same entries).
    1-D leaves (biases) stay dense. The scheduled sparsity is ignored: N:M fixes it at
    ``1 - n/m``.
    """
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < n <= m, got n={n}, m={m}")

    def rule(scores: Any, sparsity: chex.Array) -> Any:
        del sparsity
        matrices = jax.tree.map(lambda s: s if s.ndim >= 2 else None, scores)
        kept = masks_lib.nm(matrices, n, m, axis=0)
        return jax.tree.map(
            lambda s, k: s if s is None else jnp.ones(s.shape, bool) if k is None else k,
            scores,
            kept,
            is_leaf=lambda x: x is None,
        )

    return rule


__all__ = [
    "BERT_PARTS",
    "DISTIL_PARTS",
    "LayerParts",
    "StructureScores",
    "expand",
    "mask_rule",
    "nm_rule",
    "structure_masks",
    "structure_scores",
]
