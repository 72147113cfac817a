"""Train-step speed and state memory of every pruning method on the real MiniLM.

    .venv/bin/python benchmarks/engine.py [--batch 32 --seq 64 --repeats 5]
                                          [--methods dense magnitude pins ...]

For each method, the jitted engine step (forward, backward, method loss, optimizer,
masked update) on one SST-2-shaped batch of the embedded MiniLM with a 2-class head.
Masks are not recomputed in timed steps (``update_every`` set past the run), so the ratio
to dense is the per-step overhead outside mask updates. Goal: every method <= 1.10x dense.
Memory: bytes of the train state (params, optimizer state with masks and criterion or
score state, and the teacher a method keeps) per model parameter. Methods run interleaved
(ABC ABC ...) so machine load hits them alike; medians and minima are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import hf, methods, train

DEFAULT = ["dense", "magnitude", "taylor", "platon", "pins", "sparsebert", "sdp", "movement",
           "soft_movement", "smp", "smp_s"]  # fmt: skip


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def method_for(name: str):
    if name == "dense":
        return methods.get("magnitude", sparsity=0.0, update_every=10**9)
    preset = methods.get(name)
    fields = {f.name for f in dataclasses.fields(preset)}
    quiet = {k: v for k, v in (("update_every", 10**9), ("final_every_step", False)) if k in fields}
    return dataclasses.replace(preset, **quiet)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", nargs="*", default=DEFAULT)
    args = p.parse_args()

    model, params, _ = hf.load_pretrained("minilm", task="sequence-classification", num_labels=2)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    forward = train.model_fn(model)
    run = methods.Run(total_steps=10**6, learning_rate=5e-5, warmup_steps=10)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(1000, 30000, (args.batch, args.seq)).astype(np.int32),
        "attention_mask": np.ones((args.batch, args.seq), np.int32),
        "token_type_ids": np.zeros((args.batch, args.seq), np.int32),
        "labels": rng.integers(0, 2, args.batch).astype(np.int32),
    }
    setups, memory, compile_s = {}, {}, {}
    for name in args.methods:
        method = method_for(name)
        tx = method.optimizer(run, params)
        step = jax.jit(
            train.train_step_fn(method.loss(forward, run, forward), tx), donate_argnums=0
        )
        state = train.init_state(jax.tree.map(jnp.copy, method.init(params)), tx)  # donated
        teacher = method.initial_teacher(params, params if method.teacher == "dense" else None)
        start = time.perf_counter()
        state, metrics = step(state, batch, teacher)  # step 0: compile (+ the one mask update)
        jax.block_until_ready(metrics["loss"])
        compile_s[name] = time.perf_counter() - start
        memory[name] = (nbytes(state) + (nbytes(teacher) if teacher is not None else 0)) / n_params
        setups[name] = [step, state, teacher]
        print(f"compiled {name} in {compile_s[name]:.1f} s", file=sys.stderr, flush=True)

    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, setup in setups.items():
            step, state, teacher = setup
            start = time.perf_counter()
            state, metrics = step(state, batch, teacher)
            jax.block_until_ready(metrics["loss"])
            times[name].append(time.perf_counter() - start)
            setup[1] = state

    dense = statistics.median(times[args.methods[0]])
    dense_min = min(times[args.methods[0]])
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; MiniLM-L6 ({n_params:,} params), "
        f"batch {args.batch} x {args.seq} tokens, {args.repeats} interleaved rounds"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{'method':<14} {'median s':>9} {'min s':>8} {'ratio':>7} {'min ratio':>9} "
        f"{'bytes/param':>11} {'compile s':>9}"
    )
    for name in setups:
        med, low = statistics.median(times[name]), min(times[name])
        print(
            f"{name:<14} {med:>9.3f} {low:>8.3f} {med / dense:>6.3f}x {low / dense_min:>8.3f}x "
            f"{memory[name]:>11.1f} {compile_s[name]:>9.1f}"
        )
    print("(first row is the reference; goal: every ratio <= 1.10; fp32 params are 4 bytes)")


if __name__ == "__main__":
    main()
