import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import schedules


def test_cubic_boundary_steps():
    s = schedules.cubic(0.9, begin_step=10, end_step=110, initial_sparsity=0.2)
    assert float(s(0)) == pytest.approx(0.2)
    assert float(s(10)) == pytest.approx(0.2)  # warm-up ends at begin_step
    assert float(s(110)) == pytest.approx(0.9)  # final value reached at end_step
    assert float(s(10_000)) == pytest.approx(0.9)  # final phase
    # half-way: s_f + (s_i - s_f) * 0.5**3
    assert float(s(60)) == pytest.approx(0.9 + (0.2 - 0.9) * 0.125, abs=1e-7)
    # one step in: 1 - 1/100 of the way
    assert float(s(11)) == pytest.approx(0.9 - 0.7 * 0.99**3, abs=1e-6)


def test_cubic_is_monotone_jittable_and_vectorised():
    s = schedules.cubic(0.97, begin_step=5, end_step=50)
    steps = jnp.arange(60)
    values = jax.jit(s)(steps)
    assert values.dtype == jnp.float32
    assert np.all(np.diff(np.asarray(values)) >= 0)
    np.testing.assert_allclose(values, [float(s(int(t))) for t in steps], rtol=1e-6)


def test_cubic_power():
    s = schedules.cubic(0.5, begin_step=0, end_step=10, power=1)
    assert float(s(5)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(final_sparsity=1.0, begin_step=0, end_step=10), "final_sparsity"),
        (dict(final_sparsity=-0.1, begin_step=0, end_step=10), "final_sparsity"),
        (dict(final_sparsity=0.5, begin_step=10, end_step=10), "end_step"),
        (dict(final_sparsity=0.5, begin_step=20, end_step=10), "end_step"),
        (dict(final_sparsity=0.5, begin_step=-1, end_step=10), "begin_step"),
        (dict(final_sparsity=0.5, begin_step=0, end_step=10, initial_sparsity=1.5), "initial"),
        (dict(final_sparsity=0.5, begin_step=0, end_step=10, power=0), "power"),
    ],
)
def test_cubic_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedules.cubic(**kwargs)


def test_warmup_cubic_matches_platon_parameterisation():
    s = schedules.warmup_cubic(0.8, total_steps=1000, warmup_steps=100, final_warmup=3)
    assert float(s(100)) == 0.0  # t <= initial_warmup * W: dense
    assert float(s(700)) == pytest.approx(0.8)  # t >= T - final_warmup * W
    assert float(s(400)) == pytest.approx(0.8 - 0.8 * 0.5**3)
    with pytest.raises(ValueError, match="no cubic phase"):
        schedules.warmup_cubic(0.8, total_steps=300, warmup_steps=100)


def test_constant_and_every():
    assert float(schedules.constant(0.3)(123)) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="sparsity"):
        schedules.constant(1.0)
    due = schedules.every(10, final_from=50)
    assert [bool(due(t)) for t in (0, 5, 10, 49, 50, 51, 52)] == [
        True,
        False,
        True,
        False,
        True,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="interval"):
        schedules.every(0)
