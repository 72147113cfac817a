"""Structured scores and masks (heads, FFN neurons) and the N:M mask rule."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny import TINY_BERT

import jaxprune
from jaxprune import criteria, paths, structured
from jaxprune.models import EncoderForTask

H, D, HID = TINY_BERT.num_attention_heads, TINY_BERT.head_dim, TINY_BERT.hidden_size
FFN = TINY_BERT.intermediate_size


def tiny_params(arch: str = "bert") -> dict:
    cfg = dataclasses.replace(
        TINY_BERT, arch=arch, type_vocab_size=0 if arch == "distilbert" else 2
    )
    model = EncoderForTask(cfg, task="sequence-classification", rngs=nnx.Rngs(0))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def random_scores(params, prunable=paths.BERT_ENCODER_KERNELS_AND_BIASES, seed=0) -> dict:
    selected = paths.select(params, prunable)
    leaves = jax.tree.leaves(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = jax.tree.unflatten(
        jax.tree.structure(params),
        [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves, strict=True)],
    )
    return jax.tree.map(lambda s, n: n if s else None, selected, noise)


def reference_sums(layer: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-head and per-neuron sums of one BERT layer's scores, written out by hand."""
    attn = layer["attention"]
    heads = np.zeros(H)
    for h in range(H):
        cols = slice(h * D, (h + 1) * D)
        for name in ("query", "key", "value"):
            heads[h] += np.asarray(attn["self"][name]["kernel"])[:, cols].sum()
            heads[h] += np.asarray(attn["self"][name]["bias"])[cols].sum()
        heads[h] += np.asarray(attn["output"]["dense"]["kernel"])[cols, :].sum()
    w_in = np.asarray(layer["intermediate"]["dense"]["kernel"])
    b_in = np.asarray(layer["intermediate"]["dense"]["bias"])
    w_out = np.asarray(layer["output"]["dense"]["kernel"])
    return heads, w_in.sum(0) + b_in + w_out.sum(1)


def test_structure_scores_sum_each_structure():
    scores = random_scores(tiny_params())
    per = structured.structure_scores(scores, D)
    assert sorted(per.heads) == sorted(per.neurons) == [0, 1]
    for i in (0, 1):
        heads, neurons = reference_sums(scores["bert"]["encoder"]["layer"][i])
        np.testing.assert_allclose(per.heads[i], heads, rtol=1e-5)
        np.testing.assert_allclose(per.neurons[i], neurons, rtol=1e-5)


def test_unscored_leaves_do_not_count():
    params = tiny_params()
    scores = random_scores(params, prunable=paths.BERT_ENCODER_KERNELS)  # no biases
    layer = scores["bert"]["encoder"]["layer"][0]
    per = structured.structure_scores(scores, D)
    w_q = np.asarray(layer["attention"]["self"]["query"]["kernel"])
    w_k = np.asarray(layer["attention"]["self"]["key"]["kernel"])
    w_v = np.asarray(layer["attention"]["self"]["value"]["kernel"])
    w_o = np.asarray(layer["attention"]["output"]["dense"]["kernel"])
    expected = [
        sum(w[:, h * D : (h + 1) * D].sum() for w in (w_q, w_k, w_v))
        + w_o[h * D : (h + 1) * D].sum()
        for h in range(H)
    ]
    np.testing.assert_allclose(per.heads[0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="no attention or FFN leaf"):
        structured.structure_scores(random_scores(params, prunable=r"embeddings"), D)


@pytest.mark.parametrize("scope", ["global", "local"])
def test_masks_remove_whole_structures(scope):
    scores = random_scores(tiny_params())
    m = structured.structure_masks(scores, D, head_sparsity=0.5, neuron_sparsity=0.25, scope=scope)
    kept_heads, kept_neurons = [], []
    for i in (0, 1):
        layer = m["bert"]["encoder"]["layer"][i]
        attn = layer["attention"]
        q = np.asarray(attn["self"]["query"]["kernel"])
        head_keep = q[0].reshape(H, D)[:, 0]
        assert (q == np.repeat(head_keep, D)[None, :]).all()  # whole columns per head
        for name in ("key", "value"):
            np.testing.assert_array_equal(attn["self"][name]["kernel"], q)
            np.testing.assert_array_equal(attn["self"][name]["bias"], q[0])
        np.testing.assert_array_equal(
            attn["output"]["dense"]["kernel"], q[0][:, None] * np.ones(HID)
        )
        assert np.asarray(attn["output"]["dense"]["bias"]).all()  # shared: never masked
        neuron_keep = np.asarray(layer["intermediate"]["dense"]["bias"])
        np.testing.assert_array_equal(
            layer["intermediate"]["dense"]["kernel"], np.broadcast_to(neuron_keep, (HID, FFN))
        )
        np.testing.assert_array_equal(
            layer["output"]["dense"]["kernel"], np.broadcast_to(neuron_keep[:, None], (FFN, HID))
        )
        assert np.asarray(layer["output"]["dense"]["bias"]).all()
        if scope == "local":
            assert head_keep.sum() == H // 2 and neuron_keep.sum() == FFN * 3 // 4
        kept_heads.append(head_keep)
        kept_neurons.append(neuron_keep)
    kept_heads, kept_neurons = np.concatenate(kept_heads), np.concatenate(kept_neurons)
    assert kept_heads.sum() == 2 * H // 2 and kept_neurons.sum() == round(2 * FFN * 0.75)
    if scope == "global":  # the best-scored structures survive
        per = structured.structure_scores(scores, D)
        for kept, summed in ((kept_heads, per.heads), (kept_neurons, per.neurons)):
            summed = np.concatenate([summed[0], summed[1]])
            assert summed[kept].min() > summed[~kept].max()


def test_distilbert_layout_and_leaves_outside_structures():
    params = tiny_params("distilbert")
    scores = random_scores(
        params, prunable=r"(transformer/layer/\d+/(attention|ffn)|pre_classifier)"
    )
    m = structured.structure_masks(
        scores, D, head_sparsity=0.5, neuron_sparsity=None, scope="local"
    )
    layer = m["distilbert"]["transformer"]["layer"][0]
    assert np.asarray(layer["attention"]["q_lin"]["kernel"]).mean() == 0.5
    assert np.asarray(layer["ffn"]["lin1"]["kernel"]).all()  # neurons: None keeps all
    assert np.asarray(m["pre_classifier"]["kernel"]).all()  # in no structure: kept
    assert m["classifier"]["kernel"] is None  # not scored: stays None


def test_mask_rule_in_masked_optimizer_zeroes_whole_heads_and_neurons():
    params = tiny_params()
    model = EncoderForTask(TINY_BERT, task="sequence-classification", rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model)
    ids = jax.random.randint(jax.random.key(1), (4, 8), 3, TINY_BERT.vocab_size)
    labels = jnp.asarray([0, 1, 1, 0])

    def loss(p):
        logits = nnx.merge(graphdef, p)(ids).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    tx = jaxprune.masked_optimizer(
        optax.adam(1e-3),
        criterion=criteria.taylor(),
        schedule=0.5,
        prunable=paths.BERT_ENCODER_KERNELS,
        update_every=1,
        mask_rule=structured.mask_rule(D),
    )
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        grads = jax.grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(2):
        params, state = step(params, state)
    zero_heads = zero_neurons = 0
    for layer in params["bert"]["encoder"]["layer"].values():
        w_o = np.asarray(layer["attention"]["output"]["dense"]["kernel"])
        w_v = np.asarray(layer["attention"]["self"]["value"]["kernel"])
        o_zero = ~w_o.reshape(H, D, HID).any(axis=(1, 2))
        np.testing.assert_array_equal(o_zero, ~w_v.reshape(HID, H, D).any(axis=(0, 2)))
        zero_heads += o_zero.sum()
        zero_neurons += (~np.asarray(layer["output"]["dense"]["kernel"]).any(axis=1)).sum()
    assert zero_heads == H and zero_neurons == FFN  # half of 2 layers' heads and neurons

    with pytest.raises(ValueError, match="heads=True, neurons=True"):
        structured.mask_rule(D, heads=False, neurons=False)


def test_nm_rule_groups_the_input_axis_and_skips_biases():
    params = tiny_params()
    scores = random_scores(params)
    m = structured.nm_rule(2, 4)(scores, 0.9)  # the scheduled sparsity is ignored
    q = np.asarray(m["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["kernel"])
    np.testing.assert_array_equal(q.reshape(HID // 4, 4, HID).sum(axis=1), 2)
    assert np.asarray(m["bert"]["encoder"]["layer"][0]["attention"]["self"]["query"]["bias"]).all()
    assert m["bert"]["embeddings"]["word_embeddings"]["embedding"] is None
    with pytest.raises(ValueError, match=r"classifier/kernel.*not divisible by 4"):
        structured.nm_rule(2, 4)({"classifier": {"kernel": jnp.ones((6, 2))}}, 0.0)
    with pytest.raises(ValueError, match="0 < n <= m"):
        structured.nm_rule(3, 2)
