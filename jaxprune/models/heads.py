"""Task models: an encoder body plus the head transformers would put on it.

``EncoderForTask(cfg, task=...)`` holds the body under the checkpoint prefix (``bert``,
``roberta``, ``electra``, ``distilbert``) and the head under transformers' names, so its
parameter paths are the checkpoint's keys of ``AutoModelFor<Task>``.

Tasks: ``base`` (the body only), ``sequence-classification`` (regression when
``num_labels == 1``), ``question-answering``, ``token-classification`` and ``masked-lm``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxprune.models import layers
from jaxprune.models.encoder import Encoder, EncoderConfig, EncoderOutput

#: The encoder heads ``hf.load_pretrained(..., head=...)`` can build (``jaxprune.hf.HEADS``).
TASKS = (
    "base",
    "sequence-classification",
    "question-answering",
    "token-classification",
    "masked-lm",
)

# transformers' class name of every (architecture, task), for export.
HF_CLASSES = {
    "base": "{Arch}Model",
    "sequence-classification": "{Arch}ForSequenceClassification",
    "question-answering": "{Arch}ForQuestionAnswering",
    "token-classification": "{Arch}ForTokenClassification",
    "masked-lm": "{Arch}ForMaskedLM",
}
ARCH_NAMES = {
    "bert": "Bert",
    "roberta": "Roberta",
    "electra": "Electra",
    "distilbert": "DistilBert",
    "deberta-v2": "DebertaV2",
    "modernbert": "ModernBert",
}


class Output(NamedTuple):
    """Task outputs. ``logits``: (batch, classes) for sequence classification ((batch, S,
    classes) for packed rows), (batch, length, classes) for tokens and masked LM, (batch,
    length, 2) = start/end for QA."""

    logits: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attention_scores: tuple[jax.Array, ...] | None = None
    pooled: jax.Array | None = None


def task_output(
    task: str,
    body: EncoderOutput,
    *,
    sequence: Callable[[jax.Array], tuple[jax.Array, jax.Array | None]],
    token: Callable[[jax.Array], jax.Array],
    question_answering: Callable[[jax.Array], jax.Array],
    masked_lm: Callable[[jax.Array], jax.Array] | None = None,
) -> Output:
    """The :class:`Output` of ``task``'s head on the body's last hidden state, shared by the
    task models of every encoder family.

    ``base`` gives the hidden state itself; every other task calls its own head on it (only
    that one, so a head may use modules only its task builds). ``sequence`` returns (logits,
    pooled), and that ``pooled`` replaces the body's.

    Raises:
      ValueError: a task without a head here (``masked-lm`` when ``masked_lm`` is None).
    """
    x, pooled = body.last_hidden_state, body.pooled
    if task == "base":
        logits = x
    elif task == "sequence-classification":
        logits, pooled = sequence(x)
    elif task == "token-classification":
        logits = token(x)
    elif task == "question-answering":
        logits = question_answering(x)
    elif task == "masked-lm" and masked_lm is not None:
        logits = masked_lm(x)
    else:
        raise ValueError(f"no {task!r} head")
    return Output(logits, body.hidden_states, body.attention_scores, pooled)


class ClassificationHead(nnx.Module):
    """RoBERTa's and ELECTRA's head: dense -> act -> out_proj on the first token."""

    def __init__(self, cfg: EncoderConfig, n: int, act: str, *, rngs, dtype):
        h = cfg.hidden_size
        self.act = layers.activation(act)
        self.dense = layers.dense(h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype)
        self.out_proj = layers.dense(h, n, ("embed", "classes"), rngs=rngs, dtype=dtype)
        self.dropout = nnx.Dropout(_classifier_dropout(cfg))

    def __call__(self, x, *, deterministic, rngs, cls_positions=None):
        x = layers.first_tokens(x, cls_positions)
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        x = self.dropout(self.act(self.dense(x)), deterministic=deterministic, rngs=rngs)
        return self.out_proj(x)


class _Transform(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype):
        h = cfg.hidden_size
        self.act = layers.activation(cfg.hidden_act)
        self.dense = layers.dense(h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype)
        self.LayerNorm = layers.layer_norm(h, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)

    def __call__(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertMLMPredictions(nnx.Module):
    """``cls.predictions``: transform, then the tied word embeddings plus ``bias``."""

    def __init__(self, cfg: EncoderConfig, *, rngs, dtype):
        self.transform = _Transform(cfg, rngs=rngs, dtype=dtype)
        self.bias = _vocab_bias(cfg)


class BertMLMHead(nnx.Module):
    def __init__(self, cfg: EncoderConfig, *, rngs, dtype):
        self.predictions = BertMLMPredictions(cfg, rngs=rngs, dtype=dtype)

    def __call__(self, x, embedding):
        p = self.predictions
        return p.transform(x) @ embedding.T.astype(x.dtype) + p.bias


class RobertaLMHead(nnx.Module):
    """``lm_head``: dense -> gelu -> layer_norm -> tied decoder + bias."""

    def __init__(self, cfg: EncoderConfig, *, rngs, dtype):
        h = cfg.hidden_size
        self.dense = layers.dense(h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype)
        self.layer_norm = layers.layer_norm(h, cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.bias = _vocab_bias(cfg)

    def __call__(self, x, embedding):
        x = self.layer_norm(jax.nn.gelu(self.dense(x), approximate=False))
        return x @ embedding.T.astype(x.dtype) + self.bias


class VocabProjector(nnx.Module):
    def __init__(self, cfg: EncoderConfig):
        self.bias = _vocab_bias(cfg)


def _vocab_bias(cfg: EncoderConfig) -> nnx.Param:
    """The MLM output bias, annotated like the word embeddings' vocab axis."""
    return nnx.Param(
        jnp.zeros((cfg.vocab_size,), jnp.float32), out_sharding=("vocab",), eager_sharding=False
    )


def _classifier_dropout(cfg: EncoderConfig) -> float:
    return cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout


class EncoderForTask(nnx.Module):
    """An encoder with a task head, laid out like transformers' ``<Arch>For<Task>``.

    Args:
      cfg: the architecture.
      task: one of :data:`TASKS`.
      num_labels: classes (sequence or token classification); 1 means regression.
      dtype: compute dtype; parameters are float32.
    """

    hf_config_json: str | None = None  # the transformers config, set by jaxprune.hf.build
    classifier: nnx.Linear | ClassificationHead  # sequence and token classification

    def __init__(
        self,
        cfg: EncoderConfig,
        *,
        task: str = "sequence-classification",
        num_labels: int = 2,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
        if task == "masked-lm" and cfg.arch == "electra":
            raise ValueError("ELECTRA discriminators have no masked-LM head")
        self.cfg, self.task, self.num_labels = cfg, task, num_labels
        arch, h = cfg.arch, cfg.hidden_size
        pooler = arch == "bert" and task in ("base", "sequence-classification")
        setattr(self, arch, Encoder(cfg, rngs=rngs, add_pooler=pooler, dtype=dtype))
        self.dropout = nnx.Dropout(_classifier_dropout(cfg))
        if task == "sequence-classification":
            if arch == "bert":
                self.classifier = layers.dense(
                    h, num_labels, ("embed", "classes"), rngs=rngs, dtype=dtype
                )
            elif arch == "distilbert":
                self.pre_classifier = layers.dense(
                    h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype
                )
                self.classifier = layers.dense(
                    h, num_labels, ("embed", "classes"), rngs=rngs, dtype=dtype
                )
            else:
                act = "gelu" if arch == "electra" else "tanh"
                self.classifier = ClassificationHead(cfg, num_labels, act, rngs=rngs, dtype=dtype)
        elif task == "token-classification":
            self.classifier = layers.dense(
                h, num_labels, ("embed", "classes"), rngs=rngs, dtype=dtype
            )
            if arch == "distilbert":  # DistilBertForTokenClassification: config.dropout
                self.dropout = nnx.Dropout(cfg.hidden_dropout_prob)
        elif task == "question-answering":
            self.qa_outputs = layers.dense(h, 2, ("embed", "classes"), rngs=rngs, dtype=dtype)
            if arch == "distilbert":
                self.dropout = nnx.Dropout(cfg.qa_dropout)
        elif task == "masked-lm":
            if arch == "bert":
                self.cls = BertMLMHead(cfg, rngs=rngs, dtype=dtype)
            elif arch == "roberta":
                self.lm_head = RobertaLMHead(cfg, rngs=rngs, dtype=dtype)
            else:
                self.vocab_transform = layers.dense(
                    h, h, ("embed", "embed_out"), rngs=rngs, dtype=dtype
                )
                self.vocab_layer_norm = layers.layer_norm(h, 1e-12, rngs=rngs, dtype=dtype)
                self.vocab_projector = VocabProjector(cfg)

    @property
    def body(self) -> Encoder:
        return getattr(self, self.cfg.arch)

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
        """Runs body and head; see :meth:`Encoder.__call__` for the arguments. With
        ``cls_positions`` (packed rows) sequence classification classifies every example:
        logits (batch, S, classes); the other tasks do not use it."""
        kw: dict[str, Any] = dict(deterministic=deterministic, rngs=rngs)
        out = self.body(
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attention_scores=output_attention_scores,
            position_ids=position_ids,
            segment_ids=segment_ids,
            cls_positions=cls_positions,
            **kw,
        )
        arch = self.cfg.arch

        def sequence(x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
            if isinstance(self.classifier, ClassificationHead):  # RoBERTa, ELECTRA
                logits = self.classifier(x, cls_positions=cls_positions, **kw)
            elif arch == "bert":
                logits = self.classifier(self.dropout(out.pooled, **kw))
            else:  # DistilBERT
                first = layers.first_tokens(x, cls_positions)
                pooled = jax.nn.relu(self.pre_classifier(first))
                logits = self.classifier(self.dropout(pooled, **kw))
            return logits, out.pooled

        def token(x: jax.Array) -> jax.Array:
            if not isinstance(self.classifier, nnx.Linear):
                kind = type(self.classifier).__name__
                raise TypeError(f"token classification needs a Linear classifier, not {kind}")
            return self.classifier(self.dropout(x, **kw))

        def masked_lm(x: jax.Array) -> jax.Array:
            embedding = self.body.embeddings.word_embeddings.embedding[...]
            if arch == "bert":
                return self.cls(x, embedding)
            if arch == "roberta":
                return self.lm_head(x, embedding)
            x = self.vocab_layer_norm(
                layers.activation(self.cfg.hidden_act)(self.vocab_transform(x))
            )
            return x @ embedding.T.astype(x.dtype) + self.vocab_projector.bias

        return task_output(
            self.task,
            out,
            sequence=sequence,
            token=token,
            question_answering=lambda x: self.qa_outputs(
                self.dropout(x, **kw) if arch == "distilbert" else x
            ),
            masked_lm=masked_lm,
        )


__all__ = [
    "ARCH_NAMES",
    "HF_CLASSES",
    "TASKS",
    "BertMLMHead",
    "BertMLMPredictions",
    "ClassificationHead",
    "EncoderForTask",
    "Output",
    "RobertaLMHead",
    "VocabProjector",
    "task_output",
]
