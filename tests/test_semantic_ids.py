"""Semantic ids and the trie: properties that must hold for any embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nci.semantic_ids import (
    END,
    PAD,
    IdsConfig,
    build_semantic_ids,
    choice_tokens,
    depth_bound,
    digit_to_token,
    ids_to_tokens,
    node_centroids,
    token_to_digit,
    vocab_size,
)
from nci.synthetic import make_vectors
from nci.trie import Trie

configs = st.builds(
    lambda k, c, seed: IdsConfig(k=k, leaf_size=min(c, k), seed=seed),
    st.integers(2, 12),
    st.integers(1, 12),
    st.integers(0, 3),
)


def embeddings_strategy():
    return st.tuples(st.integers(1, 400), st.integers(2, 16), st.integers(0, 9), st.booleans()).map(
        lambda t: (
            np.repeat(make_vectors(max(1, t[0] // 4), t[1], seed=t[2]), 4, axis=0)[: t[0]]
            if t[3]  # many exact duplicates: k-means cannot split them
            else make_vectors(t[0], t[1], n_clusters=5, seed=t[2])
        )
    )


@settings(max_examples=40, deadline=None)
@given(x=embeddings_strategy(), config=configs)
def test_ids_are_unique_bounded_paths(x, config):
    ids = build_semantic_ids(x, config)
    assert len(ids) == len(x)
    assert len(set(ids)) == len(ids)
    assert all(0 <= d < config.k for i in ids for d in i)
    assert max(map(len, ids)) <= depth_bound(len(x), config)
    trie = Trie.build(ids, config.k)
    assert trie.n_docs == len(x)
    for doc, digits in enumerate(ids):
        node = trie.node_of(digits)
        assert node >= 0 and trie.doc[node] == doc  # a root-to-leaf path ending at its document
        assert (trie.child[node] < 0).all()
        assert trie.path(doc) == digits
    # Internal nodes hold no documents: beams finish exactly at leaves.
    internal = (trie.child >= 0).any(1)
    assert (trie.doc[internal] == -1).all()


@settings(max_examples=10, deadline=None)
@given(x=embeddings_strategy(), config=configs)
def test_ids_are_deterministic(x, config):
    assert build_semantic_ids(x, config) == build_semantic_ids(x.copy(), config)


def test_seed_changes_ids_but_not_validity():
    x = make_vectors(500, 16, seed=1)
    a = build_semantic_ids(x, IdsConfig(seed=0))
    b = build_semantic_ids(x, IdsConfig(seed=1))
    assert a != b and len(set(b)) == 500


def test_clusters_follow_embedding_structure():
    # Two far-apart groups of 50 documents each must split at the first digit.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, (50, 8)) + 5, rng.normal(0, 0.01, (50, 8)) - 5]).astype("f4")
    ids = build_semantic_ids(x, IdsConfig(k=10, leaf_size=10))
    first_a = {i[0] for i in ids[:50]}
    first_b = {i[0] for i in ids[50:]}
    assert not first_a & first_b


def test_small_corpus_gets_single_digit_ids():
    ids = build_semantic_ids(make_vectors(7, 4), IdsConfig(k=10, leaf_size=10))
    assert sorted(ids) == [(i,) for i in range(7)]


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="leaf size"):
        IdsConfig(k=10, leaf_size=11)
    with pytest.raises(ValueError, match="k must"):
        IdsConfig(k=1, leaf_size=1)


def test_token_numbering_round_trip():
    k = 10
    assert digit_to_token(0, 0, k) == 2
    assert digit_to_token(2, 7, k) == 2 * 10 + 7 + 2
    for t in range(4):
        for d in range(k):
            assert token_to_digit(digit_to_token(t, d, k), k) == (t, d)
    # max_depth 4: PAD, END and k digit tokens for each of the 5 positions (the last writes only
    # END; its digit block keeps each position's choices rows of one table)
    assert vocab_size(k, 4) == 5 * 10 + 2
    assert choice_tokens(3, 2).tolist() == [[2, 3, 4, END], [5, 6, 7, END]]
    assert digit_to_token(np.arange(3), np.array([0, 1, 2]), 3).tolist() == [2, 6, 10]
    tokens = ids_to_tokens([(3, 1), (0, 2, 9)], k, max_depth=3)
    assert tokens.tolist() == [[5, 13, END, PAD], [2, 14, 31, END]]
    with pytest.raises(ValueError):
        ids_to_tokens([(1, 2, 3, 4)], k, max_depth=3)


def test_trie_rejects_prefix_and_duplicate_ids():
    with pytest.raises(ValueError, match="prefix|extends"):
        Trie.build([(1,), (1, 2)], k=10)
    with pytest.raises(ValueError):
        Trie.build([(1, 2), (1, 2)], k=10)
    with pytest.raises(ValueError, match="digit"):
        Trie.build([(10,)], k=10)


def test_trie_save_load_round_trip(tmp_path):
    config = IdsConfig()
    ids = build_semantic_ids(make_vectors(300, 8), config)
    trie = Trie.build(ids, config.k)
    trie.save(tmp_path)
    loaded = Trie.load(tmp_path)
    for name in ("child", "depth", "parent", "digit", "doc"):
        np.testing.assert_array_equal(getattr(trie, name), getattr(loaded, name))
    (tmp_path / "trie_doc.npy").unlink()
    with pytest.raises(FileNotFoundError, match="trie_doc"):
        Trie.load(tmp_path)


def test_node_centroids_are_means_of_documents_below():
    x = make_vectors(120, 6, seed=3)
    config = IdsConfig()
    ids = build_semantic_ids(x, config)
    trie = Trie.build(ids, config.k)
    c = node_centroids(trie, x)
    np.testing.assert_allclose(c[0], x.mean(0), atol=1e-5)
    node = trie.node_of(ids[0][:1])
    members = [i for i, digits in enumerate(ids) if digits[0] == ids[0][0]]
    np.testing.assert_allclose(c[node], x[members].mean(0), atol=1e-5)
