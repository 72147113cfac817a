"""Movement pruning (Sanh et al. 2020), fine-pruning with distillation: magnitude, movement
and soft movement on SQuAD, MNLI and QQP at 10% and 3% remaining.

    jaxprune train --config experiments/configs/movement_table.py:squad-10-movement
    jaxprune report runs/movement_table --out experiments/results/movement_table

Settings (``../shared/design/algorithms-sdp-kap-baselines.md`` 3.2): the README's SQuAD
commands (lr 3e-5, scores 1e-2, 10 epochs, batch 16, length 384, warm-up 5,400 steps, cubic
ramp from the warm-up to 2 x 5,400 steps before the end; soft movement tau 0 -> 0.1 with
lambda 400); MNLI / QQP at batch 32, length 128, 10 epochs (per-point GLUE settings were in
the authors' sheet, not retrieved). Distillation: 0.5 CE + 0.5 T^2 KL (T = 2) from a
fine-tuned BERT-base. Soft movement's sparsity follows lambda: 400 / 600 aim at 10% / 3%.
"""

from __future__ import annotations

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
LABELS = {"magnitude": "Magnitude", "movement": "Movement", "soft_movement": "Soft-Movement"}


def _job(task: str, remaining: float, method: str) -> Job:
    squad = task == "squad"
    job = Job(
        model="bert-base-uncased",
        task=task,
        method=method,
        sparsity=round(1 - remaining, 4),
        epochs=10,
        batch_size=16 if squad else 32,
        max_length=384 if squad else 128,
        learning_rate=3e-5,
        warmup_ratio=0.1,
        eval_every=1000,
        teacher=TEACHERS[task],
        teacher_labels=TEACHER_LABELS[task],
        label=LABELS[method],
        reference="movement_2020/distil",
    )
    options: dict = {"objective": "kd"}
    if method == "magnitude":  # the README's magnitude baseline: movement's schedule
        options.update(begin=0.1, end=0.8)
    if method == "soft_movement":
        options["final_lambda"] = 400.0 if remaining == 0.1 else 600.0
    return with_options(job, **options)


VARIANTS = {
    f"{t}-{round(r * 100)}-{m}": _job(t, r, m)
    for t in TEACHERS
    for r in (0.10, 0.03)
    for m in LABELS
}
