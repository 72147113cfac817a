"""Parameter paths and the selection of prunable leaves.

A leaf's path is its pytree key path joined with ``/``, so a Flax NNX BERT kernel reads
``encoder/layer/3/attention/self/query/kernel``. Selections follow big_vision: a regular
expression searched in that string, or a predicate ``(path, leaf) -> bool``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
from jax.tree_util import PyTreeDef

Prunable: TypeAlias = str | re.Pattern[str] | Callable[[str, Any], bool]

# The six encoder matrices of every BERT-family layer (query, key, value, attention output,
# FFN in, FFN out): weights only. This is what SMP, movement pruning and SparseBERT prune.
#: Covers BERT / RoBERTa / ELECTRA names (encoder/layer/i/...) and DistilBERT's
#: (transformer/layer/i/attention/q_lin, ffn/lin1, ...).
BERT_ENCODER_KERNELS = (
    r"(^|/)(encoder/layer/\d+/"
    r"(attention/(self/(query|key|value)|output/dense)|intermediate/dense|output/dense)"
    r"|transformer/layer/\d+/(attention/(q_lin|k_lin|v_lin|out_lin)|ffn/(lin1|lin2)))/kernel$"
)
#: The same matrices with their biases, ranked together: what PINS and PLATON prune.
BERT_ENCODER_KERNELS_AND_BIASES = BERT_ENCODER_KERNELS.replace("/kernel$", "/(kernel|bias)$")
#: GPT-2's four matrices per block (fused QKV, attention output, FFN in, FFN out): weights only.
GPT2_KERNELS = r"(^|/)transformer/h/\d+/(attn/(c_attn|c_proj)|mlp/(c_fc|c_proj))/kernel$"
GPT2_KERNELS_AND_BIASES = GPT2_KERNELS.replace("/kernel$", "/(kernel|bias)$")
#: The seven matrices of every Llama / Qwen2 / Mistral layer (q, k, v, o projections; the
#: SwiGLU's gate, up and down projections): weights only. Embeddings and lm_head stay dense.
LLAMA_KERNELS = (
    r"(^|/)model/layers/\d+/"
    r"(self_attn/(q_proj|k_proj|v_proj|o_proj)|mlp/(gate_proj|up_proj|down_proj))/kernel$"
)
#: The same with their biases where the checkpoint has them (Qwen2's q/k/v biases).
LLAMA_KERNELS_AND_BIASES = LLAMA_KERNELS.replace("/kernel$", "/(kernel|bias)$")
#: DeBERTa-v2/v3's six matrices per layer (query_proj, key_proj, value_proj, attention
#: output, FFN in, FFN out): weights only; the relative-position table, v2's pos_key_proj /
#: pos_query_proj and the ConvLayer are left dense.
DEBERTA_KERNELS = (
    r"(^|/)deberta/encoder/layer/\d+/(attention/(self/(query_proj|key_proj|value_proj)"
    r"|output/dense)|intermediate/dense|output/dense)/kernel$"
)
DEBERTA_KERNELS_AND_BIASES = DEBERTA_KERNELS.replace("/kernel$", "/(kernel|bias)$")
#: ModernBERT's four matrices per layer (fused Wqkv, attention Wo, the GeGLU's fused Wi
#: (input and gate), MLP Wo): weights only; embeddings and the task head stay dense.
MODERNBERT_KERNELS = r"(^|/)model/layers/\d+/(attn/(Wqkv|Wo)|mlp/(Wi|Wo))/kernel$"
#: The same with their biases where the config has them (``attention_bias``, ``mlp_bias``).
MODERNBERT_KERNELS_AND_BIASES = MODERNBERT_KERNELS.replace("/kernel$", "/(kernel|bias)$")


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path: tuple[Any, ...]) -> str:
    """Joins a JAX key path into ``a/b/0/c``.

    The ``.value`` attribute that a Flax NNX variable adds to its leaf's path (in
    ``nnx.state(model)`` or an ``nnx.Optimizer``'s state) is dropped, so ``.../kernel/value``
    reads ``.../kernel`` as in the pure-dict params."""
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    return "/".join(_key_name(k) for k in path)


def leaf_paths(tree: Any) -> list[str]:
    """The ``/``-joined path of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def select(tree: Any, prunable: Prunable) -> Any:
    """A pytree of Python bools shaped like ``tree``: True where the leaf is prunable.

    Raises:
      ValueError: if nothing is selected, naming a few of the paths that exist.
      TypeError: if ``prunable`` is neither a regex nor a predicate.
    """
    pick: Callable[[str, Any], bool]
    if isinstance(prunable, str | re.Pattern):
        pattern = re.compile(prunable)

        def pick(path: str, leaf: Any) -> bool:
            del leaf
            return pattern.search(path) is not None

    elif callable(prunable):
        pick = prunable
    else:
        raise TypeError(
            f"prunable must be a regex string or a predicate (path, leaf) -> bool, "
            f"got {type(prunable).__name__}"
        )
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    chosen = [bool(pick(path_str(p), leaf)) for p, leaf in flat]
    if not any(chosen):
        paths = [path_str(p) for p, _ in flat]
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise ValueError(
            f"prunable={prunable!r} selects no leaf of the {len(paths)} in params (paths: {shown})"
        )
    return jax.tree_util.tree_unflatten(treedef, chosen)


def check_floating(tree: Any, selection: Any) -> None:
    """TypeError naming the selected leaves that are not floating point (an integer or bool
    leaf cannot be pruned: its update would be rounded, and zeroing it is no sparsity)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    bad = [
        f"{path_str(p)} ({jax.numpy.result_type(x)})"
        for (p, x), keep in zip(flat, jax.tree.leaves(selection), strict=True)
        if keep and not jax.numpy.issubdtype(jax.numpy.result_type(x), jax.numpy.floating)
    ]
    if bad:
        raise TypeError(
            f"prunable selects leaves that are not floating point: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; narrow the selection"
        )


def same_treedef(a: PyTreeDef, b: PyTreeDef) -> bool:
    """Whether two tree structures are equal (a typed ``a == b``: jax's stubs leave
    ``PyTreeDef`` unresolved, so mypy rejects comparing them directly)."""
    return bool(a == b)


def check_same_structure(
    reference: Any, other: Any, *, what: str, ref_name: str = "params"
) -> None:
    """Raises a ValueError naming the first path where ``other`` differs from ``reference``.

    Compares tree structure, then every leaf's shape.
    """
    ref_flat, ref_def = jax.tree_util.tree_flatten_with_path(reference)
    oth_flat, oth_def = jax.tree_util.tree_flatten_with_path(other)
    if not same_treedef(ref_def, oth_def):
        ref_paths = [path_str(p) for p, _ in ref_flat]
        oth_paths = [path_str(p) for p, _ in oth_flat]
        missing = sorted(set(ref_paths) - set(oth_paths))
        extra = sorted(set(oth_paths) - set(ref_paths))
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}")
        if extra:
            detail.append(f"unexpected {extra[:5]}")
        if not detail:
            detail.append(f"{ref_def} vs {oth_def}")
        raise ValueError(f"{what} do not match the tree of {ref_name}: " + "; ".join(detail))
    for (path, a), (_, b) in zip(ref_flat, oth_flat, strict=True):
        if getattr(a, "shape", None) != getattr(b, "shape", None):
            raise ValueError(
                f"{what} at {path_str(path)} has shape {getattr(b, 'shape', None)}, "
                f"expected {getattr(a, 'shape', None)} as in {ref_name}"
            )


__all__ = [
    "BERT_ENCODER_KERNELS",
    "BERT_ENCODER_KERNELS_AND_BIASES",
    "DEBERTA_KERNELS",
    "DEBERTA_KERNELS_AND_BIASES",
    "GPT2_KERNELS",
    "GPT2_KERNELS_AND_BIASES",
    "LLAMA_KERNELS",
    "LLAMA_KERNELS_AND_BIASES",
    "MODERNBERT_KERNELS",
    "MODERNBERT_KERNELS_AND_BIASES",
    "Prunable",
    "check_floating",
    "check_same_structure",
    "leaf_paths",
    "path_str",
    "same_treedef",
    "select",
]
