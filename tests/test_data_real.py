"""Every local file of ../shared/data loads with its published row counts and label sets;
batches of real tokenised splits keep the promised shapes."""

from __future__ import annotations

import collections
import logging
import pathlib

import numpy as np
import pytest

import jaxprune.data as jd

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "README.md").exists(), reason=f"no shared data folder at {DATA}"
)
BINARY = {0, 1}
NLI = {0, 1}  # entailment, not_entailment

# task, split, rows, label counts (None: only the set is checked), label set
GLUE = [
    ("rte", "train", 2490, {0: 1249, 1: 1241}, NLI),
    ("rte", "validation", 277, {0: 146, 1: 131}, NLI),
    ("rte", "test", 3000, None, {-1}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}, BINARY),
    ("mrpc", "validation", 408, {1: 279, 0: 129}, BINARY),
    ("mrpc", "test", 1725, None, {-1}),
    ("cola", "train", 8551, {1: 6023, 0: 2528}, BINARY),
    ("cola", "validation", 1043, {1: 721, 0: 322}, BINARY),
    ("cola", "test", 1063, None, {-1}),
    ("sst2", "train", 67349, {1: 37569, 0: 29780}, BINARY),
    ("sst2", "validation", 872, {1: 444, 0: 428}, BINARY),
    ("sst2", "test", 1821, None, {-1}),
    ("qnli", "validation", 5463, {0: 2702, 1: 2761}, NLI),
    ("qnli", "test", 5463, None, {-1}),
]


@pytest.mark.parametrize(("task", "split", "rows", "counts", "labels"), GLUE)
def test_glue_files(task, split, rows, counts, labels) -> None:
    ds = jd.load(task, split, DATA)
    assert len(ds) == rows and ds["idx"] == list(range(rows))
    found = collections.Counter(ds["label"])
    assert set(found) == labels
    if counts is not None:
        assert dict(found) == counts


@pytest.mark.parametrize(("split", "rows"), [("train", 5749), ("validation", 1500), ("test", 1379)])
def test_stsb_scores(split, rows) -> None:
    scores = np.asarray(jd.glue("stsb", split, DATA)["label"])
    assert len(scores) == rows
    if split == "test":
        assert (scores == -1).all()
    else:
        assert scores.min() == 0.0 and scores.max() == 5.0 and len(np.unique(scores)) > 50


def test_quotes_survive_in_glue_text() -> None:
    rte = jd.glue("rte", "train", DATA)
    assert rte[2164]["sentence1"].startswith('"That film')  # the row that breaks csv quoting
    mrpc = jd.glue("mrpc", "train", DATA)  # the BOM before "Quality" is not part of the header
    assert mrpc[0]["sentence1"].startswith("Amrozi accused his brother")


def test_squad_dev() -> None:
    ds = jd.squad("validation", DATA)
    assert len(ds) == 10570 and len(set(ds["title"])) == 48 and len(set(ds["id"])) == 10570
    n_answers = collections.Counter(len(a["text"]) for a in ds["answers"])
    assert min(n_answers) >= 1 and n_answers[3] == 8490  # dev lists up to 6 (repeated) answers


@pytest.mark.parametrize(
    ("split", "sentences", "tokens", "docs"),
    [("train", 14041, 203621, 946), ("validation", 3250, 51362, 216), ("test", 3453, 46435, 231)],
)
def test_conll2003(split, sentences, tokens, docs, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="jaxprune.data"):
        ds = jd.conll2003(split, DATA)
    assert len(ds) == sentences and sum(len(t) for t in ds["tokens"]) == tokens
    assert f"{docs} -DOCSTART- lines skipped" in caplog.text
    assert "IOB1" not in caplog.text  # already IOB2: nothing converted
    names = ds.features["ner_tags"].feature.names
    assert {names[t] for row in ds["ner_tags"] for t in row} == set(names)  # all 9 tags occur


@pytest.mark.parametrize(
    ("split", "rows", "inputs"),
    [
        ("train", 42061, 4862),
        ("validation", 4672, 547),
        ("test", 4693, 630),
        ("test_inputs", 630, 630),
    ],
)
def test_e2e(split, rows, inputs) -> None:
    ds = jd.e2e(split, DATA)
    assert len(ds) == rows and len(set(ds["meaning_representation"])) == inputs
    refs = ds["human_reference"]
    assert all(refs) if split != "test_inputs" else not any(refs)
    assert all(m.startswith("name[") for m in ds["meaning_representation"])


@pytest.mark.parametrize(
    ("split", "entries", "lexicalizations"),
    [
        ("train", 6940, 18102),
        ("validation", 872, 2268),
        ("test", 1862, 4928),
        ("test_unseen", 891, 2433),
        ("test_inputs", 1862, 0),
    ],
)
def test_webnlg(split, entries, lexicalizations) -> None:
    ds = jd.webnlg(split, DATA)
    assert len(ds) == entries and sum(len(x) for x in ds["lexicalizations"]) == lexicalizations
    assert set(ds["size"]) <= set(range(1, 8))
    assert all(len(t) == s for t, s in zip(ds["triples"], ds["size"], strict=True))


def test_dart_dev() -> None:
    ds = jd.dart("validation", DATA)
    assert len(ds) == 2768 and sum(len(a["text"]) for a in ds["annotations"]) == 6980
    assert all(len(t) == 3 for ts in ds["tripleset"] for t in ts)
    assert collections.Counter(ds["subtree_was_extended"])[None] == 1475  # key absent there


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from jaxprune import hf

    return AutoTokenizer.from_pretrained(hf.resolve("minilm"))


def test_sst2_dev_batches_meet_the_goal(tok) -> None:
    feats = jd.encode_glue(jd.glue("sst2", "validation", DATA), tok, "sst2", 128)
    batcher = jd.Batcher(feats, 32, shuffle=False, pad_id=tok.pad_token_id)
    shapes = {b["input_ids"].shape for b in batcher(0)}
    stats = batcher.stats(0)
    assert shapes == set(stats.shapes) and len(shapes) <= 4 and stats.padding < 0.25


@pytest.mark.slow
def test_squad_dev_batches_and_gold_round_trip(tok) -> None:
    examples = jd.squad("validation", DATA)
    train = jd.encode_squad_train(examples, tok, max_length=384, doc_stride=128)
    evals = jd.encode_squad_eval(examples, tok, max_length=384, doc_stride=128)
    batcher = jd.Batcher(evals, 64, shuffle=False, pad_id=tok.pad_token_id)
    stats = batcher.stats(0)
    assert len(stats.shapes) <= 4 and stats.padding < 0.25
    width = int(batcher.buckets[-1])
    start = np.full((len(evals), width), -5.0, np.float32)
    end = start.copy()
    start[np.arange(len(evals)), train["start_positions"]] = 5.0
    end[np.arange(len(evals)), train["end_positions"]] = 5.0
    preds = jd.postprocess_squad(examples, evals, start, end)
    exact = sum(preds[r["id"]] == r["answers"]["text"][0] for r in examples)
    # Misses are answers that end inside a word piece ("18" for "8"), not decoding errors.
    assert exact / len(examples) > 0.995


@pytest.mark.slow
def test_sst2_train_padding_is_near_the_four_bucket_optimum(tok) -> None:
    feats = jd.encode_glue(jd.glue("sst2", "train", DATA), tok, "sst2", 128)
    batcher = jd.Batcher(feats, 32, seed=0, pad_id=tok.pad_token_id)
    lengths = batcher.lengths
    best = np.asarray(jd.choose_buckets(lengths, 4, 8))
    bound = 1 - lengths.sum() / best[np.searchsorted(best, lengths)].sum()
    for epoch in (0, 1):
        stats = batcher.stats(epoch)
        assert len(stats.shapes) <= 4 and stats.padding < bound + 0.03
