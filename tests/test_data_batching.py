"""jaxprune.data batching: static shapes, seeded order, host shards, bucket choice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxprune.data import Batcher, batches, choose_buckets, unbatch


def ragged(n: int = 203, seed: int = 0) -> dict[str, list]:
    """Token rows of lengths 3..60 whose ids encode (row, position), plus per-row labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 61, size=n)
    return {
        "input_ids": [[1000 * i + j + 1 for j in range(k)] for i, k in enumerate(lengths)],
        "attention_mask": [[1] * k for k in lengths],
        "labels": [int(i % 3) for i in range(n)],
    }


def test_static_shapes_and_content() -> None:
    data = ragged()
    b = Batcher(data, 16, buckets=(16, 32, 64), seed=3)
    seen = []
    for batch in b(0):
        rows, width = batch["input_ids"].shape
        assert rows == 16 and width in (16, 32, 64)
        assert batch["attention_mask"].shape == (16, width) and batch["labels"].shape == (16,)
        assert batch["input_ids"].dtype == np.int32 and batch["valid"].dtype == np.bool_
        for r in range(16):
            i = batch["index"][r]
            if not batch["valid"][r]:
                assert i == -1 and not batch["attention_mask"][r].any()
                continue
            k = len(data["input_ids"][i])
            np.testing.assert_array_equal(batch["input_ids"][r, :k], data["input_ids"][i])
            assert not batch["input_ids"][r, k:].any() and batch["attention_mask"][r].sum() == k
            assert batch["labels"][r] == data["labels"][i]
            seen.append(int(i))
        # the smallest bucket that holds the longest row
        longest = batch["attention_mask"].sum(1).max()
        assert width == min(w for w in (16, 32, 64) if w >= longest)
    assert sorted(seen) == list(range(203))  # every row exactly once
    assert len(b) == 13  # ceil(203 / 16): the last batch holds 11 padding rows


def test_auto_buckets_at_most_four_shapes() -> None:
    b = Batcher(ragged(500), 32, seed=1)
    assert len(b.buckets) <= 4 and all(w % 8 == 0 for w in b.buckets)
    shapes = {batch["input_ids"].shape for batch in b(0)}
    assert len(shapes) <= 4
    stats = b.stats(0)
    assert set(stats.shapes) == shapes and sum(stats.shapes.values()) == len(b)
    total = sum(32 * w * n for (_, w), n in stats.shapes.items())
    real = sum(len(x) for x in ragged(500)["input_ids"])
    assert stats.padding == pytest.approx(1 - real / total)


def test_same_seed_and_epoch_same_batches_other_epoch_differs() -> None:
    data = ragged()
    first = list(batches(data, 16, seed=7, epoch=2))
    again = list(Batcher(data, 16, seed=7)(2))
    assert len(first) == len(again)
    for x, y in zip(first, again, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    order = np.concatenate([x["index"] for x in first])
    other_epoch = np.concatenate([x["index"] for x in batches(data, 16, seed=7, epoch=3)])
    other_seed = np.concatenate([x["index"] for x in batches(data, 16, seed=8, epoch=2)])
    assert not np.array_equal(order, other_epoch) and not np.array_equal(order, other_seed)
    assert sorted(order[order >= 0]) == sorted(other_epoch[other_epoch >= 0])


def test_two_hosts_disjoint_and_cover_each_global_batch() -> None:
    data = ragged()
    whole = list(batches(data, 16, seed=5, epoch=1))
    host0 = list(batches(data, 16, seed=5, epoch=1, process_index=0, process_count=2))
    host1 = list(batches(data, 16, seed=5, epoch=1, process_index=1, process_count=2))
    assert len(whole) == len(host0) == len(host1)
    for g, a, b in zip(whole, host0, host1, strict=True):
        assert a["input_ids"].shape == b["input_ids"].shape == (8, g["input_ids"].shape[1])
        ia, ib = a["index"][a["valid"]], b["index"][b["valid"]]
        assert not set(ia) & set(ib)
        assert sorted([*ia, *ib]) == sorted(g["index"][g["valid"]])
        for k in g:  # host p holds rows [8p, 8p + 8) of the global batch
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k])


def test_batch_size_must_split_over_hosts() -> None:
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        Batcher(ragged(), 16, process_count=3)


def test_drop_last_and_eval_order() -> None:
    data = ragged()
    dropped = list(batches(data, 16, seed=0, drop_last=True))
    assert len(dropped) == 203 // 16 and all(x["valid"].all() for x in dropped)
    ev = list(batches(data, 16, shuffle=False))
    lengths = [x["attention_mask"].sum(1) for x in ev]
    flat = np.concatenate(lengths)[np.concatenate([x["valid"] for x in ev])]
    assert (np.diff(flat) <= 0).all()  # sorted by length, longest first
    assert not ev[-1]["valid"][-5:].any()  # padding rows at the end, with the shortest rows


def test_labels_pad_with_minus_100_and_left_padding() -> None:
    data = {"input_ids": [[5, 6, 7], [8]], "labels": [[1, 2, 3], [4]]}
    (batch,) = batches(data, 2, buckets=(4,), shuffle=False, pad_id=9)
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7, 9], [8, 9, 9, 9]])
    np.testing.assert_array_equal(batch["labels"], [[1, 2, 3, -100], [4, -100, -100, -100]])
    (left,) = batches(data, 2, buckets=(4,), shuffle=False, padding_side="left")
    np.testing.assert_array_equal(left["input_ids"], [[0, 5, 6, 7], [0, 0, 0, 8]])


def test_rows_longer_than_the_largest_bucket_are_refused() -> None:
    with pytest.raises(ValueError, match="more than the largest bucket 32"):
        Batcher(ragged(), 16, buckets=(16, 32))


def test_choose_buckets_is_optimal() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 80, size=rng.integers(1, 30))
        k, multiple = int(rng.integers(1, 5)), int(rng.choice([1, 8]))
        got = choose_buckets(lengths, k, multiple)
        cands = np.unique(-(-lengths // multiple) * multiple)

        def cost(b: tuple[int, ...], lengths: np.ndarray = lengths) -> int:
            arr = np.asarray(b)
            return int(arr[np.searchsorted(arr, lengths)].sum())

        best = min(
            cost((*c, int(cands[-1])))
            for r in range(k)
            for c in itertools.combinations(cands[:-1].tolist(), r)
        )
        assert cost(got) == best and len(got) <= k and got[-1] >= lengths.max()
        assert all(w % multiple == 0 for w in got) and list(got) == sorted(set(got))


def test_unbatch_restores_dataset_order() -> None:
    data = ragged(50)
    epoch = list(batches(data, 8, seed=2))
    outputs = [x["input_ids"].astype(np.float32) for x in epoch]  # a "model" echoing its input
    back = unbatch(50, epoch, outputs, fill=-1.0)
    assert back.shape == (50, max(x.shape[1] for x in outputs))
    for i, row in enumerate(data["input_ids"]):
        np.testing.assert_array_equal(back[i, : len(row)], row)


def test_works_on_a_datasets_dataset_after_select() -> None:
    import datasets

    ds = datasets.Dataset.from_dict(ragged(40)).select(range(10, 30))
    (batch,) = batches(ds, 20, buckets=(64,), shuffle=False)
    assert sorted(batch["index"]) == list(range(20))
    i = int(batch["index"][0])
    np.testing.assert_array_equal(
        batch["input_ids"][0, : len(ds[i]["input_ids"])], ds[i]["input_ids"]
    )
