"""jaxprune's criteria, schedule and top-k against an independent PyTorch reference.

The reference below is written from the design spec (``design/algorithms-pins-smp.md``
sections 1.2, 1.4, 1.5 and ``design/algorithms-sdp-kap-baselines.md`` section 3.3), not
copied from the authors' code. It follows the recurrences as the spec describes the PINS
and PLATON ``Pruner`` classes: float32 torch tensors, Python-float hyperparameters, the
step ``t`` counted from 0, a window fold when ``t % deltaT == 0`` (EMA of the importance
first, then the uncertainty with the *updated* importance), and the final score chosen by
beta2 (``I*U`` for 0 < b2 < 1, ``I`` for b2 == 1, ``I*|ipt - I|`` for b2 == 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import criteria, masks, schedules

torch = pytest.importorskip("torch")

# ---------------------------------------------------------------------------------------
# PyTorch reference (from the spec)
# ---------------------------------------------------------------------------------------


class TorchWindowedReference:
    """The spec's ``ipt`` / ``exp_avg_ipt`` / ``exp_avg_unc`` state, one entry per tensor.

    ``kind`` is ``"pins"`` (instantaneous ``|-p*g + lr*g*g|`` with the weight *before* the
    step), ``"pins_signed"`` (the same without the absolute value) or ``"platon"``
    (``|p*g|`` with the weight *after* the step).

    ``reciprocal=True`` computes the window mean's ``x / (local + 1)`` as
    ``x * float32(1 / (local + 1))``. That is how XLA lowers an array divided by a scalar
    (its algebraic simplifier rewrites ``A / broadcast(b)`` into ``A * broadcast(1 / b)``),
    so jaxprune's window mean can differ from the IEEE quotient torch computes by one ulp.
    With it the comparison is exact up to rounding; without it (the spec's, and torch's,
    true division) differences of a few ulps of the score scale remain, and they show up as
    large *relative* errors wherever a score is a difference of nearly equal numbers (``I *
    |ipt - I|``, or signed PINS scores near zero).
    """

    def __init__(
        self, kind: str, beta1: float, beta2: float, delta_t: int, *, reciprocal: bool = False
    ):
        self.kind, self.beta1, self.beta2, self.delta_t = kind, beta1, beta2, delta_t
        self.reciprocal = reciprocal
        self.ipt: dict[str, torch.Tensor] = {}
        self.exp_avg_ipt: dict[str, torch.Tensor] = {}
        self.exp_avg_unc: dict[str, torch.Tensor] = {}

    def instant(self, p_before, p_after, g, lr: float):
        if self.kind == "platon":
            return (p_after * g).abs()
        s = -p_before * g + lr * g * g
        return s if self.kind == "pins_signed" else s.abs()

    def update(self, t: int, name: str, p_before, p_after, g, lr: float) -> None:
        if name not in self.ipt:
            self.ipt[name] = torch.zeros_like(g)
            self.exp_avg_ipt[name] = torch.zeros_like(g)
            self.exp_avg_unc[name] = torch.zeros_like(g)
        s = self.instant(p_before, p_after, g, lr)
        local = t % self.delta_t
        if local == 0:  # fold the previous window into the EMAs, then restart the window
            self.exp_avg_ipt[name] = (
                self.beta1 * self.exp_avg_ipt[name] + (1 - self.beta1) * self.ipt[name]
            )
            if 0 < self.beta2 < 1:  # U uses the *updated* I
                self.exp_avg_unc[name] = (
                    self.beta2 * self.exp_avg_unc[name]
                    + (1 - self.beta2) * (self.ipt[name] - self.exp_avg_ipt[name]).abs()
                )
            self.ipt[name] = s
        else:  # running mean inside the window
            total = self.ipt[name] * local + s
            if self.reciprocal:
                self.ipt[name] = total * float(np.float32(1) / np.float32(local + 1))
            else:
                self.ipt[name] = total / (local + 1)

    def score(self, name: str) -> torch.Tensor:
        imp = self.exp_avg_ipt[name]
        if 0 < self.beta2 < 1:
            return imp * self.exp_avg_unc[name]
        if self.beta2 == 1:
            return imp
        return imp * (self.ipt[name] - imp).abs()


def reference_ratio(t, *, total, warmup, iw, fw, final_ratio, delta_t, initial_ratio=1.0):
    """``schedule_threshold_comb`` as the spec describes it: (remaining ratio, mask flag)."""
    if t <= iw * warmup:  # dense phase: no masking
        return initial_ratio, False
    if t > total - fw * warmup:  # final phase: mask every step
        return final_ratio, True
    progress = (t - iw * warmup) / (total - (iw + fw) * warmup)
    ratio = final_ratio + (initial_ratio - final_ratio) * (1 - progress) ** 3
    return ratio, t % delta_t == 0


def reference_kthvalue_kept(all_scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Spec 1.5: tau = kthvalue(k = int(N*(1-r))), zero entries with score < tau (strict)."""
    n = all_scores.numel()
    k = int(n * (1 - ratio))
    tau = torch.kthvalue(all_scores, k).values
    return all_scores >= tau


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _tree(arrays: dict[str, np.ndarray]):
    """Params-like pytree with two prunable leaves and a non-prunable (None) leaf."""
    return {
        "dense": {"kernel": jnp.asarray(arrays["dense/kernel"])},
        "bias": jnp.asarray(arrays["bias"]),
        "norm": None,
    }


def _flat(tree) -> dict[str, np.ndarray]:
    assert tree["norm"] is None
    return {"dense/kernel": np.asarray(tree["dense"]["kernel"]), "bias": np.asarray(tree["bias"])}


def _make(kind: str, beta1: float, beta2: float, window: int) -> criteria.Criterion:
    if kind == "platon":
        return criteria.platon(beta1=beta1, beta2=beta2, window=window)
    return criteria.pins(beta1=beta1, beta2=beta2, window=window, signed=kind == "pins_signed")


def _run_parity(kind, beta1, beta2, window, *, reciprocal, tight, steps=25, jit=False, seed=0):
    """Feeds one random SGD trajectory to jaxprune and to the torch reference.

    With ``tight=True`` every state entry and score must agree to rtol 1e-6 (atol 1e-12).
    Otherwise the absolute tolerance is 1e-6 of the *scale* of the scores (``scale`` =
    largest ``|s|`` seen so far; ``scale**2`` for products): one-ulp differences (true vs
    reciprocal division, or an FMA that XLA contracts under jit) survive a cancellation as
    large relative errors in small entries.
    """
    rng = np.random.default_rng(seed)
    names = {"dense/kernel": (3, 4), "bias": (5,)}
    p_t = {n: torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for n, s in names.items()}
    crit = _make(kind, beta1, beta2, window)
    assert crit.after_step == (kind == "platon")
    assert crit.needs_lr == (kind != "platon")
    ref = TorchWindowedReference(kind, beta1, beta2, window, reciprocal=reciprocal)
    update = jax.jit(crit.update) if jit else crit.update
    scores_fn = jax.jit(crit.scores) if jit else crit.scores
    product = beta2 != 1.0  # I*U or I*|ipt - I|
    state, scale = None, 0.0
    for t in range(steps):
        lr = float(np.float32(rng.uniform(0.05, 1.0)))  # float32-exact, so both sides agree
        g_t = {
            n: torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for n, s in names.items()
        }
        if t % 7 == 3:  # a pruned (zero) weight and a zero gradient now and then
            p_t["bias"][1] = 0.0
            g_t["dense/kernel"][0, 2] = 0.0
        p_after = {n: p_t[n] - lr * g_t[n] for n in names}  # a plain SGD step
        for n in names:
            ref.update(t, n, p_t[n], p_after[n], g_t[n], lr)
            s_now = ref.instant(p_t[n], p_after[n], g_t[n], lr)
            scale = max(scale, float(s_now.abs().max()))
        # jaxprune's criterion gets the weights masked_optimizer would give it.
        scored = p_after if crit.after_step else p_t
        params = _tree({n: scored[n].numpy() for n in names})
        grads = _tree({n: g_t[n].numpy() for n in names})
        if state is None:
            state = crit.init(params)
        lr_arg = jnp.float32(lr) if crit.needs_lr else None
        state = update(state, params, grads, lr=lr_arg)
        got = scores_fn(state, params)
        assert jax.tree.structure(got) == jax.tree.structure(params)
        if tight:
            atol_state = atol_score = 1e-12
        else:
            atol_state, atol_score = 1e-6 * scale, 1e-6 * (scale**2 if product else scale)
        where = f"{kind} b1={beta1} b2={beta2} window={window} step {t}"
        pairs = [
            (got, ref.score, atol_score, "score"),
            (state.window, lambda n: ref.ipt[n], atol_state, "ipt"),
            (state.importance, lambda n: ref.exp_avg_ipt[n], atol_state, "I"),
            (state.uncertainty, lambda n: ref.exp_avg_unc[n], atol_state, "U"),
        ]
        for tree, want, atol, what in pairs:
            for n, value in _flat(tree).items():
                assert value.dtype == np.float32
                np.testing.assert_allclose(
                    value, want(n).numpy(), rtol=1e-6, atol=atol, err_msg=f"{where} {what} {n}"
                )
        p_t = p_after
    assert int(state.count) == steps


# ---------------------------------------------------------------------------------------
# 1. Criteria vs the torch reference on random sequences
# ---------------------------------------------------------------------------------------

KINDS = ["pins", "pins_signed", "platon"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beta2", [0.0, 0.85, 1.0])
@pytest.mark.parametrize("window", [1, 3, 10])
@pytest.mark.parametrize("beta1", [0.0, 0.85])
def test_windowed_criteria_match_torch_reference(kind, beta1, beta2, window):
    # Reference with XLA's division lowering: agreement to float32 rounding.
    _run_parity(kind, beta1, beta2, window, reciprocal=True, tight=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beta2", [0.0, 0.85, 1.0])
@pytest.mark.parametrize("window", [3, 10])
def test_windowed_criteria_match_true_division_reference(kind, beta2, window):
    # Reference with the spec's (and torch's) IEEE division in the window mean: agreement
    # to 1e-6 of the score scale.
    _run_parity(kind, 0.85, beta2, window, reciprocal=False, tight=False, seed=2)


@pytest.mark.parametrize("kind", ["pins", "platon"])
def test_windowed_criteria_match_torch_reference_jitted(kind):
    # The jitted update (as masked_optimizer runs it) agrees too, with the published
    # RTE-like hyperparameters (beta2 0.99 for PINS, 0.95 for PLATON). Under jit, XLA on CPU
    # contracts PINS's -p*g + (lr*g)*g into fma(lr*g, g, -p*g), one rounding fewer than
    # torch, hence the scale-relative tolerance.
    beta2 = 0.99 if kind == "pins" else 0.95
    _run_parity(kind, 0.85, beta2, 3, reciprocal=True, tight=False, steps=30, jit=True, seed=1)


# ---------------------------------------------------------------------------------------
# 2. Hand-computed sequences
# ---------------------------------------------------------------------------------------


def _steps(crit, params_seq, grads_seq, lr=None):
    """Feeds (params, grads) pairs to ``crit`` and returns the scores after every step."""
    state = crit.init(jnp.asarray(params_seq[0], jnp.float32))
    out = []
    for p, g in zip(params_seq, grads_seq, strict=True):
        p, g = jnp.asarray(p, jnp.float32), jnp.asarray(g, jnp.float32)
        state = crit.update(state, p, g, lr=None if lr is None else jnp.float32(lr))
        out.append(np.asarray(crit.scores(state, p)))
    return out


# Two-element sequence shared by taylor and movement:
#   step 0: p=[1, -2],   g=[3, 0.5] -> p*g = [3, -1],  |p*g| = [3, 1]
#   step 1: p=[2, 1],    g=[-1, 4]  -> p*g = [-2, 4],  |p*g| = [2, 4]
#   step 2: p=[0.5, -1], g=[2, 2]   -> p*g = [1, -2],  |p*g| = [1, 2]
P_SEQ = [[1.0, -2.0], [2.0, 1.0], [0.5, -1.0]]
G_SEQ = [[3.0, 0.5], [-1.0, 4.0], [2.0, 2.0]]


def test_magnitude_by_hand():
    # |w| of the weights given to scores, whatever the gradients.
    got = _steps(criteria.magnitude(), P_SEQ, G_SEQ)
    np.testing.assert_array_equal(got, [[1.0, 2.0], [2.0, 1.0], [0.5, 1.0]])


def test_taylor_no_ema_by_hand():
    # ema=0: the latest |p*g|.
    got = _steps(criteria.taylor(ema=0.0), P_SEQ, G_SEQ)
    np.testing.assert_array_equal(got, [[3.0, 1.0], [2.0, 4.0], [1.0, 2.0]])


def test_taylor_ema_by_hand():
    # ema=0.5: s <- 0.5*s + 0.5*|p*g|, s0 = 0
    #   step 0: 0.5*[0, 0]       + 0.5*[3, 1] = [1.5, 0.5]
    #   step 1: 0.5*[1.5, 0.5]   + 0.5*[2, 4] = [1.75, 2.25]
    #   step 2: 0.5*[1.75, 2.25] + 0.5*[1, 2] = [1.375, 2.125]
    got = _steps(criteria.taylor(ema=0.5), P_SEQ, G_SEQ)
    np.testing.assert_array_equal(got, [[1.5, 0.5], [1.75, 2.25], [1.375, 2.125]])


def test_movement_by_hand():
    # S <- S - p*g:
    #   step 0: [0, 0]   - [3, -1] = [-3, 1]
    #   step 1: [-3, 1]  - [-2, 4] = [-1, -3]
    #   step 2: [-1, -3] - [1, -2] = [-2, -1]
    got = _steps(criteria.movement(), P_SEQ, G_SEQ)
    np.testing.assert_array_equal(got, [[-3.0, 1.0], [-1.0, -3.0], [-2.0, -1.0]])


# PINS, lr = 0.5, S = -p*g + 0.5*g*g:
#   t=0: p=-1, g=2  -> 2 + 2  = 4
#   t=1: p=0,  g=2  -> 0 + 2  = 2
#   t=2: p=2,  g=-2 -> 4 + 2  = 6
#   t=3: p=3,  g=2  -> -6 + 2 = -4  (|S| = 4)
#   t=4: p=0,  g=0  -> 0
PINS_P = [[-1.0], [0.0], [2.0], [3.0], [0.0]]
PINS_G = [[2.0], [2.0], [-2.0], [2.0], [0.0]]


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
def test_pins_by_hand(state_dtype):
    # window=2, beta1=0.5, beta2=0.5; I = U = ipt = 0; score I*U. Every value below has at
    # most 8 significant bits, so the bfloat16 state stores it exactly.
    #   t=0 fold: I = 0.5*0 + 0.5*0 = 0; U = 0.5*0 + 0.5*|0 - 0| = 0; ipt = 4   -> 0
    #   t=1:      ipt = (4*1 + 2)/2 = 3                                          -> 0
    #   t=2 fold: I = 0.5*0 + 0.5*3 = 1.5; U = 0.5*0 + 0.5*|3 - 1.5| = 0.75; ipt = 6
    #                                                          -> 1.5*0.75 = 1.125
    #   t=3:      ipt = (6*1 + 4)/2 = 5                                     -> 1.125
    #   t=4 fold: I = 0.5*1.5 + 0.5*5 = 3.25; U = 0.5*0.75 + 0.5*|5 - 3.25| = 1.25; ipt = 0
    #                                                         -> 3.25*1.25 = 4.0625
    crit = criteria.pins(beta1=0.5, beta2=0.5, window=2, state_dtype=state_dtype)
    got = _steps(crit, PINS_P, PINS_G, lr=0.5)
    np.testing.assert_array_equal(np.ravel(got), [0.0, 0.0, 1.125, 1.125, 4.0625])


@pytest.mark.parametrize("kind", ["pins", "platon"])
def test_bfloat16_state_is_the_float32_update_rounded_once(kind):
    """Each bfloat16 update is the float32 recurrence applied to the stored (bfloat16)
    values, rounded to nearest once; the state takes half the bytes, the scores are float32
    products of the stored values."""
    make = criteria.pins if kind == "pins" else criteria.platon
    half, full = make(window=3, state_dtype="bfloat16"), make(window=3)
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
    state = half.init(params)
    assert state.window.dtype == jnp.bfloat16
    assert sum(x.nbytes for x in jax.tree.leaves(state)) - 4 == 6 * params.size
    for _ in range(10):
        grads = jnp.asarray(rng.normal(size=(64,)), jnp.float32)
        lr = jnp.float32(0.1)
        widened = jax.tree.map(lambda x: x.astype(jnp.float32), state)
        expected = jax.tree.map(
            lambda x: x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x,
            full.update(widened, params, grads, lr=lr),
        )
        state = half.update(state, params, grads, lr=lr)
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        params = params + 0.01 * grads
    scores = half.scores(state, params)
    assert scores.dtype == jnp.float32
    np.testing.assert_array_equal(
        scores, full.scores(jax.tree.map(lambda x: x.astype(jnp.float32), state), params)
    )
    assert float(jnp.max(scores)) > 0  # past the first window: scores carry evidence


@pytest.mark.parametrize(
    ("state_dtype", "error"),
    [("float16", ValueError), ("int8", ValueError), ("fp32", TypeError), (None, ValueError)],
)
def test_state_dtype_other_than_float32_or_bfloat16_is_refused(state_dtype, error):
    with pytest.raises(error, match="state_dtype must be one of"):
        criteria.pins(state_dtype=state_dtype)


def test_pins_signed_by_hand():
    # As above, but S at t=3 is -4, not 4:
    #   t=3:      ipt = (6*1 - 4)/2 = 1                                     -> 1.125
    #   t=4 fold: I = 0.5*1.5 + 0.5*1 = 1.25; U = 0.5*0.75 + 0.5*|1 - 1.25| = 0.5
    #                                                          -> 1.25*0.5 = 0.625
    crit = criteria.pins(beta1=0.5, beta2=0.5, window=2, signed=True)
    got = _steps(crit, PINS_P, PINS_G, lr=0.5)
    np.testing.assert_array_equal(np.ravel(got), [0.0, 0.0, 1.125, 1.125, 0.625])


# PLATON, |p*g| with the post-step weights given to update; second entry doubles the first:
#   t=0: p=[1, 2], g=[2, 2]   -> [2, 4]
#   t=1: p=[2, 4], g=[-2, -2] -> [4, 8]
#   t=2: p=[1, 2], g=[1, 1]   -> [1, 2]
#   t=3: p=[5, 10], g=[1, 1]  -> [5, 10]
PLATON_P = [[1.0, 2.0], [2.0, 4.0], [1.0, 2.0], [5.0, 10.0]]
PLATON_G = [[2.0, 2.0], [-2.0, -2.0], [1.0, 1.0], [1.0, 1.0]]


def test_platon_beta2_zero_by_hand():
    # window=2, beta1=0.5, beta2=0 (the argparse default): score I*|ipt - I|.
    #   t=0 fold: I = 0; ipt = [2, 4]                 -> 0
    #   t=1:      ipt = ([2, 4] + [4, 8])/2 = [3, 6]  -> 0
    #   t=2 fold: I = 0.5*[3, 6] = [1.5, 3]; ipt = [1, 2]
    #                          -> [1.5*|1 - 1.5|, 3*|2 - 3|] = [0.75, 3]
    #   t=3:      ipt = ([1, 2] + [5, 10])/2 = [3, 6]
    #                          -> [1.5*|3 - 1.5|, 3*|6 - 3|] = [2.25, 9]
    crit = criteria.platon(beta1=0.5, beta2=0.0, window=2)
    got = _steps(crit, PLATON_P, PLATON_G)
    np.testing.assert_array_equal(got, [[0.0, 0.0], [0.0, 0.0], [0.75, 3.0], [2.25, 9.0]])


def test_platon_window_one_lags_one_step_by_hand():
    # window=1, beta1=0.5, beta2=1: score I, folded with the *previous* step's |p*g|.
    #   t=0: I = 0.5*0 + 0.5*0 = 0;           ipt = [2, 4]
    #   t=1: I = 0.5*0 + 0.5*[2, 4] = [1, 2];  ipt = [4, 8]
    #   t=2: I = 0.5*[1, 2] + 0.5*[4, 8] = [2.5, 5]
    #   t=3: I = 0.5*[2.5, 5] + 0.5*[1, 2] = [1.75, 3.5]
    crit = criteria.platon(beta1=0.5, beta2=1.0, window=1)
    got = _steps(crit, PLATON_P, PLATON_G)
    np.testing.assert_array_equal(got, [[0.0, 0.0], [1.0, 2.0], [2.5, 5.0], [1.75, 3.5]])


# ---------------------------------------------------------------------------------------
# 3. Schedule and mask-step parity with schedule_threshold_comb
# ---------------------------------------------------------------------------------------

SCHEDULES = [
    # (T, W, initial_warmup, final_warmup, final_ratio, deltaT)
    (100, 10, 1, 2, 0.2, 10),
    (100, 10, 1, 2, 0.15, 3),
    (57, 5, 2, 3, 0.1, 4),
    (3120, 200, 1, 6, 0.2, 10),  # the published PINS RTE script (glue.sh)
    (60, 5, 1.5, 2.5, 0.3, 7),  # fractional warm-up multipliers
]


@pytest.mark.parametrize(("total", "warmup", "iw", "fw", "final_ratio", "delta_t"), SCHEDULES)
def test_warmup_cubic_and_every_match_reference(total, warmup, iw, fw, final_ratio, delta_t):
    sched = schedules.warmup_cubic(
        1.0 - final_ratio,
        total_steps=total,
        warmup_steps=warmup,
        initial_warmup=iw,
        final_warmup=fw,
    )
    due = schedules.every(delta_t, final_from=total - fw * warmup)
    steps = np.arange(total)
    sparsity = np.asarray(sched(jnp.asarray(steps)))
    flags = np.asarray(due(jnp.asarray(steps)))
    assert sparsity.dtype == np.float32
    kw = dict(total=total, warmup=warmup, iw=iw, fw=fw, final_ratio=final_ratio, delta_t=delta_t)
    for t in steps:
        ratio, mask_flag = reference_ratio(int(t), **kw)
        assert abs((1.0 - float(sparsity[t])) - ratio) <= 1e-6, (t, sparsity[t], ratio)
        if t > iw * warmup:  # in the dense phase jaxprune may mask (at sparsity 0: a no-op)
            assert bool(flags[t]) == mask_flag, t
        else:
            assert float(sparsity[t]) == 0.0
    # Scalar evaluation at the phase boundaries, as masked_optimizer calls them.
    begin, end = iw * warmup, total - fw * warmup
    boundary = {int(np.floor(x)) for x in (begin, end)} | {int(np.ceil(x)) for x in (begin, end)}
    boundary |= {b + 1 for b in boundary}
    for t in sorted(boundary):
        ratio, mask_flag = reference_ratio(t, **kw)
        s = float(sched(jnp.int32(t)))
        assert abs((1.0 - s) - ratio) <= 1e-6, t
        if t > begin:
            assert bool(due(jnp.int32(t))) == mask_flag, t


def test_schedule_boundaries_explicit():
    # T=100, W=10, iw=1, fw=2, r_f=0.2, deltaT=3: dense through t=10, cubic over (10, 80],
    # final from t=81.
    sched = schedules.warmup_cubic(0.8, total_steps=100, warmup_steps=10)
    due = schedules.every(3, final_from=80)
    assert float(sched(10)) == 0.0  # t = iw*W: still dense
    # t = iw*W + 1: r = 0.2 + 0.8*(1 - 1/70)**3
    assert abs((1 - float(sched(11))) - (0.2 + 0.8 * (69 / 70) ** 3)) < 1e-6
    assert abs(float(sched(80)) - 0.8) < 1e-6  # t = T - fw*W: the cubic reaches r_f
    assert abs(float(sched(81)) - 0.8) < 1e-6  # t = T - fw*W + 1: final phase
    # Mask flags: t % 3 == 0 in the cubic phase, every step after 80.
    flags = [bool(due(t)) for t in (11, 12, 79, 80, 81, 82, 83)]
    assert flags == [False, True, False, False, True, True, True]


@jax.jit
def _kept_count(scores, sparsity):
    return sum(jnp.sum(m) for m in jax.tree.leaves(masks.topk(scores, sparsity)))


def _tie_free_tree(rng, sizes):
    values = rng.permutation(sum(sizes)).astype(np.float32) - sum(sizes) / 3  # distinct
    leaves, start = [], 0
    for size in sizes:
        leaves.append(values[start : start + size])
        start += size
    return leaves


@pytest.mark.parametrize("sizes", [(30, 7), (600, 400), (4000, 96, 3)])
def test_kept_count_vs_reference(sizes):
    total, warmup, iw, fw, final_ratio = 100, 10, 1, 2, 0.2
    sched = schedules.warmup_cubic(
        1.0 - final_ratio,
        total_steps=total,
        warmup_steps=warmup,
        initial_warmup=iw,
        final_warmup=fw,
    )
    rng = np.random.default_rng(len(sizes))
    leaves = _tie_free_tree(rng, sizes)
    tree = {"a": jnp.asarray(leaves[0]), "rest": [jnp.asarray(x) for x in leaves[1:]], "n": None}
    flat = torch.from_numpy(np.concatenate(leaves))
    n = flat.numel()
    for t in range(iw * warmup + 1, total):  # every step where the reference may mask
        ratio, _ = reference_ratio(
            t, total=total, warmup=warmup, iw=iw, fw=fw, final_ratio=final_ratio, delta_t=1
        )
        s = sched(jnp.int32(t))
        kept = int(_kept_count(tree, s))
        # jaxprune keeps round((1 - s) * n), computed in float32.
        assert kept == int(np.round((np.float32(1) - np.float32(s)) * np.float32(n)))
        # int(n*r) floors and round(n*r) rounds, so these two readings of "keep n*r
        # entries" differ by at most one.
        assert abs(kept - int(n * ratio)) <= 1, t
        # The spec's actual rule (kthvalue at k = int(n*(1-r)), keep score >= tau) keeps
        # n - int(n*(1-r)) + 1 = ceil(n*r) + 1 entries when there are no ties: one or two
        # more than jaxprune's round(n*r). torch.kthvalue rejects k = 0, so the authors'
        # code needs n*(1-r) >= 1 there.
        if int(n * (1 - ratio)) >= 1:
            ref_kept = int(reference_kthvalue_kept(flat, ratio).sum())
            assert ref_kept == n - int(n * (1 - ratio)) + 1
            assert 1 <= ref_kept - kept <= 2, (t, ref_kept, kept)


# ---------------------------------------------------------------------------------------
# 4. Global top-k vs a full sort
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 1 / 3, 0.5, 0.8, 0.9, 0.99])
def test_global_topk_matches_full_sort(sparsity):
    rng = np.random.default_rng(7)
    sizes = [(6, 7), (13,), (2, 3, 5)]
    n = sum(int(np.prod(s)) for s in sizes)
    values = rng.permutation(n).astype(np.float32) * 0.37 - 20.0  # distinct, some negative
    leaves, start = [], 0
    for shape in sizes:
        size = int(np.prod(shape))
        leaves.append(values[start : start + size].reshape(shape))
        start += size
    tree = {
        "x": jnp.asarray(leaves[0]),
        "none": None,
        "y": [jnp.asarray(leaves[1])],
        "z": jnp.asarray(leaves[2]),
    }
    got = masks.topk(tree, sparsity)
    assert got["none"] is None
    got_flat = np.concatenate(
        [
            np.asarray(got["x"]).ravel(),
            np.asarray(got["y"][0]).ravel(),
            np.asarray(got["z"]).ravel(),
        ]
    )
    k = int(np.round((np.float32(1) - np.float32(sparsity)) * np.float32(n)))
    expected = np.zeros(n, bool)
    expected[np.argsort(-values, kind="stable")[:k]] = True
    np.testing.assert_array_equal(got_flat, expected)
    # The kept set lies inside the reference's (kthvalue) kept set, which keeps one or
    # two more entries (see test_kept_count_vs_reference).
    ratio = 1 - sparsity
    if int(n * (1 - ratio)) >= 1:
        ref = reference_kthvalue_kept(torch.from_numpy(values), ratio).numpy()
        assert not np.any(got_flat & ~ref)
        assert 1 <= ref.sum() - got_flat.sum() <= 2
