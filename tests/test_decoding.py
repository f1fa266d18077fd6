"""Trie-constrained beam search (nci.decoding): exhaustive and reference equivalence, batching,
per-node PAWA heads, live trie updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_model import QUERIES, encode, exhaustive_scores, make_ids, make_model

from nci.bench import PythonTrie, rankings_agree, reference_beam_search
from nci.decoding import ConstrainedDecoder, NodeHeads, TrieTensors, beam_search, node_paths
from nci.semantic_ids import digit_to_token
from nci.trie import Trie

VARIANTS = ["pawa", "pawa+prior", "no-pawa"]


@pytest.fixture(scope="module")
def ids():
    return make_ids()


def model_variant(tiny_encoder, ids, variant: str):
    id_list, trie, centroids = ids
    model = make_model(tiny_encoder, trie, pawa=variant != "no-pawa", centroid_prior="prior" in variant)
    if "prior" in variant:
        model.init_centroid_prior(centroids, trie)
        with torch.no_grad():
            model.node_weight.add_(0.05 * torch.randn_like(model.node_weight))
    return model


def test_node_paths_lists_every_internal_node_with_its_tokens(ids):
    id_list, trie, _ = ids
    tt = TrieTensors.from_trie(trie)
    seen = {}
    for t, (nodes, tokens) in enumerate(node_paths(tt.child, tt.doc, trie.k)):
        assert tokens.shape == (len(nodes), t)
        for n, path in zip(nodes.tolist(), tokens.tolist(), strict=True):
            seen[n] = path
    internal = set(np.flatnonzero(trie.doc < 0).tolist())
    assert set(seen) == internal
    for digits in id_list:  # walking an id's tokens reaches the recorded node
        node = 0
        for t, d in enumerate(digits[:-1]):
            node = int(trie.child[node, d])
            assert seen[node] == [digit_to_token(s, e, trie.k) for s, e in enumerate(digits[: t + 1])]


def test_node_heads_hold_the_shared_layer_plus_each_prefix_delta(tiny_encoder, ids):
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    heads = NodeHeads.build(model, TrieTensors.from_trie(trie))
    k = trie.k
    digits = id_list[7]
    node, prefix = 0, []
    for t, d in enumerate(digits):
        targets = torch.tensor([prefix + [0]])
        delta = model.prefix_weights(targets)[0, t, :k]
        expected = model.out_weight[model.choices[t, :k]] + delta
        expected_b = model.out_bias[model.choices[t, :k]]
        kids = torch.as_tensor(trie.child[node])
        real = kids >= 0
        # each existing child's row is its digit's row of the node's output layer
        torch.testing.assert_close(heads.weight[kids[real]], expected[real], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(heads.bias[kids[real]], expected_b[real])
        prefix.append(digit_to_token(t, d, k))
        node = int(trie.child[node, d])
    # one row per node, not a k-row block per internal node
    assert heads.weight.shape == (trie.child.shape[0], model.config.d_model)
    assert heads.nbytes == trie.child.shape[0] * (model.config.d_model + 1) * 4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("beam", [1, 3, 12, 200])
def test_decoder_ranks_exactly_like_the_python_trie_reference(tiny_encoder, ids, variant, beam):
    id_list, trie, _ = ids
    model = model_variant(tiny_encoder, ids, variant)
    memory, mask = encode(model)
    docs, scores = ConstrainedDecoder(model, trie)(memory, mask, beam)
    ref_docs, ref_scores = reference_beam_search(
        model, memory, mask, PythonTrie(trie, trie.k), beam, trie.max_depth
    )
    assert docs.shape == ref_docs.shape == (len(QUERIES), beam)
    agree, differ = rankings_agree(docs.numpy(), scores.numpy(), ref_docs.numpy(), ref_scores.numpy())
    assert agree, differ
    for row in docs.tolist():  # corpus documents only, each once, then padding
        found = [d for d in row if d >= 0]
        assert len(found) == len(set(found)) == min(beam, len(id_list))
        assert all(0 <= d < len(id_list) for d in found)
        assert row[len(found) :] == [-1] * (beam - len(found))


def test_set_trie_prunes_deleted_documents_like_a_fresh_decoder(tiny_encoder, ids):
    id_list, trie, _ = ids
    model = model_variant(tiny_encoder, ids, "pawa+prior")
    memory, mask = encode(model)
    decoder = ConstrainedDecoder(model, trie)
    full_docs, _ = decoder(memory, mask, 5)
    gone = int(full_docs[0, 0])  # the first query's best document
    child, doc = trie.child.copy(), trie.doc.copy()
    leaf = int(np.flatnonzero(doc == gone)[0])
    child[trie.parent[leaf], trie.digit[leaf]] = -1
    doc[leaf] = -1
    pruned = TrieTensors(torch.from_numpy(child).long(), torch.from_numpy(doc).long(), trie.max_depth)
    decoder.set_trie(pruned)
    docs, scores = decoder(memory, mask, len(id_list))
    assert gone not in docs.tolist()[0] and gone not in docs.flatten().tolist()
    assert sorted(d for d in docs[0].tolist() if d >= 0) == sorted(set(range(len(id_list))) - {gone})
    fresh_docs, fresh_scores = ConstrainedDecoder(model, pruned)(memory, mask, len(id_list))
    assert torch.equal(docs, fresh_docs) and torch.equal(scores, fresh_scores)


def test_bad_beam_and_mismatched_trie_fail_clearly(tiny_encoder, ids):
    _, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    with pytest.raises(ValueError, match="beam must be at least 1"):
        ConstrainedDecoder(model, trie)(*encode(model), 0)
    other = Trie.build([(0,), (1,), (2, 0)], 3)
    with pytest.raises(ValueError, match="k=3"):
        ConstrainedDecoder(model, other)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_search_covering_every_document_equals_exhaustive_search(tiny_encoder, ids, variant):
    id_list, trie, _ = ids
    model = model_variant(tiny_encoder, ids, variant)
    memory, mask = encode(model)
    docs, scores = beam_search(model, memory, mask, trie, beam=len(id_list) * trie.k)
    expected = exhaustive_scores(model, memory, mask, id_list, trie)
    for b in range(len(QUERIES)):
        found = docs[b][docs[b] >= 0]
        assert sorted(found.tolist()) == list(range(len(id_list)))  # every document, once
        torch.testing.assert_close(scores[b][: len(found)], expected[b][found], atol=1e-4, rtol=1e-4)
        assert (scores[b][:-1] >= scores[b][1:]).all()  # best first
    # a narrow beam returns valid documents and agrees with the exhaustive top hit here
    narrow, narrow_scores = beam_search(model, memory, mask, trie, beam=5)
    assert narrow.shape == (len(QUERIES), 5) and (narrow >= 0).all()
    assert torch.isfinite(narrow_scores).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_beam_search_equals_one_query_at_a_time(tiny_encoder, ids, variant):
    _, trie, _ = ids
    model = model_variant(tiny_encoder, ids, variant)
    decode = ConstrainedDecoder(model, trie)
    docs, scores = decode(*encode(model), 6)
    for i, q in enumerate(QUERIES):
        one_docs, one_scores = decode(*encode(model, [q]), 6)
        assert one_docs[0].tolist() == docs[i].tolist()
        torch.testing.assert_close(one_scores[0], scores[i], atol=1e-4, rtol=1e-4)


def test_beam_larger_than_the_corpus_pads_with_minus_one(tiny_encoder):
    trie = Trie.build([(0,), (1,), (2, 0), (2, 1)], 3)
    model = make_model(tiny_encoder, trie)
    docs, scores = beam_search(model, *encode(model, QUERIES[:2]), trie, beam=7)
    assert docs.shape == (2, 7)
    assert sorted(docs[0, :4].tolist()) == [0, 1, 2, 3]
    assert (docs[:, 4:] == -1).all() and torch.isinf(scores[:, 4:]).all()


def test_exhaustive_helper_scores_sum_to_one(tiny_encoder, ids):
    """Sanity of the reference used above: renormalised id probabilities form a distribution."""
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    memory, mask = encode(model, QUERIES[:1])
    total = exhaustive_scores(model, memory, mask, id_list, trie).exp().sum()
    assert abs(float(total) - 1.0) < 1e-4
    assert np.isfinite(float(total))


def test_an_index_saves_the_heads_and_an_index_without_them_searches_the_same(tiny_index, tmp_path):
    """``nci index build`` writes the heads a load memory-maps; an index built before they were
    saved (no nci_heads/ in its manifest) computes them at load and ranks identically."""
    import json
    import shutil

    from nci.manifest import ArtifactError
    from nci.retrieval import Searcher, load_index
    from nci.retrieval.index import HEADS

    saved = Searcher(load_index(tiny_index)).load("nci")
    computed = NodeHeads.build(saved.model, TrieTensors.from_trie(saved.ids.built_trie))
    heads = saved.decode.heads
    torch.testing.assert_close(heads.weight, computed.weight, atol=0, rtol=0)
    torch.testing.assert_close(heads.bias, computed.bias, atol=0, rtol=0)

    old = shutil.copytree(tiny_index, tmp_path / "old")
    shutil.rmtree(old / HEADS)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"] = {f: v for f, v in manifest["files"].items() if not f.startswith(HEADS + "/")}
    manifest["methods"]["nci"]["files"].remove(HEADS)
    (old / "manifest.json").write_text(json.dumps(manifest))
    queries = ["topic words of a query", "another query", "a third"]
    fresh = Searcher(load_index(old)).load("nci")
    assert not (old / HEADS).exists()
    assert fresh.search(queries, 10) == saved.search(queries, 10)

    (old / HEADS).mkdir()  # heads that do not fit the trie are refused, saying what to do
    np.save(old / HEADS / "weight.npy", heads.weight[:3].numpy())
    np.save(old / HEADS / "bias.npy", heads.bias[:3].numpy())
    with pytest.raises(ArtifactError, match="rebuild the index"):
        Searcher(load_index(old)).load("nci")
