"""ModernBERT in jaxprune against transformers' PyTorch ModernBert models.

Every check builds transformers' model (eager attention, the padded reference path) from a
tiny config, redraws its weights at a scale where a misplaced tensor shows (biases and
LayerNorms too), saves it, and loads the folder with jaxprune: outputs are compared with
PyTorch's on a right-padded batch. Three layers with a global layer every third give one
global and two local layers; the local window (4 tokens) is shorter than the sequences.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx
from parity import (
    HF_AUTO,
    assert_close,
    flat,
    randomize_,
    saved_once,
    torch_inputs,
    torch_logits,
    where,
)
from safetensors.numpy import load_file, save_file

import jaxprune
from jaxprune import hf, masks, paths, train
from jaxprune.models import ModernBertConfig, logical_axes

VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE = 101, 32, 3, 4, 64
LENGTHS = (15, 9)  # both longer than the local window
BIASES = dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True)
# cls pooling without biases (ModernBERT-base's layout); mean pooling with every bias.
VARIANTS = {
    "cls": dict(classifier_pooling="cls"),
    "mean-biases": dict(classifier_pooling="mean", **BIASES),
}
TASK_HEADS = [
    ("sequence-classification", 3),
    ("sequence-classification", 1),
    ("question-answering", 2),
    ("token-classification", 3),
    ("masked-lm", 2),
]


def tiny_config(variant: str = "cls", **overrides) -> transformers.ModernBertConfig:
    options = {**VARIANTS[variant], **overrides}
    return transformers.ModernBertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=64,
        local_attention=4,
        global_attn_every_n_layers=3,
        global_rope_theta=500.0,  # small bases, so that the two RoPEs differ visibly
        local_rope_theta=40.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        embedding_dropout=0.1,
        attention_dropout=0.1,
        mlp_dropout=0.1,
        classifier_dropout=0.1,
        **options,
    )


def torch_model(config, task: str, num_labels: int, seed: int = 0, attn: str = "eager"):
    """transformers' model for ``task``, every parameter redrawn: N(0, 0.2), norm scales
    1 + N(0, 0.1)."""
    config.num_labels = num_labels
    torch.manual_seed(seed)
    return randomize_(HF_AUTO[task].from_config(config, attn_implementation=attn), seed)


def batch(seed: int = 0):
    """Right-padded (ids, mask), int64."""
    rng = np.random.default_rng(seed)
    width = max(LENGTHS)
    mask = np.arange(width)[None, :] < np.asarray(LENGTHS)[:, None]
    ids = np.where(mask, rng.integers(3, VOCAB, (len(LENGTHS), width)), 0)
    return ids, mask.astype(np.int64)


def jax_logits(model, ids, mask, **kwargs):
    return model(jnp.asarray(ids), jnp.asarray(mask), **kwargs)


def saved_keys(folder, task: str) -> set[str]:
    """The checkpoint's tensors, less the tied masked-LM decoder matrix; a base model's keys
    have no ``model.`` prefix."""
    keys = set(load_file(str(folder / "model.safetensors"))) - {"decoder.weight"}
    return {f"model.{k}" for k in keys} if task == "base" else keys


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(variant, task, num_labels) -> (torch model, its saved folder), made once."""
    return saved_once(tmp_path_factory, lambda v, t, n: torch_model(tiny_config(v), t, n))


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(("task", "num_labels"), [("base", 2), *TASK_HEADS])
def test_heads_match_torch(folders, variant, task, num_labels):
    reference, folder = folders(variant, task, num_labels)
    model, params, _ = hf.load_pretrained(folder, head=task, num_labels=num_labels)
    # every tensor read, none made up
    assert {hf._hf_key(p)[0] for p in flat(params)} == saved_keys(folder, task)
    ids, mask = batch()
    ours = jax_logits(model, ids, mask).logits
    expected = torch_logits(reference, task, ids, mask)
    assert_close(ours, expected, f"{variant} {task}/{num_labels}", where(task, mask))


@pytest.mark.parametrize(
    ("pooling", "biases"), [("cls", True), ("mean", False)], ids=["cls-biases", "mean"]
)
def test_other_pooling_and_bias_combinations_match_torch(tmp_path, pooling, biases):
    config = tiny_config("cls", classifier_pooling=pooling, **(BIASES if biases else {}))
    reference = torch_model(config, "sequence-classification", 3, seed=1)
    reference.save_pretrained(tmp_path)
    model, _, _ = hf.load_pretrained(tmp_path, num_labels=3)
    ids, mask = batch(1)
    expected = torch_logits(reference, "sequence-classification", ids, mask)
    assert_close(jax_logits(model, ids, mask).logits, expected, f"{pooling} biases={biases}")


def test_sdpa_reference_agrees(folders):
    """transformers' sdpa path gives the eager path's logits, so either is the reference."""
    _, folder = folders("mean-biases", "sequence-classification", 3)
    sdpa = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="sdpa"
    ).eval()
    model, _, _ = hf.load_pretrained(folder, num_labels=3)
    ids, mask = batch()
    expected = torch_logits(sdpa, "sequence-classification", ids, mask)
    assert_close(jax_logits(model, ids, mask).logits, expected, "sdpa")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_body_hidden_states_and_attention_match_torch(folders, variant):
    reference, folder = folders(variant, "base", 2)
    model, _, _ = hf.load_pretrained(folder, head="base")
    ids, mask = batch()
    out = jax_logits(model, ids, mask, output_hidden_states=True, output_attention_scores=True)
    with torch.no_grad():
        expected = reference(
            **torch_inputs(ids, mask), output_hidden_states=True, output_attentions=True
        )
    real = mask.astype(bool)
    assert len(out.hidden_states) == len(expected.hidden_states) == LAYERS + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, expected.hidden_states, strict=True)):
        assert_close(a, b, f"{variant} hidden {i}", real)
    for i, (scores, probs) in enumerate(
        zip(out.attention_scores, expected.attentions, strict=True)
    ):
        ours = jax.nn.softmax(scores, axis=-1)
        rows = np.broadcast_to(real[:, None, :, None], ours.shape)
        assert_close(ours, probs, f"{variant} attention {i}", rows)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_packed_rows_match_torch_per_example(folders, variant):
    """Two examples packed into one row (segment_ids, restarted position_ids,
    cls_positions) classify as each alone, for both poolings."""
    reference, folder = folders(variant, "sequence-classification", 3)
    model, _, _ = hf.load_pretrained(folder, num_labels=3)
    ids, mask = batch()
    a, b = ids[0, : LENGTHS[0]], ids[1, : LENGTHS[1]]
    row = np.concatenate([a, b, [0, 0]])[None]
    segments = np.concatenate([np.ones_like(a), 2 * np.ones_like(b), [0, 0]])[None]
    positions = np.concatenate([np.arange(len(a)), np.arange(len(b)), [0, 0]])[None]
    out = model(
        jnp.asarray(row),
        jnp.asarray(segments > 0),
        segment_ids=jnp.asarray(segments),
        position_ids=jnp.asarray(positions),
        cls_positions=jnp.asarray([[0, len(a)]]),
    )
    expected = torch_logits(reference, "sequence-classification", ids, mask)
    assert_close(out.logits[0], expected, f"{variant} packed")


# ----------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(("task", "num_labels"), TASK_HEADS)
def test_pruned_round_trip(folders, tmp_path, variant, task, num_labels):
    _, folder = folders(variant, task, num_labels)
    model, params, _ = hf.load_pretrained(folder, head=task, num_labels=num_labels)
    selected = paths.select(params, paths.MODERNBERT_KERNELS)
    assert sum(jax.tree.leaves(selected)) == 4 * LAYERS
    scores = jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)
    pruned = masks.apply(params, masks.topk(scores, 0.5))
    kernels = {p: v for p, v in flat(pruned).items() if re.search(paths.MODERNBERT_KERNELS, p)}
    zeros = {p: np.asarray(v) == 0 for p, v in kernels.items()}
    total = sum(v.size for v in kernels.values())
    assert sum(int(z.sum()) for z in zeros.values()) == round(0.5 * total)

    out = hf.save_pretrained(model, pruned, tmp_path / "out")
    reloaded, info = HF_AUTO[task].from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(reloaded).__name__ == hf.hf_config(model).architectures[0]
    state = reloaded.state_dict()
    for path, z in zeros.items():
        weight = state[hf._hf_key(path)[0]].numpy().T
        np.testing.assert_array_equal(weight == 0, z, err_msg=path)

    ids, mask = batch()
    state_model = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state_model, pruned)
    nnx.update(model, state_model)
    ours = jax_logits(model, ids, mask).logits
    expected = torch_logits(reloaded.eval(), task, ids, mask)
    assert_close(ours, expected, f"pruned {variant} {task}", where(task, mask))

    model2, params2, _ = hf.load_pretrained(out, head=task, num_labels=num_labels)
    for path, value in flat(params2).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat(pruned)[path]), path)
    again = jax_logits(model2, ids, mask).logits
    assert_close(again, ours, f"reloaded {variant} {task}", atol=0)


def test_kernels_and_biases_preset_adds_the_biases(folders):
    _, folder = folders("mean-biases", "sequence-classification", 3)
    _, params, _ = hf.load_pretrained(folder, num_labels=3)
    picked = [p for p in flat(params) if re.search(paths.MODERNBERT_KERNELS_AND_BIASES, p)]
    assert len(picked) == 8 * LAYERS
    assert not any(p.startswith(("head/", "classifier/", "model/embeddings")) for p in picked)


def test_masked_optimizer_train_step_reaches_half(folders):
    _, folder = folders("cls", "sequence-classification", 3)
    model, params, _ = hf.load_pretrained(folder, num_labels=3)
    axes = flat(logical_axes(model))
    for path, value in flat(params).items():  # every param carries logical axes
        assert len(axes[path]) == value.ndim and any(axes[path]), path
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion="magnitude",
        schedule=0.5,
        prunable=paths.MODERNBERT_KERNELS,
        update_every=1,
    )
    forward = train.model_fn(model)
    step = jax.jit(train.train_step_fn(train.supervised_loss(forward, "classification"), tx))
    ids, mask = batch()
    data = {
        "input_ids": jnp.asarray(ids, jnp.int32),
        "attention_mask": jnp.asarray(mask, jnp.int32),
        "labels": jnp.asarray([0, 2], jnp.int32),
    }
    state, metrics = step(train.init_state(params, tx), data, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))
    assert float(jaxprune.sparsity(state.params, paths.MODERNBERT_KERNELS)) == pytest.approx(0.5)
    changed = {p for p, v in flat(state.params).items() if not np.array_equal(v, flat(params)[p])}
    assert "model/embeddings/tok_embeddings/embedding" in changed
    assert "head/dense/kernel" in changed


# ----------------------------------------------------------------------------- misuse


def test_missing_tensor_is_named(folders, tmp_path):
    _, folder = folders("cls", "sequence-classification", 3)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.layers.1.attn_norm.weight"]
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"no tensor for model/layers/1/attn_norm/scale"):
        hf.load_pretrained(tmp_path, num_labels=3)


def test_unsupported_rope_is_named():
    rope = {
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 40.0},
    }
    with pytest.raises(ValueError, match=r"rope_type='linear' on full_attention"):
        hf.build(tiny_config(rope_parameters=rope))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(classifier_pooling="max"), "classifier_pooling='max'"),
        (dict(layer_types=("full_attention", "chunked_attention", "full_attention")), "layer_"),
        (dict(layer_types=("full_attention",)), "layer_types"),
        (dict(num_attention_heads=5), "not a multiple"),
    ],
)
def test_unsupported_config_is_named(overrides, message):
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
    )
    with pytest.raises(ValueError, match=message):
        ModernBertConfig(**{**fields, **overrides})


def test_mean_pooling_of_packed_rows_needs_segment_ids():
    model = hf.build(tiny_config("mean-biases"))
    with pytest.raises(ValueError, match="needs segment_ids"):
        model(jnp.ones((1, 6), jnp.int32), cls_positions=jnp.asarray([[0, 3]]))


def test_untied_masked_lm_is_refused():
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        hf.build(tiny_config(tie_word_embeddings=False), head="masked-lm")


def test_config_round_trips_through_hf_config():
    model = hf.build(tiny_config("mean-biases"), head="token-classification", num_labels=5)
    config = hf.hf_config(model)
    assert config.architectures == ["ModernBertForTokenClassification"]
    assert config.num_labels == 5
    assert ModernBertConfig.from_hf(config) == model.cfg
    assert model.cfg.layer_types == ("full_attention", "sliding_attention", "sliding_attention")
    assert (model.cfg.global_rope_theta, model.cfg.local_rope_theta, model.cfg.window) == (
        500.0,
        40.0,
        2,
    )


def test_question_answering_export_has_two_labels(tmp_path):
    """ModernBERT's QA head is ``classifier`` sized by num_labels: a config made for 5
    classes still exports a 2-way QA head that transformers loads."""
    config = tiny_config()
    config.num_labels = 5
    model = hf.build(config, head="question-answering")
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    assert params["classifier"]["kernel"].shape == (HIDDEN, 2)
    out = hf.save_pretrained(model, params, tmp_path)
    assert transformers.AutoConfig.from_pretrained(out).num_labels == 2
    _, info = transformers.AutoModelForQuestionAnswering.from_pretrained(
        out, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_base_checkpoint_loads_under_a_new_head(folders):
    """A ModernBertModel folder (keys without the ``model.`` prefix) fills the body; the head
    is initialised afresh."""
    reference, folder = folders("cls", "base", 2)
    model, params, _ = hf.load_pretrained(folder, head="token-classification", num_labels=3)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    for path, value in flat(params["model"]).items():
        expected = state[hf._hf_key(path)[0]]
        expected = expected.T if path.endswith("kernel") else expected
        np.testing.assert_array_equal(np.asarray(value), expected, path)
    assert model(jnp.asarray(batch()[0])).logits.shape == (2, max(LENGTHS), 3)
