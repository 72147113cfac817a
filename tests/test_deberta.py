"""DeBERTa-v2/v3 in jaxprune against transformers' PyTorch DebertaV2 models.

Every check builds transformers' model from a tiny config, redraws its weights at a scale
where a misplaced tensor shows (biases and LayerNorms too), saves it, and loads the folder
with jaxprune: outputs are compared with PyTorch's on a right-padded batch whose sequences
are longer than the relative-position span, so bucketing and clipping are exercised.
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
from jaxprune.models import DebertaV2Config, logical_axes
from jaxprune.models.deberta import relative_positions

VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 97, 32, 2, 4, 64, 48
LENGTHS = (21, 13)  # both longer than every span below
# v3: bucketed, shared keys, no absolute positions. v2: plain clipped relative positions,
# separate position projections, absolute positions, token types and a ConvLayer. c2p: one
# of the two terms only.
VARIANTS = {
    "v3": dict(
        relative_attention=True,
        max_relative_positions=16,
        position_buckets=8,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
    "v2": dict(
        relative_attention=True,
        max_relative_positions=6,
        position_buckets=-1,
        pos_att_type="c2p|p2c",
        share_att_key=False,
        position_biased_input=True,
        type_vocab_size=2,
        conv_kernel_size=3,
        conv_act="gelu",
        pooler_hidden_act="tanh",
    ),
    "c2p": dict(
        relative_attention=True,
        max_relative_positions=10,
        position_buckets=0,
        pos_att_type=["c2p"],
        share_att_key=False,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),
}
TASK_HEADS = [
    ("sequence-classification", 3),
    ("sequence-classification", 1),
    ("question-answering", 2),
    ("token-classification", 3),
]


def tiny_config(variant: str, **overrides) -> transformers.DebertaV2Config:
    options = {**VARIANTS[variant], **overrides}
    return transformers.DebertaV2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.15,
        pooler_dropout=0.05,
        **options,
    )


def torch_model(config, task: str, num_labels: int, seed: int = 0) -> torch.nn.Module:
    """transformers' model for ``task``, every parameter redrawn: N(0, 0.2), LayerNorm
    scales 1 + N(0, 0.1)."""
    config.num_labels = num_labels
    torch.manual_seed(seed)
    return randomize_(HF_AUTO[task].from_config(config), seed, norms=r"LayerNorm\.weight$")


def batch(variant: str, seed: int = 0):
    """Right-padded (ids, mask, token types or None), int64."""
    rng = np.random.default_rng(seed)
    width = max(LENGTHS)
    mask = np.arange(width)[None, :] < np.asarray(LENGTHS)[:, None]
    ids = np.where(mask, rng.integers(3, VOCAB, (len(LENGTHS), width)), 0)
    types = None
    if VARIANTS[variant]["type_vocab_size"]:
        types = ((np.arange(width)[None, :] >= 5) & mask).astype(np.int64)
    return ids, mask.astype(np.int64), types


def jax_logits(model, ids, mask, types, **kwargs):
    types = None if types is None else jnp.asarray(types)
    return model(jnp.asarray(ids), jnp.asarray(mask), types, **kwargs)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(variant, task, num_labels) -> (torch model, its saved folder), made once."""
    return saved_once(tmp_path_factory, lambda v, t, n: torch_model(tiny_config(v), t, n))


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(("task", "num_labels"), TASK_HEADS)
def test_heads_match_torch(folders, variant, task, num_labels):
    reference, folder = folders(variant, task, num_labels)
    model, params, _ = hf.load_pretrained(folder, head=task, num_labels=num_labels)
    keys = set(load_file(str(folder / "model.safetensors")))
    assert {hf._hf_key(p)[0] for p in flat(params)} == keys  # every tensor read, none made up
    ids, mask, types = batch(variant)
    ours = jax_logits(model, ids, mask, types).logits
    expected = torch_logits(reference, task, ids, mask, types)
    assert_close(ours, expected, f"{variant} {task}/{num_labels}", where(task, mask))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_body_hidden_states_and_attention_match_torch(folders, variant):
    reference, folder = folders(variant, "base", 2)
    model, _, _ = hf.load_pretrained(folder, head="base")
    ids, mask, types = batch(variant)
    out = jax_logits(
        model, ids, mask, types, output_hidden_states=True, output_attention_scores=True
    )
    with torch.no_grad():
        expected = reference(
            **torch_inputs(ids, mask, types), output_hidden_states=True, output_attentions=True
        )
    real = mask.astype(bool)
    assert_close(out.logits, expected.last_hidden_state, f"{variant} last", real)
    assert len(out.hidden_states) == len(expected.hidden_states) == LAYERS + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, expected.hidden_states, strict=True)):
        assert_close(a, b, f"{variant} hidden {i}", real)
    for i, (scores, probs) in enumerate(
        zip(out.attention_scores, expected.attentions, strict=True)
    ):
        # torch returns probabilities; padded queries attend to nothing there
        ours = jax.nn.softmax(scores, axis=-1)
        rows = np.broadcast_to(real[:, None, :, None], ours.shape)
        assert_close(ours, probs, f"{variant} attention {i}", rows)


def test_relative_positions_match_transformers():
    from transformers.models.deberta_v2 import modeling_deberta_v2 as ref

    for length, buckets, max_position in ((40, 8, 16), (300, 256, 512), (30, -1, 6)):
        x = torch.zeros(1, length, 4)
        expected = ref.build_relative_position(x, x, buckets, max_position)[0].numpy()
        np.testing.assert_array_equal(relative_positions(length, buckets, max_position), expected)


@pytest.mark.parametrize("variant", ["v3", "c2p"])
def test_packed_rows_match_torch_per_example(folders, variant):
    """Two examples packed into one row (segment_ids, cls_positions) classify as each alone:
    relative positions are index differences, so they need no restart."""
    reference, folder = folders(variant, "sequence-classification", 3)
    model, _, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    ids, mask, _ = batch(variant)
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
    expected = torch_logits(reference, "sequence-classification", ids, mask, None)
    assert_close(out.logits[0], expected, f"{variant} packed")


# ----------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("variant", ["v3", "v2"])
@pytest.mark.parametrize(("task", "num_labels"), TASK_HEADS)
def test_pruned_round_trip(folders, tmp_path, variant, task, num_labels):
    _, folder = folders(variant, task, num_labels)
    model, params, _ = hf.load_pretrained(folder, head=task, num_labels=num_labels)
    selected = paths.select(params, paths.DEBERTA_KERNELS)
    assert sum(jax.tree.leaves(selected)) == 6 * LAYERS
    scores = jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)
    pruned = masks.apply(params, masks.topk(scores, 0.5))
    kernels = {p: v for p, v in flat(pruned).items() if re.search(paths.DEBERTA_KERNELS, p)}
    zeros = {p: np.asarray(v) == 0 for p, v in kernels.items()}
    total = sum(v.size for v in kernels.values())
    assert sum(int(z.sum()) for z in zeros.values()) == round(0.5 * total)

    out = hf.save_pretrained(model, pruned, tmp_path / "out")
    reloaded, info = HF_AUTO[task].from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(reloaded).__name__ == hf.hf_config(model).architectures[0]
    state = reloaded.state_dict()
    for path, z in zeros.items():
        weight = state[hf._hf_key(path)[0]].numpy().T
        np.testing.assert_array_equal(weight == 0, z, err_msg=path)

    ids, mask, types = batch(variant)
    state_model = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state_model, pruned)
    nnx.update(model, state_model)
    ours = jax_logits(model, ids, mask, types).logits
    expected = torch_logits(reloaded.eval(), task, ids, mask, types)
    assert_close(ours, expected, f"pruned {variant} {task}", where(task, mask))

    model2, params2, _ = hf.load_pretrained(out, head=task, num_labels=num_labels)
    for path, value in flat(params2).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat(pruned)[path]), path)
    again = jax_logits(model2, ids, mask, types).logits
    assert_close(again, ours, f"reloaded {variant} {task}", atol=0)


def test_masked_optimizer_train_step_reaches_half(folders):
    _, folder = folders("v3", "sequence-classification", 3)
    model, params, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    axes = flat(logical_axes(model))
    for path, value in flat(params).items():  # every param carries logical axes
        assert len(axes[path]) == value.ndim and any(axes[path]), path
    tx = jaxprune.masked_optimizer(
        optax.adamw(1e-3),
        criterion="magnitude",
        schedule=0.5,
        prunable=paths.DEBERTA_KERNELS,
        update_every=1,
    )
    forward = train.model_fn(model)
    step = jax.jit(train.train_step_fn(train.supervised_loss(forward, "classification"), tx))
    ids, mask, _ = batch("v3")
    data = {
        "input_ids": jnp.asarray(ids, jnp.int32),
        "attention_mask": jnp.asarray(mask, jnp.int32),
        "labels": jnp.asarray([0, 2], jnp.int32),
    }
    state, metrics = step(train.init_state(params, tx), data, None)
    assert np.isfinite(float(metrics["loss"]))
    assert float(jaxprune.sparsity(state.params, paths.DEBERTA_KERNELS)) == pytest.approx(0.5)
    changed = [
        p
        for p, v in flat(state.params).items()
        if not re.search(paths.DEBERTA_KERNELS, p) and not np.array_equal(v, flat(params)[p])
    ]
    assert any("rel_embeddings" in p for p in changed)  # the relative table trains too


# ----------------------------------------------------------------------------- misuse


def test_missing_tensor_is_named(folders, tmp_path):
    _, folder = folders("v3", "sequence-classification", 3)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["deberta.encoder.rel_embeddings.weight"]
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"no tensor for deberta/encoder/rel_embeddings"):
        hf.load_pretrained(tmp_path, head="sequence-classification", num_labels=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(embedding_size=16), "embed_proj"),
        (dict(pos_att_type=["p2p"]), "pos_att_type"),
        (dict(norm_rel_ebd="batch_norm"), "norm_rel_ebd"),
        (dict(conv_kernel_size=4), "conv_kernel_size"),
    ],
)
def test_unsupported_options_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        hf.build(tiny_config("v3", **overrides))


def test_masked_lm_head_is_refused():
    with pytest.raises(ValueError, match="no 'masked-lm' head"):
        hf.build(tiny_config("v3"), head="masked-lm")


def test_conv_layer_refuses_packed_rows():
    model = hf.build(tiny_config("v2"))
    ids = jnp.ones((1, 6), jnp.int32)
    with pytest.raises(ValueError, match="ConvLayer"):
        model(ids, segment_ids=jnp.asarray([[1, 1, 1, 2, 2, 0]]))


def test_config_round_trips_through_hf_config():
    model = hf.build(tiny_config("v3"), head="token-classification", num_labels=5)
    config = hf.hf_config(model)
    assert config.architectures == ["DebertaV2ForTokenClassification"]
    assert config.num_labels == 5
    assert DebertaV2Config.from_hf(config) == model.cfg
