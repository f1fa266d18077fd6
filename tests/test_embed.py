"""Embedding: batching, resume after a kill, shards and their merge, and the real packaged encoder."""

from __future__ import annotations

import numpy as np
import pytest

from nci.data import load_corpus
from nci.embed import EmbedConfig, embed_corpus, encode_texts
from nci.encoder import load_encoder
from nci.manifest import ArtifactError, read_manifest
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


# --- shards ------------------------------------------------------------------------------------


def embed_cli(monkeypatch, data, out, encoder, *extra: str) -> int:
    """``nci embed`` on the tiny setup (60 documents in 4 chunks of 16); 2 = a reported error."""
    import torch

    from nci.embed import main

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    argv = ["--data", str(data), "--out", str(out), "--model", str(encoder), "--max-length", "32",
            "--chunk-size", "16", *extra]  # fmt: skip
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def test_shards_then_merge_equal_one_process_byte_for_byte(
    tiny_encoder, synthetic_data, tmp_path, monkeypatch, capsys
):
    import nci.embed

    args = (monkeypatch, synthetic_data)
    assert embed_cli(*args, tmp_path / "whole", tiny_encoder) == 0
    out, partial = tmp_path / "sharded", tmp_path / "sharded.partial"
    assert embed_cli(*args, out, tiny_encoder, "--merge") == 2  # nothing to merge yet
    assert "no chunks to merge" in capsys.readouterr().err
    assert embed_cli(*args, out, tiny_encoder, "--shard", "1/2") == 0
    assert not out.exists()
    assert sorted(p.name for p in partial.glob("chunk-*")) == ["chunk-00000016.npy", "chunk-00000048.npy"]
    assert embed_cli(*args, out, tiny_encoder, "--merge") == 2
    assert "2 of 4 chunks are missing (chunk 0, 2)" in capsys.readouterr().err
    assert not out.exists()
    assert embed_cli(*args, out, tiny_encoder, "--shard", "0/2") == 0

    def refuse(*a, **kw):
        raise AssertionError("--merge computes nothing")

    monkeypatch.setattr(nci.embed, "encode_texts", refuse)
    assert embed_cli(*args, out, tiny_encoder, "--merge") == 0
    for name in ("embeddings.npy", "doc_ids.txt"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    whole, merged = read_manifest(tmp_path / "whole"), read_manifest(out)
    for key in ("stage", "config", "inputs", "counts", "model_source"):
        assert merged[key] == whole[key], key
    assert not partial.exists()


def test_a_plain_run_after_the_shards_only_assembles(tiny_encoder, synthetic_data, tmp_path, monkeypatch):
    import nci.embed
    from nci.shards import Shard

    config = EmbedConfig(model=str(tiny_encoder), max_length=32, chunk_size=16)
    whole = embed_corpus(synthetic_data, tmp_path / "whole", config)
    out = tmp_path / "emb"
    for spec in ("2/3", "0/3", "1/3"):  # any order
        assert embed_corpus(synthetic_data, out, config, shard=Shard.parse(spec)) is None
    calls = []
    real = nci.embed.encode_texts
    monkeypatch.setattr(nci.embed, "encode_texts", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert embed_corpus(synthetic_data, out, config) == out
    assert calls == []
    assert (out / "embeddings.npy").read_bytes() == (whole / "embeddings.npy").read_bytes()


def test_a_shard_with_other_settings_is_refused(tiny_encoder, synthetic_data, tmp_path, monkeypatch, capsys):
    from nci.shards import Shard

    config = EmbedConfig(model=str(tiny_encoder), max_length=32, chunk_size=16)
    out = tmp_path / "emb"
    embed_corpus(synthetic_data, out, config, shard=Shard(0, 2))
    before = sorted(p.name for p in (tmp_path / "emb.partial").iterdir())
    # another shard may be writing there: its chunks are kept, the odd shard stops
    other = EmbedConfig(model=str(tiny_encoder), chunk_size=16)  # another max_length
    with pytest.raises(ArtifactError, match="other settings"):
        embed_corpus(synthetic_data, out, other, shard=Shard(1, 2))
    with pytest.raises(ArtifactError, match="other settings"):
        embed_corpus(synthetic_data, out, other, merge=True)
    assert sorted(p.name for p in (tmp_path / "emb.partial").iterdir()) == before
    for bad in ("2/2", "1", "-1/2", "a/b"):
        assert embed_cli(monkeypatch, synthetic_data, out, tiny_encoder, "--shard", bad) == 2
        assert "I/N" in capsys.readouterr().err
    assert embed_cli(monkeypatch, synthetic_data, out, tiny_encoder, "--shard", "0/2", "--merge") == 2
    assert "give one of the two" in capsys.readouterr().err
