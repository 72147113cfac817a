"""CoNLL-2003 NER: the shared-task text files or ``eriktks/conll2003``; first-sub-word labels.

Columns are those of the Hub's ``conll2003``: ``id``, ``tokens`` and the integer lists
``pos_tags``, ``chunk_tags``, ``ner_tags`` (ClassLabels, names in :data:`POS`, :data:`CHUNK`,
:data:`NER`). NER tags are IOB2; an IOB1 file (``I-`` opening an entity) is converted and the
number of converted tags logged.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import datasets

from jaxprune.data import _io

#: The label orders of the Hugging Face conll2003 loader: part-of-speech tags,
POS = (
    *('"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN"),
    *("JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP"),
    *("PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP"),
    *("VBZ", "WDT", "WP", "WP$", "WRB"),
)
#: chunk tags,
CHUNK = (
    *("O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ"),
    *("B-LST", "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR"),
    *("B-UCP", "I-UCP", "B-VP", "I-VP"),
)
#: and named-entity tags.
NER = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "tokens": datasets.List(datasets.Value("string")),
        "pos_tags": datasets.List(datasets.ClassLabel(names=list(POS))),
        "chunk_tags": datasets.List(datasets.ClassLabel(names=list(CHUNK))),
        "ner_tags": datasets.List(datasets.ClassLabel(names=list(NER))),
    }
)
FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
_IDS = {"pos_tags": POS, "chunk_tags": CHUNK, "ner_tags": NER}


def conll2003(split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """``train``, ``validation`` (``dev``/``valid``) or ``test``: ``<data_dir>/conll2003/
    {train,valid,test}.txt`` when a data folder is set, else ``eriktks/conll2003`` (its
    Parquet export: the repository itself is a loading script)."""
    split = _io.norm_split(split, tuple(FILES), "conll2003")
    root = _io.data_root(data_dir)
    if root is None:
        hub = _io.from_hub("eriktks/conll2003", split, "conll2003", parquet_export=True)
        return _io.conform(hub, FEATURES)
    return read_conll(_io.local_file(root, "conll2003", FILES[split]))


def read_conll(path: os.PathLike | str) -> datasets.Dataset:
    """Parses ``token POS chunk NER`` lines (blank line between sentences). ``-DOCSTART-``
    lines are skipped and counted; a line without 4 fields or with an unknown tag raises
    DataFormatError naming the file and line."""
    path = pathlib.Path(path)
    cols: dict[str, list[Any]] = {k: [] for k in FEATURES}
    sentence: list[list[str]] = []
    counts = {"NER tags converted from IOB1 to IOB2": 0}
    docstarts = 0

    def flush() -> None:
        if not sentence:
            return
        tokens, pos, chunk, ner = (list(c) for c in zip(*sentence, strict=True))
        counts["NER tags converted from IOB1 to IOB2"] += iob1_to_iob2(ner)
        cols["id"].append(str(len(cols["id"])))
        cols["tokens"].append(tokens)
        for name, tags in (("pos_tags", pos), ("chunk_tags", chunk), ("ner_tags", ner)):
            cols[name].append([_IDS[name].index(t) for t in tags])
        sentence.clear()

    for line_no, line in _io.read_lines(path):
        if line.startswith("-DOCSTART-"):
            docstarts += 1
            flush()
            continue
        if not line.strip():
            flush()
            continue
        fields = line.split(" ")
        if len(fields) != 4:
            raise _io.DataFormatError(
                path,
                line_no,
                f"{len(fields)} space-separated fields, expected 4 (token POS chunk NER)",
            )
        for name, tag in zip(("pos_tags", "chunk_tags", "ner_tags"), fields[1:], strict=True):
            if tag not in _IDS[name]:
                raise _io.DataFormatError(
                    path, line_no, f"{name[:-5]} tag {tag!r} not in the conll2003 label set"
                )
        sentence.append(fields)
    flush()
    _io.report(path, {"-DOCSTART- lines skipped": docstarts}, logging.INFO)
    _io.report(path, counts)
    return _io.finish(cols, FEATURES, path)


def iob1_to_iob2(tags: list[str]) -> int:
    """Rewrites IOB1 tags to IOB2 in place (an ``I-X`` after ``O`` or another type becomes
    ``B-X``); returns how many tags changed. IOB2 input is left as it is (returns 0)."""
    changed = 0
    for i, tag in enumerate(tags):
        if tag.startswith("I-"):
            prev = tags[i - 1] if i else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                tags[i] = "B-" + tag[2:]
                changed += 1
    return changed


def encode_ner(
    dataset: datasets.Dataset, tokenizer: Any, max_length: int = 128, column: str = "ner_tags"
) -> datasets.Dataset:
    """Tokenises pre-split words; each word's label goes on its first sub-word, -100 on the
    other sub-words and the special tokens (the usual token-classification recipe).

    Returns ``input_ids``, ``attention_mask`` (``token_type_ids``) and ``labels``, lists of
    equal length <= ``max_length``. Words that get no labelled sub-word (cut by truncation, or
    tokenised to nothing) are counted in the log.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("NER alignment needs a fast tokenizer (word_ids)")

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        enc = tokenizer(
            batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length
        )
        labels = []
        for i, tags in enumerate(batch[column]):
            row, previous = [], None
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == previous else tags[w])
                previous = w
            labels.append(row)
        return {**dict(enc), "labels": labels}

    out = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    words = sum(len(t) for t in dataset["tokens"])
    labelled = sum(sum(x != -100 for x in row) for row in out["labels"])
    if words != labelled:
        _io.log.warning(
            "encode_ner: %d of %d words have no labelled sub-word (truncated or tokenised to "
            "nothing)",
            words - labelled,
            words,
        )
    return out


__all__ = [
    "CHUNK",
    "FEATURES",
    "FILES",
    "NER",
    "POS",
    "conll2003",
    "encode_ner",
    "iob1_to_iob2",
    "read_conll",
]
