"""jaxprune.data preprocessing with real fast tokenizers: pairs, SQuAD windows and answer
decoding, NER first-sub-word labels, data-to-text prompts for a GPT-2-style tokenizer."""

from __future__ import annotations

import logging
from typing import Any

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import jaxprune.data as jd
from jaxprune import hf
from jaxprune.data.conll import NER
from jaxprune.data.squad import FEATURES as SQUAD_FEATURES


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(hf.resolve("minilm"))


@pytest.fixture(scope="module")
def gpt2_like() -> PreTrainedTokenizerFast:
    """A small byte-level BPE with GPT-2's <|endoftext|> as bos = eos, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["name[The Eagle], eatType[pub] The Eagle is a pub."] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def test_glue_pairs_truncation_and_labels(tok) -> None:
    ds = datasets.Dataset.from_dict(
        {
            "sentence1": ["a short premise .", "word " * 200],
            "sentence2": ["a hypothesis", "another"],
            "label": [1, 0],
            "idx": [0, 1],
        }
    )
    enc = jd.encode_glue(ds, tok, "rte", max_length=32)
    assert set(enc.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert enc["labels"] == [1, 0] and len(enc[1]["input_ids"]) == 32
    first = enc[0]
    assert tok.decode(first["input_ids"]) == "[CLS] a short premise. [SEP] a hypothesis [SEP]"
    assert first["token_type_ids"] == [0] * 6 + [1] * 3
    batch = next(jd.batches(enc, 2, buckets=(32,), shuffle=False))
    assert batch["input_ids"].shape == (2, 32) and batch["labels"].shape == (2,)


CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to "
    "King Charles III of West Francia. "
) * 3


def squad_rows() -> datasets.Dataset:
    questions = [
        ("q1", " In what country is Normandy located?", "France", CONTEXT.index("France")),
        ("q2", "Who was the leader?", "Rollo", CONTEXT.rindex("Rollo")),  # in a later window
        ("q3", "From which countries?", "Denmark, Iceland and Norway", CONTEXT.index("Denmark")),
    ]
    return datasets.Dataset.from_dict(
        {
            "id": [q[0] for q in questions],
            "title": ["Normans"] * 3,
            "context": [CONTEXT] * 3,
            "question": [q[1] for q in questions],
            "answers": [{"text": [q[2]], "answer_start": [q[3]]} for q in questions],
        },
        features=SQUAD_FEATURES,
    )


def test_squad_windows_and_round_trip(tok) -> None:
    examples = squad_rows()
    train = jd.encode_squad_train(examples, tok, max_length=96, doc_stride=32)
    evals = jd.encode_squad_eval(examples, tok, max_length=96, doc_stride=32)
    assert len(train) == len(evals) > 3  # long contexts give several windows
    assert all(len(x) <= 96 for x in evals["input_ids"])
    answers = dict(zip(examples["id"], (a["text"][0] for a in examples["answers"]), strict=True))
    found = set()
    for f in range(len(train)):  # the labelled span decodes to the answer, or is CLS
        s, e = train[f]["start_positions"], train[f]["end_positions"]
        text = tok.decode(train[f]["input_ids"][s : e + 1])
        if s == 0:
            assert e == 0
            continue
        found.add(evals[f]["example_id"])
        assert text == answers[evals[f]["example_id"]].lower()
    assert found == set(answers)
    # logits peaked on the gold tokens of each window decode back to the exact answer text
    width = 128
    start = np.full((len(evals), width), -5.0, np.float32)
    end = start.copy()
    rows = np.arange(len(evals))
    start[rows, train["start_positions"]] = 5.0
    end[rows, train["end_positions"]] = 5.0
    assert jd.postprocess_squad(examples, evals, start, end) == answers
    # the offsets outside the context are None, so a peak on the question is never chosen
    start[:, 1], end[:, 2] = 50.0, 50.0
    assert jd.postprocess_squad(examples, evals, start, end) == answers


def test_squad_batches_then_unbatch_then_postprocess(tok) -> None:
    examples = squad_rows()
    train = jd.encode_squad_train(examples, tok, max_length=96, doc_stride=32)
    evals = jd.encode_squad_eval(examples, tok, max_length=96, doc_stride=32)
    epoch = list(jd.batches(evals, 4, shuffle=False, buckets=(64, 96)))
    assert {b["input_ids"].shape for b in epoch} <= {(4, 64), (4, 96)}
    logits = []
    for b in epoch:  # a "model" that points at the gold tokens of each row it is given
        out = np.full((2, *b["input_ids"].shape), -5.0, np.float32)
        for r, i in enumerate(b["index"]):
            if i >= 0:
                out[0, r, train[int(i)]["start_positions"]] = 5.0
                out[1, r, train[int(i)]["end_positions"]] = 5.0
        logits.append(out)
    start = jd.unbatch(len(evals), epoch, [x[0] for x in logits], fill=-1e9)
    end = jd.unbatch(len(evals), epoch, [x[1] for x in logits], fill=-1e9)
    preds = jd.postprocess_squad(examples, evals, start, end)
    assert preds == {r["id"]: r["answers"]["text"][0] for r in examples}


def test_ner_label_on_first_subword_only(tok, caplog) -> None:
    tags = NER
    words = ["Ekeus", "visited", "Baghdad", "yesterday"]
    labels = [tags.index("B-PER"), 0, tags.index("B-LOC"), 0]
    ds = datasets.Dataset.from_dict({"tokens": [words], "ner_tags": [labels]})
    enc = jd.encode_ner(ds, tok, max_length=32)[0]
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert len(pieces) > len(words) + 2  # some word is split into sub-words
    expected, w = [], -1
    for p in pieces:
        if p in ("[CLS]", "[SEP]"):
            expected.append(-100)
        elif p.startswith("##"):
            expected.append(-100)  # a continuation sub-word
        else:
            w += 1
            expected.append(labels[w])
    assert enc["labels"] == expected and w == len(words) - 1
    with caplog.at_level(logging.WARNING, logger="jaxprune.data"):
        short = jd.encode_ner(ds, tok, max_length=4)[0]
    assert short["labels"] == [*expected[:3], -100]  # [CLS] two sub-words [SEP]
    assert "words have no labelled sub-word" in caplog.text


def test_d2t_training_labels_mask_the_prompt(gpt2_like) -> None:
    ds = datasets.Dataset.from_dict(
        {
            "meaning_representation": ["name[The Eagle], eatType[pub]"] * 2,
            "human_reference": ["The Eagle is a pub.", "A pub: The Eagle."],
        }
    )
    tr = jd.encode_d2t(ds, gpt2_like, "e2e", max_length=64)
    assert tr.column_names == ["input_ids", "attention_mask", "labels"] and len(tr) == 2
    ids, labels = tr[0]["input_ids"], tr[0]["labels"]
    eos = gpt2_like.eos_token_id
    text = gpt2_like.decode(ids)
    assert text == "name[The Eagle], eatType[pub] <|endoftext|> The Eagle is a pub.<|endoftext|>"
    n_prompt = labels.count(-100)
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[n_prompt - 1] == eos and ids[-1] == eos  # the separator, then the eos
    assert gpt2_like.decode(ids[n_prompt:]) == " The Eagle is a pub.<|endoftext|>"
    ev = jd.encode_d2t(ds, gpt2_like, "e2e", max_length=64, train=False)
    assert len(ev) == 1  # one prompt per distinct MR, with both references
    assert ev[0]["references"] == ["The Eagle is a pub.", "A pub: The Eagle."]
    assert gpt2_like.decode(ev[0]["input_ids"]) == "name[The Eagle], eatType[pub] <|endoftext|>"
    (batch,) = jd.batches(ev, 2, buckets=(32,), shuffle=False, padding_side="left")
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"][0, -1] == eos
