"""Batch shapes and padding of one epoch: SST-2 train and dev, SQuAD v1.1 dev.

    .venv/bin/python benchmarks/data_shapes.py [--data-dir ../shared/data] [--batch-size 32]

Tokenises with the all-MiniLM-L6-v2 tokenizer (SST-2: max length 128; SQuAD: 384, doc stride
128), builds :class:`jaxprune.data.Batcher` with automatic buckets and prints, per split, the
number of batches, each distinct batch shape with its count, and the padding fraction (padded
positions / all positions on the length axis, padding rows of the last batch included).
Train epochs are shuffled (seed 0, epochs 0 and 1); dev is sorted by length, unshuffled.
Goal: at most 4 shapes and padding under 25%. Each line also shows the bound: the least
padding that many bucket lengths allow at all (each row padded only to its own bucket). For
SST-2 train (67k phrases, most 3-12 tokens) that bound is ~31% with 4 multiple-of-8 buckets
(~30% with any integer lengths), so its goal needs more shapes (6 give ~24%) or packing.

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

    ``bound`` is the least padding any ``len(batcher.buckets)`` bucket lengths (multiples of
    ``multiple``) can give even if every row were padded only to its own bucket: the exact
    optimum of :func:`jaxprune.data.choose_buckets` on the row lengths.
    """
    lengths = batcher.lengths
    best = np.asarray(jd.choose_buckets(lengths, len(batcher.buckets), multiple))
    bound = 1 - lengths.sum() / best[np.searchsorted(best, lengths)].sum()
    ok = True
    for epoch in epochs:
        s = batcher.stats(epoch)
        shapes = ", ".join(f"{r}x{w}: {n}" for (r, w), n in s.shapes.items())
        good = len(s.shapes) <= GOAL_SHAPES and s.padding < GOAL_PADDING
        ok &= good
        print(
            f"{name:<17} epoch {epoch}  rows {batcher.num_rows:>5}  batches {s.num_batches:>4}  "
            f"{len(s.shapes)} shapes [{shapes}]  padding {s.padding:5.1%} (bound {bound:5.1%})"
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
    kw = {"max_buckets": args.max_buckets, "multiple": args.multiple, "pad_id": tok.pad_token_id}
    ok = True
    t0 = time.perf_counter()
    for split, bs, shuffle in (
        ("train", args.batch_size, True),
        ("validation", args.eval_batch_size, False),
    ):
        feats = jd.encode_glue(jd.glue("sst2", split, args.data_dir), tok, "sst2", 128)
        batcher = jd.Batcher(feats, bs, shuffle=shuffle, seed=0, **kw)
        ok &= report(f"sst2 {split}", batcher, (0, 1) if shuffle else (0,), args.multiple)
    squad = jd.squad("validation", args.data_dir)
    feats = jd.encode_squad_eval(squad, tok, max_length=384, doc_stride=128)
    batcher = jd.Batcher(feats, args.eval_batch_size, shuffle=False, **kw)
    ok &= report("squad validation", batcher, (0,), args.multiple)
    print(f"({time.perf_counter() - t0:.1f} s; goal: <= {GOAL_SHAPES} shapes, padding < 25%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
