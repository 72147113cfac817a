"""Compaction: a pruned encoder rebuilt without the heads and FFN neurons that do nothing.

    small, small_params, kept = jaxprune.compact.compact(model, params)
    jaxprune.compact.save(small, small_params, "out/")      # any compacted model
    jaxprune.compact.to_hf(small, small_params, "hf_out/")  # when every head is kept

When a structure contributes nothing (checked on exact zeros of the params):

- Head ``h`` adds ``softmax(q_h k_h^T / sqrt(d)) (x W_v,h + b_v,h) W_o,h`` to the
  attention output. It is removed when (a) its rows ``W_o,h`` of the attention-output kernel
  are all zero, or (b) its value columns ``W_v,h`` are all zero: its context is then the
  constant ``b_v,h`` (attention probabilities sum to one) and ``b_v,h W_o,h`` is folded into
  the attention-output bias. Zero query or key columns do not remove a head: they make the
  attention uniform, not zero. (b) is exact at inference; with attention dropout in training
  the probabilities no longer sum to one.
- FFN neuron ``j`` adds ``act(x W_in[:, j] + b_j) W_out[j]``. It is removed when (a) its
  row ``W_out[j]`` is all zero, or (b) its column ``W_in[:, j]`` is all zero: the constant
  ``act(b_j) W_out[j]`` is folded into the FFN-output bias (it is zero when ``b_j = 0``, as
  ``act(0) = 0`` for GELU, ReLU, SiLU and tanh).
- A layer may lose every head (its attention then adds only the output bias, see
  :class:`jaxprune.models.encoder.NoHeads`) or every neuron.
- Hidden units are never removed: each LayerNorm normalises over all of them, so a hidden
  unit whose weights are all zero still enters the mean and variance (and its LayerNorm
  bias makes it non-zero downstream); dropping it would change every output.

The other families follow the same rules on their own layouts:

- DeBERTa-v2 (:class:`jaxprune.models.deberta.DebertaV2ForTask`): as BERT; a removed head
  also loses its columns of ``pos_key_proj`` / ``pos_query_proj`` (``share_att_key=False``).
- ModernBERT (:class:`jaxprune.models.modernbert.ModernBertForTask`): head ``h`` is its
  query, key and value columns of the fused ``Wqkv`` (laid out (3, heads, head_dim)) and its
  rows of ``attn/Wo``; zero value columns fold ``b_v,h W_o,h`` into ``attn/Wo``'s bias (only
  with ``attention_bias``; without biases the value is exactly zero). GeGLU neuron ``j`` is
  column ``j`` (input half) and column ``n + j`` (gate half) of ``mlp/Wi`` and row ``j`` of
  ``mlp/Wo``; it is removed when that row is zero, or when its input column and bias are zero
  (``act(0) = 0``), or its gate column and bias are zero: the product is then zero.
- Llama, Qwen2, Mistral (:class:`jaxprune.models.llama.LlamaForCausalLM`): query head ``h``
  is removed when its rows of ``o_proj`` are zero, or when the value columns of its key/value
  group are zero (a non-zero ``v_proj`` bias is then folded into ``o_proj``'s bias, and the
  head is kept when ``o_proj`` has none). A key/value head goes only with every query head
  that reads it. The model holds one group size per layer, so kept groups keep as many query
  heads as the fullest one: removed heads of the other groups stay as padding (their
  ``o_proj`` rows zero). SwiGLU neuron ``j`` is column ``j`` of ``gate_proj`` and of
  ``up_proj`` and row ``j`` of ``down_proj``: removed when that row is zero, or the gate
  column and bias are zero (``act(0) = 0``), or the up column and bias are zero.

Folding changes the order of float32 sums only: outputs agree with the masked dense model
to about 1e-6. The compacted model's config has per-layer ``layer_heads`` and
``layer_intermediate`` (None when uniform; Llama also ``layer_kv_heads``, and a Llama whose
layers all keep the same sizes gets plain ``num_attention_heads`` / ``num_key_value_heads``
/ ``intermediate_size`` instead, which transformers loads). transformers (>= 5) has no
per-layer sizes and no longer applies ``config.pruned_heads``, so :func:`to_hf` writes a
Hugging Face folder only when every head is kept (FFN widths are padded with zero neurons
to the widest layer; a Llama-family decoder, whose config has an explicit ``head_dim``, also
has its heads padded with zero heads to the most key/value heads and the largest group of
any layer);
:func:`save` writes jaxprune's own folder (config JSON and a compressed checkpoint from
:mod:`jaxprune.export`) for any compacted model, and :func:`load` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import export, hf, paths
from jaxprune.models import deberta, gpt2, layers, llama, modernbert
from jaxprune.models.encoder import EncoderConfig
from jaxprune.models.heads import EncoderForTask
from jaxprune.structured import BERT_PARTS, DISTIL_PARTS, LayerParts

FORMAT = "jaxprune-compact"
VERSION = 1
CONFIG_FILE = "jaxprune_config.json"
PARAMS_FILE = "params.safetensors"


class Kept(NamedTuple):
    """What survives compaction, per layer: ascending indices into the current layer."""

    heads: tuple[np.ndarray, ...]  # int64 (kept heads,); Llama: query heads, padding included
    neurons: tuple[np.ndarray, ...]  # int64 (kept FFN neurons,)
    kv_heads: tuple[np.ndarray, ...] = ()  # Llama: int64 (kept key/value heads,)


#: The models :func:`compact` takes.
Compactable = (
    EncoderForTask
    | deberta.DebertaV2ForTask
    | modernbert.ModernBertForTask
    | llama.LlamaForCausalLM
)
DEBERTA_PARTS = LayerParts(
    "attention/self/query_proj",
    "attention/self/key_proj",
    "attention/self/value_proj",
    "attention/output/dense",
    "intermediate/dense",
    "output/dense",
)


def _layer_prefix(cfg: EncoderConfig, layer: int) -> str:
    stack = "transformer" if cfg.arch == "distilbert" else "encoder"
    body = "deberta" if cfg.arch == "deberta-v2" else cfg.arch
    return f"{body}/{stack}/layer/{layer}/"


def _flat(params: Any) -> dict[str, np.ndarray]:
    return {
        paths.path_str(p): np.asarray(jax.device_get(v))
        for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def _parts(cfg: EncoderConfig) -> LayerParts:
    if cfg.arch == "deberta-v2":
        return DEBERTA_PARTS
    return DISTIL_PARTS if cfg.arch == "distilbert" else BERT_PARTS


def _compact_layer(
    flat: dict[str, np.ndarray], cfg: EncoderConfig, layer: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
    """(kept heads, kept neurons, changed leaves by path: None = removed) for one layer of a
    BERT-family or DeBERTa-v2 encoder (DeBERTa keeps empty projections in a layer without
    heads, and its relative-position projections lose the removed heads' columns)."""
    parts = _parts(cfg)
    pre = _layer_prefix(cfg, layer)
    is_deberta = cfg.arch == "deberta-v2"
    head_parts = [parts.query, parts.key, parts.value]
    if is_deberta:
        head_parts += [
            p
            for p in ("attention/self/pos_key_proj", "attention/self/pos_query_proj")
            if f"{pre}{p}/kernel" in flat
        ]

    def get(part: str, leaf: str) -> np.ndarray:
        return flat[f"{pre}{part}/{leaf}"]

    heads, d, hidden = cfg.heads_of(layer), cfg.head_dim, cfg.hidden_size
    out: dict[str, np.ndarray | None] = {}

    if heads:
        w_v = get(parts.value, "kernel").reshape(hidden, heads, d)
        w_o = get(parts.attn_out, "kernel").reshape(heads, d, hidden)
        o_zero = ~w_o.any(axis=(1, 2))
        v_zero = ~w_v.any(axis=(0, 2))
        folded = v_zero & ~o_zero
        b_v = get(parts.value, "bias").reshape(heads, d)
        shift = np.einsum("hd,hdo->o", b_v[folded].astype(np.float64), w_o[folded])
        kept_heads = np.flatnonzero(~(o_zero | v_zero))
        cols = (kept_heads[:, None] * d + np.arange(d)).reshape(-1)
        for part in head_parts:  # None: the layer has no heads left (BERT: NoHeads)
            keep = cols.size or is_deberta
            out[f"{pre}{part}/kernel"] = get(part, "kernel")[:, cols] if keep else None
            out[f"{pre}{part}/bias"] = get(part, "bias")[cols] if keep else None
        out[f"{pre}{parts.attn_out}/kernel"] = get(parts.attn_out, "kernel")[cols]
        bias = get(parts.attn_out, "bias")
        out[f"{pre}{parts.attn_out}/bias"] = (bias + shift).astype(bias.dtype)
    else:
        kept_heads = np.zeros((0,), np.int64)

    w_in, b_in = get(parts.ffn_in, "kernel"), get(parts.ffn_in, "bias")
    w_out, b_out = get(parts.ffn_out, "kernel"), get(parts.ffn_out, "bias")
    out_zero = ~w_out.any(axis=1)
    in_zero = ~w_in.any(axis=0)
    folded = in_zero & ~out_zero
    act = np.asarray(layers.activation(cfg.hidden_act)(jnp.asarray(b_in[folded])))
    shift = act.astype(np.float64) @ w_out[folded]
    kept_neurons = np.flatnonzero(~(out_zero | in_zero))
    out[f"{pre}{parts.ffn_in}/kernel"] = w_in[:, kept_neurons]
    out[f"{pre}{parts.ffn_in}/bias"] = b_in[kept_neurons]
    out[f"{pre}{parts.ffn_out}/kernel"] = w_out[kept_neurons]
    out[f"{pre}{parts.ffn_out}/bias"] = (b_out + shift).astype(b_out.dtype)
    return kept_heads, kept_neurons, out


def _uniform(cfg: Any, heads: tuple[int, ...], widths: tuple[int, ...]) -> Any:
    """``cfg`` (an encoder's) with these per-layer sizes, the per-layer fields None where
    uniform."""
    same_width = len(set(widths)) == 1
    return dataclasses.replace(
        cfg,
        layer_heads=None if set(heads) == {cfg.num_attention_heads} else heads,
        intermediate_size=widths[0] if same_width else cfg.intermediate_size,
        layer_intermediate=None if same_width else widths,
    )


def _hf_json(model: Any, cfg: Any) -> str | None:
    """The model's transformers config JSON with the sizes of ``cfg`` (where uniform)."""
    source = getattr(model, "hf_config_json", None)
    if source is None:
        return None
    data = json.loads(source)
    if isinstance(cfg, llama.LlamaConfig):
        data["num_attention_heads"] = cfg.num_attention_heads
        data["num_key_value_heads"] = cfg.num_key_value_heads
        data["head_dim"] = cfg.head_dim
        data["intermediate_size"] = cfg.intermediate_size
        return json.dumps(data)
    distil = getattr(cfg, "arch", None) == "distilbert"
    data["hidden_dim" if distil else "intermediate_size"] = cfg.intermediate_size
    return json.dumps(data)


def _family(model: Any) -> str:
    """``bert`` (BERT, RoBERTa, ELECTRA, DistilBERT), ``deberta-v2``, ``modernbert`` or
    ``llama`` (Llama, Qwen2, Mistral).

    Raises:
      TypeError: a model :func:`compact` does not cover (GPT-2: its fused ``c_attn`` and
        Conv1D layout have no per-layer sizes in jaxprune).
    """
    if isinstance(model, EncoderForTask):
        return "bert"
    if isinstance(model, deberta.DebertaV2ForTask):
        return "deberta-v2"
    if isinstance(model, modernbert.ModernBertForTask):
        return "modernbert"
    if isinstance(model, llama.LlamaForCausalLM):
        return "llama"
    reason = (
        ": jaxprune's GPT-2 cannot hold per-layer head counts or MLP widths; save its pruned "
        "params densely (hf.save_pretrained) or compressed (jaxprune.export.save)"
        if isinstance(model, gpt2.GPT2LMHeadModel)
        else ""
    )
    raise TypeError(
        f"compact covers BERT-family, DeBERTa-v2, ModernBERT and Llama-family models, not "
        f"{type(model).__name__}{reason}"
    )


def _make(family: str, cfg: Any, task: str, num_labels: int, dtype: Any) -> Any:
    """A fresh model of ``family`` (``rngs`` fixed; :func:`_build` evaluates it abstractly)."""
    rngs = nnx.Rngs(0)
    if family == "llama":
        return llama.LlamaForCausalLM(cfg, rngs=rngs, dtype=dtype)
    cls: Any = {
        "bert": EncoderForTask,
        "deberta-v2": deberta.DebertaV2ForTask,
        "modernbert": modernbert.ModernBertForTask,
    }[family]
    return cls(cfg, task=task, num_labels=num_labels, rngs=rngs, dtype=dtype)


def _build(
    cfg: Any,
    flat: dict[str, Any],
    *,
    task: str,
    num_labels: int,
    dtype: Any,
    hf_config_json: str | None,
    source: str,
    family: str = "bert",
) -> tuple[Any, dict]:
    """A model of ``family`` and ``cfg`` holding the arrays of ``flat`` (path -> array),
    strictly."""
    abstract = nnx.eval_shape(lambda: _make(family, cfg, task, num_labels, dtype))
    graphdef, state = nnx.split(abstract)
    pure = nnx.to_pure_dict(state)
    wanted = paths.leaf_paths(pure)
    missing, extra = sorted(set(wanted) - set(flat)), sorted(set(flat) - set(wanted))
    if missing or extra:
        raise ValueError(f"{source}: missing {missing[:5]}, unexpected {extra[:5]}")

    def take(keypath, leaf):
        path = paths.path_str(keypath)
        value = jnp.asarray(flat[path])
        if value.shape != leaf.shape:
            raise ValueError(f"{source}: {path} has shape {value.shape}, expected {leaf.shape}")
        return value

    params = jax.tree_util.tree_map_with_path(take, pure)
    nnx.replace_by_pure_dict(state, params)
    model = nnx.merge(graphdef, state)
    if hf_config_json is not None:
        model.hf_config_json = hf_config_json
    return model, params


def _dtype(model: Any) -> Any:
    if isinstance(model, llama.LlamaForCausalLM):
        return model.model.norm.dtype
    if isinstance(model, modernbert.ModernBertForTask):
        return model.model.final_norm.dtype
    return model.body.embeddings.LayerNorm.dtype


def _task(model: Any) -> tuple[str, int]:
    if isinstance(model, llama.LlamaForCausalLM):
        return "causal-lm", 0
    return model.task, model.num_labels


def _zero(bias: np.ndarray | None, n: int) -> np.ndarray:
    """Which of ``n`` bias entries are zero (all, without a bias)."""
    return np.ones(n, bool) if bias is None else bias == 0


def _act_zero_at_zero(name: str) -> bool:
    return float(layers.activation(name)(jnp.zeros(()))) == 0.0


def _fold(b_v: np.ndarray, w_o: np.ndarray, heads: Any) -> np.ndarray:
    """``sum_h b_v,h W_o,h`` over ``heads`` (bool): the constant their contexts add."""
    return np.einsum("hd,hdo->o", b_v[heads].astype(np.float64), w_o[heads])


def _compact_modernbert_layer(
    flat: dict[str, np.ndarray], cfg: modernbert.ModernBertConfig, layer: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(kept heads, kept neurons, changed leaves by path) for one ModernBERT layer."""
    pre = f"model/layers/{layer}/"
    heads, d, hidden = cfg.heads_of(layer), cfg.head_dim, cfg.hidden_size
    out: dict[str, np.ndarray] = {}
    a_in, a_out = f"{pre}attn/Wqkv/", f"{pre}attn/Wo/"
    w_qkv = flat[a_in + "kernel"].reshape(hidden, 3, heads, d)
    b_qkv = flat.get(a_in + "bias")
    w_o = flat[a_out + "kernel"].reshape(heads, d, hidden)
    o_zero = ~w_o.any(axis=(1, 2))
    v_zero = ~w_qkv[:, 2].any(axis=(0, 2))
    b_v = np.zeros((heads, d), w_o.dtype) if b_qkv is None else b_qkv.reshape(3, heads, d)[2]
    constant = v_zero & b_v.any(axis=1)  # context is b_v: removable only by folding it
    can_fold = a_out + "bias" in flat
    dead = o_zero | (v_zero & (~constant | can_fold))
    kept_heads = np.flatnonzero(~dead)
    out[a_in + "kernel"] = w_qkv[:, :, kept_heads].reshape(hidden, -1)
    if b_qkv is not None:
        out[a_in + "bias"] = b_qkv.reshape(3, heads, d)[:, kept_heads].reshape(-1)
    out[a_out + "kernel"] = w_o[kept_heads].reshape(-1, hidden)
    if can_fold:
        bias = flat[a_out + "bias"]
        shift = _fold(b_v, w_o, v_zero & constant & ~o_zero)
        out[a_out + "bias"] = (bias + shift).astype(bias.dtype)

    m_in, m_out = f"{pre}mlp/Wi/", f"{pre}mlp/Wo/"
    width = cfg.intermediate_of(layer)
    w_i, b_i = flat[m_in + "kernel"], flat.get(m_in + "bias")
    b_in, b_gate = (None, None) if b_i is None else (b_i[:width], b_i[width:])
    in_dead = ~w_i[:, :width].any(axis=0) & _zero(b_in, width)
    in_dead &= _act_zero_at_zero(cfg.hidden_activation)
    gate_dead = ~w_i[:, width:].any(axis=0) & _zero(b_gate, width)
    out_dead = ~flat[m_out + "kernel"].any(axis=1)
    kept_neurons = np.flatnonzero(~(in_dead | gate_dead | out_dead))
    both = np.concatenate([kept_neurons, width + kept_neurons])
    out[m_in + "kernel"] = w_i[:, both]
    if b_i is not None:
        out[m_in + "bias"] = b_i[both]
    out[m_out + "kernel"] = flat[m_out + "kernel"][kept_neurons]
    return kept_heads, kept_neurons, out


def _compact_llama_layer(
    flat: dict[str, np.ndarray], cfg: llama.LlamaConfig, layer: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(kept query heads, kept key/value heads, kept neurons, changed leaves by path) for
    one Llama-family layer."""
    pre = f"model/layers/{layer}/"
    a, m = f"{pre}self_attn/", f"{pre}mlp/"
    heads, kv, d, hidden = (
        cfg.heads_of(layer),
        cfg.kv_heads_of(layer),
        cfg.head_dim,
        cfg.hidden_size,
    )
    out: dict[str, np.ndarray] = {}
    if heads:
        group = heads // kv
        w_o = flat[a + "o_proj/kernel"].reshape(heads, d, hidden)
        o_zero = ~w_o.any(axis=(1, 2))
        v_zero = ~flat[a + "v_proj/kernel"].reshape(hidden, kv, d).any(axis=(0, 2))
        b_v = flat.get(a + "v_proj/bias")
        b_v = np.zeros((kv, d), w_o.dtype) if b_v is None else b_v.reshape(kv, d)
        constant = v_zero & b_v.any(axis=1)  # the group's context is b_v
        can_fold = a + "o_proj/bias" in flat
        group_dead = v_zero & (~constant | can_fold)
        alive = ~(o_zero | np.repeat(group_dead, group))
        per_group = alive.reshape(kv, group).sum(axis=1)
        kept_kv = np.flatnonzero(per_group)
        size = int(per_group.max(initial=0))
        chosen = []
        for g in kept_kv:  # the group's live heads, then removed ones as padding
            members = np.arange(g * group, (g + 1) * group)
            order = np.concatenate([members[alive[members]], members[~alive[members]]])
            chosen.append(np.sort(order[:size]))
        kept_heads = np.concatenate(chosen) if chosen else np.zeros((0,), np.int64)
        q_cols = (kept_heads[:, None] * d + np.arange(d)).reshape(-1)
        kv_cols = (kept_kv[:, None] * d + np.arange(d)).reshape(-1)
        for part, cols in (("q_proj", q_cols), ("k_proj", kv_cols), ("v_proj", kv_cols)):
            out[f"{a}{part}/kernel"] = flat[f"{a}{part}/kernel"][:, cols]
            if f"{a}{part}/bias" in flat:
                out[f"{a}{part}/bias"] = flat[f"{a}{part}/bias"][cols]
        new_o = w_o[kept_heads] * alive[kept_heads][:, None, None]  # padding heads: zero rows
        out[a + "o_proj/kernel"] = new_o.reshape(-1, hidden).astype(w_o.dtype)
        if can_fold:
            bias = flat[a + "o_proj/bias"]
            folded = np.repeat(group_dead & constant, group) & ~o_zero
            shift = _fold(np.repeat(b_v, group, axis=0), w_o, folded)
            out[a + "o_proj/bias"] = (bias + shift).astype(bias.dtype)
    else:
        kept_heads = kept_kv = np.zeros((0,), np.int64)

    width = cfg.intermediate_of(layer)
    w_g, w_u, w_d = (flat[f"{m}{p}/kernel"] for p in ("gate_proj", "up_proj", "down_proj"))
    gate_dead = ~w_g.any(axis=0) & _zero(flat.get(m + "gate_proj/bias"), width)
    gate_dead &= _act_zero_at_zero(cfg.hidden_act)
    up_dead = ~w_u.any(axis=0) & _zero(flat.get(m + "up_proj/bias"), width)
    kept_neurons = np.flatnonzero(~(gate_dead | up_dead | ~w_d.any(axis=1)))
    for part in ("gate_proj", "up_proj"):
        out[f"{m}{part}/kernel"] = flat[f"{m}{part}/kernel"][:, kept_neurons]
        if f"{m}{part}/bias" in flat:
            out[f"{m}{part}/bias"] = flat[f"{m}{part}/bias"][kept_neurons]
    out[m + "down_proj/kernel"] = w_d[kept_neurons]
    return kept_heads, kept_kv, kept_neurons, out


def _llama_sizes(
    cfg: llama.LlamaConfig, heads: tuple[int, ...], kvs: tuple[int, ...], widths: tuple[int, ...]
) -> llama.LlamaConfig:
    """``cfg`` with these per-layer sizes; uniform sizes (at least one head) become the plain
    fields, which transformers reads."""
    uniform_heads = len(set(zip(heads, kvs, strict=True))) == 1 and kvs[0] > 0
    same_width = len(set(widths)) == 1
    return dataclasses.replace(
        cfg,
        num_attention_heads=heads[0] if uniform_heads else cfg.num_attention_heads,
        num_key_value_heads=kvs[0] if uniform_heads else cfg.num_key_value_heads,
        layer_heads=None if uniform_heads else heads,
        layer_kv_heads=None if uniform_heads else kvs,
        intermediate_size=widths[0] if same_width else cfg.intermediate_size,
        layer_intermediate=None if same_width else widths,
    )


def compact(model: Compactable, params: Any) -> tuple[Any, dict, Kept]:
    """Removes every head and FFN neuron that contributes nothing (rules in the module doc).

    Args:
      model: the model the params belong to (its config, task and labels are used): a
        BERT-family, DeBERTa-v2 or ModernBERT encoder, or a Llama-family decoder.
      params: its (pruned) parameters, nested dicts as ``nnx.to_pure_dict`` gives.

    Returns:
      ``(compacted model, its params, Kept)``; outputs match ``model`` with ``params``.

    Raises:
      TypeError: another model (GPT-2 is not covered).
    """
    family = _family(model)
    cfg: Any = model.cfg
    paths.check_same_structure(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), params, what="params", ref_name="model"
    )
    flat: dict[str, Any] = _flat(params)
    kept_heads, kept_kv, kept_neurons = [], [], []
    new: dict[str, Any]
    for layer in range(cfg.num_hidden_layers):
        if family == "llama":
            heads, kv, neurons, new = _compact_llama_layer(flat, cfg, layer)
            kept_kv.append(kv)
        elif family == "modernbert":
            heads, neurons, new = _compact_modernbert_layer(flat, cfg, layer)
        else:
            heads, neurons, new = _compact_layer(flat, cfg, layer)
        flat = {k: v for k, v in (flat | new).items() if v is not None}
        kept_heads.append(heads)
        kept_neurons.append(neurons)
    n_heads = tuple(len(h) for h in kept_heads)
    widths = tuple(len(n) for n in kept_neurons)
    if family == "llama":
        small_cfg = _llama_sizes(cfg, n_heads, tuple(len(k) for k in kept_kv), widths)
    else:
        small_cfg = _uniform(cfg, n_heads, widths)
    task, num_labels = _task(model)
    small, small_params = _build(
        small_cfg,
        flat,
        task=task,
        num_labels=num_labels,
        dtype=_dtype(model),
        hf_config_json=_hf_json(model, small_cfg),
        source="compact",
        family=family,
    )
    return small, small_params, Kept(tuple(kept_heads), tuple(kept_neurons), tuple(kept_kv))


def save(
    model: Compactable, params: Any, out_dir: str | os.PathLike, *, tokenizer: Any = None
) -> export.SizeReport:
    """Writes any (compacted) model :func:`compact` takes to a jaxprune folder:
    ``jaxprune_config.json`` (the family, its config dataclass, task, labels and the
    transformers config) and ``params.safetensors`` (a bit-exact :mod:`jaxprune.export`
    checkpoint). Returns the checkpoint's size report."""
    family = _family(model)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = getattr(model, "hf_config_json", None)
    task, num_labels = _task(model)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "family": family,
        "encoder" if family == "bert" else "config": dataclasses.asdict(model.cfg),
        "task": task,
        "num_labels": num_labels,
        "dtype": jnp.dtype(_dtype(model)).name,
        "hf_config": None if source is None else json.loads(source),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    report = export.save(out / PARAMS_FILE, params)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return report


def _config_of(family: str, fields: dict) -> Any:
    if family == "llama":
        rope = fields.get("rope_llama3")
        return llama.LlamaConfig(
            **{**fields, "rope_llama3": None if rope is None else llama.Llama3Rope(**rope)}
        )
    cls: Any = {
        "bert": EncoderConfig,
        "deberta-v2": deberta.DebertaV2Config,
        "modernbert": modernbert.ModernBertConfig,
    }[family]
    return cls(**fields)


def load(folder: str | os.PathLike) -> hf.Pretrained:
    """Reads a folder written by :func:`save`: ``(model, params, tokenizer)``."""
    folder = pathlib.Path(folder)
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}; was it written by compact.save?")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ValueError(
            f"{config_path}: format {config.get('format')!r} version {config.get('version')}, "
            f"expected {FORMAT!r} version {VERSION}"
        )
    family = config.get("family", "bert")
    if family not in ("bert", "deberta-v2", "modernbert", "llama"):
        raise ValueError(f"{config_path}: unknown model family {family!r}")
    cfg = _config_of(family, config["encoder" if family == "bert" else "config"])
    hf_config = config["hf_config"]
    model, params = _build(
        cfg,
        _flat(export.load(folder / PARAMS_FILE)),
        task=config["task"],
        num_labels=config["num_labels"],
        dtype=jnp.dtype(config["dtype"]),
        hf_config_json=None if hf_config is None else json.dumps(hf_config),
        source=str(folder / PARAMS_FILE),
        family=family,
    )
    return hf.Pretrained(model, params, hf._tokenizer(folder))


def _pad(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``x`` padded with zeros at the end of ``axis`` to ``size`` entries."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return np.pad(x, pad)


def _widen_llama(flat: dict[str, np.ndarray], cfg: llama.LlamaConfig) -> llama.LlamaConfig:
    """Pads every layer of ``flat`` (in place) to the most key/value heads, the largest
    group and the widest MLP of any layer, with zero heads and neurons; returns the uniform
    config. Exact: a padded query head has zero ``o_proj`` rows, a padded key/value head is
    read by padded query heads only, a padded neuron has a zero ``down_proj`` row."""
    n = cfg.num_hidden_layers
    kv_max = max(cfg.kv_heads_of(i) for i in range(n))
    group_max = max(cfg.heads_of(i) // max(cfg.kv_heads_of(i), 1) for i in range(n))
    width = max(cfg.intermediate_of(i) for i in range(n))
    d, hidden = cfg.head_dim, cfg.hidden_size
    for i in range(n):
        a, m = f"model/layers/{i}/self_attn/", f"model/layers/{i}/mlp/"
        kv = cfg.kv_heads_of(i)
        group = cfg.heads_of(i) // max(kv, 1)

        def heads(x: np.ndarray, axis: int, grouped: bool, kv=kv, group=group) -> np.ndarray:
            """Axis ``axis`` of ``x`` (heads * d) padded as (kv_max[, group_max], d)."""
            shape = (kv, group, d) if grouped else (kv, d)
            y = x.reshape(*x.shape[:axis], *shape, *x.shape[axis + 1 :])
            y = _pad(y, axis, kv_max)
            if grouped:
                y = _pad(y, axis + 1, group_max)
            return y.reshape(*x.shape[:axis], -1, *x.shape[axis + 1 :])

        for part, grouped in (("q_proj", True), ("k_proj", False), ("v_proj", False)):
            flat[f"{a}{part}/kernel"] = heads(flat[f"{a}{part}/kernel"], 1, grouped)
            if f"{a}{part}/bias" in flat:
                flat[f"{a}{part}/bias"] = heads(flat[f"{a}{part}/bias"], 0, grouped)
        flat[a + "o_proj/kernel"] = heads(flat[a + "o_proj/kernel"], 0, True)
        for part in ("gate_proj", "up_proj"):
            flat[f"{m}{part}/kernel"] = _pad(flat[f"{m}{part}/kernel"], 1, width)
            if f"{m}{part}/bias" in flat:
                flat[f"{m}{part}/bias"] = _pad(flat[f"{m}{part}/bias"], 0, width)
        flat[m + "down_proj/kernel"] = _pad(flat[m + "down_proj/kernel"], 0, width)
        assert flat[a + "o_proj/kernel"].shape == (kv_max * group_max * d, hidden)
    return dataclasses.replace(
        cfg,
        num_attention_heads=kv_max * group_max,
        num_key_value_heads=kv_max,
        layer_heads=None,
        layer_kv_heads=None,
        intermediate_size=width,
        layer_intermediate=None,
    )


def _widen_encoder(flat: dict[str, np.ndarray], cfg: Any, family: str) -> Any:
    """Pads every layer's FFN (in place) to the widest with zero neurons; returns the
    uniform config."""
    width = max(cfg.layer_intermediate)
    for layer in range(cfg.num_hidden_layers):
        if family == "modernbert":
            pre = f"model/layers/{layer}/mlp/"
            for leaf, axis in (("Wi/kernel", 1), ("Wi/bias", 0)):
                if pre + leaf in flat:  # both halves padded
                    x = flat[pre + leaf]
                    halves = np.split(x, 2, axis=axis)
                    flat[pre + leaf] = np.concatenate([_pad(h, axis, width) for h in halves], axis)
            flat[pre + "Wo/kernel"] = _pad(flat[pre + "Wo/kernel"], 0, width)
            continue
        parts, pre = _parts(cfg), _layer_prefix(cfg, layer)
        for part, axis in ((parts.ffn_in, 1), (parts.ffn_out, 0)):
            key = f"{pre}{part}/kernel"
            flat[key] = _pad(flat[key], axis, width)
        key = f"{pre}{parts.ffn_in}/bias"
        flat[key] = _pad(flat[key], 0, width)
    return dataclasses.replace(cfg, intermediate_size=width, layer_intermediate=None)


def to_hf(
    model: Compactable, params: Any, out_dir: str | os.PathLike, *, tokenizer: Any = None
) -> pathlib.Path:
    """Writes a compacted model as a Hugging Face folder (``hf.save_pretrained``).

    Layers of different FFN widths are padded to the widest with neurons whose weights and
    biases are zero (their output rows are zero, so outputs do not change). A Llama-family
    decoder's layers are also padded to the most key/value heads and the largest group of
    any layer with zero heads (its transformers config has an explicit ``head_dim``).

    Raises:
      ValueError: an encoder layer lost heads: transformers' BERT-family, DeBERTa-v2 and
        ModernBERT classes have one head count for every layer, ``head_dim = hidden_size /
        num_attention_heads``, and no longer apply ``pruned_heads``; or every layer of a
        Llama lost every head (transformers needs one). Use :func:`save`.
    """
    family = _family(model)
    cfg: Any = model.cfg
    if family == "llama":
        if all(cfg.kv_heads_of(i) == 0 for i in range(cfg.num_hidden_layers)):
            raise ValueError(
                "every layer lost every attention head: transformers' Llama-family classes "
                "need at least one; write jaxprune's format with jaxprune.compact.save"
            )
        if cfg.layer_heads is None and cfg.layer_intermediate is None:
            return hf.save_pretrained(model, params, out_dir, tokenizer=tokenizer)
    else:
        if cfg.layer_heads is not None:
            raise ValueError(
                f"heads per layer {cfg.layer_heads} (of {cfg.num_attention_heads}): "
                f"transformers (>= 5) dropped config.pruned_heads and prune_heads, and its "
                f"{type(model).__name__.removesuffix('ForTask')} models have one head count "
                f"for every layer (head_dim = hidden_size / num_attention_heads), so they "
                f"cannot hold them; write jaxprune's format with jaxprune.compact.save"
            )
        if cfg.layer_intermediate is None:
            return hf.save_pretrained(model, params, out_dir, tokenizer=tokenizer)
    flat = _flat(params)
    wide_cfg = _widen_llama(flat, cfg) if family == "llama" else _widen_encoder(flat, cfg, family)
    task, num_labels = _task(model)
    wide, wide_params = _build(
        wide_cfg,
        flat,
        task=task,
        num_labels=num_labels,
        dtype=_dtype(model),
        hf_config_json=_hf_json(model, wide_cfg),
        source="to_hf",
        family=family,
    )
    return hf.save_pretrained(wide, wide_params, out_dir, tokenizer=tokenizer)


__all__ = [
    "CONFIG_FILE",
    "DEBERTA_PARTS",
    "FORMAT",
    "PARAMS_FILE",
    "VERSION",
    "Compactable",
    "Kept",
    "compact",
    "load",
    "save",
    "to_hf",
]
