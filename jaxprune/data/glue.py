"""GLUE: the original ``glue_data`` tsv files or ``nyu-mll/glue``, with the Hub's columns.

Columns are those of ``nyu-mll/glue``: the task's text columns, ``label`` (a ClassLabel with
GLUE's names, float32 for STS-B; -1 on test splits) and ``idx`` (the row number in the file).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any, Literal

import datasets

from jaxprune.data import _io


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are and how their columns map to the Hub's."""

    folder: str  # glue_data/<folder>/
    text: Mapping[str, str]  # output column -> tsv header name
    label: str  # tsv header of the label column (absent on test files)
    names: tuple[str, ...] | None  # ClassLabel names in GLUE's id order; None: regression
    files: Mapping[str, str]  # split -> file name

    @property
    def features(self) -> datasets.Features:
        """The Hub's features (text columns, label, idx)."""
        label = datasets.ClassLabel(names=list(self.names)) if self.names else None
        return datasets.Features(
            {c: datasets.Value("string") for c in self.text}
            | {"label": label or datasets.Value("float32"), "idx": datasets.Value("int32")}
        )


_STD = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}
_PAIR = {"sentence1": "sentence1", "sentence2": "sentence2"}
_NLI2 = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        "CoLA", {"sentence": "sentence"}, "label", ("unacceptable", "acceptable"), _STD
    ),
    "sst2": GlueTask("SST-2", {"sentence": "sentence"}, "label", ("negative", "positive"), _STD),
    "mrpc": GlueTask(
        "MRPC",
        {"sentence1": "#1 String", "sentence2": "#2 String"},
        "Quality",
        ("not_equivalent", "equivalent"),
        _STD,
    ),
    "qqp": GlueTask(
        "QQP",
        {"question1": "question1", "question2": "question2"},
        "is_duplicate",
        ("not_duplicate", "duplicate"),
        _STD,
    ),
    "stsb": GlueTask("STS-B", _PAIR, "score", None, _STD),
    "mnli": GlueTask(
        "MNLI",
        {"premise": "sentence1", "hypothesis": "sentence2"},
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        _MNLI,
    ),
    "qnli": GlueTask(
        "QNLI", {"question": "question", "sentence": "sentence"}, "label", _NLI2, _STD
    ),
    "rte": GlueTask("RTE", _PAIR, "label", _NLI2, _STD),
    "wnli": GlueTask("WNLI", _PAIR, "label", ("not_entailment", "entailment"), _STD),
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}
# CoLA train/dev have no header: source, label, original mark, sentence.
_COLA_NO_HEADER = {"label": 1, "sentence": 3}


def task_spec(task: str) -> tuple[str, GlueTask]:
    """The canonical name and spec of ``task`` (case-insensitive, ``SST-2`` works)."""
    name = ALIASES.get(task.lower(), task.lower())
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; choose from {sorted(TASKS)}")
    return name, TASKS[name]


def glue(
    task: str,
    split: str,
    data_dir: os.PathLike | str | None = None,
    *,
    on_bad_rows: Literal["error", "skip"] = "error",
) -> datasets.Dataset:
    """One split of a GLUE task as a Dataset with ``nyu-mll/glue``'s columns.

    Args:
      task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli (``SST-2`` etc. also work).
      split: train, validation (or dev), test; MNLI: train, validation_matched,
        validation_mismatched, test_matched, test_mismatched.
      data_dir: folder holding ``glue/<Task>/<split>.tsv`` (the ``glue_data`` layout); default
        ``$JAXPRUNE_DATA_DIR``; with neither, the Hub.
      on_bad_rows: a row with the wrong number of fields or an invalid label raises
        DataFormatError (file:line); "skip" drops such rows instead and logs their count.
    """
    name, spec = task_spec(task)
    split = _io.norm_split(split, tuple(spec.files), name)
    root = _io.data_root(data_dir)
    if root is None:
        return _io.conform(_io.from_hub("nyu-mll/glue", split, name), spec.features)
    path = _io.local_file(root, "glue", spec.folder, spec.files[split])
    headerless = name == "cola" and split != "test"
    return read_glue_tsv(path, spec, headerless=headerless, on_bad_rows=on_bad_rows)


def read_glue_tsv(
    path: pathlib.Path,
    spec: GlueTask,
    *,
    headerless: bool = False,
    on_bad_rows: Literal["error", "skip"] = "error",
) -> datasets.Dataset:
    """Parses one GLUE tsv (quoting off) into the Hub's columns; see :func:`glue`.

    ``headerless``: CoLA train/dev, whose 4 columns are source, label, original mark, sentence.
    """
    rows = _io.read_tsv(path)
    if headerless:
        index, width = dict(_COLA_NO_HEADER), 4
    else:
        first = next(rows, None)
        if first is None:
            raise _io.DataFormatError(path, 1, "empty file (no header)")
        line, header = first
        index, width = {h: i for i, h in enumerate(header)}, len(header)
        missing = [h for h in spec.text.values() if h not in index]
        if missing:
            raise _io.DataFormatError(path, line, f"missing columns {missing}; header {header}")
    label_at = index.get(spec.label)  # None on test files: label -1
    cols: dict[str, list[Any]] = {c: [] for c in [*spec.text, "label", "idx"]}
    skipped = {"rows with the wrong number of fields": 0, "rows with an invalid label": 0}
    for n, (line, fields) in enumerate(rows):
        try:
            if len(fields) != width:
                skip = "rows with the wrong number of fields"
                raise _io.DataFormatError(
                    path, line, f"{len(fields)} tab-separated fields, expected {width}"
                )
            skip = "rows with an invalid label"
            label = -1 if label_at is None else _parse_label(fields[label_at], spec, path, line)
        except _io.DataFormatError:
            if on_bad_rows != "skip":
                raise
            skipped[skip] += 1
            continue
        for col, head in spec.text.items():
            cols[col].append(fields[index[head]])
        cols["label"].append(label)
        cols["idx"].append(n)
    _io.report(path, {f"{k} skipped": v for k, v in skipped.items()})
    return _io.finish(cols, spec.features, path)


def _parse_label(value: str, spec: GlueTask, path: pathlib.Path, line: int) -> int | float:
    if spec.names is None:  # STS-B similarity in [0, 5]
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not 0.0 <= score <= 5.0:
            raise _io.DataFormatError(path, line, f"score {value!r} is not a number in [0, 5]")
        return score
    if value in spec.names:
        return spec.names.index(value)
    if value.isdigit() and int(value) < len(spec.names):
        return int(value)
    raise _io.DataFormatError(
        path, line, f"label {value!r} not in {list(spec.names)} or 0..{len(spec.names) - 1}"
    )


def encode_glue(
    dataset: datasets.Dataset, tokenizer: Any, task: str, max_length: int = 128
) -> datasets.Dataset:
    """Tokenises a GLUE split: one sentence or a pair, truncated to ``max_length``, unpadded.

    Returns a Dataset with ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the
    tokenizer makes them), each a list of length ``<= max_length``, and ``labels`` (int, float
    for STS-B, -1 on test). Padding to static shapes is :func:`jaxprune.data.batches`' job.
    """
    _, spec = task_spec(task)
    first, *second = list(spec.text)

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = (batch[second[0]],) if second else ()
        enc = tokenizer(batch[first], *pair, truncation=True, max_length=max_length)
        return {**dict(enc), "labels": batch["label"]}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


__all__ = [
    "ALIASES",
    "TASKS",
    "GlueTask",
    "encode_glue",
    "glue",
    "read_glue_tsv",
    "task_spec",
]
