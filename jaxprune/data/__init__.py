"""Task data for pruning experiments: loaders, tokenisation, static-shape batches.

Every loader returns a ``datasets.Dataset`` with the columns of the task's Hugging Face Hub
dataset, read from a local folder of the original published files when one is given
(``data_dir=`` or ``$JAXPRUNE_DATA_DIR``; layout as in ``../shared/data``: ``glue/SST-2/
train.tsv``, ``squad/dev-v1.1.json``, ``conll2003/train.txt``, ``e2e/trainset.csv``,
``webnlg/webnlg_challenge_2017/...``, ``dart/dart-v1.1.1-full-dev.json``), else from the Hub.

    ds = jaxprune.data.load("sst2", "train", data_dir="../shared/data")
    feats = jaxprune.data.encode_glue(ds, tokenizer, "sst2", max_length=128)
    batcher = jaxprune.data.Batcher(feats, 32, seed=0, pad_id=tokenizer.pad_token_id)
    for batch in batcher(epoch):  # {"input_ids": int32 [32, L], ..., "valid": bool [32]}
        ...

``Batcher(..., pack=True)`` packs several examples into each row for sequence classification
(one batch shape, little padding; see :mod:`jaxprune.data.packing`). :func:`prefetch` runs
any batch iterator (and its copies to the devices) ahead of the training loop in a thread.

Malformed files raise :class:`DataFormatError` (a ValueError naming the file and line); rows
skipped or rewritten for a reason are counted in the ``jaxprune.data`` log.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import datasets

from jaxprune.data._io import ENV_VAR, DataFormatError
from jaxprune.data.batching import Batcher, BatchStats, batches, choose_buckets, unbatch
from jaxprune.data.conll import conll2003, encode_ner, iob1_to_iob2
from jaxprune.data.d2t import dart, e2e, encode_d2t, linearize, webnlg
from jaxprune.data.glue import ALIASES as GLUE_ALIASES
from jaxprune.data.glue import TASKS as GLUE_TASKS
from jaxprune.data.glue import encode_glue, glue
from jaxprune.data.prefetch import prefetch
from jaxprune.data.squad import encode_squad_eval, encode_squad_train, postprocess_squad, squad

_FAMILIES: dict[str, Callable[..., datasets.Dataset]] = {
    "squad": squad,
    "conll2003": conll2003,
    "e2e": e2e,
    "webnlg": webnlg,
    "dart": dart,
}
_ALIASES = {"squad_v1": "squad", "conll": "conll2003", "e2e_nlg": "e2e", "web_nlg": "webnlg"}
TASKS = (*GLUE_TASKS, *_FAMILIES)


def load(task: str, split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """One split of ``task`` (a GLUE task name, squad, conll2003, e2e, webnlg or dart) from
    ``data_dir`` / ``$JAXPRUNE_DATA_DIR`` if set, else from the Hugging Face Hub."""
    name = _ALIASES.get(task.lower(), task.lower())
    if name in _FAMILIES:
        return _FAMILIES[name](split, data_dir)
    if name not in GLUE_TASKS and name not in GLUE_ALIASES:
        raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")
    return glue(name, split, data_dir)


__all__ = [
    "ENV_VAR",
    "TASKS",
    "BatchStats",
    "Batcher",
    "DataFormatError",
    "batches",
    "choose_buckets",
    "conll2003",
    "dart",
    "e2e",
    "encode_d2t",
    "encode_glue",
    "encode_ner",
    "encode_squad_eval",
    "encode_squad_train",
    "glue",
    "iob1_to_iob2",
    "linearize",
    "load",
    "postprocess_squad",
    "prefetch",
    "squad",
    "unbatch",
    "webnlg",
]
