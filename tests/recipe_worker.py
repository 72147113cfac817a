"""A tiny recipe run on 8 simulated devices; run as a subprocess.

    python tests/recipe_worker.py ROOT METHOD [--shard-state]

Writes fixture data and a tiny BERT under ROOT (once), trains ``fixtures.tiny_job`` with
METHOD on batches of 8 over a data axis of 8 (``--shard-state``: optimizer and pruning
state and teacher sharded over it, ``Job(shard_state=True)``) into ROOT/run-..., and writes
the result and the exported params to ROOT/<run>.npz and ROOT/<run>.json.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (  # the flag against a collective deadlock: tests/engine_worker.py
    "--xla_force_host_platform_device_count=8 "
    "--xla_cpu_enable_concurrency_optimized_scheduler=false"
)
os.environ["JAX_PLATFORMS"] = "cpu"

import json
import pathlib

import fixtures
import numpy as np
from safetensors.numpy import load_file

from jaxprune import recipes


def main() -> None:
    root, method, shard_state = pathlib.Path(sys.argv[1]), sys.argv[2], "--shard-state" in sys.argv
    world = {"data": root / "data", "bert": root / "bert"}
    if not world["bert"].exists():
        fixtures.write_data(world["data"])
        fixtures.tiny_bert(world["bert"])
    job = fixtures.tiny_job(
        world,
        method=method,
        steps=16,
        batch_size=8,
        eval_every=4,  # PINS's self-teacher refreshes on dev
        method_options=(("begin", 10),),  # after PINS's first window
        shard_state=shard_state,
    )
    name = f"{method}-{'zero' if shard_state else 'dp'}"
    result = recipes.run(job, root / name)
    np.savez(root / f"{name}.npz", **load_file(root / name / "export" / "model.safetensors"))
    (root / f"{name}.json").write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
