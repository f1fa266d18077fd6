"""A tiny randomly initialised BERT, for tests: it loads through the same code path as a real encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from nci.encoder import resolve_encoder


def tiny_bert(directory: str | Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny randomly initialised BERT to ``directory``, with the packaged tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(None))
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(directory)
    return directory
