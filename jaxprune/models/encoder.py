"""BERT-family encoders in Flax NNX: BERT, RoBERTa, ELECTRA (discriminator) and DistilBERT.

Module attribute names are those of the transformers checkpoints, so a parameter's path in
the pytree is its checkpoint name: ``bert/encoder/layer/3/attention/self/query/kernel`` is
``bert.encoder.layer.3.attention.self.query.weight`` (transposed). Kernels are
(in_features, out_features).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models import layers

ARCHITECTURES = ("bert", "roberta", "electra", "distilbert")
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture hyperparameters (transformers' names where they agree)."""

    arch: str  # one of ARCHITECTURES
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: no token-type embedding (DistilBERT)
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    embedding_size: int | None = None  # ELECTRA: embeddings narrower than hidden
    classifier_dropout: float | None = None  # None: hidden_dropout_prob
    qa_dropout: float = 0.1  # DistilBERT's dropout before the QA head
    # Compacted models (jaxprune.compact): heads and FFN width kept in each layer. None:
    # every layer has num_attention_heads heads (of head_dim) and intermediate_size neurons.
    layer_heads: tuple[int, ...] | None = None
    layer_intermediate: tuple[int, ...] | None = None

    def __post_init__(self):
        for name, top in (
            ("layer_heads", self.num_attention_heads),
            ("layer_intermediate", None),
        ):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            sizes = tuple(int(n) for n in sizes)
            object.__setattr__(self, name, sizes)  # JSON gives lists; keep it hashable
            if len(sizes) != self.num_hidden_layers:
                raise ValueError(
                    f"{name} has {len(sizes)} entries for {self.num_hidden_layers} layers"
                )
            if any(n < 0 or (top is not None and n > top) for n in sizes):
                bound = f"[0, {top}]" if top is not None else ">= 0"
                raise ValueError(f"{name}={sizes}: every entry must be {bound}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads_of(self, layer: int) -> int:
        """Attention heads of layer ``layer`` (0-based)."""
        return self.num_attention_heads if self.layer_heads is None else self.layer_heads[layer]

    def intermediate_of(self, layer: int) -> int:
        """FFN width of layer ``layer`` (0-based)."""
        if self.layer_intermediate is None:
            return self.intermediate_size
        return self.layer_intermediate[layer]

    @classmethod
    def from_hf(cls, hf: Any) -> EncoderConfig:
        """From a transformers config object (``AutoConfig.from_pretrained(...)``)."""
        model_type = hf.model_type
        if model_type == "distilbert":
            return cls(
                arch="distilbert",
                vocab_size=hf.vocab_size,
                hidden_size=hf.dim,
                num_hidden_layers=hf.n_layers,
                num_attention_heads=hf.n_heads,
                intermediate_size=hf.hidden_dim,
                hidden_act=hf.activation,
                max_position_embeddings=hf.max_position_embeddings,
                type_vocab_size=0,
                pad_token_id=hf.pad_token_id or 0,
                hidden_dropout_prob=hf.dropout,
                attention_probs_dropout_prob=hf.attention_dropout,
                classifier_dropout=hf.seq_classif_dropout,
                qa_dropout=hf.qa_dropout,
            )
        if model_type in _ROBERTA_LIKE:
            arch = "roberta"
        elif model_type in ("bert", "electra"):
            arch = model_type
        else:
            raise ValueError(
                f"unsupported model_type {model_type!r}: jaxprune's encoders cover "
                f"bert, roberta (and xlm-roberta, camembert), electra and distilbert"
            )
        embedding_size = getattr(hf, "embedding_size", None) if arch == "electra" else None
        return cls(
            arch=arch,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=hf.num_attention_heads,
            intermediate_size=hf.intermediate_size,
            hidden_act=hf.hidden_act,
            max_position_embeddings=hf.max_position_embeddings,
            type_vocab_size=hf.type_vocab_size,
            layer_norm_eps=hf.layer_norm_eps,
            pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
            hidden_dropout_prob=hf.hidden_dropout_prob,
            attention_probs_dropout_prob=hf.attention_probs_dropout_prob,
            embedding_size=embedding_size,
            classifier_dropout=getattr(hf, "classifier_dropout", None),
        )


class EncoderOutput(NamedTuple):
    """Encoder outputs; optional fields are None unless asked for."""

    last_hidden_state: jax.Array  # (batch, length, hidden)
    pooled: jax.Array | None = None  # (batch, hidden) BERT's pooler on [CLS]; packed: (b, S, h)
    hidden_states: tuple[jax.Array, ...] | None = None  # embeddings + every layer: L+1
    attention_scores: tuple[jax.Array, ...] | None = None  # pre-softmax, (b, heads, q, k)


class Embeddings(nnx.Module):
    """Word + position (+ token-type) embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        width = cfg.embedding_size or cfg.hidden_size
        self.arch = cfg.arch
        self.pad_token_id = cfg.pad_token_id
        self.word_embeddings = layers.embed(
            cfg.vocab_size, width, ("vocab", "embed"), rngs=rngs, dtype=dtype
        )
        self.position_embeddings = layers.embed(
            cfg.max_position_embeddings, width, ("positions", "embed"), rngs=rngs, dtype=dtype
        )
        if cfg.type_vocab_size:
            self.token_type_embeddings = layers.embed(
                cfg.type_vocab_size, width, (None, "embed"), rngs=rngs, dtype=dtype
            )
        self.LayerNorm = layers.layer_norm(width, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)

    def __call__(
        self, input_ids, token_type_ids, *, deterministic, rngs, position_ids=None
    ) -> jax.Array:
        length = input_ids.shape[1]
        roberta = self.arch == "roberta"
        if position_ids is not None:  # RoBERTa's table starts after padding_idx
            positions = position_ids + (self.pad_token_id + 1 if roberta else 0)
        elif roberta:  # positions count real tokens from padding_idx + 1
            real = (input_ids != self.pad_token_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + self.pad_token_id
        else:
            positions = jnp.arange(length)[None, :]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x), deterministic=deterministic, rngs=rngs)


class _Heads(nnx.Module):
    """Projection to heads and back, shared by both layer layouts."""

    def split(self, x: jax.Array, heads: int) -> jax.Array:
        return x.reshape(*x.shape[:2], heads, -1)


class NoHeads(nnx.Module):
    """Attention of a compacted layer whose heads were all removed: the context is empty
    (width 0), so only the output projection's bias reaches the residual.

    Args:
      out_lin: DistilBERT's output projection (kernel (0, hidden)), applied here as in
        :class:`DistilAttention`; None for BERT, whose projection is ``attention.output``.
    """

    def __init__(self, out_lin: nnx.Linear | None = None):
        self.out_lin = out_lin

    def __call__(self, x, *args, return_scores, **kwargs):
        del args, kwargs
        context = x[..., :0]
        b, length = x.shape[:2]
        scores = jnp.zeros((b, 0, length, length), jnp.float32) if return_scores else None
        return (context if self.out_lin is None else self.out_lin(context)), scores


class SelfAttention(_Heads):
    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h = cfg.hidden_size
        self.heads = cfg.heads_of(layer)
        width = self.heads * cfg.head_dim
        self.query = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.key = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.value = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.attention_probs_dropout_prob)

    def __call__(self, x, mask, *, deterministic, rngs, return_scores):
        q, k, v = (self.split(f(x), self.heads) for f in (self.query, self.key, self.value))
        out, scores = layers.attention(
            q,
            k,
            v,
            mask,
            dropout=self.dropout,
            deterministic=deterministic,
            rngs=rngs,
            return_scores=return_scores,
        )
        return out.reshape(*x.shape[:2], -1), scores


class DenseResidual(nnx.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's ``attention.output`` and ``output``."""

    def __init__(self, n_in, n_out, axes, cfg: EncoderConfig, *, rngs, dtype):
        self.dense = layers.dense(n_in, n_out, axes, rngs=rngs, dtype=dtype)
        self.LayerNorm = layers.layer_norm(n_out, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, x, residual, *, deterministic, rngs):
        x = self.dropout(self.dense(x), deterministic=deterministic, rngs=rngs)
        return self.LayerNorm(x + residual)


class Attention(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype, layer: int = 0):
        h, heads = cfg.hidden_size, cfg.heads_of(layer)
        self.self = SelfAttention(cfg, rngs=rngs, dtype=dtype, layer=layer) if heads else NoHeads()
        self.output = DenseResidual(
            heads * cfg.head_dim, h, ("heads", "embed"), cfg, rngs=rngs, dtype=dtype
        )


class Intermediate(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype, layer: int = 0):
        self.act = layers.activation(cfg.hidden_act)
        self.dense = layers.dense(
            cfg.hidden_size, cfg.intermediate_of(layer), ("embed", "mlp"), rngs=rngs, dtype=dtype
        )

    def __call__(self, x):
        return self.act(self.dense(x))


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer layer with BERT's parameter names."""

    def __init__(
        self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, layer: int = 0
    ):
        width = cfg.intermediate_of(layer)
        self.attention = Attention(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.intermediate = Intermediate(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.output = DenseResidual(
            width, cfg.hidden_size, ("mlp", "embed"), cfg, rngs=rngs, dtype=dtype
        )

    def __call__(self, x, mask, *, deterministic, rngs, return_scores):
        kw = dict(deterministic=deterministic, rngs=rngs)
        context, scores = self.attention.self(x, mask, return_scores=return_scores, **kw)
        x = self.attention.output(context, x, **kw)
        return self.output(self.intermediate(x), x, **kw), scores


class DistilAttention(_Heads):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype, layer: int = 0):
        h = cfg.hidden_size
        self.heads = cfg.heads_of(layer)
        width = self.heads * cfg.head_dim
        self.q_lin = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.k_lin = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.v_lin = layers.dense(h, width, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.out_lin = layers.dense(width, h, ("heads", "embed"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.attention_probs_dropout_prob)

    def __call__(self, x, mask, *, deterministic, rngs, return_scores):
        q, k, v = (self.split(f(x), self.heads) for f in (self.q_lin, self.k_lin, self.v_lin))
        out, scores = layers.attention(
            q,
            k,
            v,
            mask,
            dropout=self.dropout,
            deterministic=deterministic,
            rngs=rngs,
            return_scores=return_scores,
        )
        return self.out_lin(out.reshape(*x.shape[:2], -1)), scores


class DistilFFN(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype, layer: int = 0):
        width = cfg.intermediate_of(layer)
        self.act = layers.activation(cfg.hidden_act)
        self.lin1 = layers.dense(cfg.hidden_size, width, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.lin2 = layers.dense(width, cfg.hidden_size, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, x, *, deterministic, rngs):
        return self.dropout(
            self.lin2(self.act(self.lin1(x))), deterministic=deterministic, rngs=rngs
        )


class DistilLayer(nnx.Module):
    """DistilBERT's layer: same computation as BERT's, other names."""

    def __init__(
        self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32, layer: int = 0
    ):
        h, eps = cfg.hidden_size, cfg.layer_norm_eps
        if cfg.heads_of(layer):
            self.attention: DistilAttention | NoHeads = DistilAttention(
                cfg, rngs=rngs, dtype=dtype, layer=layer
            )
        else:
            out_lin = layers.dense(0, h, ("heads", "embed"), rngs=rngs, dtype=dtype)
            self.attention = NoHeads(out_lin)
        self.sa_layer_norm = layers.layer_norm(h, eps, rngs=rngs, dtype=dtype)
        self.ffn = DistilFFN(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.output_layer_norm = layers.layer_norm(h, eps, rngs=rngs, dtype=dtype)

    def __call__(self, x, mask, *, deterministic, rngs, return_scores):
        attn, scores = self.attention(
            x, mask, deterministic=deterministic, rngs=rngs, return_scores=return_scores
        )
        x = self.sa_layer_norm(attn + x)
        return self.output_layer_norm(
            self.ffn(x, deterministic=deterministic, rngs=rngs) + x
        ), scores


class LayerStack(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        kind = DistilLayer if cfg.arch == "distilbert" else BertLayer
        self.layer = nnx.List(
            [kind(cfg, rngs=rngs, dtype=dtype, layer=i) for i in range(cfg.num_hidden_layers)]
        )


class Pooler(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype):
        h = cfg.hidden_size
        self.dense = layers.dense(h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype)

    def __call__(self, x, cls_positions=None):
        return jnp.tanh(self.dense(layers.first_tokens(x, cls_positions)))


class Encoder(nnx.Module):
    """The encoder body (transformers' ``BertModel`` and its siblings).

    Args:
      cfg: the architecture.
      add_pooler: BERT's tanh pooler over [CLS] (used by sequence classification).
      dtype: compute dtype (float32 or bfloat16); parameters stay float32.
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        *,
        rngs: nnx.Rngs,
        add_pooler: bool = False,
        dtype: Any = jnp.float32,
    ):
        if cfg.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {cfg.arch!r}; known: {ARCHITECTURES}")
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs=rngs, dtype=dtype)
        if cfg.embedding_size and cfg.embedding_size != cfg.hidden_size:
            self.embeddings_project = layers.dense(
                cfg.embedding_size, cfg.hidden_size, (None, "embed"), rngs=rngs, dtype=dtype
            )
        stack = LayerStack(cfg, rngs=rngs, dtype=dtype)
        if cfg.arch == "distilbert":
            self.transformer = stack
        else:
            self.encoder = stack
        if add_pooler:
            self.pooler = Pooler(cfg, rngs=rngs, dtype=dtype)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
        output_hidden_states: bool = False,
        output_attention_scores: bool = False,
        position_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cls_positions: jax.Array | None = None,
    ) -> EncoderOutput:
        """Encodes a batch.

        Args:
          input_ids: (batch, length) int token ids.
          attention_mask: (batch, length), 1 for tokens, 0 for padding; None: all tokens.
          token_type_ids: (batch, length) segment ids; None: zeros.
          deterministic: disables dropout; when False, ``rngs`` must hold a ``dropout`` key.
          output_hidden_states / output_attention_scores: also return them (costless when off).
          position_ids: (batch, length) positions; None: 0, 1, ... (RoBERTa: counted over
            real tokens). Packed rows restart them at every example.
          segment_ids: (batch, length) int, packed rows: ``k + 1`` on the ``k``-th example,
            0 on padding; tokens attend only within their example. None: one per row.
          cls_positions: (batch, S) int, where each example of a packed row starts: the
            pooler then gives (batch, S, hidden).
        """
        kw = dict(deterministic=deterministic, rngs=rngs)
        x = self.embeddings(input_ids, token_type_ids, position_ids=position_ids, **kw)
        mask = attention_mask
        if segment_ids is not None:
            mask = layers.segment_mask(segment_ids, attention_mask)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        stack = self.transformer if self.cfg.arch == "distilbert" else self.encoder
        hidden, scores = [x], []
        for layer in stack.layer:
            x, s = layer(x, mask, return_scores=output_attention_scores, **kw)
            hidden.append(x)
            scores.append(s)
        return EncoderOutput(
            last_hidden_state=x,
            pooled=self.pooler(x, cls_positions) if hasattr(self, "pooler") else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attention_scores=tuple(scores) if output_attention_scores else None,
        )


__all__ = [
    "ARCHITECTURES",
    "Attention",
    "BertLayer",
    "DenseResidual",
    "DistilAttention",
    "DistilFFN",
    "DistilLayer",
    "Embeddings",
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "Intermediate",
    "LayerStack",
    "NoHeads",
    "Pooler",
    "SelfAttention",
]
