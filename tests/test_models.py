"""The Flax NNX models against transformers' PyTorch ones, and Hugging Face load / save.

Tiny random configs (2 layers, hidden 32, 4 heads) make every architecture and task cheap;
the real all-MiniLM-L6-v2 checkpoint (an installed package) checks a real one. Weights are
redrawn at a larger scale than transformers' initialisation (biases and LayerNorms too) so
that a misplaced or mistransposed tensor cannot hide behind zeros and ones.
"""

import logging
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

import jaxprune
from jaxprune import hf, masks, paths
from jaxprune.models import generate_greedy, logical_axes

ATOL = 1e-4
VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 99, 32, 2, 4, 37, 64
ARCHS = ("bert", "roberta", "electra", "distilbert")
HF_AUTO = {
    "base": transformers.AutoModel,
    "sequence-classification": transformers.AutoModelForSequenceClassification,
    "question-answering": transformers.AutoModelForQuestionAnswering,
    "token-classification": transformers.AutoModelForTokenClassification,
    "masked-lm": transformers.AutoModelForMaskedLM,
}
# (task, num_labels) pairs checked for every architecture.
TASKS = [
    ("base", 2),
    ("sequence-classification", 3),
    ("sequence-classification", 1),
    ("question-answering", 2),
    ("token-classification", 3),
    ("masked-lm", 2),
]
# The six prunable matrices of a layer, per architecture family.
BERT_LAYER_KERNELS = (
    "attention/self/query",
    "attention/self/key",
    "attention/self/value",
    "attention/output/dense",
    "intermediate/dense",
    "output/dense",
)
DISTIL_LAYER_KERNELS = (
    "attention/q_lin",
    "attention/k_lin",
    "attention/v_lin",
    "attention/out_lin",
    "ffn/lin1",
    "ffn/lin2",
)


# ----------------------------------------------------------------------------- helpers


def tiny_config(arch: str, **overrides) -> transformers.PretrainedConfig:
    """A random-weights-sized transformers config of ``arch``."""
    common = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=POSITIONS,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.15,
    )
    if arch == "bert":
        config = transformers.BertConfig(**common, classifier_dropout=0.3)
    elif arch == "roberta":
        config = transformers.RobertaConfig(
            **common, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2
        )
    elif arch == "electra":
        config = transformers.ElectraConfig(**common, embedding_size=16, hidden_act="gelu")
    elif arch == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=VOCAB,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=INTERMEDIATE,
            max_position_embeddings=POSITIONS,
            dropout=0.1,
            attention_dropout=0.15,
            seq_classif_dropout=0.2,
            qa_dropout=0.25,
        )
    else:
        raise ValueError(arch)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Redraws every parameter (tied ones stay tied): N(0, 0.2), LayerNorm scales 1 + N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm_scale = re.search(r"(LayerNorm|layer_norm|ln_\w+)\.weight$", name)
            p.copy_(1 + 0.1 * noise if is_norm_scale else 0.2 * noise)
    return model.eval()


def hf_model(config, task: str = "base", num_labels: int = 2, seed: int = 0) -> torch.nn.Module:
    """transformers' model for ``task``, eager attention (so it returns probabilities)."""
    config.num_labels = num_labels
    torch.manual_seed(seed)
    model = HF_AUTO[task].from_config(config, attn_implementation="eager")
    return randomize_(model, seed)


def save_hf(model: torch.nn.Module, folder) -> str:
    model.save_pretrained(folder)
    return str(folder)


def batch(pad_token_id: int, *, lengths=(9, 6), seed: int = 0, token_types: bool = True):
    """Two sequences of different lengths, right-padded: (ids, mask, token types or None)."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(3, VOCAB, size=(len(lengths), width))  # ids 0..2 are special / pad
    mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    ids = np.where(mask, ids, pad_token_id)
    types = (np.arange(width)[None, :] >= 4).astype(np.int64) * mask if token_types else None
    return ids, mask.astype(np.int64), types


def torch_kwargs(ids, mask, types):
    kwargs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types)
    return kwargs


def max_diff(a, b, where=None) -> float:
    """Largest |a - b| over the entries selected by the boolean ``where`` (leading axes)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if where is not None:
        a, b = a[where], b[where]
    return float(np.max(np.abs(a - b)))


def assert_close(a, b, what: str, where=None, atol: float = ATOL) -> float:
    diff = max_diff(a, b, where)
    print(f"{what}: max |diff| = {diff:.2e}")
    assert diff <= atol, f"{what}: max |diff| = {diff:.3g} > {atol}"
    return diff


def hf_key(path: str) -> tuple[str, bool]:
    """(checkpoint key, whether the tensor is transposed) of a jaxprune param path."""
    *parents, leaf = path.split("/")
    name = "weight" if leaf in ("kernel", "scale", "embedding") else leaf
    return ".".join([*parents, name]), leaf == "kernel"


def flat(tree) -> dict:
    return {paths.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def prune_encoder(params, sparsity: float = 0.9):
    """Zeroes ``sparsity`` of the encoder kernels by global magnitude (jaxprune's top-k)."""
    selected = paths.select(params, paths.BERT_ENCODER_KERNELS)
    scores = jax.tree.map(lambda s, p: jnp.abs(p) if s else None, selected, params)
    return masks.apply(params, masks.topk(scores, sparsity))


def prune_encoder_numpy(params, sparsity: float = 0.9):
    """Zeroes ``sparsity`` of every encoder kernel by magnitude, per kernel: a quick
    reference for big models (the global top-k compiles for seconds on this CPU)."""

    def prune(path, p):
        if not re.search(paths.BERT_ENCODER_KERNELS, paths.path_str(path)):
            return p
        p = np.array(p)  # a copy
        k = round(sparsity * p.size)
        p.reshape(-1)[np.argpartition(np.abs(p), k, axis=None)[:k]] = 0
        return jnp.asarray(p)

    return jax.tree_util.tree_map_with_path(prune, params)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """One saved random checkpoint per (architecture, task, num_labels), built on demand."""
    cache = {}

    def get(arch: str, task: str = "base", num_labels: int = 2):
        if (arch, task, num_labels) not in cache:
            model = hf_model(tiny_config(arch), task, num_labels)
            folder = tmp_path_factory.mktemp(f"{arch}-{task}-{num_labels}")
            cache[arch, task, num_labels] = (model, save_hf(model, folder))
        return cache[arch, task, num_labels]

    return get


@pytest.fixture(scope="module")
def minilm_torch():
    return transformers.AutoModel.from_pretrained(hf.resolve("minilm")).eval()


SENTENCES = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog near the bank of the river.",
]


# ----------------------------------------------------------------------------- 1. parity


def _compare_head(task, arch, logits, ref, real):
    if task == "base":
        assert_close(logits, ref.last_hidden_state, f"{arch} last_hidden_state", real)
    elif task == "sequence-classification":
        assert_close(logits, ref.logits, f"{arch} sequence logits")
    elif task == "question-answering":
        assert_close(logits[..., 0], ref.start_logits, f"{arch} start logits", real)
        assert_close(logits[..., 1], ref.end_logits, f"{arch} end logits", real)
    else:
        assert_close(logits, ref.logits, f"{arch} {task} logits", real)


@pytest.mark.parametrize(
    ("arch", "task", "num_labels"),
    # ELECTRA discriminators have no MLM head: see test_electra_has_no_mlm_head
    [(a, t, n) for t, n in TASKS for a in ARCHS if (a, t) != ("electra", "masked-lm")],
)
def test_parity_with_transformers(tiny_folders, arch, task, num_labels):
    torch_model, folder = tiny_folders(arch, task, num_labels)
    model, _, _ = hf.load_pretrained(folder, head=task, num_labels=num_labels)
    pad = torch_model.config.pad_token_id
    ids, mask, types = batch(pad, token_types=arch in ("bert", "electra"))
    real = mask.astype(bool)
    with torch.no_grad():
        ref = torch_model(
            **torch_kwargs(ids, mask, types), output_hidden_states=True, output_attentions=True
        )
    probs = ref.attentions

    # Fast path (fused attention): head and every hidden state.
    out = model(ids, mask, types, output_hidden_states=True)
    _compare_head(task, arch, out.logits, ref, real)
    assert len(out.hidden_states) == len(ref.hidden_states) == LAYERS + 1
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        assert_close(ours, theirs, f"{arch} hidden state {i}", real)
    if arch == "bert" and task == "base":
        assert_close(out.pooled, ref.pooler_output, "bert pooler")

    # Explicit path (scores returned): same head, and softmax(scores) = transformers' probs.
    out = model(ids, mask, types, output_attention_scores=True)
    _compare_head(task, arch, out.logits, ref, real)
    assert len(out.attention_scores) == len(probs) == LAYERS
    for i, (scores, theirs) in enumerate(zip(out.attention_scores, probs, strict=True)):
        assert scores.shape == (2, HEADS, ids.shape[1], ids.shape[1])
        ours = np.asarray(jax.nn.softmax(scores, axis=-1)).transpose(0, 2, 1, 3)  # b q h k
        theirs = theirs.numpy().transpose(0, 2, 1, 3)
        assert_close(ours, theirs, f"{arch} attention {i}", real)  # rows of real queries

    # The head's dropout rates are transformers' (the configs above give distinct rates).
    heads = (getattr(model, "classifier", None), getattr(torch_model, "classifier", None))
    for ours, theirs in [(model, torch_model), heads]:
        if isinstance(getattr(theirs, "dropout", None), torch.nn.Dropout):
            assert ours.dropout.rate == pytest.approx(theirs.dropout.p)


def test_parity_functional_call_equals_module(tiny_folders):
    torch_model, folder = tiny_folders("roberta", "sequence-classification", 3)
    model, params, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    graphdef, _ = nnx.split(model)
    ids, mask, _ = batch(1, token_types=False)
    logits = nnx.merge(graphdef, params)(ids, mask).logits
    with torch.no_grad():
        ref = torch_model(**torch_kwargs(ids, mask, None)).logits
    assert_close(logits, ref, "roberta functional logits")


def test_electra_has_no_mlm_head(tiny_folders):
    _, folder = tiny_folders("electra", "base")
    with pytest.raises(ValueError, match="no masked-LM head"):
        hf.load_pretrained(folder, head="masked-lm")


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_untied_lm_head_is_refused(tmp_path, arch):
    config = tiny_config(arch, tie_word_embeddings=False)
    folder = save_hf(hf_model(config, "masked-lm"), tmp_path)
    with pytest.raises(ValueError, match="tie_word_embeddings=False"):
        hf.load_pretrained(folder, head="masked-lm")
    hf.load_pretrained(folder, head="token-classification")  # the decoder is not needed


def test_unknown_head_is_named(tiny_folders):
    _, folder = tiny_folders("bert", "base")
    with pytest.raises(ValueError, match="unknown head 'summarization'"):
        hf.load_pretrained(folder, head="summarization")


# ----------------------------------------------------------------------------- 2. MiniLM


def test_minilm_matches_transformers(minilm_torch):
    model, _, tokenizer = hf.load_pretrained("minilm", head="base")
    assert tokenizer is not None
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    real = enc["attention_mask"].astype(bool)
    assert not real.all()  # the batch is padded
    out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    with torch.no_grad():
        ref = minilm_torch(**{k: torch.tensor(v) for k, v in enc.items()})
    assert_close(out.logits, ref.last_hidden_state, "minilm last_hidden_state", real)
    assert_close(out.pooled, ref.pooler_output, "minilm pooler")


# ----------------------------------------------------------------------------- 3. round trip


def _check_round_trip(model, pruned, out_dir, task, num_labels, ids, mask, types):
    graphdef, _ = nnx.split(model)
    logits = nnx.merge(graphdef, pruned)(ids, mask, types).logits
    hf.save_pretrained(model, pruned, out_dir)

    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(out_dir).eval()
    assert torch_model.config.num_labels == num_labels
    with torch.no_grad():
        ref = torch_model(**torch_kwargs(ids, mask, types)).logits
    assert_close(logits, ref, "pruned logits after export")

    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    for path, value in flat(pruned).items():
        key, transposed = hf_key(path)
        theirs = state[key].T if transposed else state[key]
        np.testing.assert_array_equal(theirs, np.asarray(value), err_msg=key)
        assert np.sum(theirs == 0) == np.sum(np.asarray(value) == 0), key

    _, reloaded, _ = hf.load_pretrained(out_dir, head=task, num_labels=num_labels)
    assert jax.tree.structure(reloaded) == jax.tree.structure(pruned)
    for (path, value), again in zip(flat(pruned).items(), jax.tree.leaves(reloaded), strict=True):
        np.testing.assert_array_equal(again, value, err_msg=path)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_pruned_round_trip_tiny(tiny_folders, tmp_path, arch):
    _, folder = tiny_folders(arch, "sequence-classification", 3)
    model, params, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    pruned = prune_encoder(params)
    kernels = [v for p, v in flat(pruned).items() if re.search(paths.BERT_ENCODER_KERNELS, p)]
    assert len(kernels) == 6 * LAYERS
    zeros = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels)
    assert zeros == round(0.9 * sum(k.size for k in kernels))
    ids, mask, types = batch(0, token_types=arch == "bert")
    _check_round_trip(
        model, pruned, tmp_path / "out", "sequence-classification", 3, ids, mask, types
    )


def test_pruned_round_trip_minilm_new_head(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jaxprune.hf"):
        model, params, tokenizer = hf.load_pretrained("minilm", head="sequence-classification")
    assert "classifier.weight" in caplog.text
    pruned = prune_encoder_numpy(params)
    kernels = [v for p, v in flat(pruned).items() if re.search(paths.BERT_ENCODER_KERNELS, p)]
    assert len(kernels) == 6 * 6
    assert float(jaxprune.sparsity(kernels)) == pytest.approx(0.9, abs=1e-6)
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    _check_round_trip(
        model,
        pruned,
        tmp_path / "out",
        "sequence-classification",
        2,
        enc["input_ids"],
        enc["attention_mask"],
        enc["token_type_ids"],
    )


# ----------------------------------------------------------------------------- 4. GPT-2


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=INTERMEDIATE,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    torch_model = randomize_(transformers.GPT2LMHeadModel(config))
    folder = save_hf(torch_model, tmp_path_factory.mktemp("gpt2"))
    model, params, _ = hf.load_pretrained(folder)
    return torch_model, model, params, folder


def test_gpt2_logits_match(tiny_gpt2):
    torch_model, model, _, _ = tiny_gpt2
    ids, mask, _ = batch(0, token_types=False)
    real = mask.astype(bool)
    out = model(ids, mask, output_hidden_states=True)
    with torch.no_grad():
        ref = torch_model(**torch_kwargs(ids, mask, None), output_hidden_states=True)
    assert_close(out.logits, ref.logits, "gpt2 logits", real)
    # transformers' last hidden state is after ln_f; the others are block outputs.
    for i in range(LAYERS):
        assert_close(out.hidden_states[i], ref.hidden_states[i], f"gpt2 hidden {i}", real)


def test_gpt2_greedy_generation_matches(tiny_gpt2):
    torch_model, model, _, _ = tiny_gpt2
    ids, _, _ = batch(0, lengths=(7, 7), seed=1, token_types=False)
    ours = generate_greedy(model, jnp.asarray(ids), 10)
    with torch.no_grad():
        theirs = torch_model.generate(
            torch.tensor(ids),
            attention_mask=torch.ones(ids.shape, dtype=torch.long),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=0,
        )
    assert ours.shape == (2, 17)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_gpt2_round_trip(tiny_gpt2, tmp_path):
    torch_model, model, params, _ = tiny_gpt2
    hf.save_pretrained(model, params, tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, mask, _ = batch(0, token_types=False)
    with torch.no_grad():
        expected = torch_model(**torch_kwargs(ids, mask, None)).logits
        got = reloaded(**torch_kwargs(ids, mask, None)).logits
    assert_close(got, expected, "gpt2 re-exported logits", mask.astype(bool))


def test_generate_greedy_rejects_overlong(tiny_gpt2):
    _, model, _, _ = tiny_gpt2
    with pytest.raises(ValueError, match="exceeds n_positions=64"):
        generate_greedy(model, jnp.zeros((1, 60), jnp.int32), 10)


# ----------------------------------------------------------------------------- 5. errors


@pytest.mark.parametrize(
    ("config", "model_type"),
    [
        (transformers.T5Config(vocab_size=VOCAB, d_model=HIDDEN, num_layers=1), "t5"),
        (transformers.GPTNeoConfig(vocab_size=VOCAB, hidden_size=HIDDEN), "gpt_neo"),
    ],
)
def test_unknown_architecture_is_named(tmp_path, config, model_type):
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"unsupported model_type '{model_type}'"):
        hf.load_pretrained(tmp_path)


def test_missing_weights_lists_the_folder(tmp_path):
    tiny_config("bert").save_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("no weights here")
    with pytest.raises(FileNotFoundError, match=r"no weights in .*found: \['config.json', 'notes"):
        hf.load_pretrained(tmp_path)


def test_missing_config(tiny_folders, tmp_path):
    _, folder = tiny_folders("bert", "base")
    (tmp_path / "model.safetensors").write_bytes(
        (pathlib.Path(folder) / "model.safetensors").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        hf.load_pretrained(tmp_path)


def _edited_copy(folder, out, edit):
    """A copy of the checkpoint ``folder`` in ``out`` with ``edit(tensors)`` applied."""
    shutil.copy(pathlib.Path(folder) / "config.json", out / "config.json")
    tensors = load_file(f"{folder}/model.safetensors")
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_shape_mismatch_names_key_and_shapes(tiny_folders, tmp_path):
    _, folder = tiny_folders("bert", "base")
    key = "encoder.layer.1.attention.self.query.weight"

    def edit(tensors):
        tensors[key] = np.zeros((HIDDEN - 1, HIDDEN), np.float32)

    _edited_copy(folder, tmp_path, edit)
    with pytest.raises(ValueError) as err:
        hf.load_pretrained(tmp_path, head="base")
    message = str(err.value)
    assert key in message
    assert "(31, 32)" in message and "(32, 32)" in message
    assert "bert/encoder/layer/1/attention/self/query/kernel" in message


def test_missing_body_tensor_names_the_path(tiny_folders, tmp_path):
    _, folder = tiny_folders("bert", "base")
    _edited_copy(folder, tmp_path, lambda t: t.pop("encoder.layer.1.output.dense.weight"))
    with pytest.raises(ValueError, match="bert/encoder/layer/1/output/dense/kernel"):
        hf.load_pretrained(tmp_path, head="sequence-classification")


def test_unknown_name_offline():
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
        hf.load_pretrained("no-such-org/no-such-model")


def test_weights_file_instead_of_folder(tiny_folders):
    _, folder = tiny_folders("bert", "base")
    with pytest.raises(NotADirectoryError, match="is a file"):
        hf.load_pretrained(f"{folder}/model.safetensors")


def test_corrupted_safetensors_names_the_file(tiny_folders, tmp_path):
    _, folder = tiny_folders("bert", "base")
    tiny_config("bert").save_pretrained(tmp_path)
    data = (pathlib.Path(folder) / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "model.safetensors"))):
        hf.load_pretrained(tmp_path)


def test_new_head_is_reported(tiny_folders, caplog):
    _, folder = tiny_folders("bert", "base")
    with caplog.at_level(logging.WARNING, logger="jaxprune.hf"):
        hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    record = next(r for r in caplog.records if "newly initialised" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert "classifier.weight" in record.getMessage()
    assert "classifier.bias" in record.getMessage()
    assert "bert.pooler" not in record.getMessage()  # the base checkpoint has the pooler


def test_folder_without_tokenizer_gives_none(tiny_folders):
    _, folder = tiny_folders("distilbert", "base")
    assert hf.load_pretrained(folder, head="base").tokenizer is None


def test_label_count_mismatch_is_named(tiny_folders):
    _, folder = tiny_folders("bert", "sequence-classification", 3)
    with pytest.raises(
        ValueError, match=r"classifier.bias has shape \(3,\), but classifier/bias needs \(2,\)"
    ):
        hf.load_pretrained(folder, head="sequence-classification", num_labels=2)


def test_save_rejects_params_of_another_model(tiny_folders, tmp_path):
    _, folder = tiny_folders("bert", "sequence-classification", 3)
    model, params, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    other = {k: v for k, v in params.items() if k != "classifier"}
    with pytest.raises(ValueError, match=r"missing.*classifier/bias"):
        hf.save_pretrained(model, other, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# ----------------------------------------------------------------------------- 6. paths, axes


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_logical_axes_cover_every_param(tiny_folders, arch):
    _, folder = tiny_folders(arch, "masked-lm")
    model, params, _ = hf.load_pretrained(folder, head="masked-lm")
    axes = logical_axes(model)
    assert jax.tree.structure(axes) == jax.tree.structure(params)
    for path, spec in flat(axes).items():
        assert len(spec) == flat(params)[path].ndim, path
    vocab_bias = {
        "bert": ("cls", "predictions", "bias"),
        "roberta": ("lm_head", "bias"),
        "distilbert": ("vocab_projector", "bias"),
    }[arch]
    node = axes
    for key in vocab_bias:
        node = node[key]
    assert tuple(node) == ("vocab",)
    body = axes[arch]
    assert tuple(body["embeddings"]["word_embeddings"]["embedding"]) == ("vocab", "embed")


def test_logical_axes_of_bert(tiny_folders):
    _, folder = tiny_folders("bert", "base")
    model, _, _ = hf.load_pretrained(folder, head="base")
    body = logical_axes(model)["bert"]
    assert tuple(body["encoder"]["layer"][0]["attention"]["self"]["query"]["kernel"]) == (
        "embed",
        "heads",
    )
    assert tuple(body["encoder"]["layer"][1]["output"]["dense"]["kernel"]) == ("mlp", "embed")
    assert tuple(body["embeddings"]["word_embeddings"]["embedding"]) == ("vocab", "embed")
    assert tuple(body["embeddings"]["position_embeddings"]["embedding"]) == ("positions", "embed")


def test_gpt2_logical_axes(tiny_gpt2):
    _, model, params, _ = tiny_gpt2
    axes = logical_axes(model)
    assert jax.tree.structure(axes) == jax.tree.structure(params)
    assert tuple(axes["transformer"]["wte"]["embedding"]) == ("vocab", "embed")
    assert tuple(axes["transformer"]["h"][0]["mlp"]["c_fc"]["kernel"]) == ("embed", "mlp")


@pytest.mark.parametrize("arch", ARCHS)
def test_encoder_kernel_preset_selects_six_matrices_per_layer(tiny_folders, arch):
    _, folder = tiny_folders(arch, "sequence-classification", 3)
    _, params, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    selected = {p for p, s in flat(paths.select(params, paths.BERT_ENCODER_KERNELS)).items() if s}
    stack, names = (
        ("transformer", DISTIL_LAYER_KERNELS)
        if arch == "distilbert"
        else ("encoder", BERT_LAYER_KERNELS)
    )
    expected = {f"{arch}/{stack}/layer/{i}/{name}/kernel" for i in range(LAYERS) for name in names}
    assert selected == expected


# ----------------------------------------------------------------------------- 7. bfloat16


def test_bfloat16_compute(tiny_folders):
    torch_model, folder = tiny_folders("bert", "sequence-classification", 3)
    _, params32, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    model, params, _ = hf.load_pretrained(
        folder, head="sequence-classification", num_labels=3, dtype=jnp.bfloat16
    )
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    state = nnx.state(model, nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}
    for path, value in flat(params32).items():
        np.testing.assert_array_equal(flat(params)[path], value)
    ids, mask, types = batch(0)
    out = model(ids, mask, types, output_hidden_states=True)
    assert out.hidden_states[-1].dtype == jnp.bfloat16
    with torch.no_grad():
        ref = torch_model(**torch_kwargs(ids, mask, types)).logits
    assert_close(out.logits, ref, "bf16 logits", atol=5e-2)
    # the explicit attention path too
    scored = model(ids, mask, types, output_attention_scores=True)
    assert_close(scored.logits, ref, "bf16 logits (scores path)", atol=5e-2)


# ----------------------------------------------------------------------------- 8. dropout, jit


def test_dropout_is_random_reproducible_and_off_by_default(tiny_folders):
    # DistilBERT: the fewest distinct dropout shapes, so the fewest random-bits compilations
    _, folder = tiny_folders("distilbert", "sequence-classification", 3)
    model, _, _ = hf.load_pretrained(folder, head="sequence-classification", num_labels=3)
    ids, mask, types = batch(0, token_types=False)
    plain = model(ids, mask, types).logits
    np.testing.assert_array_equal(model(ids, mask, types).logits, plain)

    def train(seed):
        return model(ids, mask, types, deterministic=False, rngs=nnx.Rngs(dropout=seed)).logits

    first = train(0)
    assert max_diff(first, plain) > 1e-3
    np.testing.assert_array_equal(train(0), first)
    assert max_diff(train(1), first) > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_jit_functional_forward_equals_eager(tiny_folders, arch):
    _, folder = tiny_folders(arch, "token-classification", 3)
    model, params, _ = hf.load_pretrained(folder, head="token-classification", num_labels=3)
    graphdef, _ = nnx.split(model)
    ids, mask, _ = batch(1 if arch == "roberta" else 0, token_types=False)
    forward = jax.jit(lambda p, x, m: nnx.merge(graphdef, p)(x, m).logits)
    assert_close(forward(params, ids, mask), model(ids, mask).logits, f"{arch} jit", atol=1e-5)
