"""The model families of issue 19 through the recipes: tiny DeBERTa-v3, ModernBERT, Llama and
Qwen2 checkpoints (2 layers, hidden 32) with the fixture tokenizers run every method for one
step, evaluate and export; a method a family cannot run is refused before loading.

By default one method per family runs (and the refusals); ``-m slow`` runs every method x
family."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from fixtures import tiny_job
from flax import nnx

from jaxprune import data, hf, methods, paths, recipes
from jaxprune.recipes import common, d2t
from jaxprune.recipes import labels as recipe_labels


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if a model or a data split is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"loaded {args} before refusing the job")

    monkeypatch.setattr(hf, "load_pretrained", refuse)
    monkeypatch.setattr(data, "load", refuse)


ENCODERS = ("deberta", "modernbert")
DECODERS = ("llama", "qwen2")
# every method of the registry, and dense fine-tuning
METHODS = ("dense", *methods.names())
# methods whose objective a causal LM cannot serve (common.FAMILIES' refusals)
DECODER_REFUSED = ("sparsebert", "sdp")


def _save(folder: pathlib.Path, config, tokenizer, head: str) -> pathlib.Path:
    model = hf.build(config, head=head, num_labels=2, dtype=np.float32, seed=0)
    hf.check_vocabulary(tokenizer, model, str(folder))
    hf.save_pretrained(
        model, nnx.to_pure_dict(nnx.state(model, nnx.Param)), folder, tokenizer=tokenizer
    )
    return folder


def tiny_deberta(folder: pathlib.Path, tokenizer) -> pathlib.Path:
    """DeBERTa-v3's layout (relative attention, shared keys, no absolute positions, no token
    types) at 2 layers, hidden 32, with MiniLM's WordPiece."""
    from transformers import DebertaV2Config

    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=128,
        type_vocab_size=0,
        relative_attention=True,
        max_relative_positions=-1,
        position_buckets=16,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pooler_hidden_size=32,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(folder, config, tokenizer, "base")


def tiny_modernbert(folder: pathlib.Path, tokenizer) -> pathlib.Path:
    """ModernBERT-base's layout (global every 3rd layer, local window, GeGLU, RoPE) at 2
    layers, hidden 32, with MiniLM's WordPiece."""
    from transformers import ModernBertConfig

    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        local_attention=8,
        global_attn_every_n_layers=2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        cls_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    return _save(folder, config, tokenizer, "base")


def tiny_decoder(folder: pathlib.Path, tokenizer, model_type: str) -> pathlib.Path:
    """A Llama (untied output matrix) or Qwen2 (q/k/v biases, tied) causal LM at 2 layers,
    hidden 32, grouped-query attention, with the fixture GPT-2 BPE."""
    from transformers import AutoConfig

    eos = tokenizer.eos_token_id
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=model_type == "qwen2",
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return _save(folder, config, tokenizer, "causal-lm")


@pytest.fixture(scope="module")
def families(world, tmp_path_factory) -> dict[str, pathlib.Path]:
    """Tiny checkpoints of every new family, each with its tokenizer saved beside it."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("families")
    wordpiece = AutoTokenizer.from_pretrained(world["bert"])
    bpe = AutoTokenizer.from_pretrained(world["gpt2"])
    return {
        "deberta": tiny_deberta(root / "deberta", wordpiece),
        "modernbert": tiny_modernbert(root / "modernbert", wordpiece),
        "llama": tiny_decoder(root / "llama", bpe, "llama"),
        "qwen2": tiny_decoder(root / "qwen2", bpe, "qwen2"),
    }


def _teacher(folder: pathlib.Path, task: str) -> pathlib.Path:
    """``folder``'s checkpoint with ``task``'s head (a dense teacher for KD methods)."""
    head = {"squad": "question-answering", "conll2003": "token-classification"}.get(
        task, "sequence-classification"
    )
    labels = {"conll2003": len(data.conll.NER), "stsb": 1}.get(task, 2)
    out = folder.parent / f"{folder.name}-{head}-{labels}"
    if not out.exists():
        model, params, tokenizer = hf.load_pretrained(folder, head=head, num_labels=labels)
        hf.save_pretrained(model, params, out, tokenizer=tokenizer)
    return out


def job_for(world, families, family: str, method: str, task: str):
    """A one-step run of ``method`` on ``family``'s tiny checkpoint and ``task``."""
    decoder = family in DECODERS
    job = tiny_job(
        world,
        model=str(families[family]),
        task=task,
        method=method,
        steps=1,
        doc_stride=8,
        max_new_tokens=4,
    )
    preset = methods.get("magnitude" if method == "dense" else method)
    if preset.teacher == "dense":
        teacher = _teacher(families[family], task)
        names = recipe_labels.dataset_labels(task)
        order = None if names is None else tuple(range(len(names)))
        job = dataclasses.replace(job, teacher=str(teacher), teacher_labels=order)
    if method in ("pins", "platon"):  # their criteria see 10 steps before pruning
        job = recipes.with_options(job, begin=10.0, end=20.0)
    assert decoder == (recipes.family(task) == "d2t")
    return job


ENCODER_TASKS = ("sst2", "stsb", "squad", "conll2003")
# (family, method, task): one method per family by default, the rest with -m slow
DEFAULT = [
    ("deberta", "movement", "sst2"),
    ("modernbert", "pins", "sst2"),
    ("llama", "smp", "e2e"),
]


def _all_runs():
    runs = []
    for method in METHODS:
        for i, family in enumerate(ENCODERS):
            runs.append((family, method, "sst2"))
            # a second task per family and method, in turn
            other = ENCODER_TASKS[1 + (METHODS.index(method) + i) % 3]
            if method == "sparsebert" and other in ("squad", "conll2003"):  # sequence-level
                other = "stsb"
            if method == "pins" and other == "stsb":  # its self-distillation needs classes,
                other = "conll2003"  # and pins_glue.py has no STS-B row either
            runs.append((family, method, other))
        for family in DECODERS:
            if method not in DECODER_REFUSED:
                runs.append((family, method, "e2e"))
    return [r for r in runs if r not in DEFAULT]


def _run(world, families, tmp_path, family, method, task):
    job = job_for(world, families, family, method, task)
    result = recipes.run(job, tmp_path / "run")
    assert result["steps"] == 1
    export = tmp_path / "run" / "export"
    assert (export / "config.json").exists() and (export / "model.safetensors").exists()
    primary = result["dev"]["primary"]
    assert result["dev"][primary] is not None
    # the export loads back as the same family, with its tokenizer
    from transformers import AutoConfig

    labels = AutoConfig.from_pretrained(export).num_labels
    loaded = hf.load_pretrained(export, head=_head(task), num_labels=labels)
    model_type = hf.hf_config(loaded.model).model_type
    assert common.family_of(loaded.model) == common.family_of_type(model_type)
    assert model_type == {"deberta": "deberta-v2"}.get(family, family)
    assert loaded.tokenizer is not None
    return result


def _head(task: str) -> str:
    return {
        "squad": "question-answering",
        "conll2003": "token-classification",
        "e2e": "causal-lm",
    }.get(task, "sequence-classification")


@pytest.mark.parametrize("family, method, task", DEFAULT, ids=["-".join(r) for r in DEFAULT])
def test_one_step_dry_run(world, families, tmp_path, family, method, task):
    _run(world, families, tmp_path, family, method, task)


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, method, task", _all_runs(), ids=["-".join(r) for r in _all_runs()]
)
def test_one_step_dry_run_every_method(world, families, tmp_path, family, method, task):
    _run(world, families, tmp_path, family, method, task)


# ------------------------------------------------------------------ families and presets


def test_every_buildable_model_has_a_recipe_family_and_decoding():
    for table in (hf.ENCODERS, hf.DECODERS):
        for model_type in table:
            family = common.family_of_type(model_type)
            assert family is not None, model_type
            assert family.decoder == (table is hf.DECODERS), model_type
    assert set(d2t.DECODING) == {d.model for d in hf.DECODERS.values()}


@pytest.mark.parametrize(
    "family, method, prunable",
    [
        ("deberta", "magnitude", paths.DEBERTA_KERNELS),
        ("deberta", "platon", paths.DEBERTA_KERNELS_AND_BIASES),
        ("modernbert", "movement", paths.MODERNBERT_KERNELS),
        ("modernbert", "pins", paths.MODERNBERT_KERNELS_AND_BIASES),
        ("llama", "taylor", paths.LLAMA_KERNELS),
        ("qwen2", "pins", paths.LLAMA_KERNELS_AND_BIASES),
    ],
)
def test_each_family_prunes_its_own_matrices(world, families, family, method, prunable):
    task = "e2e" if family in DECODERS else "sst2"
    job = job_for(world, families, family, method, task)
    model = common.load_model(job, job.model, head=_head(task)).model
    chosen = common.method_for(job, model)
    assert chosen.prunable == prunable
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    chosen_leaves = jax.tree.leaves(paths.select(params, chosen.prunable))
    selected = [p for p, keep in zip(paths.leaf_paths(params), chosen_leaves, strict=True) if keep]
    assert selected and all("embed" not in p for p in selected)
    layers = {"deberta": 6, "modernbert": 4}.get(family, 7) * 2  # matrices per layer x 2
    assert sum(p.endswith("kernel") for p in selected) == layers


def test_smp_trains_the_family_head(world, families):
    deberta = common.method_for(
        job_for(world, families, "deberta", "smp", "sst2"),
        family=common.FAMILIES[hf.ENCODERS["deberta-v2"].model],
    )
    assert deberta.head_params.startswith("^(pooler|")  # DeBERTa's ContextPooler is new
    llama = common.method_for(
        job_for(world, families, "llama", "smp", "e2e"),
        family=common.FAMILIES[hf.DECODERS["llama"].model],
    )
    assert llama.train_head is False  # the LM head is pre-trained


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize(
    "method, match",
    [
        ("sparsebert", "sparsebert's attention-score MSE needs the attention scores"),
        ("sdp", "first-token final state"),
    ],
)
def test_a_decoder_refuses_the_encoder_only_objectives(
    world, families, no_loading, family, method, match
):
    job = tiny_job(world, model=str(families[family]), task="e2e", method=method)
    if method == "sparsebert":
        job = dataclasses.replace(job, teacher=str(families[family]))
    with pytest.raises(ValueError, match=rf"method='{method}' cannot prune a Llama-family.*"):
        recipes.validate(job)
    with pytest.raises(ValueError, match=match):
        recipes.validate(job)


@pytest.mark.parametrize(
    "family, task, match",
    [
        ("llama", "sst2", "is a llama checkpoint; task sst2 needs an encoder"),
        ("qwen2", "conll2003", "is a qwen2 checkpoint; task conll2003 needs an encoder"),
        ("deberta", "e2e", "is a deberta-v2 checkpoint; task e2e needs GPT-2 or another causal"),
        ("modernbert", "dart", "is a modernbert checkpoint; task dart needs GPT-2 or another"),
    ],
)
def test_a_family_on_the_wrong_kind_of_task_is_refused(
    world, families, no_loading, family, task, match
):
    with pytest.raises(ValueError, match=match):
        recipes.validate(tiny_job(world, model=str(families[family]), task=task))


def test_a_teacher_of_another_family_is_refused(world, families, no_loading):
    job = tiny_job(
        world,
        model=str(families["deberta"]),
        method="sparsebert",
        teacher=str(world["bert"]),
        teacher_labels=(0, 1),
    )
    with pytest.raises(ValueError, match=r"teacher=.* is a bert model and the student a deberta"):
        recipes.validate(job)


def test_an_unbuildable_model_type_is_refused(world, tmp_path, no_loading):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match="is a t5 checkpoint, which jaxprune does not build"):
        recipes.validate(tiny_job(world, model=str(folder)))


@pytest.mark.parametrize(
    "name, task, match",
    [
        ("meta-llama/Llama-3.2-1B", "sst2", "is a llama architecture; task sst2 needs an enc"),
        ("microsoft/deberta-v3-base", "e2e", "is a deberta-v2 architecture; task e2e needs GPT"),
    ],
)
def test_published_architectures_of_the_wrong_kind_are_refused(
    world, no_loading, name, task, match
):
    job = tiny_job(world, model=name, task=task, random_init=True, tokenizer=str(world["bert"]))
    with pytest.raises(ValueError, match=match):
        recipes.validate(job)


# ------------------------------------------------------------------------------ tokenizers


def test_decoder_prompts_lead_with_bos_where_the_tokenizer_adds_one(world):
    """A Llama-style tokenizer (bos added in front) gets its bos before every prompt; a
    Qwen2-style one (no bos) separates input and target with its eos."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    rows = data.load("e2e", "validation", world["data"]).select(range(3))
    plain = AutoTokenizer.from_pretrained(world["gpt2"])
    eos = plain.eos_token_id
    assert all(p[0] != eos for p in data.encode_d2t(rows, plain, "e2e", train=False)["input_ids"])

    llama_like = AutoTokenizer.from_pretrained(world["gpt2"])
    llama_like.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eos)]
    )
    encoded = data.encode_d2t(rows, llama_like, "e2e", train=False)["input_ids"]
    assert all(p[0] == eos for p in encoded)

    qwen_like = AutoTokenizer.from_pretrained(world["gpt2"])
    qwen_like.bos_token = None
    train = data.encode_d2t(rows, qwen_like, "e2e")
    assert all(eos in ids[:-1] for ids in train["input_ids"])  # the separator


def test_a_family_tokenizer_larger_than_its_embedding_is_refused(world, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig

    small = hf.build(
        LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2),
        head="causal-lm",
    )  # fmt: skip
    words = AutoTokenizer.from_pretrained(world["bert"])
    with pytest.raises(ValueError, match="ids past 49 would read the wrong embedding"):
        hf.check_vocabulary(words, small, "minilm")
