"""A tiny NCI model over a tiny trie, for model and decoding tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nci.model import NCIConfig, NCIModel, choice_labels
from nci.semantic_ids import IdsConfig, build_semantic_ids, ids_to_tokens, node_centroids
from nci.synthetic import make_vectors
from nci.trie import Trie

QUERIES = ["kalo mine rutavo", "zibedo fagu", "hijo pesu kaka lolo mimi", "ta"]


def make_ids():
    """40 synthetic documents, k=4 ids: ``(ids, trie, node centroids)``."""
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
                memory[b : b + 1].expand(n, -1, -1).clone(),
                mask[b : b + 1].expand(n, -1),
                targets,
                nodes=nodes,
            )
            logp = F.log_softmax(logits.masked_fill(~valid, float("-inf")), -1)
            digit_positions = labels.clone()
            digit_positions[labels == k] = -100  # END is certain at a leaf: log-prob 0
            picked = logp.gather(-1, digit_positions.clamp(min=0)[..., None])[..., 0]
            out[b] = torch.where(digit_positions >= 0, picked, torch.zeros_like(picked)).sum(1)
    return out
