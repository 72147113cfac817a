"""PINS beyond GLUE (Ren & Zhu 2023): SQuAD v1.1, CoNLL-2003 NER and data-to-text (E2E,
WebNLG, DART with GPT-2), at 80% and 90% sparsity, beside PLATON and magnitude.

    jaxprune train --config experiments/configs/pins_tasks.py:squad-90-pins
    jaxprune train --config experiments/configs/pins_tasks.py:e2e-80-pins
    jaxprune report runs/pins_tasks --out experiments/results/pins_tasks

PINS published no settings for these tasks and its tables were not retrieved
(``../shared/design/algorithms-pins-smp.md`` 1.8, 1.11), so: SQuAD takes PLATON's README
(W 5400, w0 / wf 1 / 5, beta 0.85 / 0.95, batch 16, 10 epochs, length 384) with PINS's
AdamW 3e-5; CoNLL-2003 and data-to-text take the transformers example defaults (NER:
bert-base-cased, 3 epochs, batch 32, 5e-5; data-to-text: GPT-2, 5 epochs, batch 8, 5e-5,
length 128, greedy decoding of 64 tokens) with PINS's schedule at 10% / 70% of the run.
All unverified: treat these as the paper's tasks, not its exact table.
"""

from __future__ import annotations

from jaxprune.recipes.job import Job, with_options

METHODS = {"pins": "PINS", "platon": "PLATON", "magnitude": "Magnitude"}
SQUAD_FEATURES = 88641  # SQuAD v1.1 train windows at length 384, stride 128


def _squad(sparsity: float, method: str) -> Job:
    total = 10 * -(-SQUAD_FEATURES // 16)
    job = Job(
        model="bert-base-uncased",
        task="squad",
        method=method,
        sparsity=sparsity,
        epochs=10,
        batch_size=16,
        max_length=384,
        learning_rate=3e-5,
        warmup_ratio=5400 / total,
        eval_every=1000,
        label=METHODS[method],
        reference="pins_2023/squad",
    )
    job = with_options(job, begin=5400, end=total - 5 * 5400)
    if method == "magnitude":
        return job
    return with_options(job, criterion_args=(("beta1", 0.85), ("beta2", 0.95), ("window", 10)))


def _ner(sparsity: float, method: str) -> Job:
    return Job(
        model="bert-base-cased",
        task="conll2003",
        method=method,
        sparsity=sparsity,
        epochs=3,
        batch_size=32,
        max_length=128,
        learning_rate=5e-5,
        eval_every=200,
        label=METHODS[method],
        reference="pins_2023/ner",
    )


def _d2t(task: str, sparsity: float, method: str) -> Job:
    return Job(
        model="gpt2",
        task=task,
        method=method,
        sparsity=sparsity,
        epochs=5,
        batch_size=8,
        max_length=128,
        learning_rate=5e-5,
        max_new_tokens=64,
        eval_batch_size=32,
        label=METHODS[method],
        reference=f"pins_2023/{task}",
    )


VARIANTS: dict[str, Job] = {}
for _s in (0.8, 0.9):
    for _m in METHODS:
        VARIANTS[f"squad-{round(_s * 100)}-{_m}"] = _squad(_s, _m)
        VARIANTS[f"conll2003-{round(_s * 100)}-{_m}"] = _ner(_s, _m)
        for _t in ("e2e", "webnlg", "dart"):
            VARIANTS[f"{_t}-{round(_s * 100)}-{_m}"] = _d2t(_t, _s, _m)
