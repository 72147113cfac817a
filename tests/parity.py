"""Helpers of the parity tests against transformers' PyTorch models (``test_deberta.py``,
``test_modernbert.py``, ``test_llama.py``): weights redrawn where a misplaced tensor shows,
the reference's inputs and logits, and the comparison itself."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pytest
import torch
import transformers
from numpy.typing import ArrayLike

from jaxprune import paths

ATOL = 1e-4
#: transformers' auto class of every encoder head.
HF_AUTO = {
    "base": transformers.AutoModel,
    "sequence-classification": transformers.AutoModelForSequenceClassification,
    "question-answering": transformers.AutoModelForQuestionAnswering,
    "token-classification": transformers.AutoModelForTokenClassification,
    "masked-lm": transformers.AutoModelForMaskedLM,
}


def assert_close(
    a: ArrayLike, b: ArrayLike, what: str, select: ArrayLike | None = None, atol: float = ATOL
) -> float:
    """Asserts max |a - b| <= ``atol`` over the entries ``select`` (a boolean index) picks,
    all by default; prints and returns that maximum."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    if select is not None:
        a, b = a[select], b[select]
    diff = float(np.max(np.abs(a - b)))
    print(f"{what}: max |diff| = {diff:.2e}")
    assert diff <= atol, f"{what}: max |diff| = {diff:.3g} > {atol}"
    return diff


def flat(tree: Any) -> dict[str, Any]:
    """The leaves of ``tree`` by jaxprune path (``a/b/kernel``)."""
    return {paths.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def randomize_(
    model: torch.nn.Module, seed: int = 0, norms: str = r"norm\.weight$"
) -> torch.nn.Module:
    """Redraws every parameter in place (tied ones stay tied): N(0, 0.2); the scales of the
    norms (names matching ``norms``) 1 + N(0, 0.1). Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if re.search(norms, name) else 0.2 * noise)
    return model.eval()


def torch_inputs(
    ids: np.ndarray, mask: np.ndarray | None = None, types: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """transformers' keyword inputs: ids, and the attention mask and token types if given."""
    kwargs = {"input_ids": torch.tensor(ids)}
    if mask is not None:
        kwargs["attention_mask"] = torch.tensor(mask)
    if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types)
    return kwargs


def torch_logits(
    model: torch.nn.Module,
    task: str,
    ids: np.ndarray,
    mask: np.ndarray,
    types: np.ndarray | None = None,
) -> np.ndarray:
    """An encoder's output in jaxprune's layout: ``base`` the last hidden state, QA (start,
    end) stacked last, the other heads their logits."""
    with torch.no_grad():
        out = model(**torch_inputs(ids, mask, types))
    if task == "base":
        return out.last_hidden_state.numpy()
    if task == "question-answering":
        return torch.stack([out.start_logits, out.end_logits], -1).numpy()
    return out.logits.numpy()


def where(task: str, mask: np.ndarray) -> np.ndarray | None:
    """The entries an encoder head defines: every row for sequence heads, real tokens
    otherwise (a padded query of ModernBERT's local layers may have no key to attend to)."""
    return None if task == "sequence-classification" else mask.astype(bool)


def saved_once(
    tmp_path_factory: pytest.TempPathFactory, make: Callable[[str, str, int], torch.nn.Module]
) -> Callable[[str, str, int], tuple[torch.nn.Module, pathlib.Path]]:
    """(variant, task, num_labels) -> (the torch model ``make`` builds, its saved folder),
    each made once."""
    cache: dict[tuple[str, str, int], tuple[torch.nn.Module, pathlib.Path]] = {}

    def get(variant: str, task: str, num_labels: int) -> tuple[torch.nn.Module, pathlib.Path]:
        key = (variant, task, num_labels)
        if key not in cache:
            model = make(variant, task, num_labels)
            folder = tmp_path_factory.mktemp(f"{variant}-{task}-{num_labels}")
            model.save_pretrained(folder)
            cache[key] = (model, folder)
        return cache[key]

    return get
