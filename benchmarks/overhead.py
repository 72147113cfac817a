"""Overhead of pruning: the masked train step and the global mask update.

    .venv/bin/python benchmarks/overhead.py

Measures, in one run:

1. A jitted AdamW train step (forward, backward, update, ``optax.apply_updates``) on a stack
   of BERT-base-shaped dense blocks (four 768x768 kernels, a 768x3072 / 3072x768 GELU FFN,
   biases; 4,096 tokens, MSE loss), with plain ``optax.adamw`` and with
   ``jaxprune.masked_optimizer`` around it (magnitude, PINS; PINS again with
   ``skip_nonfinite=True``, the cost of skipping non-finite steps). Only steps that do not
   recompute the masks are timed, except in the last row, magnitude with a mask update
   (global top-k and its ranking checks) at every step. Goals: masked / dense <= 1.05; the
   mask-update step <= 1.10 (at ``--blocks 12``, BERT-base's 85M prunable weights).
2. One global top-k mask update (``jaxprune.masks.topk``) against ``jax.lax.top_k`` of the
   same k (the selection XLA offers: a floor where it is fast) and a full sort (the
   ceiling) of the same scores (all kernels of ``--mask-blocks`` blocks, 85M entries for
   12). Goal: top-k < sort.

Variants are interleaved in rounds (ABCABC...); compilation is excluded. Each row reports
the median, min and max seconds over the rounds and two ratios to the first row: the median
of the per-round ratios, and the ratio of the minima (see ``print_rows``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import optax

import jaxprune

HIDDEN, FFN, TOKENS = 768, 3072, 4096
SHAPES: dict[str, tuple[int, int]] = {
    "q": (HIDDEN, HIDDEN),
    "k": (HIDDEN, HIDDEN),
    "v": (HIDDEN, HIDDEN),
    "o": (HIDDEN, HIDDEN),
    "ffn_in": (HIDDEN, FFN),
    "ffn_out": (FFN, HIDDEN),
}
# Larger than any step count timed here: after the warm-up step 0 (a mask update, since
# 0 % n == 0), no timed step recomputes the masks.
UPDATE_EVERY = 10**6

Params = dict[str, dict[str, dict[str, jax.Array]]]
TrainState = tuple[Params, optax.OptState]
Step = Callable[[Params, optax.OptState, jax.Array, jax.Array], TrainState]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2, help="blocks in the train step")
    parser.add_argument("--steps", type=int, default=1, help="train steps per timed sample")
    parser.add_argument("--repeats", type=int, default=10, help="timed train-step rounds")
    parser.add_argument("--mask-blocks", type=int, default=12, help="blocks of scores to rank")
    parser.add_argument("--mask-repeats", type=int, default=3, help="timed mask-update rounds")
    return parser.parse_args()


def command_line(args: argparse.Namespace) -> str:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()]
    return shlex.join([os.path.relpath(sys.executable), sys.argv[0], *flags])


def init_params(blocks: int, seed: int) -> Params:
    keys = iter(jax.random.split(jax.random.key(seed), blocks * len(SHAPES)))
    return {
        f"block{b}": {
            name: {
                "kernel": 0.02 * jax.random.normal(next(keys), shape),
                "bias": jnp.zeros(shape[1]),
            }
            for name, shape in SHAPES.items()
        }
        for b in range(blocks)
    }


def dense(layer: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ layer["kernel"] + layer["bias"]


def loss_fn(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
    h = x
    for block in params.values():
        a = h
        for name in ("q", "k", "v", "o"):
            a = dense(block[name], a)
        h = h + a
        h = h + dense(block["ffn_out"], jax.nn.gelu(dense(block["ffn_in"], h), approximate=False))
    return jnp.mean((h - y) ** 2)


def make_step(tx: optax.GradientTransformation) -> Step:
    def step(params: Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array) -> TrainState:
        grads = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0, 1))


def optimizers() -> dict[str, optax.GradientTransformation]:
    def masked(criterion: jaxprune.Criterion, **kwargs: Any) -> optax.GradientTransformation:
        kwargs.setdefault("update_every", UPDATE_EVERY)
        return jaxprune.masked_optimizer(
            optax.adamw(1e-4),
            criterion=criterion,
            schedule=jaxprune.schedules.cubic(0.9, begin_step=0, end_step=1000),
            prunable=r"kernel$",
            **kwargs,
        )

    return {
        "dense adamw": optax.adamw(1e-4),
        "masked magnitude": masked(jaxprune.criteria.magnitude()),
        "masked pins": masked(jaxprune.criteria.pins(), learning_rate=1e-4),
        "pins, skip NaN steps": masked(
            jaxprune.criteria.pins(), learning_rate=1e-4, skip_nonfinite=True
        ),
        "magnitude, mask/step": masked(jaxprune.criteria.magnitude(), update_every=1),
    }


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds taken by ``fn(*args)`` until its outputs are ready, and the outputs."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def run_steps(step: Step, state: TrainState, x: jax.Array, y: jax.Array, n: int) -> TrainState:
    for _ in range(n):
        state = step(*state, x, y)
    return state


def bench_train(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per step of each optimizer, one sample per round."""
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (TOKENS, HIDDEN))
    y = jax.random.normal(ky, (TOKENS, HIDDEN))
    steps: dict[str, Step] = {}
    states: dict[str, TrainState] = {}
    for name, tx in optimizers().items():
        steps[name] = make_step(tx)
        params = init_params(args.blocks, seed=1)
        # Warm-up: compiles, and runs step 0, the one mask-update step.
        _, states[name] = timed(run_steps, steps[name], (params, tx.init(params)), x, y, 1)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            seconds, states[name] = timed(run_steps, step, states[name], x, y, args.steps)
            samples[name].append(seconds / args.steps)
    return samples


def kernel_scores(blocks: int) -> list[jax.Array]:
    """Magnitude scores of every kernel of ``blocks`` blocks."""
    params = init_params(blocks, seed=2)
    return [jnp.abs(layer["kernel"]) for block in params.values() for layer in block.values()]


def full_sort(scores: list[jax.Array]) -> jax.Array:
    return jnp.sort(jnp.concatenate([s.ravel() for s in scores]))


def lax_top_k(scores: list[jax.Array]) -> jax.Array:
    """The indices of the 10% largest, by ``jax.lax.top_k``."""
    flat = jnp.concatenate([s.ravel() for s in scores])
    return jax.lax.top_k(flat, round(0.1 * flat.size))[1]


def bench_mask(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per call of a full sort and of the global top-k mask update."""
    scores = kernel_scores(args.mask_blocks)
    fns = {
        "full sort": full_sort,
        "lax.top_k (k=10%)": lax_top_k,
        "topk (global, 0.9)": lambda s: jaxprune.masks.topk(s, 0.9),
    }
    compiled = {name: jax.jit(fn).lower(scores).compile() for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(args.mask_repeats):
        for name, fn in compiled.items():
            samples[name].append(timed(fn, scores)[0])
    return samples


def print_rows(samples: dict[str, list[float]], unit: str) -> None:
    """Prints one row per variant, with two ratios to the first row.

    ``ratio`` is the median over rounds of (variant / first variant) within a round: the
    variants of a round run back to back, so it cancels slow drift. ``min ratio`` compares
    the fastest samples: contention on a shared machine only adds time, so the minima are
    the most stable estimate where the noise comes in bursts.
    """
    first = next(iter(samples.values()))
    header = f"{'variant':<20} {'median ' + unit:>14} {'min':>8} {'max':>8}"
    print(f"{header} {'ratio':>8} {'min ratio':>10}")
    for name, s in samples.items():
        ratio = statistics.median(t / t0 for t, t0 in zip(s, first, strict=True))
        print(
            f"{name:<20} {statistics.median(s):>14.4f} {min(s):>8.4f} {max(s):>8.4f} "
            f"{ratio:>7.3f}x {min(s) / min(first):>9.3f}x"
        )


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    train = bench_train(args)
    mask = bench_mask(args)
    device = jax.devices()[0]
    n_train = args.blocks * sum(i * o + o for i, o in SHAPES.values())
    n_mask = args.mask_blocks * sum(i * o for i, o in SHAPES.values())
    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__}")
    print(f"device: {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores")
    print(f"command: {command_line(args)}\n")
    print(
        f"train step: {args.blocks} blocks, {n_train:,} params, {TOKENS} tokens; "
        f"{args.repeats} rounds of {args.steps} step(s); ratio to dense (goal <= 1.05; "
        "mask/step: <= 1.10)"
    )
    print_rows(train, "s/step")
    print(
        f"\nmask update: {args.mask_blocks} blocks, {n_mask:,} scores; "
        f"{args.mask_repeats} rounds; ratio to full sort (goal < 1)"
    )
    print_rows(mask, "s")
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
