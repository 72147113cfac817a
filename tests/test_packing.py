"""Sequence packing: the row layout, packed batches, and models that see each example alone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny import TINY_BERT

from jaxprune import data as jd
from jaxprune import methods, train
from jaxprune.data import packing
from jaxprune.models import EncoderForTask


def ragged(n: int = 203, seed: int = 0, lo: int = 3, hi: int = 61) -> dict[str, list]:
    """Token rows of lengths lo..hi-1 whose ids encode (row, position), plus labels."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi, size=n)
    return {
        "input_ids": [[1000 * i + j + 1 for j in range(k)] for i, k in enumerate(lengths)],
        "attention_mask": [[1] * k for k in lengths],
        "labels": [int(i % 3) for i in range(n)],
    }


def test_best_fit_decreasing_layout() -> None:
    # 5 opens row 0 (3 free), 4 row 1 (4 free); a 3 fits row 0 best, the next 3 and 1 row 1.
    np.testing.assert_array_equal(
        packing.best_fit_decreasing(np.array([3, 1, 5, 3, 4]), 8), [[5, 3, 0], [4, 3, 1]]
    )
    np.testing.assert_array_equal(  # two segments at most: the 1 needs a row of its own
        packing.best_fit_decreasing(np.array([3, 1, 5, 3, 4]), 8, 2), [[5, 3], [4, 3], [1, 0]]
    )
    lengths = np.random.default_rng(0).integers(1, 40, size=2000)
    slots = packing.best_fit_decreasing(lengths, 64, 6)
    assert slots.shape[1] == 6 and (slots.sum(1) <= 64).all()
    np.testing.assert_array_equal(np.sort(slots[slots > 0]), np.sort(lengths))
    filled = slots > 0  # filled slots first
    assert (filled[:, :-1] | ~filled[:, 1:]).all()
    assert len(slots) <= 1.05 * lengths.sum() / 64 + 1  # near the bound of full rows
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 8\]"):
        packing.best_fit_decreasing(np.array([9]), 8)


def test_balance_evens_out_examples_per_batch() -> None:
    np.testing.assert_array_equal(packing.balance(np.array([5, 1, 5, 1]), 2), [[0, 1], [2, 3]])
    counts = np.random.default_rng(1).integers(1, 25, size=600)
    totals = counts[packing.balance(counts, 6)].sum(1)
    assert totals.max() - totals.min() <= 2 and totals.sum() == counts.sum()
    with pytest.raises(ValueError, match="7 rows do not fill batches of 2"):
        packing.balance(np.ones(7, int), 2)


def check_packed(batch: dict, data: dict, width: int, segments: int) -> list[int]:
    """Asserts one packed batch lays the examples out as documented; returns their ids."""
    rows = batch["input_ids"].shape[0]
    for name in ("input_ids", "attention_mask", "segment_ids", "position_ids"):
        assert batch[name].shape == (rows, width) and batch[name].dtype == np.int32, name
    for name in ("labels", "cls_positions", "index", "valid"):
        assert batch[name].shape == (rows, segments), name
    seen = []
    for r in range(rows):
        start = 0
        for k in range(segments):
            i = int(batch["index"][r, k])
            if not batch["valid"][r, k]:
                assert i == -1 and batch["labels"][r, k] == -100
                continue
            n = len(data["input_ids"][i])
            assert batch["cls_positions"][r, k] == start
            np.testing.assert_array_equal(
                batch["input_ids"][r, start : start + n], data["input_ids"][i]
            )
            np.testing.assert_array_equal(batch["segment_ids"][r, start : start + n], k + 1)
            np.testing.assert_array_equal(batch["position_ids"][r, start : start + n], range(n))
            assert batch["labels"][r, k] == data["labels"][i]
            start += n
            seen.append(i)
        assert not batch["segment_ids"][r, start:].any() and not batch["input_ids"][r, start:].any()
        assert batch["attention_mask"][r].sum() == start
    return seen


def test_packed_epoch_static_complete_and_reproducible() -> None:
    data = ragged()
    b = jd.Batcher(data, 16, pack=True, seed=3, pack_length=64, max_segments=5)
    epoch = list(b(0))
    assert len(epoch) == len(b)
    seen = [i for x in epoch for i in check_packed(x, data, 64, 5)]
    assert sorted(seen) == list(range(203))  # every example exactly once
    stats = b.stats(0)
    assert stats.shapes == {(b.rows, 64, 5): len(b)}
    real = sum(len(x) for x in data["input_ids"])
    assert stats.padding == pytest.approx(1 - real / (len(b) * b.rows * 64))
    assert stats.padding < 0.5 * jd.Batcher(data, 16, seed=3).stats(0).padding  # 10% vs 23%
    again = list(jd.batches(data, 16, epoch=0, pack=True, seed=3, pack_length=64, max_segments=5))
    other = list(b(1))
    for x, y in zip(epoch, again, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    order = np.concatenate([x["index"].ravel() for x in epoch])
    assert not np.array_equal(order, np.concatenate([x["index"].ravel() for x in other]))
    examples = [int(x["valid"].sum()) for x in epoch]
    assert abs(np.mean(examples) - 16) < 3  # about batch_size examples per batch


def test_packed_hosts_split_global_batches_and_drop_last() -> None:
    data = ragged(300, seed=1, lo=2, hi=20)
    kw = dict(pack=True, pack_length=24, seed=5, drop_last=True)
    whole = list(jd.batches(data, 32, epoch=2, **kw))
    hosts = [
        list(jd.batches(data, 32, epoch=2, process_index=p, process_count=2, **kw)) for p in (0, 1)
    ]
    assert len(whole) == len(hosts[0]) == len(hosts[1]) > 0
    for g, a, c in zip(whole, *hosts, strict=True):
        assert a["input_ids"].shape[0] * 2 == g["input_ids"].shape[0]
        for k in g:
            np.testing.assert_array_equal(np.concatenate([a[k], c[k]]), g[k])
    seen = np.concatenate([x["index"][x["valid"]] for x in whole])
    assert len(set(seen)) == len(seen) and 0 < 300 - len(seen) < 40
    assert all(x["valid"].any(1).all() for x in whole)  # dropped rows, no empty ones


def test_packing_refuses_what_it_cannot_pack() -> None:
    data = ragged()
    with pytest.raises(ValueError, match="more than pack_length 32"):
        jd.Batcher(data, 16, pack=True, pack_length=32)
    with pytest.raises(ValueError, match="pack_length, not buckets"):
        jd.Batcher(data, 16, pack=True, buckets=(64,))
    with pytest.raises(ValueError, match="only with pack=True"):
        jd.Batcher(data, 16, max_segments=4)
    tokens = {"input_ids": data["input_ids"], "labels": data["input_ids"]}
    with pytest.raises(ValueError, match=r"columns \['labels'\] hold token positions or per-token"):
        jd.Batcher(tokens, 16, pack=True)


def test_unbatch_of_packed_outputs() -> None:
    data = ragged(60)
    epoch = list(jd.batches(data, 8, pack=True, seed=1))
    outputs = [np.stack([x["index"], x["labels"]], -1).astype(np.float32) for x in epoch]
    back = jd.unbatch(60, epoch, outputs, fill=-1.0)
    np.testing.assert_array_equal(back, np.stack([np.arange(60), data["labels"]], -1))


# ------------------------------------------------------------------ models on packed rows

NUM_LABELS = 3
CONFIGS = {
    "bert": TINY_BERT,
    "roberta": dataclasses.replace(TINY_BERT, arch="roberta", pad_token_id=1),
    "distilbert": dataclasses.replace(TINY_BERT, arch="distilbert", type_vocab_size=0),
    "electra": dataclasses.replace(TINY_BERT, arch="electra", embedding_size=16),
}


def model_and_params(arch: str):
    """A sequence classifier with weights redrawn large, so every input matters."""
    model = EncoderForTask(CONFIGS[arch], num_labels=NUM_LABELS, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return model, jax.tree.unflatten(
        tree, [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


def examples(arch: str, n: int = 23) -> dict[str, list]:
    """Sentences of 2..9 tokens (no padding id inside), two token types where the arch has them."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, 10, size=n)
    out = {
        "input_ids": [rng.integers(2, 50, size=k).tolist() for k in lengths],
        "attention_mask": [[1] * k for k in lengths],
        "labels": rng.integers(0, NUM_LABELS, size=n).tolist(),
    }
    if arch != "distilbert":
        out["token_type_ids"] = [(np.arange(k) >= k // 2).astype(int).tolist() for k in lengths]
    return out


def per_example(forward, params, batches: list[dict], n: int) -> np.ndarray:
    """Logits of every example in dataset order."""
    logits = [np.asarray(forward(params, b).logits) for b in batches]
    return jd.unbatch(n, batches, logits, fill=np.nan)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra"])
def test_packed_logits_equal_each_example_alone(arch: str) -> None:
    model, params = model_and_params(arch)
    forward = jax.jit(train.model_fn(model))
    scoring = jax.jit(lambda p, b: train.model_fn(model)(p, b, output_attention_scores=True))
    data = examples(arch)
    pad = CONFIGS[arch].pad_token_id
    packed = list(jd.batches(data, 8, pack=True, pack_length=16, pad_id=pad, shuffle=False))
    assert max(x["valid"].sum(1).max() for x in packed) >= 3  # rows hold several examples
    alone = list(jd.batches(data, 1, buckets=(16,), pad_id=pad, shuffle=False))  # padded to 16
    want = per_example(forward, params, alone, len(data["labels"]))
    got = per_example(forward, params, packed, len(data["labels"]))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    scored = per_example(scoring, params, packed, len(data["labels"]))
    np.testing.assert_allclose(scored, want, atol=1e-5, rtol=1e-5)  # the einsum path too
    leaky = [{k: v for k, v in x.items() if k != "segment_ids"} for x in packed]
    assert not np.allclose(
        per_example(forward, params, leaky, len(data["labels"])), want, atol=1e-3
    )


def packed_and_plain(pad_rows: int = 0) -> tuple[dict, dict]:
    """A packed batch of 16 examples and the same examples as one plain batch (plus
    ``pad_rows`` padding rows)."""
    data = examples("bert", 40)
    batch = next(iter(jd.batches(data, 16, pack=True, pack_length=24, seed=4)))
    ids = batch["index"][batch["valid"]]
    subset = {k: [v[i] for i in ids] for k, v in data.items()}
    (plain,) = jd.batches(subset, len(ids) + pad_rows, buckets=(16,), shuffle=False)
    assert len(ids) >= 8 and batch["input_ids"].shape[0] < len(ids)
    return batch, plain


def test_packed_loss_and_gradient_equal_the_unpacked_mean() -> None:
    model, params = model_and_params("bert")
    forward = train.model_fn(model)
    batch, plain = packed_and_plain()

    def loss(p, b):
        return train.task_loss(forward(p, b).logits, b, "classification")

    grad = jax.jit(jax.value_and_grad(loss))
    (l_packed, g_packed), (l_plain, g_plain) = (grad(params, b) for b in (batch, plain))
    assert np.isfinite(float(l_packed))
    np.testing.assert_allclose(l_packed, l_plain, rtol=1e-5)
    jax.tree.map(
        lambda a, c: np.testing.assert_allclose(a, c, atol=1e-6, rtol=1e-4), g_packed, g_plain
    )


def test_eval_statistics_agree_packed_and_unpacked() -> None:
    model, params = model_and_params("bert")
    stats = jax.jit(train.classification_stats(train.model_fn(model), NUM_LABELS))
    data = examples("bert", 50)

    def total(batches) -> dict:
        parts = [stats(params, b) for b in batches]
        return jax.tree.map(lambda *x: np.sum(x, 0), *parts)

    packed = total(jd.batches(data, 16, pack=True, pack_length=16, shuffle=False))
    plain = total(jd.batches(data, 16, buckets=(16,), shuffle=False))
    assert int(packed["count"]) == int(plain["count"]) == 50
    np.testing.assert_array_equal(packed["confusion"], plain["confusion"])
    np.testing.assert_allclose(packed["loss_sum"], plain["loss_sum"], rtol=1e-5)


def test_train_steps_on_packed_sst2(tmp_path) -> None:
    rng = np.random.default_rng(0)
    words = ["the", "a", "film", "movie", "good", "bad", "great", "dull", "fine", "is"]
    rows = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(96)]
    tsv = "sentence\tlabel\n" + "".join(f"{s}\t{int('good' in s)}\n" for s in rows)
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "train.tsv").write_text(tsv)
    vocab = {w: i + 2 for i, w in enumerate(words)}  # word-level: [CLS]=1 words [SEP]=49
    ds = jd.glue("sst2", "train", tmp_path)
    feats = {
        "input_ids": [[1, *(vocab[w] for w in s.split()), 49] for s in ds["sentence"]],
        "labels": ds["label"],
    }
    feats["attention_mask"] = [[1] * len(x) for x in feats["input_ids"]]
    batcher = jd.Batcher(feats, 16, pack=True, seed=0, drop_last=True)
    model = EncoderForTask(TINY_BERT, num_labels=2, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    forward = train.model_fn(model)
    tx = optax.adam(3e-3)
    step = jax.jit(train.train_step_fn(train.supervised_loss(forward, "classification"), tx))
    stats = jax.jit(train.classification_stats(forward, 2))
    state, _ = train.fit(
        run_dir=tmp_path / "run",
        config=train.LoopConfig(
            steps=2 * len(batcher), steps_per_epoch=len(batcher), log_every=1, progress=False
        ),
        state=train.init_state(params, tx),
        train_step=step,
        batches=lambda epoch, start: (b for i, b in enumerate(batcher(epoch)) if i >= start),
    )
    assert int(state.step) == 2 * len(batcher)
    before, after = (
        jax.tree.map(lambda *x: np.sum(x, 0), *(stats(p, b) for b in batcher(0)))
        for p in (params, state.params)
    )
    assert int(after["count"]) == int(before["count"]) > 80
    assert float(after["loss_sum"]) < float(before["loss_sum"])  # it learned something
    assert jnp.isfinite(after["loss_sum"])


def test_sdp_cross_correlation_packed_equals_unpacked() -> None:
    """SDP's Barlow Twins term reads each example's first token: packed rows (every segment's
    start) and padding rows (weight 0) give the loss and gradient of the plain batch."""
    model, params = model_and_params("bert")
    forward = train.model_fn(model)
    batch, plain = packed_and_plain()
    padded = packed_and_plain(pad_rows=3)[1]
    assert not padded["valid"][-3:].any()
    method = methods.get("sdp", sparsity=0.5, cc_weight=1.0, cc_off_diagonal=0.5)
    loss_fn = method.loss(forward, methods.Run(total_steps=10))
    teacher = method.initial_teacher(jax.tree.map(lambda x: 0.9 * x, params))

    def cc(p, b):
        return loss_fn(p, b, jax.random.key(0), teacher, jnp.int32(0))[1]["cross_correlation"]

    grad = jax.jit(jax.value_and_grad(cc))
    (l_packed, g_packed), (l_plain, g_plain), (l_padded, _) = (
        grad(params, b) for b in (batch, plain, padded)
    )
    assert float(l_plain) > 1.0  # the teacher differs: a loss worth comparing
    np.testing.assert_allclose([l_packed, l_padded], [l_plain, l_plain], rtol=1e-5)
    jax.tree.map(
        lambda a, c: np.testing.assert_allclose(a, c, atol=1e-4, rtol=1e-4), g_packed, g_plain
    )  # entries up to ~20: float32 sums in another order


def test_sparsebert_refuses_packed_rows_and_ignores_padding_rows() -> None:
    """Its MSE terms average over the positions of padded rows (as the authors' code): packed
    rows cannot give the same numbers, so they are refused; padding rows weigh 0."""
    model, params = model_and_params("bert")
    forward = train.model_fn(model)
    batch, plain = packed_and_plain()
    padded = packed_and_plain(pad_rows=3)[1]
    method = methods.get("sparsebert", sparsity=0.5)
    loss_fn = method.loss(forward, methods.Run(total_steps=10))
    teacher = method.initial_teacher(params, jax.tree.map(lambda x: 0.9 * x, params))

    def loss(b):
        return loss_fn(params, b, jax.random.key(0), teacher, jnp.int32(0))

    with pytest.raises(ValueError, match="pack=False"):
        loss(batch)
    (l_plain, parts), (l_padded, _) = loss(plain), loss(padded)
    assert float(parts["att"]) > 0 and float(parts["rep"]) > 0  # the teacher differs
    np.testing.assert_allclose(l_padded, l_plain, rtol=1e-5)
