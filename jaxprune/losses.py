"""Losses on model outputs. Each returns a float32 scalar averaged over real examples
(:func:`sparsebert` also returns its parts; :func:`adaptive_alpha` is per example).

``weights`` (batch,) marks real examples (1) and padding examples (0) of a padded batch, so
the loss of a padded final batch equals the loss of its real part.

Inputs are computed in at least float32 (bfloat16/float16 are upcast); float64 inputs stay
float64 when x64 is enabled, which the tests use for finite-difference gradient checks.

Task losses: :func:`classification`, :func:`regression`, :func:`token_classification`,
:func:`question_answering`.

Distillation and pruning objectives (see ``/work/shared/design``):

* movement pruning / SMP: :func:`kd_kl`, :func:`distillation`, :func:`sigmoid_l1`;
* SparseBERT / TinyBERT: :func:`soft_cross_entropy`, :func:`attention_mse`,
  :func:`hidden_mse`, :func:`sparsebert`;
* PINS self-regularization: :func:`adaptive_alpha`, :func:`self_regularization`;
* SDP: :func:`cross_correlation` (Barlow Twins) and the provisional :func:`weight_alignment`.

Teacher inputs are always wrapped in ``jax.lax.stop_gradient``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:
    from jaxprune.models.heads import Output

IGNORE = -100  # label of positions that carry no loss (token tasks, prompt tokens)
MASKED_SCORE = -100.0  # SparseBERT zeroes attention scores <= this (the padding mask)


def _float(x: jax.Array) -> jax.Array:
    """``x`` in float32, or wider if it already is (float64 under x64)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
    per_example = _float(per_example)
    if weights is None:
        return jnp.mean(per_example)
    weights = weights.astype(per_example.dtype)
    per_example = jnp.where(weights != 0, per_example, 0)  # padding's -100 labels give NaN
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def classification(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy. logits (batch, classes); labels (batch,) int."""
    ce = optax.softmax_cross_entropy_with_integer_labels(_float(logits), labels)
    return _mean(ce, weights)


def regression(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error. logits (batch, 1) or (batch,); labels (batch,) float."""
    pred = _float(logits.reshape(labels.shape))
    return _mean((pred - _float(labels)) ** 2, weights)


_mse_labels = regression  # for sparsebert, whose ``regression`` flag shadows the name


def token_classification(
    logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """Cross-entropy over positions whose label is not ``IGNORE``, averaged over those
    positions. logits (batch, length, classes); labels (batch, length) int."""
    valid = labels != IGNORE
    if weights is not None:
        valid = valid & (weights[:, None] > 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        _float(logits), jnp.where(valid, labels, 0)
    )
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


def question_answering(
    logits: jax.Array,
    start_positions: jax.Array,
    end_positions: jax.Array,
    weights: jax.Array | None = None,
) -> jax.Array:
    """(start CE + end CE) / 2 as in BERT. logits (batch, length, 2); positions (batch,)."""
    start = classification(logits[..., 0], start_positions, weights)
    end = classification(logits[..., 1], end_positions, weights)
    return (start + end) / 2


def causal_lm(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Next-token cross-entropy, averaged over the predicted tokens (Hugging Face's shift:
    position ``i`` predicts label ``i + 1``). logits (batch, length, vocab); labels (batch,
    length) int, ``IGNORE`` on prompt and padding tokens."""
    return token_classification(logits[:, :-1], labels[:, 1:], weights)


# ------------------------------------------------------------------ logit distillation


def _check_logits(student: jax.Array, teacher: jax.Array, name: str) -> None:
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"{name}: student and teacher logits must both be (batch, classes); got "
            f"{student.shape} and {teacher.shape}"
        )


def _teacher_probs(teacher_logits: jax.Array, temperature: float) -> jax.Array:
    """softmax(t / T) of the stop-gradiented teacher logits, (batch, classes)."""
    return jax.nn.softmax(jax.lax.stop_gradient(_float(teacher_logits)) / temperature, axis=-1)


def _student_log_probs(student_logits: jax.Array, temperature: float) -> jax.Array:
    return jax.nn.log_softmax(_float(student_logits) / temperature, axis=-1)


def _soft_ce(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
    """Per example −Σ_c softmax(t/T)_c · log_softmax(s/T)_c, (batch,)."""
    p_t = _teacher_probs(teacher_logits, temperature)
    log_p_s = _student_log_probs(student_logits, temperature)
    return -jnp.sum(jnp.where(p_t > 0, p_t * log_p_s, 0.0), axis=-1)


def kd_kl(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    temperature: float = 2.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes and averaged over examples.

    This is movement pruning's / SMP's ``kl_div(log_softmax(s/T), softmax(t/T),
    reduction="batchmean") * T**2``. The teacher is stop-gradiented.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      temperature: T.
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    _check_logits(student_logits, teacher_logits, "kd_kl")
    t = jax.lax.stop_gradient(_float(teacher_logits)) / temperature
    p_t, log_p_t = jax.nn.softmax(t, axis=-1), jax.nn.log_softmax(t, axis=-1)
    log_p_s = _student_log_probs(student_logits, temperature)
    kl = jnp.sum(jnp.where(p_t > 0, p_t * (log_p_t - log_p_s), 0.0), axis=-1)
    return temperature**2 * _mean(kl, weights)


def distillation(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 2.0,
    alpha_ce: float = 0.5,
    alpha_kd: float = 0.5,
    weights: jax.Array | None = None,
) -> jax.Array:
    """α_ce · CE(s, y) + α_kd · :func:`kd_kl` (s, t, T): movement pruning's / SMP's objective.

    The CE is taken at temperature 1. Classification only: one-logit (regression) outputs
    raise, since the KL of a single class is identically 0; combine :func:`regression`
    yourself there. For QA, call it on the start and on the end logits and average.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      labels: (batch,) int.
      temperature: T of the KL term.
      alpha_ce / alpha_kd: the weights of the hard-label CE and of the KL term.
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    _check_logits(student_logits, teacher_logits, "distillation")
    if student_logits.shape[-1] < 2:
        raise ValueError("distillation needs >= 2 classes; for regression use losses.regression")
    ce = classification(student_logits, labels, weights)
    return alpha_ce * ce + alpha_kd * kd_kl(student_logits, teacher_logits, temperature, weights)


def soft_cross_entropy(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    temperature: float = 1.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """TinyBERT's / SparseBERT's prediction loss: −softmax(t/T) · log_softmax(s/T), averaged
    with ``.mean()`` over examples *and* classes (so divided by batch · classes). No T².

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes); stop-gradiented.
      temperature: T (SparseBERT's default is 1).
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    _check_logits(student_logits, teacher_logits, "soft_cross_entropy")
    per_example = _soft_ce(student_logits, teacher_logits, temperature)
    return _mean(per_example, weights) / student_logits.shape[-1]


# ------------------------------------------------------------- SparseBERT / TinyBERT


def _per_example_mse(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean over all non-batch axes of (student − teacher)², (batch,)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {student.shape} and teacher {teacher.shape} shapes differ")
    err = (student - teacher) ** 2
    return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)


def _zero_masked(scores: jax.Array) -> jax.Array:
    scores = _float(scores)
    return jnp.where(scores <= MASKED_SCORE, 0.0, scores)


def _layer_sum(
    student: Sequence[jax.Array],
    teacher: Sequence[jax.Array],
    weights: jax.Array | None,
    prepare: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student layers but {len(teacher)} teacher layers")
    if not student:
        raise ValueError("no layers given")
    total = jnp.zeros((), _float(student[0]).dtype)
    for s, t in zip(student, teacher, strict=True):
        t = jax.lax.stop_gradient(t)
        total = total + _mean(_per_example_mse(prepare(s), prepare(t)), weights)
    return total


def attention_mse(
    student_scores: Sequence[jax.Array],
    teacher_scores: Sequence[jax.Array],
    weights: jax.Array | None = None,
) -> jax.Array:
    """SparseBERT's attention loss: Σ over layers of MSE(student, teacher), each the mean over
    all elements, after replacing entries <= −100 (masked keys: −10000 in BERT, the float32
    minimum in jaxprune's encoder) by 0 in both. Layers are matched 1:1.

    Args:
      student_scores: per-layer pre-softmax scores, each (batch, heads, query, key).
      teacher_scores: the same number of layers, same shapes; stop-gradiented.
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    return _layer_sum(student_scores, teacher_scores, weights, _zero_masked)


def hidden_mse(
    student_hidden: Sequence[jax.Array],
    teacher_hidden: Sequence[jax.Array],
    weights: jax.Array | None = None,
) -> jax.Array:
    """SparseBERT's representation loss: Σ over states of MSE(student, teacher), each the mean
    over all elements (padding tokens included, as in the code). No projection.

    Args:
      student_hidden: L + 1 states (embedding output, then every layer), each (batch, length,
        hidden).
      teacher_hidden: the same number of states, same shapes; stop-gradiented.
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    return _layer_sum(student_hidden, teacher_hidden, weights, _float)


def sparsebert(
    student_out: Output,
    teacher_out: Output,
    labels: jax.Array | None = None,
    *,
    regression: bool = False,
    temperature: float = 1.0,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SparseBERT's objective: att + rep + cls, all with weight 1.

    ``cls`` is :func:`soft_cross_entropy` at ``temperature`` for classification, or the MSE of
    the student's logits against the gold ``labels`` for regression (no teacher term).

    Args:
      student_out / teacher_out: :class:`jaxprune.models.heads.Output` with ``logits``
        (batch, classes), ``hidden_states`` (L + 1 of (batch, length, hidden)) and
        ``attention_scores`` (L of (batch, heads, length, length)); the model must be called
        with ``output_hidden_states=True, output_attention_scores=True``.
      labels: (batch,) float, required for regression, unused otherwise.
      regression: one-logit regression task (STS-B).
      temperature: T of the soft cross-entropy.
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.

    Returns:
      (total, {"att": ..., "rep": ..., "cls": ...}).
    """
    s_hidden, s_scores = _states(student_out, "student")
    t_hidden, t_scores = _states(teacher_out, "teacher")
    att = attention_mse(s_scores, t_scores, weights)
    rep = hidden_mse(s_hidden, t_hidden, weights)
    if regression:
        if labels is None:
            raise ValueError("sparsebert(regression=True) needs the gold labels")
        cls = _mse_labels(student_out.logits, labels, weights)
    else:
        cls = soft_cross_entropy(student_out.logits, teacher_out.logits, temperature, weights)
    return att + rep + cls, {"att": att, "rep": rep, "cls": cls}


def _states(out: Output, name: str) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """``(hidden_states, attention_scores)`` of a model output that must hold both."""
    if out.hidden_states is None or out.attention_scores is None:
        raise ValueError(f"{name} output lacks hidden_states or attention_scores")
    return out.hidden_states, out.attention_scores


# ------------------------------------------------------------ PINS self-regularization


def _check_classes(logits: jax.Array, name: str) -> int:
    classes = logits.shape[-1]
    if classes < 2:
        raise ValueError(
            f"{name} needs >= 2 classes: with one logit (regression, e.g. STS-B) the entropy "
            "bound log(C) is 0 and the adaptive weight is undefined, as in PINS' code"
        )
    return classes


def adaptive_alpha(student_logits: jax.Array) -> jax.Array:
    """PINS' per-example weight α_i = 1 − H(softmax(s_i)) / log(C), at temperature 1 on the
    stop-gradiented student logits: about 1 for a confident student, 0 for a uniform one.

    Args:
      student_logits: (batch, classes), classes >= 2.

    Returns:
      (batch,) in [0, 1].
    """
    classes = _check_classes(student_logits, "adaptive_alpha")
    s = jax.lax.stop_gradient(_float(student_logits))
    p, log_p = jax.nn.softmax(s, axis=-1), jax.nn.log_softmax(s, axis=-1)
    entropy = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)
    return 1.0 - entropy / math.log(classes)


def self_regularization(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 2.0,
    weights: jax.Array | None = None,
) -> jax.Array:
    """PINS' loss: mean_i α_i · D_i + (1 − α_i) · CE(s_i, y_i).

    α_i is :func:`adaptive_alpha` (no gradient flows through it) and
    D_i = T² · (−Σ_c softmax(t_i/T)_c · log_softmax(s_i/T)_c), a soft cross-entropy (not a
    KL: it differs by the teacher's entropy, with the same gradient). The teacher is
    stop-gradiented. Regression (one logit) raises ``ValueError``.

    Args:
      student_logits: (batch, classes), classes >= 2.
      teacher_logits: (batch, classes).
      labels: (batch,) int.
      temperature: T of the distillation term (PINS' default 2).
      weights: (batch,) 1 for real examples, 0 for padding; None means all real.
    """
    _check_logits(student_logits, teacher_logits, "self_regularization")
    _check_classes(student_logits, "self_regularization")
    alpha = adaptive_alpha(student_logits)
    distil = temperature**2 * _soft_ce(student_logits, teacher_logits, temperature)
    ce = optax.softmax_cross_entropy_with_integer_labels(_float(student_logits), labels)
    return _mean(alpha * distil + (1.0 - alpha) * ce, weights)


# ------------------------------------------------------------------------------- SDP


def _standardize(z: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """Per-feature batch standardisation, as ``BatchNorm1d(affine=False)`` in training mode:
    biased variance, ``eps`` inside the square root. Rows weighted by ``w`` (batch,)."""
    total = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(w[:, None] * z, axis=0) / total
    var = jnp.sum(w[:, None] * (z - mean) ** 2, axis=0) / total
    return (z - mean) / jnp.sqrt(var + eps)


def cross_correlation(
    z_student: jax.Array,
    z_teacher: jax.Array,
    *,
    off_diagonal: float = 0.0051,
    eps: float = 1e-5,
    weights: jax.Array | None = None,
) -> jax.Array:
    """The Barlow Twins cross-correlation loss (SDP's self-distillation objective).

    Each side is standardised per feature over the batch (``BatchNorm1d(affine=False)``),
    C = z1ᵀ z2 / B (D × D), and L = Σ_i (1 − C_ii)² + λ · Σ_{i≠j} C_ij².
    The teacher (unpruned network) side is stop-gradiented. Which representation SDP
    compares is unverified; the caller chooses it.

    Args:
      z_student: (batch, features) representation of the pruned network.
      z_teacher: (batch, features) representation of the unpruned network.
      off_diagonal: λ, the weight of the off-diagonal (redundancy) term.
      eps: BatchNorm's variance epsilon.
      weights: (batch,) 1 for real examples, 0 for padding (dropped from the batch
        statistics and from B); None means all real.
    """
    if z_student.ndim != 2 or z_student.shape != z_teacher.shape:
        raise ValueError(
            f"cross_correlation: z must both be (batch, features); got {z_student.shape} "
            f"and {z_teacher.shape}"
        )
    z1 = _float(z_student)
    z2 = jax.lax.stop_gradient(_float(z_teacher))
    w = jnp.ones(z1.shape[0], z1.dtype) if weights is None else weights.astype(z1.dtype)
    z1, z2 = _standardize(z1, w, eps), _standardize(z2, w, eps)
    c = (w[:, None] * z1).T @ z2 / jnp.maximum(jnp.sum(w), 1.0)
    on = jnp.sum((1.0 - jnp.diagonal(c)) ** 2)
    eye = jnp.eye(c.shape[0], dtype=bool)
    off = jnp.sum(jnp.where(eye, 0.0, c**2))
    return on + off_diagonal * off


def weight_alignment(
    pruned_kernel: jax.Array,
    dense_kernel: jax.Array,
    *,
    kind: str = "cosine",
    eps: float = 1e-8,
) -> jax.Array:
    """PROVISIONAL, UNVERIFIED: an aligned-weight regulariser between a pruned kernel and its
    unpruned counterpart. The paper's text (O'Neill et al., ACL Findings 2022, arXiv
    2204.01385) was unavailable; this is one natural reading of "maximize the alignment
    between units of pruned and unpruned networks", not the paper's formula.

    ``kind="cosine"``: mean over output units j of 1 − cos(w_pruned[:, j], w_dense[:, j]),
    the columns of a Flax (in, out) kernel. Norms are clamped below at ``eps``, so a fully
    pruned (zero) unit scores 1 with a finite gradient. The dense kernel is stop-gradiented.

    Args:
      pruned_kernel: (in, out), already masked (W ⊙ M); extra leading axes are flattened
        into ``in``.
      dense_kernel: the same shape, the unpruned weights.
      kind: only "cosine" so far.
      eps: lower bound of each column norm.
    """
    if kind != "cosine":
        raise ValueError(f"unknown weight_alignment kind {kind!r}; only 'cosine' exists")
    if pruned_kernel.shape != dense_kernel.shape or pruned_kernel.ndim < 2:
        raise ValueError(
            f"kernels must share an (in, out) shape; got {pruned_kernel.shape} and "
            f"{dense_kernel.shape}"
        )
    out = pruned_kernel.shape[-1]
    a = _float(pruned_kernel).reshape(-1, out)
    b = jax.lax.stop_gradient(_float(dense_kernel)).reshape(-1, out)
    cos = jnp.sum(a * b, axis=0) / (_safe_norm(a, eps) * _safe_norm(b, eps))
    return jnp.mean(1.0 - cos)


def _safe_norm(x: jax.Array, eps: float) -> jax.Array:
    """Column norms of ``x`` (rows, cols), at least ``eps``, differentiable at 0."""
    return jnp.sqrt(jnp.maximum(jnp.sum(x**2, axis=0), eps**2))


# ------------------------------------------------------------------ score regulariser


def sigmoid_l1(scores: Any) -> jax.Array:
    """Soft movement pruning's / SMP's L1 regulariser of the scores: the mean over score
    matrices of mean(sigmoid(S)) (``regularization(model, "l1")``).

    Args:
      scores: a pytree of score arrays of any shape (nnx Variables work); None leaves are
        skipped. At least one array is required.
    """
    leaves = jax.tree.leaves(scores)
    if not leaves:
        raise ValueError("sigmoid_l1 got no score arrays")
    means = [jnp.mean(jax.nn.sigmoid(_float(s))) for s in leaves]
    return jnp.mean(jnp.stack(means))


__all__ = [
    "IGNORE",
    "MASKED_SCORE",
    "adaptive_alpha",
    "attention_mse",
    "causal_lm",
    "classification",
    "cross_correlation",
    "distillation",
    "hidden_mse",
    "kd_kl",
    "question_answering",
    "regression",
    "self_regularization",
    "sigmoid_l1",
    "soft_cross_entropy",
    "sparsebert",
    "token_classification",
    "weight_alignment",
]
