"""PINS on GLUE (Ren & Zhu 2023) beside the baselines it is compared with, BERT-base at 80,
85 and 90% sparsity.

    jaxprune train --config experiments/configs/pins_glue.py:rte-80-pins
    jaxprune report runs/pins_glue --out experiments/results/pins_glue

Only RTE's settings are published with PINS (``glue.sh``: 80% sparsity, AdamW 3e-5, batch
16, 20 epochs, beta 0.85 / 0.99, window 10, 200 dense steps, 6 x 200 final steps,
teacher TextAttack's fine-tuned BERT-base). The other tasks take PLATON's script settings,
which PINS inherits (``../shared/design/algorithms-pins-smp.md`` 1.8; unverified for PINS):
per task W, initial / final warm-up multiples w0 / wf (dense for w0 W steps, final sparsity
from T - wf W), beta2, batch and epochs, with PINS's AdamW at 3e-5. PINS has no regression
loss (the code does not support STS-B), so STS-B has baselines only. The paper's tables
were not retrieved: no reference column.
"""

from __future__ import annotations

import dataclasses

from jaxprune.recipes.job import Job, with_options

# task: (W, w0, wf, beta2, batch, epochs), PLATON's run_bert_glue.sh; RTE is PINS's glue.sh.
SCHEDULE = {
    "mnli": (5400, 1, 5, 0.85, 32, 8),
    "qqp": (5400, 1, 5, 0.85, 32, 10),
    "qnli": (2000, 1, 6, 0.90, 32, 10),
    "sst2": (1000, 1, 5, 0.85, 32, 6),
    "rte": (200, 1, 6, 0.99, 16, 20),
    "mrpc": (300, 1, 3, 0.95, 8, 10),
    "cola": (500, 1, 3, 0.95, 32, 15),
    "stsb": (500, 1, 5, 0.85, 16, 15),
}
TRAIN_ROWS = {
    "mnli": 392702,
    "qqp": 363846,
    "qnli": 104743,
    "sst2": 67349,
    "mrpc": 3668,
    "cola": 8551,
    "stsb": 5749,
    "rte": 2490,
}
TEACHER = {
    "mnli": "MNLI",
    "qqp": "QQP",
    "qnli": "QNLI",
    "sst2": "SST-2",
    "rte": "RTE",
    "mrpc": "MRPC",
    "cola": "CoLA",
    "stsb": "STS-B",
}
# teacher_labels: for each dataset label, the teacher's output index. TextAttack's GLUE
# checkpoints name their outputs LABEL_0.. (no order in their configs): they were trained on
# the `glue` datasets' label ids as they are, except MNLI, whose TextAttack dataset wrapper
# remaps them (outputs 0 contradiction, 1 entailment, 2 neutral); the PINS authors' code
# permutes that teacher's logits with [1, 2, 0] (../shared/design/algorithms-pins-smp.md).
TEACHER_LABELS = {t: (1, 2, 0) if t == "mnli" else (0, 1) for t in TEACHER if t != "stsb"}
METHODS = {
    "pins": "PINS",
    "platon": "PLATON",
    "magnitude": "Magnitude",
    "movement": "Movement",
    "soft_movement": "Soft-Movement",
}


def _job(task: str, sparsity: float, method: str) -> Job:
    w, w0, wf, beta2, batch, epochs = SCHEDULE[task]
    total = epochs * -(-TRAIN_ROWS[task] // batch)
    job = Job(
        model="bert-base-uncased",
        task=task,
        method=method,
        sparsity=sparsity,
        epochs=epochs,
        batch_size=batch,
        max_length=128,
        learning_rate=3e-5,
        warmup_ratio=w / total,  # PINS: W is both the LR warm-up and the schedule unit
        eval_every=50,
        label=METHODS[method],
        reference="pins_2023/glue",
    )
    schedule = {"begin": w0 * w, "end": total - wf * w}
    if method in ("pins", "platon"):
        args = (("beta1", 0.85), ("beta2", beta2), ("window", 10))
        job = with_options(job, criterion_args=args)
    if method == "pins":  # glue.sh starts the self-teacher from a fine-tuned model
        teacher = f"textattack/bert-base-uncased-{TEACHER[task]}"
        job = dataclasses.replace(job, teacher=teacher, teacher_labels=TEACHER_LABELS[task])
    return with_options(job, **schedule)


VARIANTS = {
    f"{t}-{round(s * 100)}-{m}": _job(t, s, m)
    for t in SCHEDULE
    for s in (0.8, 0.85, 0.9)
    for m in METHODS
    if not (m == "pins" and t == "stsb")
}
