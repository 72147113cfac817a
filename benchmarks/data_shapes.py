"""Batch shapes and padding of one epoch: SST-2 train and dev, SQuAD v1.1 dev.

    .venv/bin/python benchmarks/data_shapes.py [--data-dir ../shared/data] [--batch-size 32]

Tokenises with the all-MiniLM-L6-v2 tokenizer (SST-2: max length 128; SQuAD: 384, doc stride
128), builds :class:`jaxprune.data.Batcher` with automatic buckets, and again with
``pack=True`` (several examples per row), and prints, per split and mode, the number of
batches, each distinct batch shape (rows x length, x segments when packed) with its count,
and the padding fraction (padded positions / all positions on the length axis, padding rows
of the last batch included). Train epochs are shuffled (seed 0, epochs 0 and 1); dev is
unshuffled. Goal: at most 4 shapes and padding under 25%. Bucketed lines also show the bound:
the least padding that many bucket lengths allow at all (each row padded only to its own
bucket). For SST-2 train (67k phrases, most 3-12 tokens) that bound is ~31% with 4
multiple-of-8 buckets, so only packing meets its goal. Packing serves sequence
classification; the packed SQuAD line is for comparison only (QA keeps buckets).

Needs the local data (``--data-dir``, else ``$JAXPRUNE_DATA_DIR``, else ``../shared/data``
next to the repository) and no network.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import numpy as np
from transformers import AutoTokenizer

import jaxprune.data as jd
from jaxprune import hf

GOAL_SHAPES, GOAL_PADDING = 4, 0.25


def report(name: str, batcher: jd.Batcher, epochs: tuple[int, ...], multiple: int) -> bool:
    """Prints one line per epoch; True when every epoch meets the goal.

    ``bound`` (bucketed only) is the least padding any ``len(batcher.buckets)`` bucket
    lengths (multiples of ``multiple``) can give even if every row were padded only to its
    own bucket: the exact optimum of :func:`jaxprune.data.choose_buckets` on the row lengths.
    """
    lengths = batcher.lengths
    bound = ""
    if not batcher.pack:
        best = np.asarray(jd.choose_buckets(lengths, len(batcher.buckets), multiple))
        bound = f" (bound {1 - lengths.sum() / best[np.searchsorted(best, lengths)].sum():5.1%})"
    ok = True
    for epoch in epochs:
        s = batcher.stats(epoch)
        shapes = ", ".join(f"{'x'.join(map(str, shape))}: {n}" for shape, n in s.shapes.items())
        good = len(s.shapes) <= GOAL_SHAPES and s.padding < GOAL_PADDING
        ok &= good
        print(
            f"{name:<24} epoch {epoch}  rows {batcher.num_rows:>5}  batches {s.num_batches:>4}  "
            f"{len(s.shapes)} shapes [{shapes}]  padding {s.padding:5.1%}{bound}"
            f"  {'ok' if good else 'MISSES GOAL'}"
        )
    return ok


def main() -> int:
    default_dir = os.environ.get(jd.ENV_VAR) or str(
        pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=default_dir)
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size")
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--max-buckets", type=int, default=GOAL_SHAPES)
    ap.add_argument("--multiple", type=int, default=8, help="bucket lengths are multiples")
    args = ap.parse_args()
    datasets.disable_progress_bars()
    tok = AutoTokenizer.from_pretrained(hf.resolve("minilm"))
    common = {"multiple": args.multiple, "pad_id": tok.pad_token_id, "seed": 0}
    t0 = time.perf_counter()
    sst2 = {
        split: jd.encode_glue(jd.glue("sst2", split, args.data_dir), tok, "sst2", 128)
        for split in ("train", "validation")
    }
    squad = jd.squad("validation", args.data_dir)
    squad = jd.encode_squad_eval(squad, tok, max_length=384, doc_stride=128)
    runs = [  # (name, features, batch size, shuffled, packing counts toward the goal)
        ("sst2 train", sst2["train"], args.batch_size, True, True),
        ("sst2 validation", sst2["validation"], args.eval_batch_size, False, True),
        ("squad validation", squad, args.eval_batch_size, False, False),
    ]
    missed = []
    for name, feats, bs, shuffle, may_pack in runs:
        epochs = (0, 1) if shuffle else (0,)
        kw = dict(shuffle=shuffle, **common)
        met = report(
            f"{name} buckets",
            jd.Batcher(feats, bs, max_buckets=args.max_buckets, **kw),
            epochs,
            args.multiple,
        )
        packed = report(
            f"{name} packed", jd.Batcher(feats, bs, pack=True, **kw), epochs, args.multiple
        )
        if not (met or (packed and may_pack)):
            missed.append(name)
    print(f"({time.perf_counter() - t0:.1f} s; goal: <= {GOAL_SHAPES} shapes, padding < 25%)")
    print(f"goal missed by {missed}" if missed else "goal met by every split (packing: SST-2)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
