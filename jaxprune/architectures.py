"""The published architectures of the checkpoints the papers prune, as transformers configs.

Planning a paper-scale run (``jaxprune plan``) or smoke-testing it on random weights
(``jaxprune train --random-init``) needs a model's shapes, not its weights. These are the
numbers of the public ``config.json`` of each checkpoint on the Hugging Face Hub (BERT:
Devlin et al. 2019, Table/appendix sizes; RoBERTa: Liu et al. 2019; GPT-2: Radford et al.
2019; DeBERTa-v3, ModernBERT and Llama 3.2: the sources cited beside their entries), so
they are known without the Hub. A local folder's ``config.json`` is always read
instead when the name is a folder.
"""

from __future__ import annotations

import fnmatch
import pathlib
from typing import Any

_BERT = dict(
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
_BERT_BASE = dict(
    _BERT, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
)
_GPT2 = dict(
    vocab_size=50257,
    n_positions=1024,
    activation_function="gelu_new",
    resid_pdrop=0.1,
    embd_pdrop=0.1,
    attn_pdrop=0.1,
    layer_norm_epsilon=1e-5,
    bos_token_id=50256,
    eos_token_id=50256,
)

# microsoft/deberta-v3-base's config.json (huggingface.co/microsoft/deberta-v3-base), as
# quoted in public code; its size, 183,831,552 parameters without a head (128,100 x 768 =
# 98.4M of them the embedding), is keras-team/keras-hub's
# keras_hub/src/models/deberta_v3/deberta_v3_presets.py ("deberta_v3_base_en").
_DEBERTA_V3_BASE = dict(
    vocab_size=128100,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=0,
    layer_norm_eps=1e-7,
    relative_attention=True,
    max_relative_positions=-1,
    pad_token_id=0,
    position_biased_input=False,
    pos_att_type=["p2c", "c2p"],
    position_buckets=256,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pooler_dropout=0,
    pooler_hidden_act="gelu",
    pooler_hidden_size=768,
)
# answerdotai/ModernBERT-base's config.json: transformers' ModernBertConfig defaults, which
# are that checkpoint's (transformers/models/modernbert/configuration_modernbert.py,
# @auto_docstring(checkpoint="answerdotai/ModernBERT-base")); its body, 149,014,272
# parameters, is keras-team/keras-hub's keras_hub/src/models/modernbert/
# modern_bert_presets.py ("modernbert_base_en"; the Hub's MLM checkpoint adds its 0.64M head).
_MODERNBERT_BASE = dict(
    vocab_size=50368,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=22,
    num_attention_heads=12,
    hidden_activation="gelu",
    max_position_embeddings=8192,
    norm_eps=1e-5,
    norm_bias=False,
    pad_token_id=50283,
    eos_token_id=50282,
    bos_token_id=50281,
    cls_token_id=50281,
    sep_token_id=50282,
    global_rope_theta=160000.0,
    local_rope_theta=10000.0,
    global_attn_every_n_layers=3,
    local_attention=128,
    attention_bias=False,
    mlp_bias=False,
    classifier_pooling="mean",
    classifier_bias=False,
    classifier_activation="gelu",
    decoder_bias=True,
    tie_word_embeddings=True,
)
# meta-llama/Llama-3.2-1B's config.json (gated on the Hub), as copied in
# kevinstephano/thunder_model_blocks hf_llama/llama_config.py; 1,235,814,400 parameters
# (tied output matrix), as ModelCloud/GPTQModel's tests/test_parameter_count.py checks.
_LLAMA_32_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    hidden_act="silu",
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=dict(
        rope_type="llama3",
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
    attention_bias=False,
    mlp_bias=False,
    tie_word_embeddings=True,
    bos_token_id=128000,
    eos_token_id=128001,
)

#: name -> (model_type, config fields): the public configs' architecture numbers.
PUBLIC: dict[str, tuple[str, dict[str, Any]]] = {
    "bert-base-uncased": ("bert", dict(_BERT_BASE, vocab_size=30522)),
    "bert-base-cased": ("bert", dict(_BERT_BASE, vocab_size=28996)),
    "bert-large-uncased": (
        "bert",
        dict(_BERT, vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
             num_attention_heads=16, intermediate_size=4096),
    ),
    "roberta-base": (
        "roberta",
        dict(_BERT_BASE, vocab_size=50265, max_position_embeddings=514,
             type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
             eos_token_id=2),
    ),
    "gpt2": ("gpt2", dict(_GPT2, n_embd=768, n_layer=12, n_head=12)),
    "gpt2-medium": ("gpt2", dict(_GPT2, n_embd=1024, n_layer=24, n_head=16)),
    "microsoft/deberta-v3-base": ("deberta-v2", _DEBERTA_V3_BASE),
    "answerdotai/ModernBERT-base": ("modernbert", _MODERNBERT_BASE),
    "meta-llama/Llama-3.2-1B": ("llama", _LLAMA_32_1B),
}  # fmt: skip

#: Fine-tuned checkpoints the configs distil from (Hub ids, by pattern) -> their base
#: architecture in :data:`PUBLIC`.
FINE_TUNED = {
    "textattack/bert-base-uncased-*": "bert-base-uncased",
    "csarron/bert-base-uncased-squad-v1": "bert-base-uncased",
}


def base_architecture(name: str) -> str | None:
    """The :data:`PUBLIC` name of ``name`` (itself, or the base of a fine-tuned id); None
    for names it does not know."""
    if name in PUBLIC:
        return name
    return next(
        (base for pattern, base in FINE_TUNED.items() if fnmatch.fnmatch(name, pattern)), None
    )


def config(name: str, *, folder: pathlib.Path | None = None) -> Any:
    """The transformers config of ``name``: ``folder/config.json`` when a folder is given,
    else the published architecture.

    Raises:
      KeyError: an unknown name, with the known ones.
    """
    from transformers import AutoConfig

    if folder is not None:
        return AutoConfig.from_pretrained(folder)
    base = base_architecture(name)
    if base is None:
        raise KeyError(
            f"{name!r}: no published architecture known here ({', '.join(PUBLIC)}; fine-tuned "
            f"{', '.join(FINE_TUNED)}); pass a folder with its config.json"
        )
    model_type, fields = PUBLIC[base]
    return AutoConfig.for_model(model_type, **fields)


__all__ = [
    "FINE_TUNED",
    "PUBLIC",
    "base_architecture",
    "config",
]
