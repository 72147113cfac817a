"""SMP Table 2 (Jiang et al. 2023): GLUE dev at 80% remaining without KD, SMP on BERT-base,
beside dense fine-tuning.

    jaxprune train --config experiments/configs/smp_table2.py:rte-smp
    jaxprune train --config experiments/configs/smp_table2.py:rte-dense
    jaxprune report runs/smp_table2 --out experiments/results/smp_table2

Settings (``../shared/design/algorithms-pins-smp.md`` 2.5, 2.7): 12 epochs at batch 64 for
MNLI, QQP, QNLI, SST-2; 60 at batch 32 for MRPC, CoLA, STS-B; 100 at batch 32 for RTE
(the script; the paper says 60); remaining ramp over 3,500 steps to v = 0.8; lambda 400
over the run; evaluation every 1,000 steps (large tasks) or each epoch. The paper picked L
or S per task; these rows use SMP-L (``smp``). Dense rows fine-tune at 2e-5 for 3 epochs.
"""

from __future__ import annotations

from jaxprune.recipes.job import Job, with_options

EPOCHS_BATCH = {
    "mnli": (12, 64),
    "qqp": (12, 64),
    "qnli": (12, 64),
    "sst2": (12, 64),
    "mrpc": (60, 32),
    "cola": (60, 32),
    "stsb": (60, 32),
    "rte": (100, 32),
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


def _job(task: str, method: str) -> Job:
    epochs, batch = EPOCHS_BATCH[task]
    epoch_steps = -(-TRAIN_ROWS[task] // batch)
    common = dict(
        model="bert-base-uncased",
        task=task,
        max_length=128,
        eval_batch_size=128,
        reference="smp_2023/table2",
    )
    if method == "dense":
        return Job(
            **common,
            method="dense",
            sparsity=0.0,
            epochs=3,
            batch_size=32,
            learning_rate=2e-5,
            label="BERT (fine-tune)",
        )
    job = Job(
        **common,
        method="smp",
        sparsity=0.2,
        epochs=epochs,
        batch_size=batch,
        learning_rate=3e-5,
        warmup_ratio=0.0,
        label="SMP (BERT)",
        eval_every=1000 if batch == 64 else epoch_steps,
    )
    return with_options(job, end=3500)


VARIANTS = {f"{t}-{m}": _job(t, m) for t in EPOCHS_BATCH for m in ("smp", "dense")}
