"""Small files in every task's published format and tiny checkpoints, for recipe dry runs.

``write_data(root)`` writes a data folder laid out like ``../shared/data`` (GLUE tsv for
every task, SQuAD json, CoNLL-2003 text, E2E csv, WebNLG xml, DART json) with a few
synthetic rows each. ``tiny_bert(root)`` and ``tiny_gpt2(root)`` save 2-layer, hidden-32
checkpoints with a real tokenizer (MiniLM's WordPiece; a byte-level BPE trained here).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "good",
    "bad",
    "great",
    "dull",
    "city",
    "river",
    "plays",
    "shows",
    "fine",
    "poor",
    "is",
    "was",
]
_NLI = ("entailment", "neutral", "contradiction")


def _sentence(rng: np.random.Generator, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(2, n + 1))))


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _glue(root: pathlib.Path, rng: np.random.Generator, rows: int) -> None:
    g = root / "glue"
    s = lambda: _sentence(rng)  # noqa: E731
    pair = "index\tsentence1\tsentence2\tlabel\n"
    for split in ("train", "dev"):
        n = range(rows)
        _write(
            g / f"SST-2/{split}.tsv", "sentence\tlabel\n" + "".join(f"{s()}\t{i % 2}\n" for i in n)
        )
        _write(g / f"CoLA/{split}.tsv", "".join(f"src\t{i % 2}\t\t{s()}\n" for i in n))
        _write(
            g / f"MRPC/{split}.tsv",
            "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
            + "".join(f"{i % 2}\t{i}\t{i}\t{s()}\t{s()}\n" for i in n),
        )
        _write(
            g / f"QQP/{split}.tsv",
            "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            + "".join(f"{i}\t{i}\t{i}\t{s()}\t{s()}\t{i % 2}\n" for i in n),
        )
        _write(
            g / f"STS-B/{split}.tsv",
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
            "sentence2\tscore\n"
            + "".join(f"{i}\tg\tf\ty\t{i}\ts\ts\t{s()}\t{s()}\t{i % 6}.0\n" for i in n),
        )
        _write(
            g / f"QNLI/{split}.tsv",
            "index\tquestion\tsentence\tlabel\n"
            + "".join(f"{i}\t{s()}\t{s()}\t{('entailment', 'not_entailment')[i % 2]}\n" for i in n),
        )
        for task in ("RTE", "WNLI"):
            _write(
                g / f"{task}/{split}.tsv",
                pair
                + "".join(
                    f"{i}\t{s()}\t{s()}\t{('entailment', 'not_entailment')[i % 2]}\n" for i in n
                ),
            )
    mnli = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    for name in ("train", "dev_matched", "dev_mismatched"):
        _write(
            g / f"MNLI/{name}.tsv",
            mnli
            + "".join(
                f"{i}\t{i}\t{i}\tg\t{s()}\t{s()}\t{_NLI[i % 3]}\t{_NLI[i % 3]}\n"
                for i in range(rows)
            ),
        )


def _squad(root: pathlib.Path, rng: np.random.Generator, rows: int) -> None:
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        qas, paragraphs = [], []
        for i in range(rows):
            answer = str(rng.choice(WORDS[4:]))
            context = f"{_sentence(rng)} {answer} {_sentence(rng)}"
            start = context.index(f" {answer} ") + 1
            qas = [
                {
                    "id": f"{name[:3]}{i}",
                    "question": f"what {_sentence(rng, 3)}?",
                    "answers": [{"text": answer, "answer_start": start}],
                }
            ]
            paragraphs.append({"context": context, "qas": qas})
        doc = {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}
        _write(root / "squad" / name, json.dumps(doc))


def _conll(root: pathlib.Path, rng: np.random.Generator, rows: int) -> None:
    tags = ("O", "B-PER", "I-PER", "B-LOC", "O", "B-ORG", "B-MISC")
    for name in ("train.txt", "valid.txt", "test.txt"):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(rows):
            for _ in range(int(rng.integers(2, 7))):
                lines.append(f"{rng.choice(WORDS)} NN B-NP {tags[int(rng.integers(len(tags)))]}")
            lines.append("")
        _write(root / "conll2003" / name, "\n".join(lines))


def _d2t(root: pathlib.Path, rng: np.random.Generator, rows: int) -> None:
    for name in ("trainset.csv", "devset.csv"):
        lines = ["mr,ref"] + [
            f'"name[{rng.choice(WORDS)}], area[{rng.choice(WORDS)}]",{_sentence(rng)}.'
            for _ in range(rows)
        ]
        _write(root / "e2e" / name, "\r\n".join(lines) + "\r\n")
    for split in ("train", "dev"):
        entries = "".join(
            f'<entry category="C" eid="Id{i}" size="1"><modifiedtripleset><mtriple>'
            f"{rng.choice(WORDS)} | p | {rng.choice(WORDS)}</mtriple></modifiedtripleset>"
            f'<lex comment="good" lid="Id1">{_sentence(rng)}.</lex></entry>'
            for i in range(rows)
        )
        _write(
            root / f"webnlg/webnlg_challenge_2017/{split}/1triples/x.xml",
            f"<benchmark><entries>{entries}</entries></benchmark>",
        )
    for split in ("train", "dev"):
        dart = [
            {
                "tripleset": [[str(rng.choice(WORDS)), "p", str(rng.choice(WORDS))]],
                "annotations": [{"source": "x", "text": f"{_sentence(rng)}."}],
            }
            for _ in range(rows)
        ]
        _write(root / f"dart/dart-v1.1.1-full-{split}.json", json.dumps(dart))


def write_data(root: pathlib.Path, rows: int = 24, seed: int = 0) -> pathlib.Path:
    """Writes every task's files under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    _glue(root, rng, rows)
    _squad(root, rng, rows)
    _conll(root, rng, rows)
    _d2t(root, rng, rows)
    return root


def tiny_bert(folder: pathlib.Path) -> pathlib.Path:
    """A 2-layer, hidden-32 BERT with MiniLM's tokenizer (full vocabulary), saved as a HF
    folder."""
    from flax import nnx
    from transformers import AutoTokenizer, BertConfig

    from jaxprune import hf

    tokenizer = AutoTokenizer.from_pretrained(hf.resolve("minilm"))
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
    )
    model = hf.build(cfg, head="base", num_labels=2, dtype=np.float32, seed=0)
    hf.save_pretrained(
        model, nnx.to_pure_dict(nnx.state(model, nnx.Param)), folder, tokenizer=tokenizer
    )
    return folder


def tiny_gpt2(folder: pathlib.Path) -> pathlib.Path:
    """A 2-layer, width-32 GPT-2 with a byte-level BPE tokenizer trained on :data:`WORDS`."""
    from flax import nnx
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, PreTrainedTokenizerFast

    from jaxprune import hf

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([" ".join(WORDS), "name area p | : [ ] , ."] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    eos = bpe.token_to_id("<|endoftext|>")
    cfg = GPT2Config(
        vocab_size=bpe.get_vocab_size(),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=64,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = hf.build(cfg, head="causal-lm", num_labels=2, dtype=np.float32, seed=0)
    hf.save_pretrained(
        model, nnx.to_pure_dict(nnx.state(model, nnx.Param)), folder, tokenizer=tokenizer
    )
    return folder


def tiny_job(world: dict[str, pathlib.Path], **changes) -> Any:
    """Magnitude pruning to 50% of the tiny BERT on fixture SST-2, 12 steps of 4 rows."""
    from jaxprune.recipes import Job

    job = Job(
        model=str(world["bert"]),
        task="sst2",
        method="magnitude",
        sparsity=0.5,
        steps=12,
        batch_size=4,
        max_length=32,
        train_subset=16,
        eval_subset=8,
        eval_batch_size=8,
        data_dir=str(world["data"]),
    )
    return dataclasses.replace(job, **changes)
