"""The NCI model: shapes, PAWA, cached decoding, constrained beam search, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nci.model import END, NCIConfig, NCIModel, TrieTensors, choice_labels, choice_tokens
from nci.semantic_ids import IdsConfig, build_semantic_ids, ids_to_tokens, node_centroids
from nci.synthetic import make_vectors
from nci.trie import Trie

QUERIES = ["kalo mine rutavo", "zibedo fagu", "hijo pesu kaka lolo mimi", "ta"]


@pytest.fixture(scope="module")
def ids():
    vectors = make_vectors(40, 32, n_clusters=5, seed=1)
    ids = build_semantic_ids(vectors, IdsConfig(k=4, leaf_size=3, seed=0))
    trie = Trie.build(ids, 4)
    return ids, trie, node_centroids(trie, vectors)


def make_model(tiny_encoder, trie, **overrides) -> NCIModel:
    from nci.encoder import load_encoder

    tokenizer, encoder = load_encoder(tiny_encoder)
    fields = dict(
        k=trie.k,
        max_depth=trie.max_depth,
        n_nodes=trie.n_nodes,
        encoder_hidden=32,
        encoder_layers=2,
        max_length=16,
        d_model=32,
        n_heads=2,
        n_layers=2,
        d_ff=64,
        dropout=0.0,
    )
    fields.update(overrides)
    torch.manual_seed(0)
    return NCIModel(NCIConfig(**fields), encoder, tokenizer).eval()


def encode(model: NCIModel, texts=QUERIES):
    batch = model.tokenize(texts)
    return model.encode(batch["input_ids"], batch["attention_mask"])


def exhaustive_scores(model, memory, mask, ids, trie) -> torch.Tensor:
    """[B, n_docs]: each id's sum of log-probabilities renormalised over valid choices."""
    k = trie.k
    targets = torch.from_numpy(ids_to_tokens(ids, k, trie.max_depth))
    n, T = targets.shape
    child, doc = torch.from_numpy(trie.child).long(), torch.from_numpy(trie.doc).long()
    nodes = torch.zeros(n, T, dtype=torch.long)
    for i, digits in enumerate(ids):
        node = 0
        for t in range(T):
            nodes[i, t] = node
            if t < len(digits):
                node = int(child[node, digits[t]])
    valid = torch.cat([child[nodes] >= 0, (doc[nodes] >= 0)[..., None]], -1)  # [n, T, k+1]
    labels = choice_labels(targets, k)
    out = torch.zeros(memory.shape[0], n)
    with torch.no_grad():
        for b in range(memory.shape[0]):
            logits = model(
                memory[b : b + 1].expand(n, -1, -1).clone(), mask[b : b + 1].expand(n, -1), targets
            )
            logp = F.log_softmax(logits.masked_fill(~valid, float("-inf")), -1)
            digit_positions = labels.clone()
            digit_positions[labels == k] = -100  # END is certain at a leaf: log-prob 0
            picked = logp.gather(-1, digit_positions.clamp(min=0)[..., None])[..., 0]
            out[b] = torch.where(digit_positions >= 0, picked, torch.zeros_like(picked)).sum(1)
    return out


def test_choice_tokens_and_labels_follow_the_token_numbering():
    k = 3
    assert choice_tokens(k, 2).tolist() == [[2, 3, 4, END], [5, 6, 7, END]]
    tokens = torch.tensor([[2 + 2, 3 + 0 + 2, END, 0], [END, 0, 0, 0]])
    assert choice_labels(tokens, k).tolist() == [[2, 0, k, -100], [k, -100, -100, -100]]


def test_forward_shapes(tiny_encoder, ids):
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    memory, mask = encode(model)
    assert memory.shape[:2] == mask.shape and memory.shape[2] == 32 and mask.dtype == torch.bool
    targets = torch.from_numpy(ids_to_tokens(id_list[:4], trie.k, trie.max_depth))
    logits = model(memory.clone(), mask, targets)
    assert logits.shape == (4, trie.max_depth + 1, trie.k + 1)
    assert torch.isfinite(logits).all()


def test_pawa_gives_each_prefix_its_own_output_layer(tiny_encoder, ids):
    _, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    k = trie.k
    a = torch.tensor([[0 + 2, k + 1 + 2, END]])  # digits (0, 1)
    b = torch.tensor([[3 + 2, k + 1 + 2, END]])  # digits (3, 1): same last digit, other prefix
    wa, wb = model.prefix_weights(a), model.prefix_weights(b)
    assert wa.shape == (1, 3, k + 1, 32)
    assert torch.equal(wa[:, 0], wb[:, 0])  # position 0 has the same (empty) prefix
    assert not torch.allclose(wa[:, 1:], wb[:, 1:])
    # the delta reaches the logits: removing it changes them
    memory, mask = encode(model, QUERIES[:1])
    with torch.no_grad():
        with_pawa = model(memory.clone(), mask, b)
        model.pawa_out.weight.zero_()
        model.pawa_out.bias.zero_()
        without = model(memory.clone(), mask, b)
    assert not torch.allclose(with_pawa[:, 1:], without[:, 1:])


def test_incremental_decoding_matches_teacher_forcing(tiny_encoder, ids):
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    memory, mask = encode(model, QUERIES[:2])
    targets = torch.from_numpy(ids_to_tokens([id_list[3], id_list[17]], trie.k, trie.max_depth))
    with torch.no_grad():
        full = F.log_softmax(model(memory.clone(), mask, targets), -1)
    cache = None
    for t in range(targets.shape[1]):
        prefix = targets[:, None, :t]
        step, cache = model.decode_step(memory, mask, prefix, cache)
        uncached, _ = model.decode_step(memory, mask, prefix, None)
        torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(uncached, step, atol=1e-5, rtol=1e-5)


def test_beam_search_covering_every_document_equals_exhaustive_search(tiny_encoder, ids):
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    memory, mask = encode(model)
    docs, scores = model.beam_search(memory, mask, trie, beam=len(id_list) * trie.k)
    expected = exhaustive_scores(model, memory, mask, id_list, trie)
    for b in range(len(QUERIES)):
        found = docs[b][docs[b] >= 0]
        assert sorted(found.tolist()) == list(range(len(id_list)))  # every document, once
        torch.testing.assert_close(scores[b][: len(found)], expected[b][found], atol=1e-4, rtol=1e-4)
        assert (scores[b][:-1] >= scores[b][1:]).all()  # best first
    # a narrow beam returns valid documents and agrees with the exhaustive top hit here
    narrow, narrow_scores = model.beam_search(memory, mask, trie, beam=5)
    assert narrow.shape == (len(QUERIES), 5) and (narrow >= 0).all()
    assert torch.isfinite(narrow_scores).all()


def test_batched_beam_search_equals_one_query_at_a_time(tiny_encoder, ids):
    _, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    tt = TrieTensors.from_trie(trie)
    docs, scores = model.beam_search(*encode(model), tt, beam=6)
    for i, q in enumerate(QUERIES):
        one_docs, one_scores = model.beam_search(*encode(model, [q]), tt, beam=6)
        assert one_docs[0].tolist() == docs[i].tolist()
        torch.testing.assert_close(one_scores[0], scores[i], atol=1e-4, rtol=1e-4)


def test_beam_larger_than_the_corpus_pads_with_minus_one(tiny_encoder):
    trie = Trie.build([(0,), (1,), (2, 0), (2, 1)], 3)
    model = make_model(tiny_encoder, trie)
    docs, scores = model.beam_search(*encode(model, QUERIES[:2]), trie, beam=7)
    assert docs.shape == (2, 7)
    assert sorted(docs[0, :4].tolist()) == [0, 1, 2, 3]
    assert (docs[:, 4:] == -1).all() and torch.isinf(scores[:, 4:]).all()


def test_save_load_round_trip(tiny_encoder, ids, tmp_path):
    id_list, trie, centroids = ids
    model = make_model(tiny_encoder, trie, centroid_prior=True, encoder_trainable_layers=1)
    model.init_centroid_prior(centroids, trie)
    with torch.no_grad():
        for p in model.parameters():  # move away from the initialisation
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors", "encoder"}
    assert (tmp_path / "m" / "encoder" / "tokenizer.json").is_file()
    loaded = NCIModel.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1
    d1, s1 = model.beam_search(*encode(model), trie, beam=4)
    d2, s2 = loaded.beam_search(*encode(loaded), trie, beam=4)
    assert torch.equal(d1, d2) and torch.equal(s1, s2)


def test_loading_a_mismatched_state_fails_clearly(tiny_encoder, ids, tmp_path):
    _, trie, _ = ids
    make_model(tiny_encoder, trie).save_pretrained(tmp_path / "m")
    config = (tmp_path / "m" / "config.json").read_text().replace('"n_layers": 2', '"n_layers": 3')
    (tmp_path / "m" / "config.json").write_text(config)
    with pytest.raises(ValueError, match="does not match config.json"):
        NCIModel.from_pretrained(tmp_path / "m")


def test_cached_lower_states_plus_top_layers_equal_the_full_encoder(tiny_encoder, ids):
    _, trie, _ = ids
    for trainable in (0, 1, 2):
        model = make_model(tiny_encoder, trie, encoder_trainable_layers=trainable)
        batch = model.tokenize(QUERIES)
        memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
        with torch.no_grad():
            states = model.lower_states(batch["input_ids"], batch["attention_mask"])
            split, split_mask = model.encode_top(states, batch["attention_mask"])
        assert model.split_layer == 2 - trainable
        torch.testing.assert_close(split[mask], memory[mask], atol=1e-5, rtol=1e-4)
        assert torch.equal(split_mask, mask)


def test_centroid_prior_alone_descends_to_the_nearest_child(tiny_encoder, ids):
    id_list, trie, centroids = ids
    model = make_model(tiny_encoder, trie, centroid_prior=True)
    model.init_centroid_prior(centroids, trie)
    expected = F.normalize(torch.from_numpy(centroids[trie.child[0]]), dim=-1)
    torch.testing.assert_close(model.node_weight[0], expected)
    with torch.no_grad():  # silence everything but the prior
        model.out_weight.zero_()
        model.out_bias.zero_()
        model.pawa_out.weight.zero_()
        model.pawa_out.bias.zero_()
    memory, mask = encode(model)
    logp, _ = model.decode_step(
        memory,
        mask,
        torch.zeros(len(QUERIES), 1, 0, dtype=torch.long),
        nodes=torch.zeros(len(QUERIES), 1, dtype=torch.long),
    )
    m = mask[..., None].float()
    query = F.normalize((memory * m).sum(1) / m.sum(1), dim=-1)
    valid = trie.child[0] >= 0
    dense = (query @ expected.T)[:, valid]
    assert torch.equal(logp[:, 0, :-1][:, valid].argmax(-1), dense.argmax(-1))
    with pytest.raises(ValueError, match="needs the trie node"):
        model.decode_step(memory, mask, torch.zeros(len(QUERIES), 1, 0, dtype=torch.long))


def test_config_rejects_bad_sizes(tiny_encoder, ids):
    _, trie, _ = ids
    with pytest.raises(ValueError, match="multiple of n_heads"):
        make_model(tiny_encoder, trie, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="encoder_trainable_layers"):
        make_model(tiny_encoder, trie, encoder_trainable_layers=5)


def test_exhaustive_helper_scores_sum_to_one(tiny_encoder, ids):
    """Sanity of the reference used above: renormalised id probabilities form a distribution."""
    id_list, trie, _ = ids
    model = make_model(tiny_encoder, trie)
    memory, mask = encode(model, QUERIES[:1])
    total = exhaustive_scores(model, memory, mask, id_list, trie).exp().sum()
    assert abs(float(total) - 1.0) < 1e-4
    assert np.isfinite(float(total))
