"""SparseBERT's GLUE table (Xu et al. 2021): BERT-base pruned to 5% remaining while
distilling its fine-tuned dense self (attention + hidden MSE + soft CE), QNLI, MRPC, RTE,
CoLA.

    jaxprune train --config experiments/configs/sparsebert_glue.py:mrpc
    jaxprune report runs/sparsebert_glue --out experiments/results/sparsebert_glue

Settings (``../shared/design/algorithms-sdp-kap-baselines.md`` 2.4-2.5): the README's MRPC
command, lr 3e-5 constant, batch 32, 12 epochs, length 128, sparsity 0.95 with ~100 cubic
mask updates over the run, weight decay 0.01; QNLI 5 epochs (the released checkpoint's
folder). RTE and CoLA epochs are not published: 12 here. The authors train on augmented
data (``--aug_train``, TinyBERT's augmentation); these rows use the original sets. Teachers:
TextAttack's fine-tuned BERT-base checkpoints (the README's MRPC teacher).
"""

from __future__ import annotations

from jaxprune.recipes.job import Job

TEACHERS = {
    t: f"textattack/bert-base-uncased-{n}"
    for t, n in [("qnli", "QNLI"), ("mrpc", "MRPC"), ("rte", "RTE"), ("cola", "CoLA")]
}
# teacher_labels: for each dataset label, the teacher's output index. TextAttack's GLUE
# checkpoints name their outputs LABEL_0.. (no order in their configs): they were trained on
# the `glue` datasets' label ids as they are (only TextAttack's MNLI wrapper remaps them).
TEACHER_LABELS = (0, 1)


def _job(task: str) -> Job:
    return Job(
        model="bert-base-uncased",
        task=task,
        method="sparsebert",
        sparsity=0.95,
        epochs=5 if task == "qnli" else 12,
        batch_size=32,
        max_length=128,
        learning_rate=3e-5,
        warmup_ratio=0.0,
        teacher=TEACHERS[task],
        teacher_labels=TEACHER_LABELS,
        label="SparseBERT",
        reference="sparsebert_2021/main",
    )


VARIANTS = {task: _job(task) for task in TEACHERS}
