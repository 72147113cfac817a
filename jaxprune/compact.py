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

Folding changes the order of float32 sums only: outputs agree with the masked dense model
to about 1e-6. The compacted model's config has per-layer ``layer_heads`` and
``layer_intermediate`` (None when uniform). transformers (>= 5) has no per-layer sizes and
no longer applies ``config.pruned_heads``, so :func:`to_hf` writes a Hugging Face folder only
when every head is kept (FFN widths are padded with zero neurons to the widest layer);
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
from jaxprune.models import layers
from jaxprune.models.encoder import EncoderConfig
from jaxprune.models.heads import EncoderForTask
from jaxprune.structured import BERT_PARTS, DISTIL_PARTS

FORMAT = "jaxprune-compact"
VERSION = 1
CONFIG_FILE = "jaxprune_config.json"
PARAMS_FILE = "params.safetensors"


class Kept(NamedTuple):
    """What survives compaction, per layer: ascending indices into the current layer."""

    heads: tuple[np.ndarray, ...]  # int64 (kept heads,)
    neurons: tuple[np.ndarray, ...]  # int64 (kept FFN neurons,)


def _layer_prefix(cfg: EncoderConfig, layer: int) -> str:
    stack = "transformer" if cfg.arch == "distilbert" else "encoder"
    return f"{cfg.arch}/{stack}/layer/{layer}/"


def _flat(params: Any) -> dict[str, np.ndarray]:
    return {
        paths.path_str(p): np.asarray(jax.device_get(v))
        for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def _compact_layer(
    flat: dict[str, np.ndarray], cfg: EncoderConfig, layer: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
    """(kept heads, kept neurons, changed leaves by path: None = removed) for one layer."""
    parts = DISTIL_PARTS if cfg.arch == "distilbert" else BERT_PARTS
    pre = _layer_prefix(cfg, layer)

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
        for part in (parts.query, parts.key, parts.value):  # None: the layer has no heads left
            out[f"{pre}{part}/kernel"] = get(part, "kernel")[:, cols] if cols.size else None
            out[f"{pre}{part}/bias"] = get(part, "bias")[cols] if cols.size else None
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


def _uniform(cfg: EncoderConfig, heads: tuple[int, ...], widths: tuple[int, ...]) -> EncoderConfig:
    """``cfg`` with these per-layer sizes, the per-layer fields None where uniform."""
    same_width = len(set(widths)) == 1
    return dataclasses.replace(
        cfg,
        layer_heads=None if set(heads) == {cfg.num_attention_heads} else heads,
        intermediate_size=widths[0] if same_width else cfg.intermediate_size,
        layer_intermediate=None if same_width else widths,
    )


def _hf_json(model: EncoderForTask, cfg: EncoderConfig) -> str | None:
    """The model's transformers config JSON with the FFN width of ``cfg``."""
    source = getattr(model, "hf_config_json", None)
    if source is None:
        return None
    data = json.loads(source)
    data["hidden_dim" if cfg.arch == "distilbert" else "intermediate_size"] = cfg.intermediate_size
    return json.dumps(data)


def _build(
    cfg: EncoderConfig,
    flat: dict[str, Any],
    *,
    task: str,
    num_labels: int,
    dtype: Any,
    hf_config_json: str | None,
    source: str,
) -> tuple[EncoderForTask, dict]:
    """An ``EncoderForTask`` of ``cfg`` holding the arrays of ``flat`` (path -> array), strictly."""
    abstract = nnx.eval_shape(
        lambda: EncoderForTask(cfg, task=task, num_labels=num_labels, rngs=nnx.Rngs(0), dtype=dtype)
    )
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


def _dtype(model: EncoderForTask) -> Any:
    return model.body.embeddings.LayerNorm.dtype


def compact(model: EncoderForTask, params: Any) -> tuple[EncoderForTask, dict, Kept]:
    """Removes every head and FFN neuron that contributes nothing (rules in the module doc).

    Args:
      model: the encoder the params belong to (its config, task and labels are used).
      params: its (pruned) parameters, nested dicts as ``nnx.to_pure_dict`` gives.

    Returns:
      ``(compacted model, its params, Kept)``; outputs match ``model`` with ``params``.
    """
    cfg = model.cfg
    paths.check_same_structure(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), params, what="params", ref_name="model"
    )
    flat = _flat(params)
    kept_heads, kept_neurons = [], []
    for layer in range(cfg.num_hidden_layers):
        heads, neurons, new = _compact_layer(flat, cfg, layer)
        flat = {k: v for k, v in (flat | new).items() if v is not None}
        kept_heads.append(heads)
        kept_neurons.append(neurons)
    small_cfg = _uniform(
        cfg, tuple(len(h) for h in kept_heads), tuple(len(n) for n in kept_neurons)
    )
    small, small_params = _build(
        small_cfg,
        flat,
        task=model.task,
        num_labels=model.num_labels,
        dtype=_dtype(model),
        hf_config_json=_hf_json(model, small_cfg),
        source="compact",
    )
    return small, small_params, Kept(tuple(kept_heads), tuple(kept_neurons))


def save(
    model: EncoderForTask, params: Any, out_dir: str | os.PathLike, *, tokenizer: Any = None
) -> export.SizeReport:
    """Writes any (compacted) encoder to a jaxprune folder: ``jaxprune_config.json`` (the
    :class:`EncoderConfig`, task, labels and transformers config) and ``params.safetensors``
    (a bit-exact :mod:`jaxprune.export` checkpoint). Returns the checkpoint's size report."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = getattr(model, "hf_config_json", None)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "encoder": dataclasses.asdict(model.cfg),
        "task": model.task,
        "num_labels": model.num_labels,
        "dtype": jnp.dtype(_dtype(model)).name,
        "hf_config": None if source is None else json.loads(source),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    report = export.save(out / PARAMS_FILE, params)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return report


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
    cfg = EncoderConfig(**config["encoder"])
    hf_config = config["hf_config"]
    model, params = _build(
        cfg,
        _flat(export.load(folder / PARAMS_FILE)),
        task=config["task"],
        num_labels=config["num_labels"],
        dtype=jnp.dtype(config["dtype"]),
        hf_config_json=None if hf_config is None else json.dumps(hf_config),
        source=str(folder / PARAMS_FILE),
    )
    return hf.Pretrained(model, params, hf._tokenizer(folder))


def to_hf(
    model: EncoderForTask, params: Any, out_dir: str | os.PathLike, *, tokenizer: Any = None
) -> pathlib.Path:
    """Writes a compacted encoder as a Hugging Face folder (``hf.save_pretrained``).

    Layers of different FFN widths are padded to the widest with neurons whose weights and
    biases are zero (their output rows are zero, so outputs do not change).

    Raises:
      ValueError: a layer lost heads: transformers' BERT-family classes have one head count
        for every layer and no longer apply ``pruned_heads``; use :func:`save`.
    """
    cfg = model.cfg
    if cfg.layer_heads is not None:
        raise ValueError(
            f"heads per layer {cfg.layer_heads} (of {cfg.num_attention_heads}): transformers "
            f"(>= 5) dropped config.pruned_heads and prune_heads, so its BERT-family models "
            f"cannot hold them; write jaxprune's format with jaxprune.compact.save"
        )
    if cfg.layer_intermediate is None:
        return hf.save_pretrained(model, params, out_dir, tokenizer=tokenizer)
    width = max(cfg.layer_intermediate)
    parts = DISTIL_PARTS if cfg.arch == "distilbert" else BERT_PARTS
    flat = _flat(params)
    for layer, n in enumerate(cfg.layer_intermediate):
        pre = _layer_prefix(cfg, layer)
        for part, axis in ((parts.ffn_in, 1), (parts.ffn_out, 0)):
            key = f"{pre}{part}/kernel"
            pad = [(0, 0), (0, 0)]
            pad[axis] = (0, width - n)
            flat[key] = np.pad(flat[key], pad)
        flat[f"{pre}{parts.ffn_in}/bias"] = np.pad(
            flat[f"{pre}{parts.ffn_in}/bias"], (0, width - n)
        )
    wide_cfg = dataclasses.replace(cfg, intermediate_size=width, layer_intermediate=None)
    wide, wide_params = _build(
        wide_cfg,
        flat,
        task=model.task,
        num_labels=model.num_labels,
        dtype=_dtype(model),
        hf_config_json=_hf_json(model, wide_cfg),
        source="to_hf",
    )
    return hf.save_pretrained(wide, wide_params, out_dir, tokenizer=tokenizer)


__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "PARAMS_FILE",
    "VERSION",
    "Kept",
    "compact",
    "load",
    "save",
    "to_hf",
]
