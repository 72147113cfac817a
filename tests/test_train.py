"""Engine pieces on one device: accumulation, non-finite handling, eval statistics,
checkpoint errors and the best checkpoint."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny import TINY_BERT

import jaxprune
from jaxprune import metrics, train
from jaxprune.models import EncoderConfig, EncoderForTask
from jaxprune.train import mask_history

CFG = TINY_BERT


def tiny(seed=0):
    model = EncoderForTask(CFG, task="sequence-classification", num_labels=3, rngs=nnx.Rngs(seed))
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (n, 10)).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "labels": (ids[:, 0] % 3).astype(np.int32),
    }


def test_gradient_accumulation_equals_one_big_batch():
    model, params = tiny()
    loss = train.supervised_loss(train.model_fn(model), "classification")
    tx = optax.sgd(0.1)
    full = jax.jit(train.train_step_fn(loss, tx))
    accum = jax.jit(train.train_step_fn(loss, tx, grad_accum=4))
    state = train.init_state(params, tx)
    a, ma = full(state, batch(), None)
    b, mb = accum(state, batch(), None)
    assert float(ma["loss"]) == pytest.approx(float(mb["loss"]), rel=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a.params, b.params)


def test_nonfinite_skip_keeps_state_and_stop_reports():
    model, params = tiny()
    forward = train.model_fn(model)

    def exploding(params, batch, rng, teacher, step):
        return forward(params, batch).logits.sum() * jnp.nan, {}

    tx = optax.adam(1e-3)
    state = train.init_state(params, tx)
    skipped, m = jax.jit(train.train_step_fn(exploding, tx, on_nonfinite="skip"))(
        state, batch(), None
    )
    assert not bool(m["finite"]) and int(skipped.step) == 1
    jax.tree.map(np.testing.assert_array_equal, skipped.params, state.params)
    _, m = jax.jit(train.train_step_fn(exploding, tx, on_nonfinite="stop"))(state, batch(), None)
    assert not bool(m["finite"])


def test_eval_statistics_sum_to_exact_metrics():
    model, params = tiny()
    stats = jax.jit(train.classification_stats(train.model_fn(model), 3))
    total, preds, gold = None, [], []
    for seed in range(3):
        b = batch(8, seed)
        b["weights"] = np.asarray([1] * 6 + [0] * 2 if seed == 2 else [1] * 8, np.int32)
        s = stats(params, b)
        total = s if total is None else jax.tree.map(jnp.add, total, s)
        logits = train.model_fn(model)(params, b).logits
        keep = b["weights"] == 1
        preds.append(np.asarray(jnp.argmax(logits, -1))[keep])
        gold.append(b["labels"][keep])
    exact = metrics.glue("mnli", np.concatenate(preds), np.concatenate(gold))
    assert metrics.from_confusion("mnli", np.asarray(total["confusion"])) == exact
    assert int(total["count"]) == 22


def test_checkpoint_errors_are_clear(tmp_path):
    _, params = tiny()
    tx = optax.adam(1e-3)
    state = train.init_state(params, tx)
    ckpt = train.Checkpointer(tmp_path / "ck", every=1)
    ckpt.save(1, {"train": state}, {"step": 1}, force=True)
    ckpt.wait()
    restored, position = ckpt.restore({"train": state})
    assert position == {"step": 1}
    jax.tree.map(np.testing.assert_array_equal, restored["train"].params, state.params)

    other = EncoderConfig(**{**CFG.__dict__, "hidden_size": 16, "intermediate_size": 24})
    small = EncoderForTask(other, task="sequence-classification", num_labels=3, rngs=nnx.Rngs(0))
    small_state = train.init_state(nnx.to_pure_dict(nnx.state(small, nnx.Param)), tx)
    with pytest.raises(train.CheckpointError, match="different model or optimizer"):
        ckpt.restore({"train": small_state})

    for f in (tmp_path / "ck" / "latest" / "1").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "ocdbt" not in f.name:
            f.write_bytes(b"\0garbage")
    with pytest.raises(train.CheckpointError, match="corrupted"):
        ckpt.restore({"train": state})
    ckpt.close()
    with pytest.raises(train.CheckpointError, match="no checkpoint"):
        train.Checkpointer(tmp_path / "empty", every=1).restore({"train": state})


def test_best_checkpoint_keeps_the_best_dev_score(tmp_path):
    _, params = tiny()
    state = train.init_state(params, optax.sgd(0.1))
    ckpt = train.Checkpointer(tmp_path / "ck", every=100, best_metric="accuracy")
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.7)]:
        ckpt.save_best(
            step, {"train": state._replace(step=jnp.int32(step))}, {"step": step}, {"accuracy": acc}
        )
    ckpt.wait()
    restored, position = ckpt.restore({"train": state}, best=True)
    assert position == {"step": 2} and int(restored["train"].step) == 2
    ckpt.close()


def test_fit_writes_the_run_directory(tmp_path):
    model, params = tiny()
    forward = train.model_fn(model)
    tx = jaxprune.masked_optimizer(
        optax.adam(1e-3),
        criterion=jaxprune.criteria.magnitude(),
        schedule=0.5,
        prunable=jaxprune.paths.BERT_ENCODER_KERNELS,
        update_every=2,
    )
    step = jax.jit(train.train_step_fn(train.supervised_loss(forward, "classification"), tx))
    stats = jax.jit(train.classification_stats(forward, 3))

    def evaluate(p):
        return metrics.from_confusion("mnli", np.asarray(stats(p, batch(16, 99))["confusion"]))

    state, _ = train.fit(
        run_dir=tmp_path / "run",
        config=train.LoopConfig(
            steps=6,
            steps_per_epoch=3,
            log_every=2,
            eval_every=3,
            checkpoint_every=3,
            best_metric="accuracy",
            progress=False,
            masks_every=2,
        ),
        state=train.init_state(params, tx),
        train_step=step,
        batches=lambda epoch, start: (batch(8, 10 * epoch + i) for i in range(start, 3)),
        evaluate=evaluate,
        resolved_config={"note": "test"},
    )
    run = tmp_path / "run"
    assert int(state.step) == 6
    history = mask_history.load(run)
    assert sorted(history) == [2, 4, 6]
    final = jaxprune.masks_of(state.opt_state)
    named = dict(zip(jaxprune.paths.leaf_paths(final), jax.tree.leaves(final), strict=True))
    assert history[6].keys() == named.keys()
    for k, m in history[6].items():
        np.testing.assert_array_equal(m, np.asarray(named[k]))
    assert mask_history.difference(history[6], history[6]) == 0.0
    kept = sum(int(m.sum()) for m in history[2].values())
    assert kept == sum(m.size for m in history[2].values()) // 2  # sparsity 0.5 from step 0
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "tensorboard",
        "checkpoints",
        "sparsity_report.txt",
        "dev_metrics.json",
        "log.txt",
        "masks",
    } <= names
    assert "50.00%" in (run / "sparsity_report.txt").read_text()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any('"scope": "dev"' in line for line in lines)
    assert any('"sparsity": 0.5' in line for line in lines)


def test_mask_history_reads_back_and_refuses_what_does_not_match(tmp_path):
    a = {"enc": {"kernel": np.arange(12).reshape(3, 4) % 3 == 0, "bias": None}}
    b = {"enc": {"kernel": np.arange(12).reshape(3, 4) % 3 == 1, "bias": None}}
    mask_history.save(tmp_path, 5, a)
    mask_history.save(tmp_path, 10, b)
    history = mask_history.load(tmp_path)
    assert sorted(history) == [5, 10]
    np.testing.assert_array_equal(history[5]["enc/kernel"], a["enc"]["kernel"])
    assert mask_history.difference(history[5], history[10]) == 8 / 12
    with pytest.raises(ValueError, match="differ in leaves or shapes"):
        mask_history.difference(history[5], {"enc/kernel": np.ones((4, 3), bool)})
    with pytest.raises(FileNotFoundError, match="masks_every"):
        mask_history.load(tmp_path / "elsewhere")


def test_global_topk_does_not_gather_sharded_scores():
    code = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        from jaxprune import masks, train
        mesh = train.make_mesh(4, 2)
        sh = NamedSharding(mesh, P("data", "model"))
        scores = [jax.device_put(jnp.arange(64 * 32, dtype=jnp.float32).reshape(64, 32) % 97, sh)
                  for _ in range(3)]
        f = jax.jit(lambda s: masks.topk(s, 0.9), out_shardings=[sh] * 3)
        hlo = f.lower(scores).compile().as_text()
        out = f(scores)
        print("ALLGATHER" if "all-gather" in hlo else "NOGATHER", sum(int(m.sum()) for m in out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["NOGATHER", str(round(0.1 * 3 * 64 * 32))]


def test_fit_stops_at_a_refused_mask_update(tmp_path):
    """A schedule that leaves [0, 1) at step 2: the loop raises there, naming it."""
    model, params = tiny()
    forward = train.model_fn(model)
    tx = jaxprune.masked_optimizer(
        optax.adam(1e-3),
        criterion=jaxprune.criteria.magnitude(),
        schedule=lambda step: jnp.where(step >= 2, 1.5, 0.25),
        prunable=jaxprune.paths.BERT_ENCODER_KERNELS,
        update_every=1,
    )
    step = jax.jit(train.train_step_fn(train.supervised_loss(forward, "classification"), tx))
    seen = []

    def counted(state, batch, teacher):
        seen.append(int(state.step))
        return step(state, batch, teacher)

    with pytest.raises(jaxprune.failure.PruningError, match=r"at step 2 .*sparsity 1.5"):
        train.fit(
            run_dir=tmp_path / "run",
            config=train.LoopConfig(steps=6, steps_per_epoch=6, progress=False),
            state=train.init_state(params, tx),
            train_step=counted,
            batches=lambda epoch, start: (batch(8, i) for i in range(start, 6)),
        )
    assert seen == [0, 1, 2]
