import re

import jax.numpy as jnp
import pytest

from jaxprune import paths

ENCODER = {
    "bert/encoder/layer/3/attention/self/query/kernel": True,
    "bert/encoder/layer/3/attention/self/value/kernel": True,
    "bert/encoder/layer/3/attention/output/dense/kernel": True,
    "bert/encoder/layer/3/intermediate/dense/kernel": True,
    "bert/encoder/layer/11/output/dense/kernel": True,
    "encoder/layer/0/attention/self/key/kernel": True,  # base-model checkpoints
    "distilbert/transformer/layer/0/attention/q_lin/kernel": True,
    "distilbert/transformer/layer/5/attention/out_lin/kernel": True,
    "distilbert/transformer/layer/0/ffn/lin1/kernel": True,
    "bert/encoder/layer/3/attention/output/LayerNorm/scale": False,
    "bert/encoder/layer/11/output/LayerNorm/bias": False,
    "bert/embeddings/word_embeddings/embedding": False,
    "bert/pooler/dense/kernel": False,
    "classifier/kernel": False,
    "cls/predictions/transform/dense/kernel": False,
}


@pytest.mark.parametrize(("path", "selected"), ENCODER.items())
def test_bert_presets(path, selected):
    assert bool(re.search(paths.BERT_ENCODER_KERNELS, path)) is selected
    with_bias = path.replace("/kernel", "/bias")
    assert bool(re.search(paths.BERT_ENCODER_KERNELS_AND_BIASES, with_bias)) is (
        selected and path.endswith("/kernel")
    )


def test_select_by_regex_and_predicate():
    tree = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "b": [jnp.ones(3)]}
    assert paths.leaf_paths(tree) == ["a/bias", "a/kernel", "b/0"]
    assert paths.select(tree, r"kernel$") == {"a": {"kernel": True, "bias": False}, "b": [False]}
    big = paths.select(tree, lambda path, leaf: leaf.size > 2)
    assert big == {"a": {"kernel": True, "bias": False}, "b": [True]}


def test_structure_check_names_the_difference():
    ref = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        paths.check_same_structure(ref, {"a": jnp.ones(2)}, what="grads")
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        paths.check_same_structure(ref, {**ref, "c": jnp.ones(1)}, what="grads")
    with pytest.raises(ValueError, match=r"grads at b has shape \(4,\), expected \(3,\)"):
        paths.check_same_structure(ref, {"a": jnp.ones(2), "b": jnp.ones(4)}, what="grads")
