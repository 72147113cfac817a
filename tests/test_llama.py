"""The Llama-family decoders (Llama, Qwen2, Mistral) against transformers' PyTorch ones.

Every checkpoint is a tiny random transformers model (2 layers, hidden 32, 4 query heads
sharing 2 key/value heads) saved with ``save_pretrained`` and loaded by jaxprune, so both
sides run the same weights. Weights are redrawn at a larger scale than transformers'
initialisation (RMSNorm scales around 1, biases too) so that a misplaced or mistransposed
tensor cannot hide. The configs have no EOS token: ``generate`` never stops early.
"""

import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from parity import assert_close, flat, randomize_, torch_inputs
from safetensors.numpy import load_file, save_file

import jaxprune
from jaxprune import hf, paths, train
from jaxprune.models import LlamaConfig, LlamaForCausalLM, llama, logical_axes

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 101, 32, 2, 4, 2, 64
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # with head_dim 8 and theta 5e5 the wavelengths (6.3, 167, 4e3, 1e5) fall in all three
    # of llama3's bands: kept (< 4), smoothed (4..16) and divided by the factor (> 16)
    "original_max_position_embeddings": 16,
}
# name -> (transformers config class, overrides of the tiny config)
VARIANTS = {
    "llama-tied": (transformers.LlamaConfig, dict(tie_word_embeddings=True)),
    "llama-untied": (
        transformers.LlamaConfig,
        dict(tie_word_embeddings=False, head_dim=16, attention_bias=True, mlp_bias=True),
    ),
    "llama3-rope": (
        transformers.LlamaConfig,
        dict(tie_word_embeddings=False, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE),
    ),
    "llama3-rope-tied": (
        transformers.LlamaConfig,
        dict(tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE),
    ),
    "qwen2": (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
    "qwen2-sliding": (  # layer 1 slides (max_window_layers=1), layer 0 does not
        transformers.Qwen2Config,
        dict(use_sliding_window=True, sliding_window=3, max_window_layers=1),
    ),
    "mistral": (transformers.MistralConfig, dict(sliding_window=4)),
}
LAYER_KERNELS = (
    "self_attn/q_proj",
    "self_attn/k_proj",
    "self_attn/v_proj",
    "self_attn/o_proj",
    "mlp/gate_proj",
    "mlp/up_proj",
    "mlp/down_proj",
)


# ----------------------------------------------------------------------------- helpers


def tiny_config(variant: str) -> transformers.PretrainedConfig:
    cls, overrides = VARIANTS[variant]
    return cls(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        **overrides,
    )


def torch_model(config) -> torch.nn.Module:
    """transformers' causal LM, every parameter redrawn: N(0, 0.2), RMSNorm scales
    1 + N(0, 0.1)."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return randomize_(model)


def batch(*, lengths=(9, 6), seed: int = 0):
    """Right-padded rows of the given lengths: (ids, mask) int64."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    ids = np.where(mask, rng.integers(3, VOCAB, size=(len(lengths), width)), 0)
    return ids, mask.astype(np.int64)


def torch_logits(model, ids, mask=None) -> np.ndarray:
    with torch.no_grad():
        return model(**torch_inputs(ids, mask)).logits.numpy()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """variant -> (torch model, jaxprune model, params, folder), built once per variant."""
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            theirs = torch_model(tiny_config(variant))
            folder = tmp_path_factory.mktemp(variant)
            theirs.save_pretrained(folder)
            model, params, _ = hf.load_pretrained(folder)
            cache[variant] = (theirs, model, params, folder)
        return cache[variant]

    return get


# ----------------------------------------------------------------------------- 1. parity


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_match(checkpoints, variant):
    theirs, model, _, _ = checkpoints(variant)
    assert isinstance(model, LlamaForCausalLM)
    ids, mask = batch()
    real = mask.astype(bool)
    out = model(jnp.asarray(ids), jnp.asarray(mask), output_hidden_states=True)
    with torch.no_grad():
        ref = theirs(**torch_inputs(ids, mask), output_hidden_states=True)
    assert_close(out.logits, ref.logits, f"{variant} logits", real)
    # transformers' last hidden state is after the final norm; the others are layer outputs
    for i in range(LAYERS):
        assert_close(out.hidden_states[i], ref.hidden_states[i], f"{variant} hidden {i}", real)


def test_config_reads_the_checkpoint(checkpoints):
    """The variants do exercise what they are named for."""
    cfg = {v: checkpoints(v)[1].cfg for v in ("llama-untied", "llama3-rope", "qwen2", "mistral")}
    assert cfg["llama-untied"].head_dim == 16 and cfg["llama-untied"].num_key_value_heads == 2
    assert cfg["llama-untied"].qkv_bias and cfg["llama-untied"].o_bias
    assert cfg["llama3-rope"].rope_llama3 is not None
    assert cfg["qwen2"].qkv_bias and not cfg["qwen2"].o_bias
    assert cfg["mistral"].sliding_windows == (4, 4)
    assert checkpoints("qwen2-sliding")[1].cfg.sliding_windows == (None, 3)


def test_packed_rows_match_separate_runs(checkpoints):
    """Two examples packed in one row (segment ids, positions restarting) give each one's
    logits as transformers computes them alone; the sliding window stays inside each."""
    theirs, model, _, _ = checkpoints("mistral")
    a, _ = batch(lengths=(7,), seed=3)
    b, _ = batch(lengths=(5,), seed=4)
    ids = np.concatenate([a, b, np.zeros((1, 2), np.int64)], axis=1)
    segments = np.array([[1] * 7 + [2] * 5 + [0, 0]])
    positions = np.array([list(range(7)) + list(range(5)) + [0, 0]])
    out = model(
        jnp.asarray(ids),
        jnp.asarray(segments > 0),
        segment_ids=jnp.asarray(segments),
        position_ids=jnp.asarray(positions),
    ).logits
    assert_close(out[:, :7], torch_logits(theirs, a), "packed example 1")
    assert_close(out[:, 7:12], torch_logits(theirs, b), "packed example 2")


def test_bfloat16_compute_runs_close(checkpoints):
    _, _, _, folder = checkpoints("qwen2")
    model, params, _ = hf.load_pretrained(folder, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    ids, mask = batch()
    low = model(jnp.asarray(ids), jnp.asarray(mask)).logits
    assert low.dtype == jnp.bfloat16
    full = checkpoints("qwen2")[1](jnp.asarray(ids), jnp.asarray(mask)).logits
    real = mask.astype(bool)
    scale = float(jnp.max(jnp.abs(full)))
    assert_close(low.astype(jnp.float32), full, "bf16 vs f32 logits", real, atol=0.05 * scale)


# ----------------------------------------------------------------------------- 2. generation


@pytest.mark.parametrize(
    "variant", ["llama-tied", "llama-untied", "llama3-rope", "qwen2", "mistral", "qwen2-sliding"]
)
def test_greedy_generation_matches(checkpoints, variant):
    """Prompts of different lengths in one right-padded batch, decoded with the KV cache,
    continue exactly as transformers' ``generate`` continues each alone (Mistral's window of
    4 and Qwen2's of 3 are far shorter than prompt + new tokens)."""
    theirs, model, _, _ = checkpoints(variant)
    lengths = (7, 3, 9)
    ids, _ = batch(lengths=lengths, seed=1)
    new = 12
    ours = np.asarray(llama.generate_greedy(model, jnp.asarray(ids), new, jnp.asarray(lengths)))
    assert ours.shape == (3, 9 + new)
    for row, n in enumerate(lengths):
        with torch.no_grad():
            expected = theirs.generate(
                torch.tensor(ids[row : row + 1, :n]),
                attention_mask=torch.ones((1, n), dtype=torch.long),
                max_new_tokens=new,
                do_sample=False,
            )
        np.testing.assert_array_equal(ours[row, : n + new], expected[0].numpy())


def test_greedy_decode_under_jit_with_params(checkpoints):
    """``greedy_decode`` is pure in the params: jitted over the pure-dict params merged into
    the model's graph, as a recipe runs it with the params being trained."""
    _, model, params, _ = checkpoints("llama-tied")
    graphdef = nnx.graphdef(model)
    ids = jnp.asarray(batch(lengths=(5, 5), seed=2)[0])
    lengths = jnp.asarray([5, 5], jnp.int32)

    @jax.jit
    def decode(params, ids):
        return llama.greedy_decode(nnx.merge(graphdef, params), ids, lengths, 4)

    got = decode(params, ids)
    np.testing.assert_array_equal(got, llama.generate_greedy(model, ids, 4))
    zeroed = jax.tree.map(jnp.zeros_like, params)  # the params are an input, not constants
    assert not np.array_equal(decode(zeroed, ids), got)
    assert llama.generate_greedy(model, ids, 0).shape == (2, 5)


# ----------------------------------------------------------------------------- 3. export


def prune_half(params):
    """Zeroes the smaller half of every LLAMA_KERNELS leaf by magnitude."""
    selected = paths.select(params, paths.LLAMA_KERNELS)

    def prune(keep, p):
        if not keep:
            return p
        return jnp.where(jnp.abs(p) > jnp.median(jnp.abs(p)), p, 0.0)

    return jax.tree.map(prune, selected, params)


@pytest.mark.parametrize(
    "variant", ["llama-tied", "llama-untied", "llama3-rope", "qwen2", "mistral"]
)
def test_pruned_round_trip(checkpoints, variant, tmp_path):
    _, model, params, _ = checkpoints(variant)
    pruned = prune_half(params)
    assert float(jaxprune.sparsity(pruned, paths.LLAMA_KERNELS)) == pytest.approx(0.5, abs=0.01)
    hf.save_pretrained(model, pruned, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    arch = {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
    assert type(reloaded).__name__ == arch.get(variant, "LlamaForCausalLM")
    assert reloaded.config.architectures == [type(reloaded).__name__]
    state = reloaded.state_dict()
    for path, value in flat(pruned).items():  # every zero is in the exported checkpoint
        key, kind = hf._hf_key(path)
        tensor = state[key].numpy()
        np.testing.assert_array_equal(tensor.T if kind == "kernel" else tensor, np.asarray(value))
    ids, mask = batch()
    real = mask.astype(bool)
    ours = nnx.merge(nnx.graphdef(model), nnx.state(model))
    nnx.update(ours, _state_of(model, pruned))
    logits = ours(jnp.asarray(ids), jnp.asarray(mask)).logits
    assert_close(torch_logits(reloaded, ids, mask), logits, f"{variant} pruned, in torch", real)
    again, again_params, _ = hf.load_pretrained(tmp_path)
    for path, value in flat(pruned).items():
        np.testing.assert_array_equal(flat(again_params)[path], value)
    np.testing.assert_array_equal(again(jnp.asarray(ids), jnp.asarray(mask)).logits, logits)


def _state_of(model, params):
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    return state


def test_untied_head_is_saved_and_loaded(checkpoints, tmp_path):
    _, model, params, folder = checkpoints("llama-untied")
    assert "lm_head.weight" in load_file(f"{folder}/model.safetensors")
    assert "lm_head" in params and model.lm_head is not None
    hf.save_pretrained(model, params, tmp_path)
    saved = load_file(f"{tmp_path}/model.safetensors")
    np.testing.assert_array_equal(
        saved["lm_head.weight"], np.asarray(params["lm_head"]["kernel"]).T
    )
    _, _, _, tied = checkpoints("llama-tied")
    assert "lm_head" not in hf.load_pretrained(tied)[1]


# ----------------------------------------------------------------------------- 4. pruning


def test_kernel_presets_select_the_projections(checkpoints):
    _, _, params, _ = checkpoints("qwen2")
    selected = {p for p, s in flat(paths.select(params, paths.LLAMA_KERNELS)).items() if s}
    layers = range(LAYERS)
    expected = {f"model/layers/{i}/{name}/kernel" for i in layers for name in LAYER_KERNELS}
    assert selected == expected
    both = {p for p, s in flat(paths.select(params, paths.LLAMA_KERNELS_AND_BIASES)).items() if s}
    biases = {f"model/layers/{i}/self_attn/{m}_proj/bias" for i in layers for m in "qkv"}
    assert both == expected | biases


def test_masked_optimizer_train_step_reaches_half(checkpoints):
    _, model, params, _ = checkpoints("llama-untied")
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion="magnitude",
        schedule=0.5,
        prunable=paths.LLAMA_KERNELS,
        update_every=1,
    )
    loss = train.supervised_loss(train.model_fn(model), "lm")
    step = jax.jit(train.train_step_fn(loss, tx))
    ids, mask = batch()
    labels = np.where(mask.astype(bool), ids, -100)
    data = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    state, metrics = step(train.init_state(params, tx), jax.tree.map(jnp.asarray, data), None)
    assert np.isfinite(float(metrics["loss"]))
    got = float(jaxprune.sparsity(state.params, paths.LLAMA_KERNELS))
    assert got == pytest.approx(0.5, abs=0.01)
    rest = {p: v for p, v in flat(state.params).items() if "kernel" not in p or "lm_head" in p}
    assert all(np.count_nonzero(np.asarray(v)) > 0.9 * v.size for v in rest.values())


def test_logical_axes_cover_every_param(checkpoints):
    _, model, params, _ = checkpoints("llama-untied")
    axes = logical_axes(model)
    assert jax.tree.structure(axes) == jax.tree.structure(params)
    layer = axes["model"]["layers"][0]
    assert tuple(axes["model"]["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert tuple(axes["lm_head"]["kernel"]) == ("embed", "vocab")
    assert tuple(layer["self_attn"]["k_proj"]["kernel"]) == ("embed", "heads")
    assert tuple(layer["self_attn"]["o_proj"]["kernel"]) == ("heads", "embed")
    assert tuple(layer["mlp"]["down_proj"]["kernel"]) == ("mlp", "embed")
    assert tuple(layer["input_layernorm"]["scale"]) == ("embed",)
    layout = train.Sharding(train.make_mesh(), fsdp=True)
    shardings = layout.params(params, axes)
    assert jax.tree.structure(shardings) == jax.tree.structure(params)


def test_random_pretrained_has_the_checkpoint_shapes(checkpoints):
    _, _, params, folder = checkpoints("mistral")
    model, fresh, _ = hf.random_pretrained(folder)
    assert isinstance(model, LlamaForCausalLM)
    assert jax.tree.map(jnp.shape, fresh) == jax.tree.map(jnp.shape, params)


# ----------------------------------------------------------------------------- 5. errors


@pytest.mark.parametrize("rope_type", ["yarn", "linear", "dynamic"])
def test_unsupported_rope_is_named(tmp_path, rope_type):
    scaling = {"rope_type": rope_type, "factor": 2.0, "original_max_position_embeddings": 32}
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        rope_scaling=scaling,
    )
    with pytest.raises(ValueError, match=f"rope_type='{rope_type}'.*default RoPE and 'llama3'"):
        hf.build(config)


def test_kv_heads_must_divide_query_heads():
    with pytest.raises(
        ValueError, match="num_attention_heads=4 is not a multiple of num_key_value_heads=3"
    ):
        LlamaConfig(
            model_type="llama",
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=3,
            head_dim=8,
            intermediate_size=INTERMEDIATE,
        )


def _edited_copy(folder, out, edit_tensors=None, edit_config=None):
    shutil.copy(folder / "config.json", out / "config.json")
    tensors = load_file(f"{folder}/model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if edit_config:
        config = transformers.AutoConfig.from_pretrained(out)
        edit_config(config)
        config.save_pretrained(out)
    return out


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("model.layers.1.mlp.up_proj.weight", "model/layers/1/mlp/up_proj/kernel"),
        ("model.layers.0.self_attn.k_proj.bias", "model/layers/0/self_attn/k_proj/bias"),
        ("lm_head.weight", "lm_head/kernel"),
    ],
)
def test_missing_tensor_is_named(checkpoints, tmp_path, key, path):
    _, _, _, folder = checkpoints("llama-untied")
    _edited_copy(folder, tmp_path, edit_tensors=lambda t: t.pop(key))
    with pytest.raises(ValueError, match=f"has no tensor for {path} .*{re.escape(key)}"):
        hf.load_pretrained(tmp_path)


def test_head_dim_mismatch_names_key_and_shapes(checkpoints, tmp_path):
    """A config whose head_dim disagrees with the weights is refused at the first projection."""
    _, _, _, folder = checkpoints("llama-tied")

    def edit(config):
        config.head_dim = 4

    _edited_copy(folder, tmp_path, edit_config=edit)
    with pytest.raises(
        ValueError, match=r"self_attn\.[qk]_proj\.weight has shape .*needs \(32, (8|16)\)"
    ):
        hf.load_pretrained(tmp_path)


def test_llama_has_no_encoder_heads(checkpoints):
    _, _, _, folder = checkpoints("qwen2")
    with pytest.raises(ValueError, match="qwen2 checkpoint has no 'sequence-classification' head"):
        hf.load_pretrained(folder, head="sequence-classification")
