"""Gradual oBERT beside PINS, PLATON and magnitude at 90% on small_repro's SST-2 protocol
(all-MiniLM-L6-v2, the 9,600-sentence subset, 300 steps of 32, AdamW 5e-5, seed 0), and
oBERT at BERT-base scale for the memory plan.

    .venv/bin/python experiments/obert.py          # every SST-2 variant, then the table
    jaxprune train --config experiments/configs/obert.py:sst2-90-obert --workdir runs  # one
    jaxprune plan --config experiments/configs/obert.py:bert-base-sst2-90-obert --devices 8 \\
        --layout dp fsdp zero --no-slope --out experiments/results/obert/plan

oBERT's window is its mask-update interval: ``m = update_every = 50`` gradients per pruning
step here (the paper's 1024 is three runs' worth of steps), as many as the block size
``B = 50``; mask updates at steps 50..250 (the cubic ramp of the other methods, begin 10%
and end 70% of the run, sampled every 50 steps), the surgeon update at each.
``sst2-90-obert-every10`` prunes on magnitude's steps instead (every 10, m = 10), and
``sst2-90-obert-every10-no-update`` does so without the surgeon update. oBERT's objective
is the task loss, as magnitude's and PLATON's (PINS keeps its self-regularization).
"""

from __future__ import annotations

import dataclasses
import pathlib

from jaxprune.recipes.job import Job, load_module

small_repro = load_module(pathlib.Path(__file__).with_name("small_repro.py"))

COMPARED = ("magnitude", "platon", "pins")


def _obert(window: int, surgeon: bool = True) -> Job:
    args = (("block", 50), ("num_grads", window), ("damp", 1e-7))
    if not surgeon:
        args += (("obs_update", False),)
    options = (("criterion_args", args), ("update_every", window))
    base = small_repro.VARIANTS["sst2-90-magnitude"]
    return dataclasses.replace(base, method="obert", label="obert", method_options=options)


VARIANTS = {
    "sst2-90-obert": _obert(50),
    # magnitude's mask updates (every 10 steps), each from the 10 gradients before it: a
    # rank-10 Fisher per block of 50, the rest of it the damping
    "sst2-90-obert-every10": _obert(10),
    # the same without the surgeon update of the kept weights: what the update adds
    "sst2-90-obert-every10-no-update": _obert(10, surgeon=False),
    # BERT-base on SST-2 at the paper's settings (m = 1024, 30 epochs of batch 32): for the
    # memory plan only (random weights, as the Hub is out of reach here).
    "bert-base-sst2-90-obert": Job(
        model="bert-base-uncased",
        task="sst2",
        method="obert",
        sparsity=0.9,
        epochs=30,
        batch_size=32,
        max_length=128,
        learning_rate=5e-5,
        random_init=True,
        label="obert",
    ),
}
VARIANTS.update({f"sst2-90-{m}": small_repro.VARIANTS[f"sst2-90-{m}"] for m in COMPARED})
