"""The demo (``make demo``): all-MiniLM-L6-v2 pruned to 90% with PINS on SST-2, after a
short dense fine-tuning that gives the dense reference and PINS's starting teacher.

    .venv/bin/python experiments/demo.py                       # both, then the summary
    jaxprune train --config experiments/configs/demo.py:dense
    jaxprune train --config experiments/configs/demo.py:pins --set teacher=runs/demo/dense/export

Budget: under 10 minutes on 2 CPU cores. Batches of 32 sentences (at most 64 tokens, packed
several to a row so that almost no position is padding),
AdamW 5e-5 with 10% warm-up; PINS is dense for the first 10% of its steps, reaches 90% at
70% and keeps re-selecting its masks every step after that, distilling from its own latest
checkpoint (refreshed every 50 steps), which starts as the dense fine-tuned model.
"""

from __future__ import annotations

from jaxprune.recipes.job import Job

_COMMON = dict(
    model="minilm", task="sst2", batch_size=32, max_length=64, learning_rate=5e-5, pack=True
)

VARIANTS = {
    "dense": Job(**_COMMON, method="dense", sparsity=0.0, steps=200, label="dense"),
    "pins": Job(**_COMMON, method="pins", sparsity=0.9, steps=480, label="PINS"),
}
