"""Embedding: batching, resume after a kill, and the real packaged encoder."""

from __future__ import annotations

import numpy as np
import pytest

from nci.data import load_corpus
from nci.embed import EmbedConfig, embed_corpus, encode_texts
from nci.encoder import load_encoder
from nci.manifest import read_manifest
from nci.semantic_ids import IdsConfig, build, load_semantic_ids


def test_batched_encoding_matches_one_by_one(tiny_encoder):
    tokenizer, model = load_encoder(tiny_encoder)
    texts = ["a short one", "a much longer text with many more words in it than the others", "mid size text"]
    batched = encode_texts(texts, tokenizer, model, batch_size=2)
    single = np.concatenate([encode_texts([t], tokenizer, model) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_embed_then_ids(tiny_encoder, synthetic_data, tmp_path):
    config = EmbedConfig(model=str(tiny_encoder), max_length=32, chunk_size=16)
    out = embed_corpus(synthetic_data, tmp_path / "emb", config)
    manifest = read_manifest(out, stage="embed")
    emb = np.load(out / "embeddings.npy")
    doc_ids = (out / "doc_ids.txt").read_text().split()
    assert emb.dtype == np.float32 and emb.shape == (len(load_corpus(synthetic_data)), 32)
    assert doc_ids == list(load_corpus(synthetic_data))
    assert manifest["counts"] == {"documents": len(doc_ids), "dimension": 32}
    assert not (tmp_path / "emb.partial").exists()

    ids = build(out, tmp_path / "ids", IdsConfig(k=4, leaf_size=3))
    assert ids.doc_ids == doc_ids and len(set(ids.ids)) == len(doc_ids)
    assert ids.centroids.shape == (ids.trie.n_nodes, 32)
    assert load_semantic_ids(tmp_path / "ids").ids == ids.ids


def test_killed_embedding_resumes_without_recomputing(tiny_encoder, synthetic_data, tmp_path, monkeypatch):
    import nci.embed

    config = EmbedConfig(model=str(tiny_encoder), max_length=32, chunk_size=16)
    calls = []
    real = nci.embed.encode_texts

    def dying(texts, *a, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(texts))
        return real(texts, *a, **kw)

    monkeypatch.setattr(nci.embed, "encode_texts", dying)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(synthetic_data, tmp_path / "emb", config)
    assert not (tmp_path / "emb").exists()
    assert len(list((tmp_path / "emb.partial").glob("chunk-*.npy"))) == 2

    calls.clear()

    def counting(texts, *a, **kw):
        calls.append(1)
        return real(texts, *a, **kw)

    monkeypatch.setattr(nci.embed, "encode_texts", counting)
    embed_corpus(synthetic_data, tmp_path / "emb", config)
    n_chunks = -(-len(load_corpus(synthetic_data)) // 16)
    assert len(calls) == n_chunks - 2  # finished chunks were not recomputed

    fresh = embed_corpus(synthetic_data, tmp_path / "fresh", config)
    resumed = np.load(tmp_path / "emb/embeddings.npy")
    np.testing.assert_allclose(resumed, np.load(fresh / "embeddings.npy"), atol=1e-6)


def test_existing_output_is_not_overwritten(tiny_encoder, synthetic_data, tmp_path):
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        embed_corpus(synthetic_data, tmp_path / "emb", EmbedConfig(model=str(tiny_encoder)))


def test_packaged_minilm_loads_offline_and_embeds_meaningfully():
    """The packaged all-MiniLM-L6-v2: 384-d, and related sentences are closer than unrelated ones."""
    tokenizer, model = load_encoder(None)
    v = encode_texts(
        ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."],
        tokenizer,
        model,
    )
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
