"""A tiny index over the synthetic corpus for the service tests: tiny BERT, k=4 ids, and an
untrained NCI model with the centroid prior (so beam search follows the k-means tree)."""

from __future__ import annotations

from pathlib import Path

_BUILT: dict[tuple[Path, Path, bool], Path] = {}


def build_tiny_index(root: Path, tiny_encoder: Path, data: Path, model: bool = True) -> Path:
    """Embeddings, ids (k=4, leaf size 4), a tiny NCI model and the index, under ``root``.

    Built once per test session (the first caller's ``root``); tests must not write into it:
    each gives the service its own updates directory.
    """
    key = (Path(tiny_encoder), Path(data), model)
    if key not in _BUILT:
        _BUILT[key] = _build(Path(root), Path(tiny_encoder), Path(data), model)
    return _BUILT[key]


def _build(root: Path, tiny_encoder: Path, data: Path, model: bool) -> Path:
    import torch

    from nci.embed import EmbedConfig, embed_corpus
    from nci.encoder import load_encoder
    from nci.index import build_index
    from nci.model import NCIConfig, NCIModel
    from nci.semantic_ids import IdsConfig, build

    emb = embed_corpus(data, root / "emb", EmbedConfig(model=str(tiny_encoder), max_length=64))
    if not model:
        return build_index(data, emb, root / "plain")
    ids = build(emb, root / "ids", IdsConfig(k=4, leaf_size=4))
    tokenizer, encoder = load_encoder(tiny_encoder)
    torch.manual_seed(0)
    config = NCIConfig(
        k=4,
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
        centroid_prior=True,
    )
    model_ = NCIModel(config, encoder, tokenizer)
    model_.init_centroid_prior(ids.centroids, ids.trie)
    model_.save_pretrained(root / "model")
    return build_index(data, emb, root / "index", ids=root / "ids", model=root / "model")
