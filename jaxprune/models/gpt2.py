"""GPT-2 decoder LM in Flax NNX, laid out like transformers' ``GPT2LMHeadModel``.

Paths read like the checkpoint: ``transformer/h/0/attn/c_attn/kernel`` is
``transformer.h.0.attn.c_attn.weight``; GPT-2's Conv1D already stores (in, out), so
kernels are not transposed. The LM head is tied to ``transformer/wte``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models import layers
from jaxprune.models.heads import Output


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1

    @classmethod
    def from_hf(cls, hf: Any) -> GPT2Config:
        if getattr(hf, "scale_attn_by_inverse_layer_idx", False) or not getattr(
            hf, "scale_attn_weights", True
        ):
            raise ValueError(
                "only GPT-2's default attention scaling (1/sqrt(head_dim)) is supported"
            )
        return cls(
            vocab_size=hf.vocab_size,
            n_positions=hf.n_positions,
            n_embd=hf.n_embd,
            n_layer=hf.n_layer,
            n_head=hf.n_head,
            n_inner=hf.n_inner or 4 * hf.n_embd,
            activation_function=hf.activation_function,
            layer_norm_epsilon=hf.layer_norm_epsilon,
            resid_pdrop=hf.resid_pdrop,
            embd_pdrop=hf.embd_pdrop,
            attn_pdrop=hf.attn_pdrop,
        )


class Attention(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs, dtype: Any):
        d = cfg.n_embd
        self.heads = cfg.n_head
        self.c_attn = layers.dense(d, 3 * d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.c_proj = layers.dense(d, d, ("heads", "embed"), rngs=rngs, dtype=dtype)
        self.attn_dropout = nnx.Dropout(cfg.attn_pdrop)
        self.resid_dropout = nnx.Dropout(cfg.resid_pdrop)

    def __call__(self, x, mask, *, deterministic, rngs):
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (t.reshape(*x.shape[:2], self.heads, -1) for t in (q, k, v))
        out, _ = layers.attention(
            q,
            k,
            v,
            mask,
            causal=True,
            dropout=self.attn_dropout,
            deterministic=deterministic,
            rngs=rngs,
        )
        out = self.c_proj(out.reshape(x.shape))
        return self.resid_dropout(out, deterministic=deterministic, rngs=rngs)


class MLP(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs, dtype: Any):
        self.act = layers.activation(cfg.activation_function)
        self.c_fc = layers.dense(cfg.n_embd, cfg.n_inner, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.c_proj = layers.dense(
            cfg.n_inner, cfg.n_embd, ("mlp", "embed"), rngs=rngs, dtype=dtype
        )
        self.dropout = nnx.Dropout(cfg.resid_pdrop)

    def __call__(self, x, *, deterministic, rngs):
        return self.dropout(
            self.c_proj(self.act(self.c_fc(x))), deterministic=deterministic, rngs=rngs
        )


class Block(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs, dtype: Any):
        eps = cfg.layer_norm_epsilon
        self.ln_1 = layers.layer_norm(cfg.n_embd, eps, rngs=rngs, dtype=dtype)
        self.attn = Attention(cfg, rngs=rngs, dtype=dtype)
        self.ln_2 = layers.layer_norm(cfg.n_embd, eps, rngs=rngs, dtype=dtype)
        self.mlp = MLP(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x, mask, *, deterministic, rngs):
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        x = x + self.attn(self.ln_1(x), mask, **kw)
        return x + self.mlp(self.ln_2(x), **kw)


class Transformer(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs, dtype: Any):
        self.wte = layers.embed(
            cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), rngs=rngs, dtype=dtype
        )
        self.wpe = layers.embed(
            cfg.n_positions, cfg.n_embd, ("positions", "embed"), rngs=rngs, dtype=dtype
        )
        self.drop = nnx.Dropout(cfg.embd_pdrop)
        self.h = nnx.List([Block(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.n_layer)])
        self.ln_f = layers.layer_norm(cfg.n_embd, cfg.layer_norm_epsilon, rngs=rngs, dtype=dtype)


class GPT2LMHeadModel(nnx.Module):
    """GPT-2 with the tied LM head.

    ``model(input_ids, attention_mask)`` returns :class:`Output` with logits of shape
    (batch, length, vocab). Positions count from 0 at the first column, so pad on the right.
    """

    hf_config_json: str | None = None  # the transformers config, set by jaxprune.hf.build

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.cfg = cfg
        self.transformer = Transformer(cfg, rngs=rngs, dtype=dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
        output_hidden_states: bool = False,
    ) -> Output:
        t = self.transformer
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = t.drop(t.wte(input_ids) + t.wpe(positions), **kw)
        hidden = [x]
        for block in t.h:
            x = block(x, attention_mask, **kw)
            hidden.append(x)
        x = t.ln_f(x)
        logits = x @ t.wte.embedding[...].T.astype(x.dtype)
        return Output(logits, tuple(hidden) if output_hidden_states else None)


def greedy_decode(
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    input_ids: jax.Array,
    lengths: jax.Array,
    max_new_tokens: int,
) -> jax.Array:
    """Greedy decoding as a pure, jittable function (``max_new_tokens`` static).

    Args:
      logits_fn: ``(params, ids (batch, T)) -> logits (batch, T, vocab)``, causal.
      input_ids: (batch, prompt) int; row ``r``'s prompt is ``input_ids[r, :lengths[r]]``
        (right padding).
      lengths: (batch,) int prompt lengths.

    Returns:
      (batch, prompt + max_new_tokens): row ``r``'s new tokens are at ``[lengths[r],
      lengths[r] + max_new_tokens)``, each row continuing right after its own prompt. Every
      step reruns the model on the fixed-size buffer; causal attention makes everything after
      a row's write position, padding included, irrelevant.
    """
    batch, prompt = input_ids.shape
    rows = jnp.arange(batch)
    buf = jnp.zeros((batch, prompt + max_new_tokens), input_ids.dtype)
    buf = buf.at[:, :prompt].set(input_ids)

    def step(i, buf):
        logits = logits_fn(params, buf)[rows, lengths + i - 1]
        return buf.at[rows, lengths + i].set(jnp.argmax(logits, -1).astype(buf.dtype))

    return jax.lax.fori_loop(0, max_new_tokens, step, buf)


def generate_greedy(
    model: GPT2LMHeadModel,
    input_ids: jax.Array,
    max_new_tokens: int,
    lengths: jax.Array | None = None,
) -> jax.Array:
    """Greedy decoding with ``model``: (batch, prompt) int -> (batch, prompt +
    max_new_tokens); ``lengths`` as in :func:`greedy_decode` (default: full rows)."""
    batch, prompt = input_ids.shape
    total = prompt + max_new_tokens
    if total > model.cfg.n_positions:
        raise ValueError(
            f"prompt + new tokens = {total} exceeds n_positions={model.cfg.n_positions}"
        )
    if lengths is None:
        lengths = jnp.full((batch,), prompt, jnp.int32)
    graphdef, state = nnx.split(model)

    def logits_fn(state, ids):
        return nnx.merge(graphdef, state)(ids).logits

    decode = jax.jit(greedy_decode, static_argnums=(0, 4))
    return decode(logits_fn, state, input_ids, jnp.asarray(lengths, jnp.int32), max_new_tokens)


__all__ = [
    "MLP",
    "Attention",
    "Block",
    "GPT2Config",
    "GPT2LMHeadModel",
    "Transformer",
    "generate_greedy",
    "greedy_decode",
]
