"""Data-to-text (E2E, WebNLG 2017, DART): loaders, linearisation, GPT-2 features.

Columns:

- e2e: ``meaning_representation``, ``human_reference`` (as ``e2e_nlg``: one row per reference).
- webnlg: ``category``, ``size``, ``eid``, ``triples`` (``"s | p | o"`` strings, the modified
  triple set), ``lexicalizations`` (reference texts; empty for inputs-only files).
- dart: ``tripleset`` (``[[s, p, o], ...]``), ``subtree_was_extended`` (bool or None),
  ``annotations`` = ``{"source": [...], "text": [...]}`` (as ``dart``).
"""

from __future__ import annotations

import csv
import glob
import os
import pathlib
import xml.parsers.expat
from collections.abc import Mapping
from typing import Any

import datasets

from jaxprune.data import _io

_STR = datasets.Value("string")
E2E_FEATURES = datasets.Features({"meaning_representation": _STR, "human_reference": _STR})
WEBNLG_FEATURES = datasets.Features(
    {
        "category": _STR,
        "size": datasets.Value("int32"),
        "eid": _STR,
        "triples": datasets.List(_STR),
        "lexicalizations": datasets.List(_STR),
    }
)
DART_FEATURES = datasets.Features(
    {
        "tripleset": datasets.List(datasets.List(_STR)),
        "subtree_was_extended": datasets.Value("bool"),
        "annotations": {"source": datasets.List(_STR), "text": datasets.List(_STR)},
    }
)
E2E_FILES = {
    "train": "trainset.csv",
    "validation": "devset.csv",
    "test": "testset_w_refs.csv",
    "test_inputs": "testset.csv",  # MRs only: human_reference is ""
}
WEBNLG_TEST = {
    "test": "testdata_with_lex.xml",
    "test_unseen": "testdata_unseen_with_lex.xml",
    "test_inputs": "testdata_no_lex.xml",
}
DART_FILES = {
    s: f"dart-v1.1.1-full-{f}.json"
    for s, f in [("train", "train"), ("validation", "dev"), ("test", "test")]
}


# ----------------------------------------------------------------------------------- loaders


def e2e(split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """E2E NLG: ``train``, ``validation``, ``test`` (with references), ``test_inputs`` from
    ``<data_dir>/e2e/*.csv``, else ``tuetschek/e2e_nlg`` (Parquet export)."""
    split = _io.norm_split(split, tuple(E2E_FILES), "e2e")
    root = _io.data_root(data_dir)
    if root is None:
        if split == "test_inputs":
            raise ValueError("e2e test_inputs exists only as a local file (testset.csv)")
        hub = _io.from_hub("tuetschek/e2e_nlg", split, "default", parquet_export=True)
        return _io.conform(hub, E2E_FEATURES)
    return read_e2e_csv(_io.local_file(root, "e2e", E2E_FILES[split]))


def read_e2e_csv(path: os.PathLike | str) -> datasets.Dataset:
    """An E2E csv (RFC 4180 quoting) with header ``mr,ref`` or just ``MR``."""
    path = pathlib.Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header not in (["mr", "ref"], ["mr"]):
            raise _io.DataFormatError(path, 1, f"header {header}, expected mr,ref or MR")
        cols: dict[str, list[str]] = {"meaning_representation": [], "human_reference": []}
        for row in reader:
            if len(row) != len(header):
                raise _io.DataFormatError(
                    path, reader.line_num, f"{len(row)} fields, expected {len(header)}"
                )
            cols["meaning_representation"].append(row[0])
            cols["human_reference"].append(row[1] if len(row) > 1 else "")
    return _io.finish(cols, E2E_FEATURES, path)


def webnlg(split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """WebNLG challenge 2017: ``train``, ``validation`` (``dev``), ``test`` (seen + unseen
    categories, with references), ``test_unseen``, ``test_inputs`` (no references), from
    ``<data_dir>/webnlg/webnlg_challenge_2017/`` (xml), else ``webnlg-challenge/web_nlg``."""
    split = _io.norm_split(split, ("train", "validation", *WEBNLG_TEST), "webnlg")
    root = _io.data_root(data_dir)
    if root is None:
        return _webnlg_hub(split)
    base = _io.local_file(root, "webnlg", "webnlg_challenge_2017")
    if split in WEBNLG_TEST:
        files = [_io.local_file(base, "test", WEBNLG_TEST[split])]
    else:
        folder = _io.local_file(base, "dev" if split == "validation" else split)
        files = [
            pathlib.Path(p)
            for i in range(1, 8)
            for p in sorted(glob.glob(f"{folder}/{i}triples/*.xml"))
        ]
        if not files:
            raise FileNotFoundError(f"no {folder}/<n>triples/*.xml files")
    cols: dict[str, list[Any]] = {k: [] for k in WEBNLG_FEATURES}
    for file in files:
        for key, values in read_webnlg_xml(file).items():
            cols[key].extend(values)
    return _io.finish(cols, WEBNLG_FEATURES, files[0].parent)


def _webnlg_hub(split: str) -> datasets.Dataset:
    hub_split = {"validation": "dev"}.get(split, split if split == "train" else "test")
    ds = _io.from_hub(
        "webnlg-challenge/web_nlg", hub_split, "webnlg_challenge_2017", parquet_export=True
    )
    if hub_split == "test":  # the Hub's test holds all three test files
        want = WEBNLG_TEST[split].removesuffix(".xml")
        ds = ds.filter(lambda c: c == want, input_columns="test_category")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        sets = row["modified_triple_sets"]["mtriple_set"]
        return {"triples": sets[0] if sets else [], "lexicalizations": row["lex"]["text"]}

    return _io.conform(ds.map(convert), WEBNLG_FEATURES)


def read_webnlg_xml(path: os.PathLike | str) -> dict[str, list[Any]]:
    """The entries of one WebNLG xml file as columns (see module doc). Malformed xml, a
    missing attribute, a triple without two `` | `` separators or ``size`` differing from the
    number of triples raise DataFormatError with the file and line."""
    path = pathlib.Path(path)
    cols: dict[str, list[Any]] = {k: [] for k in WEBNLG_FEATURES}
    parser = xml.parsers.expat.ParserCreate()
    state: dict[str, Any] = {"entry": None, "text": None, "mts": 0}

    def start(tag: str, attrs: dict[str, str]) -> None:
        line = parser.CurrentLineNumber
        if tag == "entry":
            missing = [a for a in ("category", "eid", "size") if a not in attrs]
            if missing:
                raise _io.DataFormatError(path, line, f"<entry> lacks attribute(s) {missing}")
            state["entry"] = {**attrs, "line": line, "triples": [], "lex": []}
            state["mts"] = 0
        elif tag == "modifiedtripleset":
            state["mts"] += 1
        elif tag in ("mtriple", "lex"):
            state["text"] = []

    def chars(data: str) -> None:
        if state["text"] is not None:
            state["text"].append(data)

    def end(tag: str) -> None:
        entry, line = state["entry"], parser.CurrentLineNumber
        if tag in ("mtriple", "lex"):
            text = "".join(state["text"]).strip()
            state["text"] = None
            if tag == "lex":
                entry["lex"].append(text)
            elif state["mts"] == 1:  # WebNLG 2017 has one modified set per entry
                if text.count(" | ") != 2:
                    raise _io.DataFormatError(path, line, f"triple {text!r} is not 's | p | o'")
                entry["triples"].append(text)
        elif tag == "entry":
            size = int(entry["size"]) if entry["size"].isdigit() else -1
            if size != len(entry["triples"]):
                raise _io.DataFormatError(
                    path,
                    entry["line"],
                    f"entry size={entry['size']} but {len(entry['triples'])} triples",
                )
            for key, value in (
                ("category", entry["category"]),
                ("size", size),
                ("eid", entry["eid"]),
            ):
                cols[key].append(value)
            cols["triples"].append(entry["triples"])
            cols["lexicalizations"].append(entry["lex"])

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except xml.parsers.expat.ExpatError as err:
            raise _io.DataFormatError(path, err.lineno, f"invalid xml: {err}") from err
    return cols


def dart(split: str, data_dir: os.PathLike | str | None = None) -> datasets.Dataset:
    """DART v1.1.1 ``train``, ``validation`` (``dev``), ``test``:
    ``<data_dir>/dart/dart-v1.1.1-full-{train,dev,test}.json``, else ``Yale-LILY/dart``."""
    split = _io.norm_split(split, tuple(DART_FILES), "dart")
    root = _io.data_root(data_dir)
    if root is None:
        hub = _io.from_hub("Yale-LILY/dart", split, "default", parquet_export=True)
        return _io.conform(hub.map(_dart_annotations), DART_FEATURES)
    return read_dart_json(_io.local_file(root, "dart", DART_FILES[split]))


def _dart_annotations(row: dict[str, Any]) -> dict[str, Any]:
    ann = row["annotations"]
    if isinstance(ann, list):  # a list of {source, text} rather than a dict of lists
        ann = {"source": [a["source"] for a in ann], "text": [a["text"] for a in ann]}
    return {"annotations": ann}


def read_dart_json(path: os.PathLike | str) -> datasets.Dataset:
    """A DART json list; a triple that is not 3 strings or an annotation without ``text``
    raises DataFormatError naming the file and entry. ``subtree_was_extended`` is missing
    from some entries (1475 of the 2768 in v1.1.1 dev): None there, as on the Hub."""
    path = pathlib.Path(path)
    doc = _io.read_json(path)
    if not isinstance(doc, list):
        raise _io.DataFormatError(path, 1, f"expected a JSON list, got {type(doc).__name__}")
    cols: dict[str, list[Any]] = {k: [] for k in DART_FEATURES}
    for i, item in enumerate(doc):
        _io.require(item, ("tripleset", "annotations"), path, f"entry {i}")
        for triple in item["tripleset"]:
            if not (isinstance(triple, list) and len(triple) == 3):
                raise _io.DataFormatError(
                    path, None, f"entry {i}: triple {triple!r} is not [s, p, o]"
                )
        for j, ann in enumerate(item["annotations"]):
            _io.require(ann, ("text",), path, f"entry {i} annotation {j}")
        cols["tripleset"].append(item["tripleset"])
        cols["subtree_was_extended"].append(item.get("subtree_was_extended"))
        cols["annotations"].append(
            {
                "source": [a.get("source", "") for a in item["annotations"]],
                "text": [a["text"] for a in item["annotations"]],
            }
        )
    return _io.finish(cols, DART_FEATURES, path)


# ----------------------------------------------------------------------- linearisation


def linearize(task: str, row: Mapping[str, Any]) -> str:
    """The model input text of one row.

    e2e: the meaning representation as is (``name[The Eagle], eatType[coffee shop], ...``).
    webnlg / dart: triples as ``s : p : o`` joined by `` | ``; WebNLG's DBpedia names get
    spaces for underscores (``Aarhus_Airport`` -> ``Aarhus Airport``).
    """
    if task == "e2e":
        return row["meaning_representation"]
    if task == "webnlg":
        parts = [t.split(" | ") for t in row["triples"]]
        return " | ".join(" : ".join(x.replace("_", " ") for x in p) for p in parts)
    if task == "dart":
        return " | ".join(" : ".join(t) for t in row["tripleset"])
    raise ValueError(f"unknown data-to-text task {task!r}; choose from e2e, webnlg, dart")


def references(task: str, row: Mapping[str, Any]) -> list[str]:
    """The reference texts of one row."""
    if task == "e2e":
        return [row["human_reference"]] if row["human_reference"] else []
    if task == "webnlg":
        return list(row["lexicalizations"])
    return list(row["annotations"]["text"])


def pairs(dataset: datasets.Dataset, task: str) -> tuple[list[str], list[str]]:
    """(input, target) training pairs: one per reference (an input repeats)."""
    inputs, targets = [], []
    for row in dataset.to_list():
        source = linearize(task, row)
        for ref in references(task, row):
            inputs.append(source)
            targets.append(ref)
    return inputs, targets


def grouped(dataset: datasets.Dataset, task: str) -> tuple[list[str], list[list[str]]]:
    """Evaluation inputs with all their references: one per row for WebNLG and DART (an entry
    already lists its references); for E2E, which repeats an MR once per reference, one per
    distinct MR in first-seen order (547 dev, 630 test)."""
    rows = dataset.to_list()
    if task != "e2e":
        return [linearize(task, r) for r in rows], [references(task, r) for r in rows]
    refs: dict[str, list[str]] = {}
    for row in rows:
        refs.setdefault(linearize(task, row), []).extend(references(task, row))
    return list(refs), list(refs.values())


def _leading_tokens(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before every text when adding its special tokens, when
    that is only its bos token (Llama, Mistral); [] otherwise (GPT-2 and Qwen2 add none; a
    BERT-style tokenizer's [CLS] ... [SEP] is no causal LM's)."""
    around = tokenizer("", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return list(around) if bos is not None and list(around) == [bos] else []


def encode_d2t(
    dataset: datasets.Dataset,
    tokenizer: Any,
    task: str,
    max_length: int = 512,
    *,
    train: bool = True,
    sep: str | None = None,
) -> datasets.Dataset:
    """Causal-LM features: ``<input> <sep> <target><eos>`` for training, ``<input> <sep>`` for
    eval, after the tokenizer's own leading tokens (Llama's ``<|begin_of_text|>``; GPT-2 and
    Qwen2 have none).

    ``sep`` defaults to the tokenizer's bos token (GPT-2: ``<|endoftext|>``, as in the LoRA and
    prefix-tuning recipes), else its sep token, else its eos token (Qwen2 has no bos).
    Training rows (one per reference) have ``input_ids``,
    ``attention_mask`` and ``labels`` = ``input_ids`` with -100 on the prompt (so the loss,
    shifted inside the model as in Hugging Face, covers the target and eos only); sequences
    longer than ``max_length`` are cut and counted in the log. Eval rows (one per input
    of :func:`grouped`) have ``input_ids``, ``attention_mask`` and ``references`` (texts);
    a prompt longer than ``max_length`` keeps its last ``max_length`` tokens (counted).
    """
    sep = sep if sep is not None else tokenizer.bos_token or tokenizer.sep_token
    sep = sep if sep is not None else tokenizer.eos_token
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if sep is None or eos is None:
        raise ValueError("the tokenizer has no bos/sep/eos or eos/sep token; pass sep=")
    lead = _leading_tokens(tokenizer)

    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    if not train:
        sources, refs = grouped(dataset, task)
        prompts = [lead + p for p in ids([f"{s} {sep}" for s in sources])]
        long = sum(len(p) > max_length for p in prompts)
        if long:
            _io.log.warning(
                "encode_d2t(%s): %d prompts cut to their last %d tokens", task, long, max_length
            )
        prompts = [p[-max_length:] for p in prompts]
        return datasets.Dataset.from_dict(
            {
                "input_ids": prompts,
                "attention_mask": [[1] * len(p) for p in prompts],
                "references": refs,
            }
        )
    sources, targets = pairs(dataset, task)
    prompts = [lead + p for p in ids([f"{s} {sep}" for s in sources])]
    answers = ids([f" {t}" for t in targets])
    input_ids, labels, cut = [], [], 0
    for p, a in zip(prompts, answers, strict=True):
        full = (p + a + [eos])[:max_length]
        cut += len(p) + len(a) + 1 > max_length
        input_ids.append(full)
        labels.append(([-100] * len(p) + a + [eos])[:max_length])
    if cut:
        _io.log.warning(
            "encode_d2t(%s): %d of %d sequences cut to %d tokens",
            task,
            cut,
            len(input_ids),
            max_length,
        )
    return datasets.Dataset.from_dict(
        {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(x) for x in input_ids],
            "labels": labels,
        }
    )


__all__ = [
    "DART_FEATURES",
    "DART_FILES",
    "E2E_FEATURES",
    "E2E_FILES",
    "WEBNLG_FEATURES",
    "WEBNLG_TEST",
    "dart",
    "e2e",
    "encode_d2t",
    "grouped",
    "linearize",
    "pairs",
    "read_dart_json",
    "read_e2e_csv",
    "read_webnlg_xml",
    "references",
    "webnlg",
]
