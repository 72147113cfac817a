"""DeBERTa-v2 and -v3 encoders in Flax NNX (transformers' model type ``deberta-v2``).

Disentangled attention: besides the content-to-content scores, every layer adds
content-to-position (``c2p``) and position-to-content (``p2c``) terms read from one table of
relative-position embeddings (``deberta/encoder/rel_embeddings``), optionally bucketed
logarithmically (``position_buckets``) and LayerNorm-ed (``norm_rel_ebd="layer_norm"``).
DeBERTa-v3 has no absolute position embeddings (``position_biased_input=False``).

As in :mod:`jaxprune.models.encoder`, a parameter's path is its checkpoint key:
``deberta/encoder/layer/0/attention/self/query_proj/kernel`` is
``deberta.encoder.layer.0.attention.self.query_proj.weight`` (transposed); the optional
ConvLayer's kernel (kernel_size, in / groups, out) is the checkpoint's Conv1d weight with
its axes reversed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune.models import layers
from jaxprune.models.encoder import DenseResidual, EncoderConfig, EncoderOutput, Intermediate
from jaxprune.models.heads import Output, task_output

#: The heads of :class:`DebertaV2ForTask` (DeBERTa's masked-LM head is not implemented).
TASKS = ("base", "sequence-classification", "question-answering", "token-classification")
_POS_ATT_TYPES = ("c2p", "p2c")


@dataclasses.dataclass(frozen=True)
class DebertaV2Config(EncoderConfig):
    """:class:`EncoderConfig` plus DeBERTa-v2's fields (transformers' names); ``arch`` must
    be ``"deberta-v2"``, and ``classifier_dropout`` is transformers' ``cls_dropout``."""

    relative_attention: bool = False
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    position_buckets: int = -1  # > 0: relative positions bucketed logarithmically
    pos_att_type: tuple[str, ...] = ()  # of "c2p", "p2c"
    share_att_key: bool = False  # position terms reuse query_proj / key_proj
    norm_rel_ebd: str = "none"  # "layer_norm": LayerNorm on the relative embeddings
    position_biased_input: bool = True  # absolute position embeddings (v2; not v3)
    pooler_hidden_act: str = "gelu"
    pooler_dropout: float = 0.0
    conv_kernel_size: int = 0  # > 0: a ConvLayer after the first layer
    conv_groups: int = 1
    conv_act: str = "tanh"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "pos_att_type", tuple(self.pos_att_type))
        norms = {t.strip() for t in self.norm_rel_ebd.lower().split("|")}
        problems = []
        if self.arch != "deberta-v2":
            problems.append(f"arch={self.arch!r} (must be 'deberta-v2')")
        if not set(self.pos_att_type) <= set(_POS_ATT_TYPES):
            problems.append(f"pos_att_type={list(self.pos_att_type)} (known: c2p, p2c)")
        if not norms <= {"none", "layer_norm"}:
            problems.append(f"norm_rel_ebd={self.norm_rel_ebd!r} (known: none, layer_norm)")
        if self.embedding_size not in (None, self.hidden_size):
            problems.append(
                f"embedding_size={self.embedding_size} != hidden_size={self.hidden_size} "
                f"(the embed_proj layer is not implemented)"
            )
        if self.conv_kernel_size > 0 and self.conv_kernel_size % 2 == 0:
            problems.append(f"conv_kernel_size={self.conv_kernel_size} (must be odd)")
        if problems:
            raise ValueError("unsupported DeBERTa-v2 config: " + "; ".join(problems))

    @property
    def max_relative(self) -> int:
        """The largest relative distance told apart (transformers' fallback included)."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    @property
    def relative_span(self) -> int:
        """Half the rows of the relative-embedding table."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    @property
    def rel_layer_norm(self) -> bool:
        return "layer_norm" in {t.strip() for t in self.norm_rel_ebd.lower().split("|")}

    @classmethod
    def from_hf(cls, hf: Any) -> DebertaV2Config:
        """From a transformers ``DebertaV2Config``.

        Raises:
          ValueError: another model type, or an option jaxprune does not implement.
        """
        if hf.model_type != "deberta-v2":
            raise ValueError(
                f"DebertaV2Config.from_hf needs a deberta-v2 config, not {hf.model_type!r}"
            )
        head_size = getattr(hf, "attention_head_size", None)
        pooler_size = getattr(hf, "pooler_hidden_size", hf.hidden_size)
        if head_size not in (None, hf.hidden_size // hf.num_attention_heads):
            raise ValueError(f"unsupported DeBERTa-v2 config: attention_head_size={head_size}")
        if pooler_size != hf.hidden_size:
            raise ValueError(
                f"unsupported DeBERTa-v2 config: pooler_hidden_size={pooler_size} != "
                f"hidden_size={hf.hidden_size}"
            )
        pos_att_type = hf.pos_att_type or ()
        if isinstance(pos_att_type, str):
            pos_att_type = [t.strip() for t in pos_att_type.lower().split("|")]
        return cls(
            arch="deberta-v2",
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
            embedding_size=getattr(hf, "embedding_size", None),
            classifier_dropout=getattr(hf, "cls_dropout", None),
            relative_attention=hf.relative_attention,
            max_relative_positions=hf.max_relative_positions,
            position_buckets=getattr(hf, "position_buckets", -1),
            pos_att_type=tuple(pos_att_type),
            share_att_key=getattr(hf, "share_att_key", False),
            norm_rel_ebd=getattr(hf, "norm_rel_ebd", "none"),
            position_biased_input=hf.position_biased_input,
            pooler_hidden_act=hf.pooler_hidden_act,
            pooler_dropout=hf.pooler_dropout,
            conv_kernel_size=getattr(hf, "conv_kernel_size", 0),
            conv_groups=getattr(hf, "conv_groups", 1),
            conv_act=getattr(hf, "conv_act", "tanh"),
        )


def relative_positions(length: int, buckets: int, max_position: int) -> np.ndarray:
    """(length, length) int: query ``i``'s position relative to key ``j``, ``i - j``; with
    ``buckets > 0``, distances beyond ``buckets // 2`` share logarithmic buckets (computed in
    float32 like transformers' ``make_log_bucket_position``, so the buckets agree)."""
    ids = np.arange(length)
    rel = ids[:, None] - ids[None, :]
    if buckets <= 0 or max_position <= 0:
        return rel
    mid = buckets // 2
    far = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
    ratio = np.log(far / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(far <= mid, rel, log_pos * np.sign(rel)).astype(np.int64)


class DisentangledSelfAttention(nnx.Module):
    """Content scores plus the relative c2p / p2c terms, all scaled by
    ``1 / sqrt(head_dim * (1 + len(pos_att_type)))``."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h = cfg.hidden_size
        self.heads, self.head_dim = cfg.heads_of(layer), cfg.head_dim
        w = self.heads * self.head_dim  # hidden_size unless compacted
        self.pos_att_type = cfg.pos_att_type
        self.shared = cfg.share_att_key
        self.scale = 1 / math.sqrt(cfg.head_dim * (1 + len(cfg.pos_att_type)))
        self.query_proj = layers.dense(h, w, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.key_proj = layers.dense(h, w, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.value_proj = layers.dense(h, w, ("embed", "heads"), rngs=rngs, dtype=dtype)
        if cfg.relative_attention:
            self.pos_dropout = nnx.Dropout(cfg.hidden_dropout_prob)
            if not cfg.share_att_key and "c2p" in cfg.pos_att_type:
                self.pos_key_proj = layers.dense(h, w, ("embed", "heads"), rngs=rngs, dtype=dtype)
            if not cfg.share_att_key and "p2c" in cfg.pos_att_type:
                self.pos_query_proj = layers.dense(h, w, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.attention_probs_dropout_prob)

    def split(self, x: jax.Array) -> jax.Array:
        """(..., heads * head_dim) -> (..., heads, head_dim)."""
        return x.reshape(*x.shape[:-1], self.heads, self.head_dim)

    def relative_bias(
        self, q: jax.Array, k: jax.Array, rel: jax.Array, relative_pos: np.ndarray
    ) -> jax.Array | None:
        """The c2p + p2c scores (batch, heads, length, length), scaled.

        Args:
          q, k: (batch, length, heads, head_dim).
          rel: (2 * span, hidden) relative embeddings.
          relative_pos: (length, length) int, see :func:`relative_positions`.
        """
        span = rel.shape[0] // 2
        rows = np.arange(relative_pos.shape[0])[:, None]
        bias: jax.Array | None = None
        if "c2p" in self.pos_att_type:
            pos_key = self.split((self.key_proj if self.shared else self.pos_key_proj)(rel))
            c2p = jnp.einsum("bqhd,rhd->bhqr", q, pos_key)
            bias = c2p[:, :, rows, np.clip(relative_pos + span, 0, 2 * span - 1)]
        if "p2c" in self.pos_att_type:
            pos_query = self.split((self.query_proj if self.shared else self.pos_query_proj)(rel))
            p2c = jnp.einsum("bkhd,rhd->bhkr", k, pos_query)  # key j, relative bucket r
            term = p2c[:, :, rows, np.clip(span - relative_pos, 0, 2 * span - 1)].swapaxes(-1, -2)
            bias = term if bias is None else bias + term
        return None if bias is None else bias * self.scale

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array | None,
        rel: jax.Array | None,
        relative_pos: np.ndarray,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
        return_scores: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """x (batch, length, hidden) -> (context (batch, length, hidden), scores or None);
        ``mask`` as :func:`layers.attention`'s; ``rel`` the (normalised) relative table, None
        without relative attention."""
        if not self.heads:  # a compacted layer without heads: an empty context
            b, t = x.shape[:2]
            return x[..., :0], jnp.zeros((b, 0, t, t), jnp.float32) if return_scores else None
        q, k, v = (self.split(f(x)) for f in (self.query_proj, self.key_proj, self.value_proj))
        bias = None
        if rel is not None:
            rel = self.pos_dropout(rel, deterministic=deterministic, rngs=rngs)
            bias = self.relative_bias(q, k, rel, relative_pos)
        out, scores = layers.attention(
            q,
            k,
            v,
            mask,
            dropout=self.dropout,
            deterministic=deterministic,
            rngs=rngs,
            return_scores=return_scores,
            bias=bias,
            scale=self.scale,
        )
        return out.reshape(*x.shape[:2], -1), scores


class DebertaAttention(nnx.Module):
    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        h, w = cfg.hidden_size, cfg.heads_of(layer) * cfg.head_dim
        self.self = DisentangledSelfAttention(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.output = DenseResidual(w, h, ("heads", "embed"), cfg, rngs=rngs, dtype=dtype)


class DebertaLayer(nnx.Module):
    """BERT's post-LayerNorm layer around disentangled attention."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any, layer: int = 0):
        self.attention = DebertaAttention(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.intermediate = Intermediate(cfg, rngs=rngs, dtype=dtype, layer=layer)
        self.output = DenseResidual(
            cfg.intermediate_of(layer),
            cfg.hidden_size,
            ("mlp", "embed"),
            cfg,
            rngs=rngs,
            dtype=dtype,
        )

    def __call__(self, x, mask, rel, relative_pos, *, deterministic, rngs, return_scores):
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        context, scores = self.attention.self(
            x, mask, rel, relative_pos, return_scores=return_scores, **kw
        )
        x = self.attention.output(context, x, **kw)
        return self.output(self.intermediate(x), x, **kw), scores


class ConvLayer(nnx.Module):
    """DeBERTa-v2's convolution over the embeddings, merged into the first layer's output:
    ``LayerNorm(out + act(conv(embeddings)))``, zero on padding."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any):
        h, size = cfg.hidden_size, cfg.conv_kernel_size
        self.act = layers.activation(cfg.conv_act)
        self.conv = nnx.Conv(
            h,
            h,
            (size,),
            padding=[((size - 1) // 2, (size - 1) // 2)],
            feature_group_count=cfg.conv_groups,
            dtype=dtype,
            param_dtype=jnp.float32,
            kernel_init=nnx.with_partitioning(
                nnx.initializers.normal(0.02), (None, "embed", "embed_out"), eager_sharding=False
            ),
            bias_init=nnx.with_partitioning(
                nnx.initializers.zeros_init(), ("embed_out",), eager_sharding=False
            ),
            rngs=rngs,
        )
        self.LayerNorm = layers.layer_norm(h, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)

    def __call__(self, embeddings, residual, input_mask, *, deterministic, rngs) -> jax.Array:
        """embeddings, residual: (batch, length, hidden); input_mask: (batch, length, 1) bool."""
        out = jnp.where(input_mask, self.conv(embeddings), 0)
        out = self.act(self.dropout(out, deterministic=deterministic, rngs=rngs))
        return jnp.where(input_mask, self.LayerNorm(residual + out), 0)


class DebertaEmbeddings(nnx.Module):
    """Word (+ absolute position) (+ token-type) embeddings, LayerNorm, zero on padding."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any):
        h = cfg.hidden_size
        self.word_embeddings = layers.embed(
            cfg.vocab_size, h, ("vocab", "embed"), rngs=rngs, dtype=dtype
        )
        if cfg.position_biased_input:
            self.position_embeddings = layers.embed(
                cfg.max_position_embeddings, h, ("positions", "embed"), rngs=rngs, dtype=dtype
            )
        if cfg.type_vocab_size:
            self.token_type_embeddings = layers.embed(
                cfg.type_vocab_size, h, (None, "embed"), rngs=rngs, dtype=dtype
            )
        self.LayerNorm = layers.layer_norm(h, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)

    def __call__(
        self, input_ids, token_type_ids, input_mask, *, deterministic, rngs, position_ids=None
    ) -> jax.Array:
        """(batch, length) ids -> (batch, length, hidden); ``input_mask`` (batch, length, 1)
        bool."""
        x = self.word_embeddings(input_ids)
        if hasattr(self, "position_embeddings"):
            if position_ids is None:
                position_ids = jnp.arange(input_ids.shape[1])[None, :]
            x = x + self.position_embeddings(position_ids)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = jnp.where(input_mask, self.LayerNorm(x), 0)
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class DebertaEncoder(nnx.Module):
    """``deberta.encoder``: the layers, the relative-embedding table and its LayerNorm, and
    the optional ConvLayer."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any):
        h = cfg.hidden_size
        self.layer = nnx.List(
            [
                DebertaLayer(cfg, rngs=rngs, dtype=dtype, layer=i)
                for i in range(cfg.num_hidden_layers)
            ]
        )
        if cfg.relative_attention:
            self.rel_embeddings = layers.embed(
                2 * cfg.relative_span, h, ("positions", "embed"), rngs=rngs, dtype=dtype
            )
        if cfg.rel_layer_norm:
            self.LayerNorm = layers.layer_norm(h, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        if cfg.conv_kernel_size > 0:
            self.conv = ConvLayer(cfg, rngs=rngs, dtype=dtype)

    def relative_table(self) -> jax.Array | None:
        """(2 * span, hidden), LayerNorm-ed when configured; None without relative attention."""
        if not hasattr(self, "rel_embeddings"):
            return None
        table = self.rel_embeddings.embedding[...]
        return self.LayerNorm(table) if hasattr(self, "LayerNorm") else table


class DebertaV2Model(nnx.Module):
    """The body (transformers' ``DebertaV2Model``), under ``deberta`` in task models."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.cfg = cfg
        self.embeddings = DebertaEmbeddings(cfg, rngs=rngs, dtype=dtype)
        self.encoder = DebertaEncoder(cfg, rngs=rngs, dtype=dtype)

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
    ) -> EncoderOutput:
        """Encodes a batch; the arguments are :meth:`jaxprune.models.Encoder.__call__`'s.
        Relative positions are index differences, so packed rows (``segment_ids``) need no
        restart; ``position_ids`` matter only with absolute position embeddings.

        Raises:
          ValueError: packed rows on a model with a ConvLayer (it would mix examples).
        """
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        cfg, body = self.cfg, self.encoder
        if segment_ids is not None and hasattr(body, "conv"):
            raise ValueError("packed rows (segment_ids) are not supported with a ConvLayer")
        real = attention_mask
        if real is None and segment_ids is not None:
            real = segment_ids > 0
        input_mask = (jnp.ones(input_ids.shape, bool) if real is None else real.astype(bool))[
            ..., None
        ]
        x = self.embeddings(input_ids, token_type_ids, input_mask, position_ids=position_ids, **kw)
        mask = attention_mask
        if segment_ids is not None:
            mask = layers.segment_mask(segment_ids, attention_mask)
        rel = body.relative_table()
        relative_pos = relative_positions(
            input_ids.shape[1], cfg.position_buckets, cfg.max_relative
        )
        hidden, scores = [x], []
        for i, layer in enumerate(body.layer):
            out, s = layer(x, mask, rel, relative_pos, return_scores=output_attention_scores, **kw)
            if i == 0 and hasattr(body, "conv"):
                out = body.conv(x, out, input_mask, **kw)
            x = out
            hidden.append(x)
            scores.append(s)
        return EncoderOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attention_scores=tuple(scores) if output_attention_scores else None,
        )


class ContextPooler(nnx.Module):
    """DeBERTa's pooler: dropout -> dense -> ``pooler_hidden_act`` on the first token."""

    def __init__(self, cfg: DebertaV2Config, *, rngs: nnx.Rngs, dtype: Any):
        h = cfg.hidden_size
        self.act = layers.activation(cfg.pooler_hidden_act)
        self.dense = layers.dense(h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(cfg.pooler_dropout)

    def __call__(self, x, *, deterministic, rngs, cls_positions=None) -> jax.Array:
        """(batch, length, hidden) -> (batch, hidden), or (batch, S, hidden) when packed."""
        first = layers.first_tokens(x, cls_positions)
        return self.act(self.dense(self.dropout(first, deterministic=deterministic, rngs=rngs)))


class DebertaV2ForTask(nnx.Module):
    """DeBERTa-v2 with a task head, laid out like transformers' ``DebertaV2For<Task>``; a
    drop-in for :class:`jaxprune.models.EncoderForTask` (same call, same :class:`Output`).

    Args:
      cfg: the architecture.
      task: one of :data:`TASKS`.
      num_labels: classes (sequence or token classification); 1 means regression.
      dtype: compute dtype; parameters are float32.
    """

    hf_config_json: str | None = None  # the transformers config, set by jaxprune.hf.build

    def __init__(
        self,
        cfg: DebertaV2Config,
        *,
        task: str = "sequence-classification",
        num_labels: int = 2,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
    ):
        if task not in TASKS:
            raise ValueError(f"DeBERTa-v2 has no {task!r} head in jaxprune; choose from {TASKS}")
        self.cfg, self.task, self.num_labels = cfg, task, num_labels
        h = cfg.hidden_size
        self.deberta = DebertaV2Model(cfg, rngs=rngs, dtype=dtype)
        if task == "sequence-classification":
            self.pooler = ContextPooler(cfg, rngs=rngs, dtype=dtype)
            dropout = cfg.classifier_dropout
            self.dropout = nnx.Dropout(cfg.hidden_dropout_prob if dropout is None else dropout)
        elif task == "token-classification":
            self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)
        if task in ("sequence-classification", "token-classification"):
            self.classifier = layers.dense(
                h, num_labels, ("embed", "classes"), rngs=rngs, dtype=dtype
            )
        elif task == "question-answering":
            self.qa_outputs = layers.dense(h, 2, ("embed", "classes"), rngs=rngs, dtype=dtype)

    @property
    def body(self) -> DebertaV2Model:
        return self.deberta

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
        is the ContextPooler's output (sequence classification only)."""
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        out = self.deberta(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attention_scores=output_attention_scores,
            position_ids=position_ids,
            segment_ids=segment_ids,
            **kw,
        )

        def sequence(x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
            pooled = self.pooler(x, cls_positions=cls_positions, **kw)
            return self.classifier(self.dropout(pooled, **kw)), pooled

        return task_output(
            self.task,
            out,
            sequence=sequence,
            token=lambda x: self.classifier(self.dropout(x, **kw)),
            question_answering=lambda x: self.qa_outputs(x),
        )


__all__ = [
    "TASKS",
    "ContextPooler",
    "ConvLayer",
    "DebertaAttention",
    "DebertaEmbeddings",
    "DebertaEncoder",
    "DebertaLayer",
    "DebertaV2Config",
    "DebertaV2ForTask",
    "DebertaV2Model",
    "DisentangledSelfAttention",
    "relative_positions",
]
