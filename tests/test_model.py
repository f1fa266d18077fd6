"""The NCI model: shapes, PAWA, cached decoding, the centroid prior, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_model import QUERIES, encode, make_ids, make_model

from nci.decoding import beam_search
from nci.model import NCIConfig, NCIModel, choice_labels
from nci.semantic_ids import END, choice_tokens, ids_to_tokens, vocab_size


@pytest.fixture(scope="module")
def ids():
    return make_ids()


def test_choice_labels_index_the_choice_tokens():
    k = 3
    tokens = torch.tensor([[2 + 2, 3 + 0 + 2, END, 0], [END, 0, 0, 0]])
    labels = choice_labels(tokens, k)
    assert labels.tolist() == [[2, 0, k, -100], [k, -100, -100, -100]]
    choices = torch.from_numpy(choice_tokens(k, 4))
    for t in range(4):
        for row in range(2):
            if labels[row, t] >= 0:
                assert choices[t, labels[row, t]] == tokens[row, t]


def test_token_tables_have_a_row_for_every_choice():
    """The model's tables have the numbering's vocab_size rows, the last position's END-only
    choices included (saved models have these shapes)."""
    cfg = NCIConfig(k=4, max_depth=3)
    assert cfg.vocab_size == vocab_size(4, 3) == 4 * 4 + 2
    assert int(choice_tokens(cfg.k, cfg.n_positions).max()) == cfg.vocab_size - 1


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
    d1, s1 = beam_search(model, *encode(model), trie, beam=4)
    d2, s2 = beam_search(loaded, *encode(loaded), trie, beam=4)
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
