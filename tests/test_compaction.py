"""Compaction (jaxprune.compact): smaller models with the outputs of the masked dense ones."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from tiny import TINY_BERT

from jaxprune import compact, hf, masks, paths, structured
from jaxprune.models import EncoderConfig, EncoderForTask

ATOL = 1e-5
H, D, HID, FFN = (
    TINY_BERT.num_attention_heads,
    TINY_BERT.head_dim,
    TINY_BERT.hidden_size,
    TINY_BERT.intermediate_size,
)


def noisy_model(arch: str = "bert", task: str = "sequence-classification", seed: int = 0):
    """A tiny model and params redrawn at scale 0.2 (biases too), so that a misplaced
    bias fold or slice cannot hide behind zero biases."""
    cfg = dataclasses.replace(
        TINY_BERT, arch=arch, type_vocab_size=0 if arch == "distilbert" else 2
    )
    model = EncoderForTask(cfg, task=task, num_labels=3, rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.key(seed), len(flat))
    leaves = [
        (1.0 if paths.path_str(p).endswith("scale") else 0.0) + 0.2 * jax.random.normal(k, v.shape)
        for (p, v), k in zip(flat, keys, strict=True)
    ]
    return model, jax.tree_util.tree_unflatten(treedef, leaves)


def run(model, params, **kw):
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    ids = jax.random.randint(jax.random.key(7), (3, 10), 3, TINY_BERT.vocab_size)
    attention_mask = jnp.ones((3, 10), jnp.int32).at[1, 6:].set(0)
    return nnx.merge(graphdef, state)(ids, attention_mask, **kw)


def assert_same_outputs(model, params, small, small_params):
    ref = run(model, params, output_hidden_states=True)
    out = run(small, small_params, output_hidden_states=True)
    np.testing.assert_allclose(out.logits, ref.logits, atol=ATOL, rtol=0)
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


def layer_of(params, i, arch="bert"):
    return params[arch]["transformer" if arch == "distilbert" else "encoder"]["layer"][i]


def n_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_structured_pruning_then_compaction_keeps_outputs(arch):
    model, params = noisy_model(arch)
    selected = paths.select(params, paths.BERT_ENCODER_KERNELS)
    scores = jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)
    m = structured.structure_masks(scores, D, head_sparsity=0.5, neuron_sparsity=0.5)
    pruned = masks.apply(params, m)
    small, small_params, kept = compact.compact(model, pruned)
    assert sum(len(k) for k in kept.heads) == H  # half of 2 x H
    assert sum(len(k) for k in kept.neurons) == FFN
    cfg = small.cfg
    assert [cfg.heads_of(i) for i in (0, 1)] == [len(k) for k in kept.heads]
    assert [cfg.intermediate_of(i) for i in (0, 1)] == [len(k) for k in kept.neurons]
    assert n_params(small_params) < n_params(params)
    assert_same_outputs(model, pruned, small, small_params)
    # nothing more to remove: compaction is idempotent
    again, again_params, _ = compact.compact(small, small_params)
    assert again.cfg == small.cfg
    assert_same_outputs(model, pruned, again, again_params)


def test_zero_values_or_inputs_are_folded_into_biases():
    model, params = noisy_model()
    layer = layer_of(params, 0)
    value = layer["attention"]["self"]["value"]
    value["kernel"] = value["kernel"].at[:, D : 2 * D].set(0)  # head 1: values only; bias stays
    query = layer["attention"]["self"]["query"]
    query["kernel"] = query["kernel"].at[:, 2 * D : 3 * D].set(0)  # head 2: uniform attention
    key = layer["attention"]["self"]["key"]
    key["kernel"] = key["kernel"].at[:, 2 * D : 3 * D].set(0)
    ffn_in = layer["intermediate"]["dense"]
    ffn_in["kernel"] = ffn_in["kernel"].at[:, 5].set(0)  # neuron 5: constant GELU(b_5)
    small, small_params, kept = compact.compact(model, params)
    np.testing.assert_array_equal(kept.heads[0], [0, 2, 3])  # q=k=0 does not remove a head
    np.testing.assert_array_equal(kept.heads[1], np.arange(H))
    assert 5 not in kept.neurons[0] and len(kept.neurons[0]) == FFN - 1
    assert small.cfg.layer_heads == (3, 4)
    assert small.cfg.layer_intermediate == (FFN - 1, FFN)
    # a fold that is not zero: the bias moved
    bias = layer_of(small_params, 0)["attention"]["output"]["dense"]["bias"]
    assert np.abs(bias - layer["attention"]["output"]["dense"]["bias"]).max() > 1e-3
    assert_same_outputs(model, params, small, small_params)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_layer_without_heads_or_neurons(arch):
    model, params = noisy_model(arch)
    layer = layer_of(params, 1, arch)
    if arch == "bert":
        out, ffn_out = layer["attention"]["output"]["dense"], layer["output"]["dense"]
    else:
        out, ffn_out = layer["attention"]["out_lin"], layer["ffn"]["lin2"]
    out["kernel"] = jnp.zeros_like(out["kernel"])
    ffn_out["kernel"] = jnp.zeros_like(ffn_out["kernel"])
    small, small_params, _ = compact.compact(model, params)
    assert small.cfg.layer_heads == (H, 0)
    assert small.cfg.layer_intermediate == (FFN, 0)
    assert_same_outputs(model, params, small, small_params)
    scores = run(small, small_params, output_attention_scores=True).attention_scores
    assert scores[0].shape == (3, H, 10, 10) and scores[1].shape == (3, 0, 10, 10)


def test_save_and_load_round_trip(tmp_path):
    model, params = noisy_model()
    ffn_out = layer_of(params, 0)["output"]["dense"]
    ffn_out["kernel"] = ffn_out["kernel"].at[:10].set(0)
    w_o = layer_of(params, 1)["attention"]["output"]["dense"]
    w_o["kernel"] = w_o["kernel"].at[:D].set(0)
    small, small_params, _ = compact.compact(model, params)
    report = compact.save(small, small_params, tmp_path / "c")
    assert report.values_dtype is None
    loaded, loaded_params, tokenizer = compact.load(tmp_path / "c")
    assert tokenizer is None
    assert loaded.cfg == small.cfg and loaded.task == small.task
    for a, b in zip(jax.tree.leaves(small_params), jax.tree.leaves(loaded_params), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    np.testing.assert_array_equal(
        run(loaded, loaded_params).logits, run(small, small_params).logits
    )
    with pytest.raises(FileNotFoundError, match=r"jaxprune_config\.json"):
        compact.load(tmp_path)


def hf_tiny(arch_config, num_labels: int = 3):
    """A jaxprune model built from a transformers config (so it can be exported)."""
    model = hf.build(
        arch_config,
        head="sequence-classification",
        num_labels=num_labels,
        dtype=jnp.float32,
        seed=0,
    )
    _, params = noisy_model()
    return model, params


def test_ffn_only_compaction_exports_to_transformers(tmp_path):
    config = transformers.BertConfig(
        vocab_size=TINY_BERT.vocab_size,
        hidden_size=HID,
        num_hidden_layers=2,
        num_attention_heads=H,
        intermediate_size=FFN,
        max_position_embeddings=TINY_BERT.max_position_embeddings,
    )
    model, params = hf_tiny(config)
    ffn_out = layer_of(params, 0)["output"]["dense"]
    ffn_out["kernel"] = ffn_out["kernel"].at[:20].set(0)  # layer 0 keeps 28, layer 1 all 48
    ffn_in = layer_of(params, 1)["intermediate"]["dense"]
    ffn_in["kernel"] = ffn_in["kernel"].at[:, :6].set(0)  # folded: layer 1 keeps 42
    small, small_params, _ = compact.compact(model, params)
    assert small.cfg.layer_intermediate == (FFN - 20, FFN - 6)
    with pytest.raises(ValueError, match="per-layer"):
        hf.save_pretrained(small, small_params, tmp_path / "plain")
    folder = compact.to_hf(small, small_params, tmp_path / "hf")
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    assert torch_model.config.intermediate_size == FFN - 6  # padded to the widest layer
    ids = jax.random.randint(jax.random.key(7), (3, 10), 3, TINY_BERT.vocab_size)
    attention_mask = jnp.ones((3, 10), jnp.int32).at[1, 6:].set(0)
    with torch.no_grad():
        ref = torch_model.eval()(
            input_ids=torch.tensor(np.asarray(ids)),
            attention_mask=torch.tensor(np.asarray(attention_mask)),
        ).logits.numpy()
    np.testing.assert_allclose(run(model, params).logits, ref, atol=ATOL, rtol=0)

    # uniform widths need no padding: the compacted model saves with hf.save_pretrained
    layer_of(params, 1)["output"]["dense"]["kernel"] = (
        layer_of(params, 1)["output"]["dense"]["kernel"].at[-14:].set(0)
    )
    uniform, uniform_params, _ = compact.compact(model, params)
    assert uniform.cfg.layer_intermediate is None and uniform.cfg.intermediate_size == FFN - 20
    hf.save_pretrained(uniform, uniform_params, tmp_path / "uniform")


def test_removed_heads_cannot_go_to_transformers(tmp_path):
    model, params = hf_tiny(
        transformers.BertConfig(
            vocab_size=TINY_BERT.vocab_size,
            hidden_size=HID,
            num_hidden_layers=2,
            num_attention_heads=H,
            intermediate_size=FFN,
            max_position_embeddings=TINY_BERT.max_position_embeddings,
        )
    )
    w_o = layer_of(params, 0)["attention"]["output"]["dense"]
    w_o["kernel"] = w_o["kernel"].at[:D].set(0)
    small, small_params, _ = compact.compact(model, params)
    with pytest.raises(ValueError, match="pruned_heads"):
        compact.to_hf(small, small_params, tmp_path)


def test_config_validates_per_layer_sizes():
    base = dataclasses.asdict(TINY_BERT)
    with pytest.raises(ValueError, match="layer_heads has 1 entries for 2 layers"):
        EncoderConfig(**{**base, "layer_heads": (2,)})
    with pytest.raises(ValueError, match=r"layer_heads=\(2, 5\): every entry must be \[0, 4\]"):
        EncoderConfig(**{**base, "layer_heads": (2, 5)})
    with pytest.raises(ValueError, match="layer_intermediate"):
        EncoderConfig(**{**base, "layer_intermediate": (-1, 3)})
    cfg = EncoderConfig(**{**base, "layer_intermediate": [3, 0]})  # lists, as from JSON
    assert cfg.layer_intermediate == (3, 0) and hash(cfg)
