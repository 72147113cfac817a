"""SQuAD v1.1: the published json or ``rajpurkar/squad``; doc-stride features; span decoding.

Columns are those of ``rajpurkar/squad``: ``id``, ``title``, ``context``, ``question``,
``answers`` = ``{"text": [str], "answer_start": [int]}``.
"""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np

from jaxprune.data import _io

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)
FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}


def squad(split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """SQuAD v1.1 ``train`` or ``validation`` (``dev``): ``<data_dir>/squad/{train,dev}-v1.1.json``
    when a data folder is set (``data_dir`` or ``$JAXPRUNE_DATA_DIR``), else the Hub."""
    split = _io.norm_split(split, tuple(FILES), "squad")
    root = _io.data_root(data_dir)
    if root is None:
        return _io.conform(_io.from_hub("rajpurkar/squad", split), FEATURES)
    path = _io.local_file(root, "squad", FILES[split])
    return read_squad_json(path)


def read_squad_json(path: os.PathLike | str) -> datasets.Dataset:
    """One row per question of a SQuAD v1.1 json; DataFormatError on a missing key (naming the
    JSON location) or a syntax error (naming the line). Answers whose text is not found at
    ``answer_start`` in the context are kept and counted in the log."""
    path = pathlib.Path(path)
    doc = _io.read_json(path)
    _io.require(doc, ("data",), path, "top level")
    cols: dict[str, list[Any]] = {k: [] for k in FEATURES}
    misaligned = 0
    for i, article in enumerate(doc["data"]):
        _io.require(article, ("title", "paragraphs"), path, f"data[{i}]")
        for j, para in enumerate(article["paragraphs"]):
            where = f"data[{i}].paragraphs[{j}]"
            _io.require(para, ("context", "qas"), path, where)
            context = para["context"]
            for k, qa in enumerate(para["qas"]):
                _io.require(qa, ("id", "question", "answers"), path, f"{where}.qas[{k}]")
                texts, starts = [], []
                for m, ans in enumerate(qa["answers"]):
                    _io.require(
                        ans, ("text", "answer_start"), path, f"{where}.qas[{k}].answers[{m}]"
                    )
                    start = int(ans["answer_start"])
                    misaligned += context[start : start + len(ans["text"])] != ans["text"]
                    texts.append(ans["text"])
                    starts.append(start)
                cols["id"].append(qa["id"])
                cols["title"].append(article["title"])
                cols["context"].append(context)
                cols["question"].append(qa["question"])
                cols["answers"].append({"text": texts, "answer_start": starts})
    _io.report(path, {"answers not found at answer_start (kept)": misaligned})
    return _io.finish(cols, FEATURES, path)


def _tokenize(examples: Mapping[str, list[Any]], tokenizer: Any, max_length: int, stride: int):
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("SQuAD features need a fast tokenizer (offset mappings)")
    right = tokenizer.padding_side == "right"  # question first unless the model pads left
    questions = [q.lstrip() for q in examples["question"]]  # some start with spaces
    return tokenizer(
        questions if right else examples["context"],
        examples["context"] if right else questions,
        truncation="only_second" if right else "only_first",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    ), (1 if right else 0)


def encode_squad_train(
    dataset: datasets.Dataset, tokenizer: Any, max_length: int = 384, doc_stride: int = 128
) -> datasets.Dataset:
    """Training features: a long context becomes several windows overlapping by
    ``doc_stride`` tokens. Each feature has ``input_ids``/``attention_mask``/(``token_type_ids``)
    of length <= ``max_length`` and ``start_positions``/``end_positions``: the token span of
    the first answer, or the CLS index when the answer is not inside the window."""

    def encode(examples: dict[str, list[Any]]) -> dict[str, Any]:
        enc, ctx = _tokenize(examples, tokenizer, max_length, doc_stride)
        sample_map = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        starts, ends = [], []
        for i, offs in enumerate(offsets):
            ids = enc["input_ids"][i]
            cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            seq = enc.sequence_ids(i)
            answers = examples["answers"][sample_map[i]]
            first = seq.index(ctx)
            last = len(seq) - 1 - seq[::-1].index(ctx)
            span = (cls, cls)  # no answer in this window
            if answers["answer_start"]:
                s_char = answers["answer_start"][0]
                e_char = s_char + len(answers["text"][0])
                if offs[first][0] <= s_char and offs[last][1] >= e_char:
                    s_tok, e_tok = first, last
                    while s_tok <= last and offs[s_tok][0] <= s_char:
                        s_tok += 1
                    while e_tok >= first and offs[e_tok][1] >= e_char:
                        e_tok -= 1
                    span = (s_tok - 1, e_tok + 1)
            starts.append(span[0])
            ends.append(span[1])
        return {**dict(enc), "start_positions": starts, "end_positions": ends}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def encode_squad_eval(
    dataset: datasets.Dataset, tokenizer: Any, max_length: int = 384, doc_stride: int = 128
) -> datasets.Dataset:
    """Evaluation features: the same windows as :func:`encode_squad_train`, with
    ``example_id`` (the question id) and ``offset_mapping`` (``[start_char, end_char]`` per
    token, None outside the context) for :func:`postprocess_squad`."""

    def encode(examples: dict[str, list[Any]]) -> dict[str, Any]:
        enc, ctx = _tokenize(examples, tokenizer, max_length, doc_stride)
        sample_map = enc.pop("overflow_to_sample_mapping")
        enc["example_id"] = [examples["id"][s] for s in sample_map]
        enc["offset_mapping"] = [
            [list(o) if s == ctx else None for o, s in zip(offs, enc.sequence_ids(i), strict=True)]
            for i, offs in enumerate(enc["offset_mapping"])
        ]
        return dict(enc)

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def postprocess_squad(
    examples: datasets.Dataset,
    features: datasets.Dataset,
    start_logits: np.ndarray | Sequence[np.ndarray],
    end_logits: np.ndarray | Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The predicted answer text of every example: the best-scoring valid span over its features.

    Args:
      examples: the SQuAD split (``id``, ``context``).
      features: its :func:`encode_squad_eval` features, in the order of the logits.
      start_logits, end_logits: ``[num_features, L]`` (``L`` >= each feature's length, e.g. a
        padded bucket; positions past a feature's tokens are ignored) or one 1-D array each.
      n_best: start and end candidates per feature (the top ``n_best`` logits each).
      max_answer_length: longest span in tokens.

    A span is valid when both ends are context tokens, ``end >= start`` and it is at most
    ``max_answer_length`` tokens; its score is ``start_logit + end_logit``. An example with no
    valid span gets ``""``.
    """
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, ex_id in enumerate(features["example_id"]):
        by_example[ex_id].append(i)
    offsets_all = features["offset_mapping"]
    predictions: dict[str, str] = {}
    for ex_id, context in zip(examples["id"], examples["context"], strict=True):
        best, best_score = "", -np.inf
        for f in by_example.get(ex_id, []):
            offsets = offsets_all[f]
            in_ctx = np.array([o is not None for o in offsets])
            start = np.asarray(start_logits[f], dtype=np.float32)[: len(offsets)]
            end = np.asarray(end_logits[f], dtype=np.float32)[: len(offsets)]
            s = np.argsort(-start, kind="stable")[:n_best, None]  # [n, 1] candidate starts
            e = np.argsort(-end, kind="stable")[None, :n_best]  # [1, n] candidate ends
            valid = in_ctx[s] & in_ctx[e] & (e >= s) & (e - s < max_answer_length)
            score = np.where(valid, start[s] + end[e], -np.inf)
            k = np.unravel_index(np.argmax(score), score.shape)
            if valid[k] and score[k] > best_score:
                best_score = float(score[k])
                best = context[offsets[int(s[k[0], 0])][0] : offsets[int(e[0, k[1]])][1]]
        predictions[ex_id] = best
    return predictions


__all__ = [
    "FEATURES",
    "FILES",
    "encode_squad_eval",
    "encode_squad_train",
    "postprocess_squad",
    "read_squad_json",
    "squad",
]
