"""Today's model families at their published sizes, with the settings of the paper rows
they stand beside: DeBERTa-v3-base and ModernBERT-base on SST-2 as ``pins_glue.py`` runs
BERT-base (PINS to 80%, batches of 32 x 128, 3 epochs), and a 1B-class Llama-style decoder
(Llama-3.2-1B) on E2E as ``pins_tasks.py`` runs GPT-2 (batches of 8 x 128, 5 epochs),
pruned by PINS and by gradual magnitude. No result is claimed: no weights of these
families are reachable here, so these variants are sized, not trained
(``experiments/results/scale/``).

    jaxprune plan --config experiments/configs/families.py --devices 8 32 --layout dp fsdp \\
        --out experiments/results/scale
    jaxprune train --config experiments/configs/families.py:sst2-80-pins-deberta-v3 \\
        --random-init --set tokenizer=minilm --set steps=3      # the pipeline, random weights
"""

from __future__ import annotations

from jaxprune.recipes.job import Job

_ENCODERS = {
    "deberta-v3": "microsoft/deberta-v3-base",
    "modernbert": "answerdotai/ModernBERT-base",
}


def _glue(model: str) -> Job:
    return Job(
        model=model,
        task="sst2",
        method="pins",
        sparsity=0.8,
        epochs=3,
        batch_size=32,
        max_length=128,
        learning_rate=3e-5,
        label="PINS",
    )


def _d2t(method: str) -> Job:
    return Job(
        model="meta-llama/Llama-3.2-1B",
        task="e2e",
        method=method,
        sparsity=0.8,
        epochs=5,
        batch_size=8,
        max_length=128,
        learning_rate=5e-5,
        max_new_tokens=64,
        eval_batch_size=32,
        label=method,
    )


VARIANTS: dict[str, Job] = {
    **{f"sst2-80-pins-{name}": _glue(model) for name, model in _ENCODERS.items()},
    **{f"e2e-80-{m}-llama-1b": _d2t(m) for m in ("pins", "magnitude")},
}
