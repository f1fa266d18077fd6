"""A tiny NCI model over semantic ids of the synthetic corpus, for tests (see conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_tiny_model(ids: Any, tiny_encoder: Path, out: Path, centroid_prior: bool = False) -> Path:
    """An untrained 1-layer NCI model (d 32) on the tiny BERT, saved to ``out``.

    With ``centroid_prior`` its output weights start from the k-means centroids, so beam search
    follows the k-means tree.
    """
    import torch

    from nci.encoder import load_encoder
    from nci.model import NCIConfig, NCIModel

    tokenizer, encoder = load_encoder(tiny_encoder)
    torch.manual_seed(0)
    config = NCIConfig(
        k=ids.k,
        max_depth=ids.max_depth,
        n_nodes=ids.trie.n_nodes,
        encoder_hidden=32,
        encoder_layers=2,
        max_length=16,
        d_model=32,
        n_heads=2,
        n_layers=1,
        d_ff=64,
        dropout=0.0,
        centroid_prior=centroid_prior,
    )
    model = NCIModel(config, encoder, tokenizer)
    if centroid_prior:
        model.init_centroid_prior(ids.centroids, ids.trie)
    model.save_pretrained(out)
    return out
