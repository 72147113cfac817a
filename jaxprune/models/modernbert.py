"""ModernBERT encoders in Flax NNX (transformers' model type ``modernbert``).

A pre-LayerNorm encoder with RoPE: layers alternate between global attention and local
attention over a window of ``local_attention`` tokens (``|query - key| <= local_attention //
2``), each kind with its own RoPE base (``global_rope_theta`` / ``local_rope_theta``, read
from transformers' ``rope_parameters``); the MLP is a GeGLU whose ``Wi`` makes input and
gate in one matmul. LayerNorms, projections and the head's dense layer have biases only when
``norm_bias`` / ``attention_bias`` / ``mlp_bias`` / ``classifier_bias`` say so, and the first
layer's attention norm is the identity. Task heads pool (first token or mean) or read every
token, then apply ``head`` (dense -> act -> norm), dropout and ``classifier``; the masked-LM
head is ``head``, then the tied word embeddings plus ``decoder/bias``.

As in :mod:`jaxprune.models.encoder`, a parameter's path is its checkpoint key:
``model/layers/0/attn/Wqkv/kernel`` is ``model.layers.0.attn.Wqkv.weight`` (transposed),
``model/embeddings/tok_embeddings/embedding`` is ``model.embeddings.tok_embeddings.weight``.
The eager/sdpa path of transformers (padded batches and an attention mask) is the
reference; its unpadded flash-attention path computes the same function.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models import layers
from jaxprune.models.encoder import EncoderOutput
from jaxprune.models.heads import Output, task_output

#: The heads of :class:`ModernBertForTask`: all of :data:`jaxprune.models.TASKS`.
TASKS = (
    "base",
    "sequence-classification",
    "question-answering",
    "token-classification",
    "masked-lm",
)
POOLINGS = ("cls", "mean")
GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Architecture hyperparameters (transformers' names); ``layer_types`` holds
    ``"full_attention"`` (global) or ``"sliding_attention"`` (local) per layer, () for
    transformers' default of a global layer every third, from the first."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_types: tuple[str, ...] = ()
    arch: str = "modernbert"
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    classifier_bias: bool = False  # the head's dense layer (the classifier always has one)
    classifier_activation: str = "gelu"
    classifier_pooling: str = "cls"  # one of POOLINGS
    local_attention: int = 128  # the local window, both sides together
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    decoder_bias: bool = True  # the masked-LM output bias
    # Compacted models (jaxprune.compact): heads (of head_dim) and MLP width kept in each
    # layer. None: num_attention_heads and intermediate_size in every layer.
    layer_heads: tuple[int, ...] | None = None
    layer_intermediate: tuple[int, ...] | None = None

    def __post_init__(self):
        types = tuple(self.layer_types) or tuple(
            LOCAL if i % 3 else GLOBAL for i in range(self.num_hidden_layers)
        )
        object.__setattr__(self, "layer_types", types)  # JSON gives lists; keep it hashable
        problems = []
        for name, top in (
            ("layer_heads", self.num_attention_heads),
            ("layer_intermediate", None),
        ):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            sizes = tuple(int(n) for n in sizes)
            object.__setattr__(self, name, sizes)
            if len(sizes) != self.num_hidden_layers or any(
                n < 0 or (top is not None and n > top) for n in sizes
            ):
                problems.append(
                    f"{name}={list(sizes)} (one size in [0, {top or 'inf'}] for each of the "
                    f"{self.num_hidden_layers} layers)"
                )
        if self.arch != "modernbert":
            problems.append(f"arch={self.arch!r} (must be 'modernbert')")
        if len(types) != self.num_hidden_layers or not set(types) <= {GLOBAL, LOCAL}:
            problems.append(
                f"layer_types={list(types)} (one of {GLOBAL!r}, {LOCAL!r} for each of the "
                f"{self.num_hidden_layers} layers)"
            )
        if self.classifier_pooling not in POOLINGS:
            problems.append(f"classifier_pooling={self.classifier_pooling!r} (known: cls, mean)")
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if problems:
            raise ValueError("unsupported ModernBERT config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def heads_of(self, layer: int) -> int:
        """Attention heads of layer ``layer`` (0-based)."""
        return self.num_attention_heads if self.layer_heads is None else self.layer_heads[layer]

    def intermediate_of(self, layer: int) -> int:
        """MLP width of layer ``layer`` (0-based)."""
        if self.layer_intermediate is None:
            return self.intermediate_size
        return self.layer_intermediate[layer]

    @property
    def window(self) -> int:
        """How far a local layer's query sees on each side (transformers' ``sliding_window``)."""
        return self.local_attention // 2

    def rope_theta(self, layer_type: str) -> float:
        return self.global_rope_theta if layer_type == GLOBAL else self.local_rope_theta

    @classmethod
    def from_hf(cls, hf: Any) -> ModernBertConfig:
        """From a transformers ``ModernBertConfig``.

        Raises:
          ValueError: another model type, or a RoPE other than the default (unscaled) one.
        """
        if hf.model_type != "modernbert":
            raise ValueError(
                f"ModernBertConfig.from_hf needs a modernbert config, not {hf.model_type!r}"
            )
        rope = hf.rope_parameters
        for kind in (GLOBAL, LOCAL):
            rope_type = rope[kind].get("rope_type", "default")
            if rope_type != "default":
                raise ValueError(
                    f"unsupported ModernBERT config: rope_type={rope_type!r} on {kind} layers "
                    f"(rope_parameters={rope}); jaxprune supports the default RoPE only"
                )
        return cls(
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=hf.num_attention_heads,
            intermediate_size=hf.intermediate_size,
            layer_types=tuple(hf.layer_types),
            hidden_activation=hf.hidden_activation,
            max_position_embeddings=hf.max_position_embeddings,
            norm_eps=hf.norm_eps,
            norm_bias=hf.norm_bias,
            attention_bias=hf.attention_bias,
            mlp_bias=hf.mlp_bias,
            classifier_bias=hf.classifier_bias,
            classifier_activation=hf.classifier_activation,
            classifier_pooling=hf.classifier_pooling,
            local_attention=hf.local_attention,
            global_rope_theta=float(rope[GLOBAL]["rope_theta"]),
            local_rope_theta=float(rope[LOCAL]["rope_theta"]),
            embedding_dropout=float(hf.embedding_dropout),
            attention_dropout=float(hf.attention_dropout),
            mlp_dropout=float(hf.mlp_dropout),
            classifier_dropout=float(hf.classifier_dropout),
            decoder_bias=hf.decoder_bias,
        )


class ModernBertEmbeddings(nnx.Module):
    """Token embeddings, LayerNorm, dropout (no positions: RoPE places the tokens)."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any):
        h = cfg.hidden_size
        self.tok_embeddings = layers.embed(
            cfg.vocab_size, h, ("vocab", "embed"), rngs=rngs, dtype=dtype
        )
        self.norm = layers.layer_norm(h, cfg.norm_eps, rngs=rngs, dtype=dtype, bias=cfg.norm_bias)
        self.drop = nnx.Dropout(cfg.embedding_dropout)

    def __call__(self, input_ids, *, deterministic, rngs) -> jax.Array:
        """(batch, length) ids -> (batch, length, hidden)."""
        x = self.norm(self.tok_embeddings(input_ids))
        return self.drop(x, deterministic=deterministic, rngs=rngs)


class ModernBertAttention(nnx.Module):
    """Self-attention with RoPE; ``Wqkv`` makes queries, keys and values in one matmul
    (its output columns are (3, heads, head_dim))."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.heads_of(layer), cfg.head_dim
        width = self.heads * self.head_dim
        kw: dict[str, Any] = dict(bias=cfg.attention_bias, rngs=rngs, dtype=dtype)
        self.Wqkv = layers.dense(h, 3 * width, ("embed", "heads"), **kw)
        self.Wo = layers.dense(width, h, ("heads", "embed"), **kw)
        self.dropout = nnx.Dropout(cfg.attention_dropout)  # on the probabilities
        self.out_drop = nnx.Dropout(cfg.attention_dropout)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        inv_freq: np.ndarray,
        mask: jax.Array | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
        return_scores: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """x (batch, length, hidden) at ``positions`` (batch or 1, length); ``mask`` as
        :func:`layers.attention`'s. Returns (output (batch, length, hidden), scores or None)."""
        b, t, _ = x.shape
        if not self.heads:  # a compacted layer without heads: only Wo's bias is left
            scores = jnp.zeros((b, 0, t, t), jnp.float32) if return_scores else None
            out = self.Wo(x[..., :0])
            return self.out_drop(out, deterministic=deterministic, rngs=rngs), scores
        qkv = self.Wqkv(x).reshape(b, t, 3, self.heads, self.head_dim)
        q, k = (layers.rotate(qkv[:, :, i], positions, inv_freq) for i in (0, 1))
        out, scores = layers.attention(
            q,
            k,
            qkv[:, :, 2],
            mask,
            dropout=self.dropout,
            deterministic=deterministic,
            rngs=rngs,
            return_scores=return_scores,
        )
        out = self.Wo(out.reshape(b, t, -1))
        return self.out_drop(out, deterministic=deterministic, rngs=rngs), scores


class ModernBertMLP(nnx.Module):
    """GeGLU: ``Wo(act(input) * gate)``, ``input`` and ``gate`` the two halves of ``Wi(x)``."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h, n = cfg.hidden_size, cfg.intermediate_of(layer)
        kw: dict[str, Any] = dict(bias=cfg.mlp_bias, rngs=rngs, dtype=dtype)
        self.act = layers.activation(cfg.hidden_activation)
        self.Wi = layers.dense(h, 2 * n, ("embed", "mlp"), **kw)
        self.drop = nnx.Dropout(cfg.mlp_dropout)
        self.Wo = layers.dense(n, h, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        """(batch, length, hidden) -> (batch, length, hidden)."""
        inputs, gate = jnp.split(self.Wi(x), 2, axis=-1)
        return self.Wo(self.drop(self.act(inputs) * gate, deterministic=deterministic, rngs=rngs))


class ModernBertEncoderLayer(nnx.Module):
    """Pre-norm block: ``x + attn(attn_norm(x))``, then ``x + mlp(mlp_norm(x))``; layer 0
    has no ``attn_norm`` (its input is the normed embeddings)."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any, layer: int):
        h, eps, bias = cfg.hidden_size, cfg.norm_eps, cfg.norm_bias
        self.layer_type = cfg.layer_types[layer]
        self.attn_norm = (
            layers.layer_norm(h, eps, rngs=rngs, dtype=dtype, bias=bias) if layer else None
        )
        self.attn = ModernBertAttention(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.mlp_norm = layers.layer_norm(h, eps, rngs=rngs, dtype=dtype, bias=bias)
        self.mlp = ModernBertMLP(cfg, rngs=rngs, dtype=dtype, layer=layer)

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        inv_freq: np.ndarray,
        mask: jax.Array | None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
        return_scores: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """As :meth:`ModernBertAttention.__call__`: (output (batch, length, hidden), scores)."""
        normed = x if self.attn_norm is None else self.attn_norm(x)
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        out, scores = self.attn(
            normed, positions, inv_freq, mask, return_scores=return_scores, **kw
        )
        x = x + out
        return x + self.mlp(self.mlp_norm(x), **kw), scores


def attention_masks(
    cfg: ModernBertConfig,
    length: int,
    attention_mask: jax.Array | None,
    segment_ids: jax.Array | None,
) -> dict[str, jax.Array | None]:
    """The mask of each layer type, as :func:`layers.attention` takes it: global layers see
    every real key (of their own example, with ``segment_ids``), (batch, 1 or length,
    length) bool or None; local layers also only keys within :attr:`ModernBertConfig.window`
    positions, (batch or 1, length, length)."""
    if segment_ids is not None:
        keys: jax.Array | None = layers.segment_mask(segment_ids, attention_mask)
    elif attention_mask is not None:
        keys = attention_mask[:, None, :].astype(bool)
    else:
        keys = None
    index = np.arange(length)
    near = jnp.asarray(np.abs(index[:, None] - index[None, :]) <= cfg.window)[None]
    return {GLOBAL: keys, LOCAL: near if keys is None else near & keys}


class ModernBertModel(nnx.Module):
    """The body (transformers' ``ModernBertModel``), under ``model`` in task models."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.cfg = cfg
        self.embeddings = ModernBertEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.layers = nnx.List(
            [
                ModernBertEncoderLayer(cfg, rngs=rngs, dtype=dtype, layer=i)
                for i in range(cfg.num_hidden_layers)
            ]
        )
        self.final_norm = layers.layer_norm(
            cfg.hidden_size, cfg.norm_eps, rngs=rngs, dtype=dtype, bias=cfg.norm_bias
        )

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
        output_hidden_states: bool = False,
        output_attention_scores: bool = False,
        position_ids: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> EncoderOutput:
        """Encodes a batch; the arguments are :meth:`jaxprune.models.Encoder.__call__`'s.

        Returns:
          ``last_hidden_state`` after ``final_norm``; ``hidden_states`` the embeddings and
          every layer's output, the last one normed (``last_hidden_state``), as
          transformers returns them.
        """
        cfg = self.cfg
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        positions = jnp.arange(input_ids.shape[1])[None] if position_ids is None else position_ids
        masks = attention_masks(cfg, input_ids.shape[1], attention_mask, segment_ids)
        inv_freqs = {t: layers.rope_frequencies(cfg.rope_theta(t), cfg.head_dim) for t in masks}
        x = self.embeddings(input_ids, **kw)
        hidden, scores = [x], []
        for layer in self.layers:
            t = layer.layer_type
            x, s = layer(
                x, positions, inv_freqs[t], masks[t], return_scores=output_attention_scores, **kw
            )
            hidden.append(x)
            if s is not None:
                scores.append(s)
        x = self.final_norm(x)
        return EncoderOutput(
            last_hidden_state=x,
            hidden_states=(*hidden[:-1], x) if output_hidden_states else None,
            attention_scores=tuple(scores) if output_attention_scores else None,
        )


class ModernBertPredictionHead(nnx.Module):
    """``head``: dense -> ``classifier_activation`` -> LayerNorm, on any leading axes."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs, dtype: Any):
        h = cfg.hidden_size
        self.dense = layers.dense(
            h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype, bias=cfg.classifier_bias
        )
        self.act = layers.activation(cfg.classifier_activation)
        self.norm = layers.layer_norm(h, cfg.norm_eps, rngs=rngs, dtype=dtype, bias=cfg.norm_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.act(self.dense(x)))


class ModernBertDecoder(nnx.Module):
    """``decoder``: the masked-LM output layer, the word embeddings (tied) plus ``bias``
    (none without ``decoder_bias``)."""

    def __init__(self, cfg: ModernBertConfig):
        self.bias = (
            nnx.Param(
                jnp.zeros((cfg.vocab_size,), jnp.float32),
                out_sharding=("vocab",),
                eager_sharding=False,
            )
            if cfg.decoder_bias
            else None
        )

    def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
        """(..., hidden) and the (vocab, hidden) embeddings -> (..., vocab) logits."""
        logits = x @ embedding.T.astype(x.dtype)
        return logits if self.bias is None else logits + self.bias


def mean_pool(
    x: jax.Array,
    attention_mask: jax.Array | None,
    segment_ids: jax.Array | None = None,
    cls_positions: jax.Array | None = None,
) -> jax.Array:
    """The mean of ``x`` (batch, length, hidden) over real tokens: (batch, hidden); for
    packed rows (``cls_positions`` (batch, S) with ``segment_ids``) over each example's
    tokens, (batch, S, hidden). An empty slot averages nothing and gives zeros."""
    b, length = x.shape[:2]
    real = jnp.ones((b, length), bool) if attention_mask is None else attention_mask.astype(bool)
    if cls_positions is None:
        weights = real[:, None, :]
    else:
        if segment_ids is None:
            raise ValueError("mean pooling over packed rows (cls_positions) needs segment_ids")
        slots = jnp.take_along_axis(segment_ids, cls_positions.astype(jnp.int32), axis=1)
        weights = (segment_ids[:, None, :] == slots[:, :, None]) & real[:, None, :]
    weights = weights.astype(x.dtype)  # (batch, 1 or S, length)
    count = jnp.maximum(weights.sum(-1, keepdims=True), 1)
    pooled = jnp.einsum("bsl,blh->bsh", weights, x) / count
    return pooled[:, 0] if cls_positions is None else pooled


class ModernBertForTask(nnx.Module):
    """ModernBERT with a task head, laid out like transformers' ``ModernBertFor<Task>``; a
    drop-in for :class:`jaxprune.models.EncoderForTask` (same call, same :class:`Output`;
    ``token_type_ids`` are ignored, ModernBERT has none).

    Args:
      cfg: the architecture.
      task: one of :data:`TASKS`.
      num_labels: classes (sequence or token classification); 1 means regression. The QA
        head (transformers' ``classifier`` there too) always has 2 outputs: start and end.
      dtype: compute dtype; parameters are float32.
    """

    hf_config_json: str | None = None  # the transformers config, set by jaxprune.hf.build

    def __init__(
        self,
        cfg: ModernBertConfig,
        *,
        task: str = "sequence-classification",
        num_labels: int = 2,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
    ):
        if task not in TASKS:
            raise ValueError(f"ModernBERT has no {task!r} head in jaxprune; choose from {TASKS}")
        self.cfg, self.task = cfg, task
        self.num_labels = 2 if task == "question-answering" else num_labels
        self.model = ModernBertModel(cfg, rngs=rngs, dtype=dtype)
        if task != "base":
            self.head = ModernBertPredictionHead(cfg, rngs=rngs, dtype=dtype)
        if task == "masked-lm":
            self.decoder = ModernBertDecoder(cfg)
        elif task != "base":
            self.drop = nnx.Dropout(cfg.classifier_dropout)
            self.classifier = layers.dense(
                cfg.hidden_size, self.num_labels, ("embed", "classes"), rngs=rngs, dtype=dtype
            )

    @property
    def body(self) -> ModernBertModel:
        return self.model

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
    ) -> Output:
        """Runs body and head, as :meth:`jaxprune.models.EncoderForTask.__call__`; ``pooled``
        is the head's output on the pooled tokens (sequence classification only).

        Raises:
          ValueError: mean pooling over packed rows without ``segment_ids``.
        """
        del token_type_ids
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        out = self.model(
            input_ids,
            attention_mask,
            output_hidden_states=output_hidden_states,
            output_attention_scores=output_attention_scores,
            position_ids=position_ids,
            segment_ids=segment_ids,
            **kw,
        )

        def sequence(x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
            if self.cfg.classifier_pooling == "cls":
                x = layers.first_tokens(x, cls_positions)
            else:
                x = mean_pool(x, attention_mask, segment_ids, cls_positions)
            pooled = self.head(x)
            return self.classifier(self.drop(pooled, **kw)), pooled

        def every_token(x: jax.Array) -> jax.Array:  # token classification and QA
            return self.classifier(self.drop(self.head(x), **kw))

        def masked_lm(x: jax.Array) -> jax.Array:
            embedding = self.model.embeddings.tok_embeddings.embedding[...]
            return self.decoder(self.head(x), embedding)

        return task_output(
            self.task,
            out,
            sequence=sequence,
            token=every_token,
            question_answering=every_token,
            masked_lm=masked_lm,
        )


__all__ = [
    "GLOBAL",
    "LOCAL",
    "POOLINGS",
    "TASKS",
    "ModernBertAttention",
    "ModernBertConfig",
    "ModernBertDecoder",
    "ModernBertEmbeddings",
    "ModernBertEncoderLayer",
    "ModernBertForTask",
    "ModernBertMLP",
    "ModernBertModel",
    "ModernBertPredictionHead",
    "attention_masks",
    "mean_pool",
]
