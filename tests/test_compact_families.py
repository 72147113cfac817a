"""Compaction and export of the Llama, DeBERTa-v2 and ModernBERT families (jaxprune.compact):
pruned heads, key/value groups and gated neurons removed, outputs unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxprune import compact, export, hf, paths
from jaxprune.models import gpt2

ATOL = 1e-5  # compacted against pruned, both jaxprune
TORCH_ATOL = 1e-4  # jaxprune against transformers
VOCAB, HID, LAYERS, HEADS, KV, D, FFN = 64, 32, 2, 4, 2, 8, 64


# ----------------------------------------------------------------------------- helpers


def noisy(model, seed: int = 0) -> dict:
    """The model's params redrawn (biases too): N(0, 0.2); norm scales 1 + N(0, 0.1)."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.key(seed), len(flat))
    leaves = [
        (1.0 + 0.1 * jax.random.normal(k, v.shape))
        if paths.path_str(p).endswith("scale")
        else 0.2 * jax.random.normal(k, v.shape)
        for (p, v), k in zip(flat, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def batch():
    rng = np.random.default_rng(0)
    mask = (np.arange(12)[None] < np.array([[12], [7]])).astype(np.int64)
    return np.where(mask, rng.integers(3, VOCAB, (2, 12)), 0), mask


def logits(model, params) -> np.ndarray:
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    ids, mask = batch()
    out = nnx.merge(graphdef, state)(jnp.asarray(ids), jnp.asarray(mask)).logits
    return np.asarray(out) * mask[..., None] if out.ndim == 3 else np.asarray(out)


def torch_logits(folder, auto) -> np.ndarray:
    model = auto.from_pretrained(folder, attn_implementation="eager").eval()
    ids, mask = batch()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    out = out.numpy()
    return out * mask[..., None] if out.ndim == 3 else out


def n_params(params) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(params))


def zero(leaf: dict, name: str, index) -> None:
    """Sets ``leaf[name][index]`` to zero (in place, on the nested dict)."""
    leaf[name] = jnp.asarray(leaf[name]).at[index].set(0)


def heads_cols(heads) -> np.ndarray:
    return (np.asarray(heads)[:, None] * D + np.arange(D)).reshape(-1)


# ----------------------------------------------------------------------------- Llama


def llama(config_cls=transformers.LlamaConfig, **overrides):
    config = config_cls(
        vocab_size=VOCAB,
        hidden_size=HID,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        intermediate_size=FFN,
        max_position_embeddings=32,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        **{"tie_word_embeddings": False, **overrides},
    )
    model = hf.build(config)
    return model, noisy(model)


def attn(params, i):
    return params["model"]["layers"][i]["self_attn"]


def mlp(params, i):
    return params["model"]["layers"][i]["mlp"]


def test_llama_gqa_groups_heads_and_gated_neurons(tmp_path):
    model, params = llama()
    # layer 0: query heads 0 and 1 (all of key/value group 0) -> the group goes too
    zero(attn(params, 0)["o_proj"], "kernel", heads_cols([0, 1]))
    # layer 1: one query head of each group -> groups of one, both key/value heads stay
    zero(attn(params, 1)["o_proj"], "kernel", heads_cols([1, 3]))
    # neurons: down rows, gate columns (silu(0) = 0), up columns
    zero(mlp(params, 0)["down_proj"], "kernel", slice(0, 10))
    zero(mlp(params, 1)["gate_proj"], "kernel", (slice(None), slice(5, 10)))
    zero(mlp(params, 1)["up_proj"], "kernel", (slice(None), slice(20, 22)))
    small, small_params, kept = compact.compact(model, params)

    np.testing.assert_array_equal(kept.heads[0], [2, 3])
    np.testing.assert_array_equal(kept.kv_heads[0], [1])
    np.testing.assert_array_equal(kept.heads[1], [0, 2])
    np.testing.assert_array_equal(kept.kv_heads[1], [0, 1])
    assert [len(n) for n in kept.neurons] == [FFN - 10, FFN - 7]
    cfg = small.cfg
    assert (cfg.layer_heads, cfg.layer_kv_heads) == ((2, 2), (1, 2))
    assert cfg.layer_intermediate == (FFN - 10, FFN - 7)
    removed = 4 * 2 * HID * D + 1 * 2 * HID * D + 17 * 3 * HID  # q+o heads, k+v heads, neurons
    assert n_params(params) - n_params(small_params) == removed
    np.testing.assert_allclose(logits(small, small_params), logits(model, params), atol=ATOL)
    # idempotent
    again, again_params, _ = compact.compact(small, small_params)
    assert again.cfg == small.cfg and n_params(again_params) == n_params(small_params)

    # jaxprune's format keeps everything
    compact.save(small, small_params, tmp_path / "jp")
    loaded, loaded_params, _ = compact.load(tmp_path / "jp")
    assert loaded.cfg == small.cfg
    np.testing.assert_array_equal(logits(loaded, loaded_params), logits(small, small_params))
    # transformers: one head count per layer; plain save refuses, to_hf pads with zero heads
    with pytest.raises(ValueError, match="per-layer"):
        hf.save_pretrained(small, small_params, tmp_path / "plain")
    folder = compact.to_hf(small, small_params, tmp_path / "hf")
    ref = logits(model, params)
    np.testing.assert_allclose(
        torch_logits(folder, transformers.AutoModelForCausalLM), ref, atol=TORCH_ATOL
    )
    reloaded, reloaded_params, _ = hf.load_pretrained(folder)
    assert reloaded.cfg.num_key_value_heads == 2 and reloaded.cfg.intermediate_size == FFN - 7
    np.testing.assert_allclose(logits(reloaded, reloaded_params), ref, atol=ATOL)


@pytest.mark.parametrize(
    "config_cls, overrides",
    [
        (transformers.LlamaConfig, dict(attention_bias=True, mlp_bias=True)),
        (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
        (transformers.MistralConfig, dict(sliding_window=4)),
    ],
)
def test_llama_uniform_compaction_is_a_plain_checkpoint(tmp_path, config_cls, overrides):
    model, params = llama(config_cls, **overrides)
    for i in range(LAYERS):  # key/value group 1 (query heads 2, 3) and 16 neurons everywhere
        zero(attn(params, i)["o_proj"], "kernel", heads_cols([2, 3]))
        zero(mlp(params, i)["down_proj"], "kernel", slice(3 + 16 * i, 19 + 16 * i))
    small, small_params, _ = compact.compact(model, params)
    cfg = small.cfg
    assert cfg.layer_heads is None and cfg.layer_kv_heads is None
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 1, D)
    assert cfg.layer_intermediate is None and cfg.intermediate_size == FFN - 16
    qkv_bias = int(small.cfg.qkv_bias) * (2 * D + 2 * D)
    mlp_bias = int(small.cfg.mlp_bias) * 2 * 16
    per_layer = 2 * 2 * HID * D + 2 * HID * D + 16 * 3 * HID + qkv_bias + mlp_bias
    assert n_params(params) - n_params(small_params) == LAYERS * per_layer
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    folder = hf.save_pretrained(small, small_params, tmp_path / "hf")
    np.testing.assert_allclose(
        torch_logits(folder, transformers.AutoModelForCausalLM), ref, atol=TORCH_ATOL
    )
    reloaded, reloaded_params, _ = hf.load_pretrained(folder)
    np.testing.assert_allclose(logits(reloaded, reloaded_params), ref, atol=ATOL)


def test_llama_partial_groups_are_padded_and_value_biases_fold_or_stay(tmp_path):
    # Qwen2: q/k/v biases, no o_proj bias
    model, params = llama(transformers.Qwen2Config)
    zero(attn(params, 0)["o_proj"], "kernel", heads_cols([1]))  # group 0 keeps 1 of 2
    zero(attn(params, 1)["v_proj"], "kernel", (slice(None), heads_cols([0])))  # b_v != 0
    small, small_params, kept = compact.compact(model, params)
    np.testing.assert_array_equal(kept.heads[0], np.arange(HEADS))  # head 1 is padding
    np.testing.assert_array_equal(kept.heads[1], np.arange(HEADS))  # no o_proj bias to fold
    assert n_params(small_params) == n_params(params)
    np.testing.assert_allclose(logits(small, small_params), logits(model, params), atol=ATOL)

    # Llama with attention_bias: the constant b_v W_o moves into o_proj's bias
    model, params = llama(attention_bias=True)
    zero(attn(params, 1)["v_proj"], "kernel", (slice(None), heads_cols([0])))
    small, small_params, kept = compact.compact(model, params)
    np.testing.assert_array_equal(kept.heads[1], [2, 3])
    np.testing.assert_array_equal(kept.kv_heads[1], [1])
    assert (
        np.abs(attn(small_params, 1)["o_proj"]["bias"] - attn(params, 1)["o_proj"]["bias"]).max()
        > 1e-3
    )
    np.testing.assert_allclose(logits(small, small_params), logits(model, params), atol=ATOL)


def test_llama_layer_without_heads(tmp_path):
    model, params = llama()
    zero(attn(params, 1)["o_proj"], "kernel", slice(None))
    small, small_params, _ = compact.compact(model, params)
    assert (small.cfg.layer_heads, small.cfg.layer_kv_heads) == ((HEADS, 0), (KV, 0))
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    folder = compact.to_hf(small, small_params, tmp_path / "hf")  # layer 1: zero heads
    np.testing.assert_allclose(
        torch_logits(folder, transformers.AutoModelForCausalLM), ref, atol=TORCH_ATOL
    )
    # every head of every layer gone: transformers cannot hold it, jaxprune can
    zero(attn(params, 0)["o_proj"], "kernel", slice(None))
    none, none_params, _ = compact.compact(model, params)
    np.testing.assert_allclose(logits(none, none_params), logits(model, params), atol=ATOL)
    with pytest.raises(ValueError, match="at least one"):
        compact.to_hf(none, none_params, tmp_path / "none")
    compact.save(none, none_params, tmp_path / "jp")
    loaded, loaded_params, _ = compact.load(tmp_path / "jp")
    np.testing.assert_array_equal(logits(loaded, loaded_params), logits(none, none_params))


def test_llama_compacted_generation_matches():
    from jaxprune.models import llama as llama_lib

    model, params = llama()
    zero(attn(params, 0)["o_proj"], "kernel", heads_cols([0, 1]))
    zero(mlp(params, 1)["down_proj"], "kernel", slice(0, 30))
    small, _, _ = compact.compact(model, params)  # the model holds its params
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    ids = jnp.asarray(batch()[0][:, :5])
    want = llama_lib.generate_greedy(nnx.merge(graphdef, state), ids, 4)
    np.testing.assert_array_equal(llama_lib.generate_greedy(small, ids, 4), want)


# ----------------------------------------------------------------------------- ModernBERT


def modernbert(**overrides):
    config = transformers.ModernBertConfig(
        vocab_size=VOCAB,
        hidden_size=HID,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
        local_attention=4,
        global_attn_every_n_layers=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        **overrides,
    )
    model = hf.build(config, head="sequence-classification", num_labels=3)
    return model, noisy(model)


def mb_layer(params, i):
    return params["model"]["layers"][i]


@pytest.mark.parametrize("biases", [False, True])
def test_modernbert_heads_and_geglu_neurons(tmp_path, biases):
    kw = dict(attention_bias=True, mlp_bias=True) if biases else {}
    model, params = modernbert(**kw)
    a0, a1 = mb_layer(params, 0)["attn"], mb_layer(params, 1)["attn"]
    zero(a0["Wo"], "kernel", heads_cols([1, 2]))  # heads 1, 2 of layer 0
    zero(a1["Wqkv"], "kernel", (slice(None), 2 * HID + heads_cols([3])))  # values of head 3
    m0, m1 = mb_layer(params, 0)["mlp"], mb_layer(params, 1)["mlp"]
    zero(m0["Wo"], "kernel", slice(0, 6))  # neurons 0-5
    zero(m1["Wi"], "kernel", (slice(None), FFN + np.arange(4)))  # gate half of neurons 0-3
    zero(m1["Wi"], "kernel", (slice(None), np.arange(10, 13)))  # input half of 10-12
    small, small_params, kept = compact.compact(model, params)
    if biases:  # non-zero Wi biases: act(b) * gate(x) is not constant, the neurons stay
        assert [len(n) for n in kept.neurons] == [FFN - 6, FFN]
    else:
        assert [len(n) for n in kept.neurons] == [FFN - 6, FFN - 7]
    np.testing.assert_array_equal(kept.heads[0], [0, 3])
    np.testing.assert_array_equal(kept.heads[1], [0, 1, 2])  # bias folded, or exactly zero
    assert small.cfg.layer_heads == (2, 3)
    removed_heads = 3 * (4 * HID * D + (3 * D if biases else 0))
    removed_neurons = sum(FFN - len(n) for n in kept.neurons) * (3 * HID + (2 if biases else 0))
    assert n_params(params) - n_params(small_params) == removed_heads + removed_neurons
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    compact.save(small, small_params, tmp_path / "jp")
    loaded, loaded_params, _ = compact.load(tmp_path / "jp")
    np.testing.assert_array_equal(logits(loaded, loaded_params), logits(small, small_params))
    with pytest.raises(ValueError, match="head_dim = hidden_size / num_attention_heads"):
        compact.to_hf(small, small_params, tmp_path / "hf")
    with pytest.raises(ValueError, match="per-layer"):
        hf.save_pretrained(small, small_params, tmp_path / "plain")


def test_modernbert_ffn_only_compaction_exports_to_transformers(tmp_path):
    model, params = modernbert()
    zero(mb_layer(params, 0)["mlp"]["Wo"], "kernel", slice(0, 20))
    zero(mb_layer(params, 1)["mlp"]["Wi"], "kernel", (slice(None), np.arange(5)))
    small, small_params, _ = compact.compact(model, params)
    assert small.cfg.layer_heads is None
    assert small.cfg.layer_intermediate == (FFN - 20, FFN - 5)
    assert n_params(params) - n_params(small_params) == 25 * 3 * HID
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    folder = compact.to_hf(small, small_params, tmp_path / "hf")
    np.testing.assert_allclose(
        torch_logits(folder, transformers.AutoModelForSequenceClassification),
        ref,
        atol=TORCH_ATOL,
    )


# ----------------------------------------------------------------------------- DeBERTa-v2


def deberta(share_att_key: bool = False):
    config = transformers.DebertaV2Config(
        vocab_size=VOCAB,
        hidden_size=HID,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=32,
        relative_attention=True,
        max_relative_positions=6,
        position_buckets=-1,
        pos_att_type=["c2p", "p2c"],
        share_att_key=share_att_key,
        position_biased_input=not share_att_key,
        type_vocab_size=0,
    )
    model = hf.build(config, head="sequence-classification", num_labels=3)
    return model, noisy(model)


def db_layer(params, i):
    return params["deberta"]["encoder"]["layer"][i]


@pytest.mark.parametrize("share_att_key", [False, True])
def test_deberta_heads_and_neurons(tmp_path, share_att_key):
    model, params = deberta(share_att_key)
    zero(db_layer(params, 0)["attention"]["output"]["dense"], "kernel", heads_cols([0, 3]))
    value = db_layer(params, 1)["attention"]["self"]["value_proj"]
    zero(value, "kernel", (slice(None), heads_cols([2])))  # folded: b_v W_o into the bias
    zero(db_layer(params, 0)["output"]["dense"], "kernel", slice(0, 8))
    zero(db_layer(params, 1)["intermediate"]["dense"], "kernel", (slice(None), slice(0, 3)))
    small, small_params, kept = compact.compact(model, params)
    np.testing.assert_array_equal(kept.heads[0], [1, 2])
    np.testing.assert_array_equal(kept.heads[1], [0, 1, 3])
    assert small.cfg.layer_heads == (2, 3)
    assert small.cfg.layer_intermediate == (FFN - 8, FFN - 3)
    projections = 3 if share_att_key else 5  # q, k, v (+ pos_key_proj, pos_query_proj)
    per_head = projections * (HID * D + D) + D * HID
    assert n_params(params) - n_params(small_params) == 3 * per_head + 11 * (2 * HID + 1)
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    compact.save(small, small_params, tmp_path / "jp")
    loaded, loaded_params, _ = compact.load(tmp_path / "jp")
    np.testing.assert_array_equal(logits(loaded, loaded_params), logits(small, small_params))
    with pytest.raises(ValueError, match="head_dim = hidden_size / num_attention_heads"):
        compact.to_hf(small, small_params, tmp_path / "hf")


def test_deberta_ffn_only_compaction_exports_to_transformers(tmp_path):
    model, params = deberta()
    zero(db_layer(params, 1)["output"]["dense"], "kernel", slice(10, 30))
    small, small_params, _ = compact.compact(model, params)
    assert small.cfg.layer_intermediate == (FFN, FFN - 20)
    ref = logits(model, params)
    np.testing.assert_allclose(logits(small, small_params), ref, atol=ATOL)
    folder = compact.to_hf(small, small_params, tmp_path / "hf")
    np.testing.assert_allclose(
        torch_logits(folder, transformers.AutoModelForSequenceClassification),
        ref,
        atol=TORCH_ATOL,
    )


# ----------------------------------------------------------------------------- export, refusals


@pytest.mark.parametrize("family", ["llama", "modernbert", "deberta"])
def test_dense_and_compressed_exports_of_pruned_models(tmp_path, family):
    model, params = {"llama": llama, "modernbert": modernbert, "deberta": deberta}[family]()
    selection = {
        "llama": paths.LLAMA_KERNELS,
        "modernbert": paths.MODERNBERT_KERNELS,
        "deberta": paths.DEBERTA_KERNELS,
    }[family]
    chosen = paths.select(params, selection)
    params = jax.tree.map(
        lambda keep, p: jnp.where(jnp.abs(p) < 0.2, 0.0, p) if keep else p, chosen, params
    )
    report = export.save(tmp_path / "c.safetensors", params)
    assert report.ratio_of(selection) < 0.8
    restored = export.load(tmp_path / "c.safetensors")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(restored), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    folder = hf.save_pretrained(model, params, tmp_path / "dense")
    reloaded, reloaded_params, _ = hf.load_pretrained(
        folder, head=None if family == "llama" else "sequence-classification", num_labels=3
    )
    np.testing.assert_array_equal(logits(reloaded, reloaded_params), logits(model, params))


def test_gpt2_is_refused_with_the_reason():
    model = gpt2.GPT2LMHeadModel(
        gpt2.GPT2Config(
            vocab_size=VOCAB, n_positions=16, n_embd=HID, n_layer=LAYERS, n_head=HEADS, n_inner=FFN
        ),
        rngs=nnx.Rngs(0),
    )
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with pytest.raises(TypeError, match="GPT-2 cannot hold per-layer"):
        compact.compact(model, params)


def test_llama_config_validates_per_layer_sizes():
    model, _ = llama()
    with pytest.raises(ValueError, match="set together"):
        dataclasses.replace(model.cfg, layer_heads=(4, 4))
    with pytest.raises(ValueError, match="3 query heads for 2 key/value heads"):
        dataclasses.replace(model.cfg, layer_heads=(4, 3), layer_kv_heads=(2, 2))
    with pytest.raises(ValueError, match="layer_intermediate has 1 entries"):
        dataclasses.replace(model.cfg, layer_intermediate=(3,))
