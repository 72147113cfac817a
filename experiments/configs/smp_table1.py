"""SMP Table 1 (Jiang et al. 2023): BERT-base on MNLI, QQP and SQuAD at 50/10/3% remaining,
SMP-L / SMP-S against movement, soft movement and magnitude, without and with KD.

    jaxprune train --config experiments/configs/smp_table1.py:mnli-10-smp_l
    jaxprune train --config experiments/configs/smp_table1.py:squad-3-smp_s-kd --workdir runs/
    jaxprune report runs/smp_table1 --out experiments/results/smp_table1

Variants: ``<task>-<remaining %>-<method>[-kd]``. Settings follow the authors' scripts
(``../shared/design/algorithms-pins-smp.md`` 2.5-2.7): 12 epochs at batch 64 for MNLI / QQP,
10 epochs (20 at 3%) at batch 32 and length 384 for SQuAD; scores AdamW 2e-2; lambda 400;
ramp end ``T - 6 x 5000`` (GLUE) or ``T - 5000`` (SQuAD), SQuAD 3% an explicit 22,650-step
ramp with the regulariser ramp over 27,660 steps. Movement / soft movement use their
README's SQuAD command (lr 3e-5, batch 16, 10 epochs, ramp 10%-80% of the run). KD rows
distil from a fine-tuned BERT-base (0.5 CE + 0.5 T^2 KL, T = 2). The paper's head is the
frozen MLM head on label words; these rows train a new head (its Table 4 "from scratch").
"""

from __future__ import annotations

import dataclasses

from jaxprune.recipes.job import Job, with_options

TEACHERS = {
    "mnli": "textattack/bert-base-uncased-MNLI",
    "qqp": "textattack/bert-base-uncased-QQP",
    "squad": "csarron/bert-base-uncased-squad-v1",
}
# teacher_labels: for each dataset label, the teacher's output index. TextAttack's GLUE
# checkpoints name their outputs LABEL_0.. (no order in their configs): they were trained on
# the `glue` datasets' label ids as they are, except MNLI, whose TextAttack dataset wrapper
# remaps them (outputs 0 contradiction, 1 entailment, 2 neutral); the PINS authors' code
# permutes that teacher's logits with [1, 2, 0] (../shared/design/algorithms-pins-smp.md).
# SQuAD's teacher outputs start / end logits: nothing to order.
TEACHER_LABELS = {"mnli": (1, 2, 0), "qqp": (0, 1), "squad": None}
# Steps of one epoch at the scripts' batch sizes (HF dataloader, last partial batch kept).
STEPS_PER_EPOCH = {"mnli": 6136, "qqp": 5686, "squad": 2766}
LABELS = {
    "smp_l": "SMP-L",
    "smp_s": "SMP-S",
    "movement": "Movement",
    "soft_movement": "Soft-Movement",
    "magnitude": "Magnitude",
}
METHOD = {"smp_l": "smp", "smp_s": "smp_s"}


def smp_job(task: str, remaining: float, kind: str, kd: bool) -> Job:
    squad = task == "squad"
    epochs = 20 if squad and remaining == 0.03 else (10 if squad else 12)
    total = epochs * STEPS_PER_EPOCH[task]
    options: dict = {}
    if squad and remaining == 0.03:
        options.update(end=22650, regu_ramp_steps=27660)
    else:
        options.update(end=total - (5000 if squad else 30000))
    if kind == "smp_s":
        options["smp_s_temperature"] = 4.0 if squad and remaining == 0.5 else None
    base = Job(
        model="bert-base-uncased",
        task=task,
        method=METHOD[kind],
        sparsity=round(1 - remaining, 4),
        epochs=epochs,
        batch_size=32 if squad else 64,
        max_length=384 if squad else 128,
        learning_rate=3e-5,  # the new head's (scores: the preset's 2e-2; weights frozen)
        warmup_ratio=0.0,
        eval_every=1000,
        eval_batch_size=128,
        label=LABELS[kind],
        reference=f"smp_2023/table1_{'kd' if kd else 'no_kd'}",
    )
    options = {k: v for k, v in options.items() if v is not None}
    if kd:
        options["objective"] = "kd"
        base = dataclasses.replace(
            base, teacher=TEACHERS[task], teacher_labels=TEACHER_LABELS[task]
        )
    return with_options(base, **options)


def movement_job(task: str, remaining: float, kind: str, kd: bool) -> Job:
    squad = task == "squad"
    base = Job(
        model="bert-base-uncased",
        task=task,
        method=kind,
        sparsity=round(1 - remaining, 4),
        epochs=10,
        batch_size=16 if squad else 32,
        max_length=384 if squad else 128,
        learning_rate=3e-5,
        warmup_ratio=0.1,
        eval_every=1000,
        eval_batch_size=128,
        label=LABELS[kind],
        reference=f"smp_2023/table1_{'kd' if kd else 'no_kd'}",
    )
    if kind == "soft_movement":  # its sparsity follows lambda: 10% / 3% need tuning
        base = with_options(base, final_lambda=400.0 if remaining == 0.1 else 600.0)
    if kd:
        base = dataclasses.replace(
            with_options(base, objective="kd"),
            teacher=TEACHERS[task],
            teacher_labels=TEACHER_LABELS[task],
        )
    return base


def _variants() -> dict[str, Job]:
    out: dict[str, Job] = {}
    for task in ("mnli", "qqp", "squad"):
        for remaining, kinds, kd in [
            (0.10, ("movement", "soft_movement", "smp_l", "smp_s"), False),
            (0.03, ("movement", "soft_movement", "smp_l", "smp_s"), False),
            (0.50, ("movement", "smp_l", "smp_s"), True),
            (0.10, ("magnitude", "movement", "soft_movement", "smp_l", "smp_s"), True),
            (0.03, ("movement", "soft_movement", "smp_l", "smp_s"), True),
        ]:
            for kind in kinds:
                name = f"{task}-{round(remaining * 100)}-{kind}{'-kd' if kd else ''}"
                build = smp_job if kind.startswith("smp") else movement_job
                out[name] = build(task, remaining, kind, kd)
    return out


VARIANTS = _variants()
