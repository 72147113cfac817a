"""PINS and PLATON with their running statistics stored in float32 (the default) and in
bfloat16, on small_repro's SST-2 protocol at 90% (all-MiniLM-L6-v2, the 9,600-sentence
subset, 300 steps of 32, AdamW 5e-5, seed 0), masks saved every 10 steps (every mask
update of the cubic ramp, begin 10% and end 70% of the run, then PLATON's and PINS' every
step from there: their masks are saved every 10th step).

    .venv/bin/python experiments/state_dtype.py     # the four runs, then the comparison
    jaxprune train --config experiments/configs/state_dtype.py:sst2-90-pins-bfloat16 \\
        --workdir runs
"""

from __future__ import annotations

import dataclasses
import pathlib

from jaxprune import methods
from jaxprune.recipes.job import Job, load_module

small_repro = load_module(pathlib.Path(__file__).with_name("small_repro.py"))

METHODS = ("pins", "platon")
DTYPES = ("float32", "bfloat16")


def _job(method: str, dtype: str) -> Job:
    preset = methods.get(method)
    args = (*preset.criterion_args, ("state_dtype", dtype))
    return dataclasses.replace(
        small_repro.VARIANTS[f"sst2-90-{method}"],
        method_options=(("criterion_args", args),),
        masks_every=10,
        label=f"{method} {dtype}",
    )


VARIANTS = {f"sst2-90-{m}-{d}": _job(m, d) for m in METHODS for d in DTYPES}
