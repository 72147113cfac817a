"""Compile time against the number of prunable leaves (issue 18).

    .venv/bin/python benchmarks/compile_time.py [--leaves 25 100 400 1600] [--shape 8 8]
                                                [--only topk_global magnitude ...]

For each leaf count, a tree of that many float32 leaves (``--shape``, 8x8 by default: the
program, not the arithmetic, is what grows) and the wall time of the first
``jax.jit(f).lower(*args).compile()`` (tracing, lowering and XLA's compilation) of:

- ``topk_global`` / ``topk_local``: ``jaxprune.masks.topk(tree, 0.5, scope=...)``;
- ``grouped``: ``jaxprune.masks.grouped_topk`` with one group per 4 consecutive leaves (a
  layer's matrices) and counts given at run time;
- ``magnitude`` / ``pins``: a train step, ``masked_optimizer(optax.adamw(1e-3),
  criterion=...)`` update (every leaf prunable; its mask update, a ``lax.cond``, included)
  and ``optax.apply_updates``, with the optimizer state as an argument;
- ``adamw``: the same step with plain ``optax.adamw(1e-3)``, for reference.

One row per function and leaf count: compile seconds, milliseconds per leaf and the size of
the lowered HLO text; then time(last) / time(previous) per function, which reads the ratio
of the leaf counts (4 for 400 -> 1600) when compile time grows linearly. Goal: linear growth
and 1,600 leaves under 20 s on the 2-core CPU. The load line gives the 1-minute load average
before and after (re-run when other jobs share the machine).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import optax

import jaxprune

Tree = dict[str, jax.Array]
Compilable = tuple[Callable[..., Any], tuple[Any, ...]]  # a function and its arguments


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, nargs="+", default=[25, 100, 400, 1600])
    parser.add_argument("--shape", type=int, nargs="+", default=[8, 8], help="of every leaf")
    parser.add_argument("--only", nargs="+", choices=list(FUNCTIONS), help="a subset")
    return parser.parse_args()


def command_line(args: argparse.Namespace) -> str:
    flags = []
    for k, v in vars(args).items():
        if v is not None:
            flags += [f"--{k}", *map(str, v)]
    return shlex.join([os.path.relpath(sys.executable), sys.argv[0], *flags])


def make_tree(n: int, shape: tuple[int, ...]) -> Tree:
    keys = jax.random.split(jax.random.key(0), n)
    return {f"layer{i:05d}/kernel": jax.random.normal(k, shape) for i, k in enumerate(keys)}


def topk(scope: str) -> Callable[[Tree], Compilable]:
    return lambda tree: (lambda t: jaxprune.masks.topk(t, 0.5, scope=scope), (tree,))


def grouped(tree: Tree) -> Compilable:
    n = len(tree)
    groups = [i // 4 for i in range(n)]  # a layer's matrices

    def fn(leaves: list[jax.Array], ks: jax.Array) -> list[jax.Array]:
        return jaxprune.masks.grouped_topk(leaves, groups, ks)

    ks = jnp.full((groups[-1] + 1,), 4 * math.prod(next(iter(tree.values())).shape) // 2)
    return fn, (list(tree.values()), ks.astype(jnp.int32))


def train_step(criterion: jaxprune.Criterion, **kwargs: Any) -> Callable[[Tree], Compilable]:
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion=criterion,
        schedule=jaxprune.schedules.cubic(0.5, begin_step=10, end_step=100),
        prunable=r"kernel$",
        **kwargs,
    )

    def step(params: Tree, state: optax.OptState, grads: Tree) -> tuple[Tree, optax.OptState]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return lambda tree: (step, (tree, jax.eval_shape(tx.init, tree), tree))


def adamw_step(tree: Tree) -> Compilable:
    """The reference: the same step with plain ``optax.adamw``, no pruning."""
    tx = optax.adamw(1e-3)

    def step(params: Tree, state: optax.OptState, grads: Tree) -> tuple[Tree, optax.OptState]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step, (tree, jax.eval_shape(tx.init, tree), tree)


FUNCTIONS: dict[str, Callable[[Tree], Compilable]] = {
    "topk_global": topk("global"),
    "topk_local": topk("local"),
    "grouped": grouped,
    "magnitude": train_step(jaxprune.criteria.magnitude()),
    "pins": train_step(jaxprune.criteria.pins(), learning_rate=1e-3),
    "adamw": adamw_step,
}


def compile_seconds(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[float, int]:
    """Seconds to trace, lower and compile ``fn`` on ``args``, and the HLO text's length."""
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    lowered.compile()
    seconds = time.perf_counter() - start
    return seconds, len(lowered.as_text())


def main() -> None:
    start = time.perf_counter()
    args = parse_args()
    names = args.only or list(FUNCTIONS)
    load = os.getloadavg()[0]
    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__}")
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), {os.cpu_count()} CPU cores")
    print(f"command: {command_line(args)}")
    print(f"leaves of shape {tuple(args.shape)}\n")
    print(f"{'function':<12} {'leaves':>6} {'compile s':>10} {'ms/leaf':>8} {'HLO chars':>11}")
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for n_leaves in args.leaves:
        tree = make_tree(n_leaves, tuple(args.shape))
        for name in names:
            s, size = compile_seconds(*FUNCTIONS[name](tree))
            seconds[name].append(s)
            print(f"{name:<12} {n_leaves:>6} {s:>10.2f} {1e3 * s / n_leaves:>8.1f} {size:>11,}")
    if len(args.leaves) > 1:
        a, b = args.leaves[-2:]
        print(f"\ntime({b}) / time({a}), linear: {b / a:.2f}")
        for name in names:
            print(f"{name:<12} {seconds[name][-1] / seconds[name][-2]:>6.2f}")
    print(f"\nload average: {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
