"""Shared fixtures: a tiny random BERT and the seeded synthetic corpus (see nci.synthetic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    from nci.encoder import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """The synthetic corpus in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/)."""
    from nci.synthetic import make_corpus, write_beir

    return write_beir(make_corpus(), tmp_path_factory.mktemp("synthetic"))
