"""Trains a tiny BERT with masked_optimizer through the engine; run as a subprocess.

    python tests/engine_worker.py --out OUT.npz --run-dir DIR [--devices 8 --data 4 --model 2]
        [--fsdp | --shard-state] [--axis-types auto|explicit|mixed] [--set-mesh] [--steps 20]
        [--checkpoint-every 3]
        [--coordinator 127.0.0.1:PORT --num-processes 2 --process-id I --heartbeat-timeout S]
        [--sleep-at STEP --sleep-seconds S] [--nan-at STEP]

It sets XLA_FLAGS for ``--devices`` before importing jax, trains, and (process 0) writes
the final params and masks to OUT.npz, plus the shardings it saw to OUT.json.
``--axis-types``: both mesh axes Auto, both Explicit, or Explicit ``data`` with Auto
``model`` (mixed); default: ``train.make_mesh``'s. ``--set-mesh`` runs everything under
``jax.set_mesh(mesh)``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

QUERY = "bert/encoder/layer/0/attention/self/query/kernel"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--data", type=int, default=1)
    p.add_argument("--model", type=int, default=1)
    p.add_argument("--fsdp", action="store_true")
    p.add_argument("--shard-state", action="store_true", help="ZeRO-1 style, params replicated")
    p.add_argument("--axis-types", choices=["auto", "explicit", "mixed"])
    p.add_argument("--set-mesh", action="store_true", help="run under jax.set_mesh(mesh)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--heartbeat-timeout", type=int, default=100, help="seconds")
    p.add_argument("--sleep-at", type=int, default=-1, help="pause before this step's batch")
    p.add_argument("--sleep-seconds", type=float, default=600.0)
    p.add_argument("--nan-at", type=int, default=-1, help="feed a NaN batch at this step")
    return p.parse_args()


def main() -> None:
    args = parse()
    # XLA:CPU's concurrency-optimized schedule lets simulated devices enter the collectives
    # of masked_optimizer's mask-update branch (a lax.cond) and of the forward pass in
    # different orders: under CPU load the run deadlocks ("Termination timeout for all
    # reduce ... 40 seconds exceeded"). The plain schedule keeps one order on every device.
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={args.devices} "
        "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if args.coordinator:
        from jaxprune.train import distributed

        distributed.initialize(
            args.coordinator,
            args.num_processes,
            args.process_id,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
    from jax.sharding import AxisType

    from jaxprune import train

    types = {
        "auto": AxisType.Auto,
        "explicit": AxisType.Explicit,
        "mixed": (AxisType.Explicit, AxisType.Auto),
        None: None,
    }[args.axis_types]
    mesh = train.make_mesh(args.data, args.model, axis_types=types)
    with jax.set_mesh(mesh) if args.set_mesh else contextlib.nullcontext():
        run(args, mesh)
    if args.coordinator:
        jax.distributed.shutdown()
    sys.exit(0)


def run(args: argparse.Namespace, mesh) -> None:
    import jax
    import numpy as np
    import optax
    from flax import nnx
    from jax.experimental import multihost_utils

    import jaxprune
    from jaxprune import train
    from jaxprune.models import EncoderConfig, EncoderForTask, logical_axes

    cfg = EncoderConfig(
        arch="bert",
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = EncoderForTask(cfg, task="sequence-classification", num_labels=2, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    forward = train.model_fn(model)
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion=jaxprune.criteria.pins(window=2),
        schedule=jaxprune.schedules.cubic(0.8, begin_step=2, end_step=14),
        prunable=jaxprune.paths.BERT_ENCODER_KERNELS_AND_BIASES,
        update_every=jaxprune.schedules.every(4, final_from=14),
        learning_rate=1e-3,
    )
    layout = train.Sharding(mesh, fsdp=args.fsdp, shard_state=args.shard_state)
    param_sh = layout.params(params, logical_axes(model))
    state = train.init_state(params, tx, seed=0)
    state_sh, update_sh = train.state_shardings(layout, state, params, param_sh)
    state = jax.device_put(state, state_sh)
    loss = train.supervised_loss(forward, "classification")
    step = jax.jit(
        train.train_step_fn(loss, tx, update_sharding=update_sh),
        out_shardings=(state_sh, layout.replicated),
        donate_argnums=0,
    )

    global_batch, length = 16, 12
    per_host = global_batch // jax.process_count()

    def batches(epoch: int, start: int):
        for index in range(start, 8):
            rng = np.random.default_rng((epoch, index))
            ids = rng.integers(1, 64, (global_batch, length)).astype(np.int32)
            batch = {
                "input_ids": ids,
                "attention_mask": (
                    np.arange(length) < rng.integers(4, length + 1, (global_batch, 1))
                ).astype(np.int32),
                "labels": (ids[:, 0] % 2).astype(np.int32),
            }
            global_step = epoch * 8 + index
            if global_step == args.sleep_at:
                flag = "paused" + (f".{jax.process_index()}" if jax.process_index() else "")
                with open(os.path.join(args.run_dir, flag), "w") as f:
                    f.write(str(global_step))
                time.sleep(args.sleep_seconds)
            lo = jax.process_index() * per_host
            local = {k: v[lo : lo + per_host] for k, v in batch.items()}
            yield {
                k: jax.make_array_from_process_local_data(layout.batch, v) for k, v in local.items()
            }

    def nan_guard(state, batch, teacher):
        if int(state.step) == args.nan_at:
            state = state._replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
        return step(state, batch, teacher)

    state, _ = train.fit(
        run_dir=args.run_dir,
        config=train.LoopConfig(
            steps=args.steps,
            steps_per_epoch=8,
            log_every=5,
            checkpoint_every=args.checkpoint_every,
            progress=False,
        ),
        state=state,
        train_step=nan_guard if args.nan_at >= 0 else step,
        batches=batches,
    )

    masks = jaxprune.masks_of(state.opt_state)
    flat = {}
    for name, tree in (("params", state.params), ("masks", masks)):
        for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            flat[f"{name}/{jaxprune.paths.path_str(keypath)}"] = np.asarray(
                multihost_utils.process_allgather(leaf, tiled=True)
            )
    if jax.process_index() == 0:
        np.savez(args.out, **flat)

        def query(tree, within: str = ""):  # the first layer's query kernel inside `tree`
            leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
            (leaf,) = [
                x
                for k, x in leaves
                if (p := jaxprune.paths.path_str(k)).endswith(QUERY) and within in p
            ]
            return leaf

        kernel = query(state.params)
        seen = {
            "query_kernel": str(kernel.sharding.spec),
            "query_mask": str(query(masks).sharding.spec),
            "query_importance": str(query(state.opt_state.criterion.importance).sharding.spec),
            "query_adam_mu": str(query(state.opt_state.inner, "mu/").sharding.spec),
            "addressable_shards": len(kernel.addressable_shards),
            "axis_types": [t.name for t in kernel.sharding.mesh.axis_types],
        }
        with open(args.out.replace(".npz", ".json"), "w") as f:
            json.dump(seen, f)


if __name__ == "__main__":
    main()
