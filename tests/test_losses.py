"""jaxprune.losses: distillation and pruning objectives against hand computations, the papers'
PyTorch code, and float64 central finite differences."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from jaxprune import losses
from jaxprune.models.encoder import EncoderConfig
from jaxprune.models.heads import EncoderForTask, Output

F32_MIN = float(np.finfo(np.float32).min)

S = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
T = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.5]])
Y = np.array([1, 2, 0])


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def ce(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -log_softmax(s)[np.arange(len(y)), y]


def t_(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def grad_check(f: Callable[[jax.Array], jax.Array], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """jax.grad of ``f`` at ``x`` equals float64 central differences; returns the gradient."""
    with jax.enable_x64(True):
        f = jax.jit(f)
        x = np.asarray(x, np.float64)
        value = f(jnp.asarray(x))
        assert value.dtype == jnp.float64, "the loss must not downcast float64 inputs"
        analytic = np.asarray(jax.grad(f)(jnp.asarray(x)))
        numeric = finite_differences(f, x, h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    return analytic


def finite_differences(f: Callable[[jax.Array], jax.Array], x: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``f`` (to be called under x64) at ``x``, float64."""
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        out[idx] = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * h)
    return out


def teacher_grad(f: Callable[[jax.Array], jax.Array], x: np.ndarray) -> np.ndarray:
    return np.asarray(jax.grad(f)(jnp.asarray(x, jnp.float32)))


# ------------------------------------------------------------------------------- kd_kl


def test_kd_kl_by_hand() -> None:
    temp = 2.0
    p_t, log_p_s = softmax(T / temp), log_softmax(S / temp)
    kl = (p_t * (np.log(p_t) - log_p_s)).sum(-1)
    expected = temp**2 * kl.mean()
    got = losses.kd_kl(jnp.asarray(S), jnp.asarray(T), temperature=temp)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


@pytest.mark.parametrize("temp", [1.0, 2.0, 3.5])
def test_kd_kl_equals_torch_batchmean(temp: float) -> None:
    s, t = rng(1).normal(size=(5, 4)) * 2, rng(2).normal(size=(5, 4)) * 2
    ref = F.kl_div(
        F.log_softmax(t_(s) / temp, -1), F.softmax(t_(t) / temp, -1), reduction="batchmean"
    )
    got = losses.kd_kl(jnp.asarray(s), jnp.asarray(t), temperature=temp)
    np.testing.assert_allclose(float(got), float(ref) * temp**2, rtol=1e-5)


def test_kd_kl_gradient_and_teacher_stop_gradient() -> None:
    grad_check(lambda s: losses.kd_kl(s, jnp.asarray(T), 2.0), S)
    g = teacher_grad(lambda t: losses.kd_kl(jnp.asarray(S), t, 2.0), T)
    assert np.all(g == 0)


def test_kd_kl_zero_probability_teacher_class_is_finite() -> None:
    t = np.array([[0.0, -np.inf, 1.0]])
    got = losses.kd_kl(jnp.asarray(S[:1]), jnp.asarray(t), temperature=1.0)
    p_t = np.array([1.0, 0.0, np.e]) / (1 + np.e)
    keep = p_t > 0
    expected = (p_t[keep] * (np.log(p_t[keep]) - log_softmax(S[:1])[0, keep])).sum()
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


# ------------------------------------------------------------------------ distillation


def test_distillation_by_hand_and_torch() -> None:
    temp, a_ce, a_kd = 2.0, 0.3, 0.7
    p_t = softmax(T / temp)
    kl = (p_t * (np.log(p_t) - log_softmax(S / temp))).sum(-1).mean()
    expected = a_ce * ce(S, Y).mean() + a_kd * temp**2 * kl
    got = losses.distillation(
        jnp.asarray(S),
        jnp.asarray(T),
        jnp.asarray(Y),
        temperature=temp,
        alpha_ce=a_ce,
        alpha_kd=a_kd,
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    kd = F.kl_div(F.log_softmax(t_(S) / 2, -1), F.softmax(t_(T) / 2, -1), reduction="batchmean")
    ref = 0.5 * F.cross_entropy(t_(S), torch.tensor(Y)) + 0.5 * 4 * kd
    default = losses.distillation(jnp.asarray(S), jnp.asarray(T), jnp.asarray(Y))
    np.testing.assert_allclose(float(default), float(ref), rtol=1e-6)


def test_distillation_gradient_and_teacher_stop_gradient() -> None:
    y = jnp.asarray(Y)
    grad_check(lambda s: losses.distillation(s, jnp.asarray(T), y), S)
    g = teacher_grad(lambda t: losses.distillation(jnp.asarray(S), t, y), T)
    assert np.all(g == 0)


def test_distillation_rejects_regression_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="regression"):
        losses.distillation(jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.zeros(2))
    with pytest.raises(ValueError, match="batch, classes"):
        losses.kd_kl(jnp.ones((2, 3)), jnp.ones((2, 4)))


# ------------------------------------------------------------------ soft cross-entropy


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_soft_cross_entropy_by_hand_and_tinybert(temp: float) -> None:
    expected = (-(softmax(T / temp) * log_softmax(S / temp))).sum() / S.size
    got = losses.soft_cross_entropy(jnp.asarray(S), jnp.asarray(T), temperature=temp)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    # TinyBERT's soft_cross_entropy(student_logits / T, teacher_logits / T)
    ref = (-F.softmax(t_(T) / temp, -1) * F.log_softmax(t_(S) / temp, -1)).mean()
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)


def test_soft_cross_entropy_gradient_and_teacher_stop_gradient() -> None:
    grad_check(lambda s: losses.soft_cross_entropy(s, jnp.asarray(T)), S)
    grad_check(lambda s: losses.soft_cross_entropy(s, jnp.asarray(T), 2.0), S)
    g = teacher_grad(lambda t: losses.soft_cross_entropy(jnp.asarray(S), t), T)
    assert np.all(g == 0)


# ----------------------------------------------------------------------- attention MSE


def scores(seed: int, masked: float, layers: int = 2) -> tuple[np.ndarray, ...]:
    """(2, 2, 3, 3) scores per layer; key 2 of example 1 is masked with ``masked``."""
    out = []
    for i in range(layers):
        x = rng(seed + i).normal(size=(2, 2, 3, 3))
        x[1, :, :, 2] = masked
        out.append(x)
    return tuple(out)


def test_attention_mse_by_hand_and_tinybert() -> None:
    s, t = scores(0, F32_MIN), scores(10, -10000.0)
    expected = 0.0
    for a, b in zip(s, t, strict=True):
        a, b = np.where(a <= -100, 0.0, a), np.where(b <= -100, 0.0, b)
        expected += ((a - b) ** 2).sum() / a.size
    got = losses.attention_mse(tuple(map(jnp.asarray, s)), tuple(map(jnp.asarray, t)))
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    ref = 0.0
    for a, b in zip(s, t, strict=True):  # TinyBERT / SparseBERT task distillation
        a, b = t_(a), t_(b)
        a = torch.where(a <= -1e2, torch.zeros_like(a), a)
        b = torch.where(b <= -1e2, torch.zeros_like(b), b)
        ref += torch.nn.MSELoss()(a, b)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)


def test_attention_mse_gradient_and_teacher_stop_gradient() -> None:
    s = np.stack(scores(0, -10000.0))  # masked entries are constants: zero gradient there
    t = tuple(jnp.asarray(x) for x in scores(10, -10000.0))
    g = grad_check(lambda x: losses.attention_mse(tuple(x), t), s)
    assert np.all(g[:, 1, :, :, 2] == 0)
    gt = teacher_grad(lambda x: losses.attention_mse(tuple(jnp.asarray(s)), tuple(x)), np.stack(t))
    assert np.all(gt == 0)


def test_attention_mse_rejects_layer_mismatch() -> None:
    s = tuple(map(jnp.asarray, scores(0, -1e4)))
    with pytest.raises(ValueError, match="layers"):
        losses.attention_mse(s, s[:1])


# -------------------------------------------------------------------------- hidden MSE


def hidden(seed: int, states: int = 3) -> np.ndarray:
    return rng(seed).normal(size=(states, 2, 3, 4))


def test_hidden_mse_by_hand_and_torch() -> None:
    s, t = hidden(0), hidden(1)
    expected = sum(((a - b) ** 2).sum() / a.size for a, b in zip(s, t, strict=True))
    got = losses.hidden_mse(tuple(jnp.asarray(s)), tuple(jnp.asarray(t)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    ref = sum(torch.nn.MSELoss()(t_(a), t_(b)) for a, b in zip(s, t, strict=True))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)


def test_hidden_mse_gradient_and_teacher_stop_gradient() -> None:
    t = tuple(jnp.asarray(hidden(1)))
    grad_check(lambda x: losses.hidden_mse(tuple(x), t), hidden(0))
    s = tuple(jnp.asarray(hidden(0)))
    assert np.all(teacher_grad(lambda x: losses.hidden_mse(s, tuple(x)), hidden(1)) == 0)


# -------------------------------------------------------------------------- SparseBERT


def output(seed: int, logits: np.ndarray) -> Output:
    return Output(
        jnp.asarray(logits),
        tuple(jnp.asarray(hidden(seed))),
        tuple(map(jnp.asarray, scores(seed, F32_MIN))),
    )


def test_sparsebert_is_the_sum_of_its_three_parts() -> None:
    s, t = output(0, S), output(5, T)
    total, parts = losses.sparsebert(s, t)
    assert set(parts) == {"att", "rep", "cls"}
    np.testing.assert_allclose(
        float(parts["att"]), float(losses.attention_mse(s.attention_scores, t.attention_scores))
    )
    np.testing.assert_allclose(
        float(parts["rep"]), float(losses.hidden_mse(s.hidden_states, t.hidden_states))
    )
    expected_cls = (-(softmax(T) * log_softmax(S))).sum() / S.size
    np.testing.assert_allclose(float(parts["cls"]), expected_cls, rtol=1e-6)
    np.testing.assert_allclose(float(total), float(sum(parts.values())), rtol=1e-6)


def test_sparsebert_regression_uses_gold_labels() -> None:
    s, t = output(0, np.array([[0.5], [1.0], [-2.0]])), output(5, np.array([[9.0], [9.0], [9.0]]))
    labels = np.array([1.0, 1.5, -1.0])
    _, parts = losses.sparsebert(s, t, jnp.asarray(labels), regression=True)
    expected = np.mean((np.array([0.5, 1.0, -2.0]) - labels) ** 2)
    np.testing.assert_allclose(float(parts["cls"]), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        losses.sparsebert(s, t, regression=True)
    with pytest.raises(ValueError, match="attention_scores"):
        losses.sparsebert(s._replace(attention_scores=None), t)


def test_sparsebert_on_jaxprune_encoder_outputs() -> None:
    cfg = EncoderConfig(
        arch="bert",
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    ids = jnp.asarray(rng(0).integers(1, 50, (2, 5)))
    mask = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    kw = dict(output_hidden_states=True, output_attention_scores=True)
    student = EncoderForTask(cfg, num_labels=3, rngs=nnx.Rngs(0))(ids, mask, **kw)
    teacher = EncoderForTask(cfg, num_labels=3, rngs=nnx.Rngs(1))(ids, mask, **kw)
    assert len(student.hidden_states) == 3 and len(student.attention_scores) == 2
    assert np.all(np.asarray(student.attention_scores[0])[1, :, :, 3:] <= -100)
    total, parts = losses.sparsebert(student, teacher)
    assert np.isfinite(float(total))
    expected_att = 0.0
    for a, b in zip(student.attention_scores, teacher.attention_scores, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        a, b = np.where(a <= -100, 0.0, a), np.where(b <= -100, 0.0, b)
        expected_att += ((a - b) ** 2).mean()
    np.testing.assert_allclose(float(parts["att"]), expected_att, rtol=1e-5)


# --------------------------------------------------------------- PINS self-regularization


def pins_by_hand(s: np.ndarray, t: np.ndarray, y: np.ndarray, temp: float) -> float:
    p = softmax(s)
    alpha = 1 + (p * np.log(p)).sum(-1) / np.log(s.shape[-1])
    distil = temp**2 * -(softmax(t / temp) * log_softmax(s / temp)).sum(-1)
    return float(np.mean(alpha * distil + (1 - alpha) * ce(s, y)))


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_self_regularization_by_hand(temp: float) -> None:
    got = losses.self_regularization(
        jnp.asarray(S), jnp.asarray(T), jnp.asarray(Y), temperature=temp
    )
    np.testing.assert_allclose(float(got), pins_by_hand(S, T, Y, temp), rtol=1e-6)


def test_self_regularization_equals_pins_torch_code() -> None:
    s, t, y, temp = t_(S), t_(T), torch.tensor(Y), 2.0
    prob = F.softmax(s.detach(), -1)
    entropy = -(prob * torch.log(prob)).sum(-1)
    alpha = 1 - entropy / np.log(3)
    kd = -(F.softmax(t / temp, -1) * F.log_softmax(s / temp, -1)).sum(-1) * temp**2
    ref = (alpha * kd + (1 - alpha) * F.cross_entropy(s, y, reduction="none")).mean()
    got = losses.self_regularization(jnp.asarray(S), jnp.asarray(T), jnp.asarray(Y))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)


def test_self_regularization_gradient_treats_alpha_as_constant() -> None:
    t, y, temp = jnp.asarray(T), jnp.asarray(Y), 2.0
    p = softmax(S)
    alpha = 1 + (p * np.log(p)).sum(-1) / np.log(3)

    def frozen_alpha(s: jax.Array) -> jax.Array:
        distil = temp**2 * -jnp.sum(
            jax.nn.softmax(t / temp) * jax.nn.log_softmax(s / temp), axis=-1
        )
        ce_ = -jnp.take_along_axis(jax.nn.log_softmax(s), y[:, None], axis=-1)[:, 0]
        a = jnp.asarray(alpha, s.dtype)
        return jnp.mean(a * distil + (1 - a) * ce_)

    frozen = grad_check(frozen_alpha, S)
    with jax.enable_x64(True):
        analytic = np.asarray(
            jax.grad(lambda s: losses.self_regularization(s, t, y, temperature=temp))(
                jnp.asarray(S)
            )
        )
        through_alpha = finite_differences(
            jax.jit(lambda s: losses.self_regularization(s, t, y, temperature=temp)), S, 1e-6
        )
    np.testing.assert_allclose(analytic, frozen, rtol=1e-6, atol=1e-8)
    assert not np.allclose(analytic, through_alpha, atol=1e-4)  # α does depend on s
    g = teacher_grad(lambda x: losses.self_regularization(jnp.asarray(S), x, y), T)
    assert np.all(g == 0)


def test_adaptive_alpha() -> None:
    confident = losses.adaptive_alpha(jnp.asarray([[30.0, 0.0, 0.0, 0.0]]))
    uniform = losses.adaptive_alpha(jnp.asarray([[1.5, 1.5, 1.5, 1.5]]))
    assert float(confident[0]) > 0.999
    assert abs(float(uniform[0])) < 1e-6
    p = softmax(S)
    expected = 1 + (p * np.log(p)).sum(-1) / np.log(3)
    np.testing.assert_allclose(
        np.asarray(losses.adaptive_alpha(jnp.asarray(S))), expected, atol=1e-6
    )
    g = jax.grad(lambda s: jnp.sum(losses.adaptive_alpha(s)))(jnp.asarray(S))
    assert np.all(np.asarray(g) == 0)


def test_self_regularization_rejects_regression() -> None:
    with pytest.raises(ValueError, match="regression"):
        losses.self_regularization(jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.zeros(2, int))
    with pytest.raises(ValueError, match="regression"):
        losses.adaptive_alpha(jnp.ones((2, 1)))


# ------------------------------------------------------------------ SDP: Barlow Twins


def barlow_by_hand(z1: np.ndarray, z2: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    def standardize(z: np.ndarray) -> np.ndarray:
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # np.var is biased

    c = standardize(z1).T @ standardize(z2) / len(z1)
    on = ((1 - np.diag(c)) ** 2).sum()
    off = (c**2).sum() - (np.diag(c) ** 2).sum()
    return float(on + lam * off)


def test_cross_correlation_by_hand() -> None:
    z1, z2 = rng(0).normal(size=(6, 4)), rng(1).normal(size=(6, 4)) + 3
    got = losses.cross_correlation(jnp.asarray(z1), jnp.asarray(z2))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), barlow_by_hand(z1, z2, 0.0051), rtol=1e-5)
    got = losses.cross_correlation(jnp.asarray(z1), jnp.asarray(z2), off_diagonal=0.5)
    np.testing.assert_allclose(float(got), barlow_by_hand(z1, z2, 0.5), rtol=1e-5)


def test_cross_correlation_equals_barlow_twins_code() -> None:
    z1, z2 = rng(2).normal(size=(8, 5)) * 2, rng(3).normal(size=(8, 5))
    bn = torch.nn.BatchNorm1d(5, affine=False).double().train()
    c = bn(t_(z1)).T @ bn(t_(z2)) / 8
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    n = c.shape[0]
    off_diag = c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten().pow(2).sum()
    ref = on_diag + 0.0051 * off_diag
    got = losses.cross_correlation(jnp.asarray(z1), jnp.asarray(z2))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)


def test_cross_correlation_gradient_and_teacher_stop_gradient() -> None:
    z1, z2 = rng(0).normal(size=(5, 3)), rng(1).normal(size=(5, 3))
    grad_check(lambda z: losses.cross_correlation(z, jnp.asarray(z2), off_diagonal=0.3), z1)
    g = teacher_grad(lambda z: losses.cross_correlation(jnp.asarray(z1), z), z2)
    assert np.all(g == 0)


# ---------------------------------------------------- SDP: weight alignment (provisional)


def test_weight_alignment_by_hand_and_torch() -> None:
    dense = rng(0).normal(size=(4, 3))
    pruned = dense * (rng(1).random((4, 3)) > 0.5)
    pruned[:, 2] = 0.0  # a fully pruned unit: cos = 0
    cos = (pruned * dense).sum(0) / np.maximum(
        np.linalg.norm(pruned, axis=0) * np.linalg.norm(dense, axis=0), 1e-30
    )
    expected = np.mean(1 - cos)
    got = losses.weight_alignment(jnp.asarray(pruned), jnp.asarray(dense))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    ref = (1 - F.cosine_similarity(t_(pruned), t_(dense), dim=0)).mean()
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    assert float(losses.weight_alignment(jnp.asarray(dense), jnp.asarray(dense))) < 1e-6


def test_weight_alignment_gradient_and_dense_stop_gradient() -> None:
    dense, pruned = rng(0).normal(size=(4, 3)), rng(1).normal(size=(4, 3))
    grad_check(lambda w: losses.weight_alignment(w, jnp.asarray(dense)), pruned)
    zero_col = pruned.copy()
    zero_col[:, 1] = 0.0
    g = jax.grad(lambda w: losses.weight_alignment(w, jnp.asarray(dense)))(jnp.asarray(zero_col))
    assert np.all(np.isfinite(np.asarray(g)))
    g = teacher_grad(lambda w: losses.weight_alignment(jnp.asarray(pruned), w), dense)
    assert np.all(g == 0)
    with pytest.raises(ValueError, match="kind"):
        losses.weight_alignment(jnp.asarray(pruned), jnp.asarray(dense), kind="l2")


# -------------------------------------------------------------------------- sigmoid L1


def test_sigmoid_l1_by_hand_and_movement_pruning_code() -> None:
    a, b = rng(0).normal(size=(3, 4)), rng(1).normal(size=(5,))
    tree = {"a": jnp.asarray(a), "skip": None, "nested": [nnx.Param(jnp.asarray(b))]}
    expected = (np.mean(1 / (1 + np.exp(-a))) + np.mean(1 / (1 + np.exp(-b)))) / 2
    got = losses.sigmoid_l1(tree)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    ref = sum(torch.norm(torch.sigmoid(t_(x)), p=1) / x.size for x in (a, b)) / 2
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    with pytest.raises(ValueError, match="no score"):
        losses.sigmoid_l1({"x": None})


def test_sigmoid_l1_gradient() -> None:
    x = rng(0).normal(size=(2, 3, 2))
    grad_check(lambda s: losses.sigmoid_l1([s[0], s[1, :2], None]), x)


# ------------------------------------------------------------- weights, jit and dtypes

B, PAD = 3, 2
rows = rng(7).normal(size=(B + PAD, 3))
rows_t = rng(8).normal(size=(B + PAD, 3))
labels = np.array([0, 2, 1, 1, 0])
WEIGHTED: dict[str, Callable[..., jax.Array]] = {
    "kd_kl": lambda s, t, y, w: losses.kd_kl(s, t, 2.0, w),
    "distillation": lambda s, t, y, w: losses.distillation(s, t, y, weights=w),
    "soft_cross_entropy": lambda s, t, y, w: losses.soft_cross_entropy(s, t, 1.0, w),
    "self_regularization": lambda s, t, y, w: losses.self_regularization(s, t, y, weights=w),
    "cross_correlation": lambda s, t, y, w: losses.cross_correlation(s, t, weights=w),
    "attention_mse": lambda s, t, y, w: losses.attention_mse(
        (s[:, None, None] * s[:, None, :, None],), (t[:, None, None] * t[:, None, :, None],), w
    ),
    "hidden_mse": lambda s, t, y, w: losses.hidden_mse(
        (s[:, None], 2 * s[:, None]), (t[:, None], t[:, None]), w
    ),
}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weights_mask_equals_dropping_examples(name: str) -> None:
    f = WEIGHTED[name]
    w = jnp.asarray([1.0] * B + [0.0] * PAD)
    padded = f(jnp.asarray(rows), jnp.asarray(rows_t), jnp.asarray(labels), w)
    dropped = f(jnp.asarray(rows[:B]), jnp.asarray(rows_t[:B]), jnp.asarray(labels[:B]), None)
    np.testing.assert_allclose(float(padded), float(dropped), rtol=1e-5)
    ones = f(jnp.asarray(rows), jnp.asarray(rows_t), jnp.asarray(labels), jnp.ones(B + PAD))
    full = f(jnp.asarray(rows), jnp.asarray(rows_t), jnp.asarray(labels), None)
    np.testing.assert_allclose(float(ones), float(full), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_jit_and_float32_from_bfloat16(name: str) -> None:
    f = WEIGHTED[name]
    args = (jnp.asarray(rows), jnp.asarray(rows_t), jnp.asarray(labels), None)
    eager = f(*args)
    np.testing.assert_allclose(float(jax.jit(f)(*args)), float(eager), rtol=1e-5)
    bf16 = f(args[0].astype(jnp.bfloat16), args[1].astype(jnp.bfloat16), args[2], None)
    assert bf16.dtype == jnp.float32 and eager.dtype == jnp.float32
