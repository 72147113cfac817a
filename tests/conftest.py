"""Test settings: offline Hugging Face, CPU JAX; the tiny world of recipe and docs tests."""

import os
import pathlib

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Fixture files of every task (``data``) and tiny ``bert`` / ``gpt2`` checkpoints."""
    import fixtures

    root = tmp_path_factory.mktemp("world")
    return {
        "data": fixtures.write_data(root / "data"),
        "bert": fixtures.tiny_bert(root / "bert"),
        "gpt2": fixtures.tiny_gpt2(root / "gpt2"),
    }
