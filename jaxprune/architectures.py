"""The published architectures of the checkpoints the papers prune, as transformers configs.

Planning a paper-scale run (``jaxprune plan``) or smoke-testing it on random weights
(``jaxprune train --random-init``) needs a model's shapes, not its weights. These are the
numbers of the public ``config.json`` of each checkpoint on the Hugging Face Hub (BERT:
Devlin et al. 2019, Table/appendix sizes; RoBERTa: Liu et al. 2019; GPT-2: Radford et al.
2019), so they are known without the Hub. A local folder's ``config.json`` is always read
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
