"""Paper scale without a pod: published architectures, random-init runs, and ``jaxprune plan``
(programs grouped, batches shaped like the recipes', state sized exactly, meshes of
simulated devices in a subprocess)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from fixtures import tiny_job
from flax import nnx

from jaxprune import accelerators, architectures, hf, plan, plan_report, recipes
from jaxprune.recipes import common
from jaxprune.recipes.job import DEFAULTS, Job
from jaxprune.train.loop import RunConfigError, check_resumable

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ architectures


@pytest.mark.parametrize(
    "name, body",  # published parameter counts of the base models (no task head)
    [("bert-base-uncased", 109_482_240), ("bert-large-uncased", 335_141_888),
     ("gpt2", 124_439_808), ("gpt2-medium", 354_823_168),
     # keras-hub's deberta_v3_base_en (its 128k-token embedding is 98.4M of it) and
     # modernbert_base_en backbones; Llama-3.2-1B with its tied output matrix
     # (sources in jaxprune/architectures.py)
     ("microsoft/deberta-v3-base", 183_831_552), ("answerdotai/ModernBERT-base", 149_014_272),
     ("meta-llama/Llama-3.2-1B", 1_235_814_400)],
)  # fmt: skip
def test_published_architectures_have_the_published_sizes(name, body):
    config = architectures.config(name)
    if config.model_type in hf.DECODERS:
        head = "causal-lm"
    elif config.model_type in ("deberta-v2", "modernbert"):  # published without a pooler
        head = "base"
    else:
        head = "sequence-classification"
    model = nnx.eval_shape(lambda: hf.build(config, head=head))
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    classifier = model.cfg.hidden_size * 2 + 2 if head == "sequence-classification" else 0
    assert total - classifier == body


def test_fine_tuned_ids_map_to_their_base_and_unknown_names_are_refused():
    assert architectures.base_architecture("textattack/bert-base-uncased-MNLI") == (
        "bert-base-uncased"
    )
    with pytest.raises(KeyError, match="no published architecture"):
        architectures.config("someone/bert-tiny")


# ------------------------------------------------------------------ random init


def test_random_init_builds_the_architecture_without_reading_weights(world):
    loaded = hf.load_pretrained(world["bert"])
    fresh = hf.random_pretrained(world["bert"], seed=3, tokenizer=world["bert"])
    a, b = jax.tree.leaves(loaded.params), jax.tree.leaves(fresh.params)
    assert [x.shape for x in a] == [x.shape for x in b]
    kernel = next(i for i, x in enumerate(a) if x.ndim == 2 and x.shape[0] == x.shape[1])
    assert not np.allclose(a[kernel], b[kernel])
    assert fresh.tokenizer is not None


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(world, tmp_path):
    from transformers import BertConfig

    small = hf.build(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=48))  # fmt: skip
    hf.save_pretrained(small, nnx.to_pure_dict(nnx.state(small, nnx.Param)), tmp_path / "m")
    with pytest.raises(ValueError, match="30522 tokens but the model's embedding table 50"):
        hf.load_pretrained(tmp_path / "m", tokenizer="minilm")
    with pytest.raises(ValueError, match="ids past 49"):
        hf.random_pretrained(tmp_path / "m", tokenizer="minilm")


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(model="someone/bert-tiny"), ValueError, "random_init needs its architecture"),
        (dict(model="gpt2"), ValueError, "'gpt2' is a gpt2 architecture; task sst2 needs"),
        (dict(tokenizer="/no/such/folder"), FileNotFoundError, "tokenizer='/no/such/folder'"),
    ],
)
def test_random_init_misuse_is_refused_before_loading(world, changes, error, match):
    with pytest.raises(error, match=match):
        recipes.validate(tiny_job(world, random_init=True, **changes))


def test_a_missing_checkpoint_is_an_error_without_random_init(world):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        recipes.validate(tiny_job(world, model="/no/such/bert"))


def test_a_random_init_run_trains_from_random_weights(world, tmp_path):
    # seed 1: the fixture checkpoint is itself hf.build's seed-0 initialisation
    job = tiny_job(world, random_init=True, steps=2, sparsity=0.0, method="dense", seed=1)
    result = recipes.run(job, tmp_path / "run")
    exported = jax.tree.leaves(hf.load_pretrained(result["export"]).params)
    loaded = jax.tree.leaves(hf.load_pretrained(world["bert"]).params)
    kernels = [i for i, x in enumerate(loaded) if x.ndim == 2 and x.shape[0] == x.shape[1]]
    # two steps at lr 5e-5 move a weight by ~1e-4: far from the checkpoint means random
    for i in kernels:
        assert np.abs(np.asarray(exported[i]) - np.asarray(loaded[i])).max() > 0.01


def test_run_folders_older_than_a_job_field_resume_at_its_default(tmp_path):
    (tmp_path / "checkpoints" / "latest" / "3").mkdir(parents=True)
    saved = {k: v for k, v in Job().as_dict().items() if k not in ("random_init", "tokenizer")}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_resumable(tmp_path, Job().as_dict(), defaults=DEFAULTS)
    with pytest.raises(RunConfigError, match="random_init: False -> True"):
        check_resumable(tmp_path, Job(random_init=True).as_dict(), defaults=DEFAULTS)


# ------------------------------------------------------------------ plan


def test_program_key_groups_only_what_compiles_to_one_program():
    base = Job(model="bert-base-uncased", task="rte", method="pins", steps=100)
    base = recipes.with_options(base, criterion_args=(("beta1", 0.85), ("window", 10)))
    same = [
        dataclasses.replace(base, sparsity=0.5, learning_rate=1e-4, seed=3, label="x"),
        recipes.with_options(
            base, begin=10, end=50, criterion_args=(("beta1", 0.9), ("window", 20))
        ),
        dataclasses.replace(base, task="mrpc"),  # another 2-label GLUE task
    ]
    other = [
        dataclasses.replace(base, method="platon"),
        dataclasses.replace(base, batch_size=16),
        dataclasses.replace(base, task="mnli"),  # 3 labels
        dataclasses.replace(base, teacher="textattack/bert-base-uncased-RTE"),
        recipes.with_options(base, objective="kd"),
    ]
    assert all(plan.program_key(j) == plan.program_key(base) for j in same)
    assert len({plan.program_key(j) for j in [base, *other]}) == 1 + len(other)
    assert plan.slope_key(base) == plan.slope_key(dataclasses.replace(base, batch_size=16))


def test_a_variant_whose_teacher_is_not_made_yet_is_listed_not_fatal(tmp_path):
    base = Job(model="bert-base-uncased", task="rte", method="sparsebert", steps=100)
    variants = {
        "ok": dataclasses.replace(base, teacher="textattack/bert-base-uncased-RTE"),
        "later": dataclasses.replace(base, teacher=str(tmp_path / "runs/rte-dense/export")),
    }
    found, unplannable = plan_report.programs("cfg", variants)
    assert [p.variants for p in found] == [("ok",)]
    assert len(unplannable) == 1
    assert unplannable[0].startswith("cfg later: ") and "rte-dense/export" in unplannable[0]


@pytest.mark.parametrize("task", ["sst2", "stsb", "squad", "conll2003", "e2e"])
def test_planned_batches_are_shaped_like_the_recipes_batches(world, task):
    job = tiny_job(world, task=task, doc_stride=8)
    if task == "e2e":
        job = dataclasses.replace(job, model=str(world["gpt2"]))
    prepared = recipes.prepare(job)
    assert prepared.train_batches is not None
    real = common.model_inputs(next(iter(prepared.train_batches(0))))
    planned = plan.batch_shapes(job, prepared.model, job.batch_size)
    assert sorted(planned) == sorted(real)
    for name, spec in planned.items():
        assert (spec.dtype, spec.ndim, spec.shape[0]) == (
            real[name].dtype, real[name].ndim, real[name].shape[0]
        ), name  # fmt: skip
        assert spec.shape[1:] in ((), (job.max_length,)) and real[name].shape[1:] <= spec.shape[1:]


def test_plan_sizes_the_state_exactly_on_one_device(world):
    job = tiny_job(world, method="pins", steps=40, method_options=(("begin", 10),))
    result = plan.plan(job, plan.Layout(1, 1, False), slope=False)
    _, params = plan.abstract_model(job.model, job.task)
    floats = sum(math.prod(p.shape) for p in jax.tree.leaves(params)) * 4
    assert result.state["params"] == floats
    assert result.state["adam"] == 2 * floats  # mu and nu
    prunable = result.state["masks"]  # one bool byte per prunable entry
    assert 0 < prunable < floats / 4
    assert result.state["criterion"] >= 3 * 4 * prunable  # window mean, EMA, uncertainty
    assert result.teacher >= floats  # PINS's self-teacher: a copy of the params
    assert result.train.peak >= result.train.argument > sum(result.state.values())
    assert result.train.flops > 0 and result.eval.flops > 0
    tuning = plan.plan(plan.fine_tuning(job), plan.Layout(1, 1, False), slope=False)
    assert tuning.state["masks"] == tuning.state["criterion"] == tuning.teacher == 0
    assert tuning.train.peak < result.train.peak


@pytest.mark.slow  # 53 s: two plans of a tiny model, normal and -O0
def test_fast_codegen_and_the_slope_alone_give_the_same_figures(world):
    job = tiny_job(world, method="pins", steps=40, method_options=(("begin", 10),))
    layout = plan.Layout(1, 1, False)
    full = plan.plan(job, layout)
    fast = plan.plan(job, layout, fast_codegen=True)
    assert (full.train.codegen, fast.train.codegen) == ("full", "fast")
    same = ("argument", "output", "alias", "temp", "flops", "bytes_accessed")
    pairs = [(full.train, fast.train), (full.eval, fast.eval)]
    for a, b in [*pairs, *zip(full.slope, fast.slope, strict=True)]:
        assert [getattr(a, f) for f in same] == [getattr(b, f) for f in same]
    alone = plan.slope_executables(job, layout)
    for a, b in zip(full.slope, alone, strict=True):
        assert [getattr(a, f) for f in same] == [getattr(b, f) for f in same]


def test_accelerator_projection_is_a_roofline():
    chip = accelerators.ACCELERATORS["tpu-v5e"]
    assert accelerators.step_seconds(197e12, 0, chip, 1.0) == pytest.approx(1.0)
    assert accelerators.step_seconds(0, 819e9, chip, 0.5) == pytest.approx(2.0)
    assert accelerators.largest_batch(0.9 * chip.hbm_bytes - 10, 5, chip) == 2
    assert accelerators.largest_batch(chip.hbm_bytes, 5, chip) == 0
    with pytest.raises(ValueError, match="utilization"):
        accelerators.step_seconds(1, 1, chip, 0)


@pytest.mark.slow
def test_plan_cli_on_simulated_meshes(world, tmp_path):
    """Two variants that differ only in sparsity share a row; dp, FSDP and ZeRO-style state
    sharding on 2 and 4 devices; FSDP holds a quarter of the params per device on 4, the
    zero layout all the params and a quarter of their state; a rerun compiles nothing."""
    config = tmp_path / "tiny.py"
    config.write_text(
        "from jaxprune.recipes.job import Job\n"
        f"_J = dict(model={str(world['bert'])!r}, task='sst2', method='magnitude', steps=20,"
        " batch_size=8, max_length=32, eval_batch_size=8)\n"
        "VARIANTS = {'a-50': Job(**_J, sparsity=0.5), 'a-90': Job(**_J, sparsity=0.9),"
        " 'pins': Job(**{**_J, 'method': 'pins'}, sparsity=0.5)}\n"
    )
    out = tmp_path / "scale"
    command = [sys.executable, "-m", "jaxprune.cli", "plan", "--config", str(config),
               "--devices", "2", "4", "--layout", "dp", "fsdp", "zero",
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "plan.json").read_text())
    assert len(rows) == 2 * 6  # two programs x six layouts
    by = {(r["method"], r["layout"]): r for r in rows}
    assert by[("magnitude", "dp2")]["variants"] == ["a-50", "a-90"]
    dp, fsdp = by[("magnitude", "dp4")], by[("magnitude", "fsdp4")]
    assert fsdp["state_gib"]["params"] < 0.3 * dp["state_gib"]["params"]
    dp, zero = by[("pins", "dp4")], by[("pins", "zero4")]
    assert zero["state_gib"]["params"] == dp["state_gib"]["params"]
    for kind in ("adam", "masks", "criterion"):
        assert zero["state_gib"][kind] < 0.3 * dp["state_gib"][kind], kind
    assert 0 < zero["teacher_gib"] < 0.3 * dp["teacher_gib"]
    assert by[("pins", "dp2")]["vs_fine_tuning"] > by[("magnitude", "dp2")]["vs_fine_tuning"] > 1
    assert by[("pins", "dp2")]["largest_batch"]["tpu-v5e"] > 1000  # a tiny model, 16 GiB
    assert by[("pins", "dp4")]["largest_batch"]["tpu-v5e"] is None  # slope on dp2 only
    assert "## Goals" in (out / "plan.md").read_text()
    lines = (out / "plan.jsonl").read_text().count("\n")
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (out / "plan.jsonl").read_text().count("\n") == lines
