"""The small-scale reproduction that fits a 2-core CPU: all-MiniLM-L6-v2 on SST-2 (a fixed
9,600-sentence training subset), MRPC, RTE, STS-B and CoLA, every method at 80, 90 and 97%
sparsity, plus a dense fine-tuned reference per task (also SparseBERT's teacher).

    jaxprune train --config experiments/configs/small_repro.py:rte-dense   # dense first
    jaxprune train --config experiments/configs/small_repro.py:rte-90-pins
    .venv/bin/python experiments/small_repro.py [--tasks rte mrpc] [--methods pins smp]
    jaxprune report runs/small_repro --out experiments/results/small_repro

Same budget for every method of a task: 300 optimizer steps of 32 examples, AdamW 5e-5
(CoLA: 600 steps at 1e-4, see ``BUDGET``) with 10% warm-up and linear decay (learned scores
at their presets' rates), length 64 (SST-2, CoLA) or 128 (pairs), sentence-level packing
where the objective allows it. Each method keeps its paper's schedule shape, scaled to the
run. PINS has no regression loss, so STS-B has
no PINS row; SparseBERT distils the task's dense run (``runs/small_repro/<task>-dense``).
"""

from __future__ import annotations

from jaxprune.recipes.job import Job

TASKS = {"sst2": 64, "mrpc": 128, "rte": 128, "stsb": 128, "cola": 64}
# (steps, peak learning rate) where 300 at 5e-5 is too little: CoLA's dense run learned only
# the 70/30 class prior there (loss 0.61, MCC 0.0, and so every pruned run); 600 steps at
# 1e-4 gave MCC 23.5. RTE stays at the default: its dense run reached 56.0% (majority class
# 52.7%), and 600 steps at 1e-4 gave 54.5% with the training loss down to 0.34 (overfitting).
BUDGET = {"cola": (600, 1e-4)}
METHODS = (
    "magnitude",
    "taylor",
    "platon",
    "pins",
    "sparsebert",
    "sdp",
    "movement",
    "soft_movement",
    "smp",
    "smp_s",
)
# SDP's weight on the Barlow Twins term is not in its abstracts (the preset's 1.0 sums over
# the 384 features): at 32 examples a batch the off-diagonal sum alone is ~23 of pure sampling
# noise, which swamped the task loss (sst2-80-sdp with 1.0: loss 48 -> 220, majority-class
# 50.9%). Here the term is a mean over features, about as large as the cross-entropy.
SDP_CC_WEIGHT = 1 / 384
# Soft movement has no target sparsity: its regulariser decides. 300 steps of the README's
# score lr 1e-2 (warm-up and decay: at most 1.5 in all) cannot move a score from 0 below
# logit(tau_final = 0.1) = -2.2, so nothing was pruned (sst2: 0.0% sparsity). At lr 0.1, sst2
# reached 42.9% at final_lambda 30 (50.9% accuracy) and 96.5% at the README's 400 (60.2%);
# the values below interpolate those two points in log lambda. The table gives the sparsity
# each run reached.
SOFT_LAMBDA = {0.8: 180.0, 0.9: 290.0, 0.97: 500.0}
OPTIONS = {
    "sdp": lambda s: (("cc_weight", SDP_CC_WEIGHT),),
    "soft_movement": lambda s: (("final_lambda", SOFT_LAMBDA[s]), ("score_lr", 0.1)),
}
PACKABLE = {"magnitude", "taylor", "platon", "pins", "movement", "soft_movement", "smp", "smp_s"}


def _job(task: str, method: str, sparsity: float) -> Job:
    steps, learning_rate = BUDGET.get(task, (300, 5e-5))
    return Job(
        model="minilm",
        task=task,
        method=method,
        sparsity=sparsity,
        steps=steps,
        batch_size=32,
        max_length=TASKS[task],
        learning_rate=learning_rate,
        train_subset=9600 if task == "sst2" else None,
        pack=method in PACKABLE or method == "dense",
        teacher=f"runs/small_repro/{task}-dense/export" if method == "sparsebert" else None,
        label=method,
        method_options=OPTIONS.get(method, lambda _: ())(sparsity),
    )


VARIANTS = {f"{t}-dense": _job(t, "dense", 0.0) for t in TASKS}
VARIANTS.update(
    {
        f"{t}-{round(s * 100)}-{m}": _job(t, m, s)
        for t in TASKS
        for s in (0.8, 0.9, 0.97)
        for m in METHODS
        if not (m == "pins" and t == "stsb")
    }
)
