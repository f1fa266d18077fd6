"""The reference constrained decoder that ``nci bench`` times ours against, and the comparison.

The reference asks a Python trie for each beam's allowed tokens at every step and masks a
full-vocabulary step in Python: what the NCI reference code does, and transformers'
``prefix_allowed_tokens_fn`` in GENRE and DSI code.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nci.semantic_ids import END

log = logging.getLogger(__name__)


class _Node:
    __slots__ = ("id", "doc", "children")

    def __init__(self, node_id: int, doc: int):
        self.id, self.doc, self.children = node_id, doc, {}


class PythonTrie:
    """Docid tokens in nested Python dicts, walked from the root for every query, beam and step:
    the ``prefix_allowed_tokens_fn`` of GENRE/DSI-style code and of the NCI reference."""

    def __init__(self, trie: Any, k: int, end: int = END):
        from nci.semantic_ids import digit_to_token

        self.end = end
        child, depth, doc = np.asarray(trie.child), np.asarray(trie.depth), np.asarray(trie.doc)
        nodes = [_Node(i, int(doc[i])) for i in range(len(doc))]
        for n in range(len(doc)):
            for d in range(k):
                c = int(child[n, d])
                if c >= 0:
                    nodes[n].children[digit_to_token(int(depth[n]), d, k)] = nodes[c]
        self.root = nodes[0]

    def node(self, prefix: Sequence[int]) -> _Node:
        node = self.root
        for token in prefix:
            if token != self.end:  # END repeats once an id is finished: the node stays
                node = node.children[token]
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.node(prefix)
        return list(node.children) + ([self.end] if node.doc >= 0 else [])


def reference_beam_search(
    model: Any, memory: Any, memory_mask: Any, trie: PythonTrie, beam: int, max_depth: int
) -> tuple[Any, Any]:
    """Constrained beam search the usual way: the model's full step (decoder, PAWA transformer,
    output layer) for every beam, then a full-vocabulary mask built in Python from each beam's
    allowed tokens. Same model, same scoring and the same output as ``nci.decoding``."""
    import torch
    import torch.nn.functional as F

    cfg = model.config
    k, vocab = cfg.k, cfg.vocab_size
    choices = model.choices
    B = memory.shape[0]
    neg_inf = float("-inf")
    with torch.inference_mode():
        prefixes: list[list[list[int]]] = [[[]] for _ in range(B)]
        scores = torch.zeros(B, 1)
        cache = None
        for t in range(min(max_depth, cfg.max_depth)):
            alive = torch.isfinite(scores).tolist()
            nodes = [
                [trie.node(p) if a else trie.root for p, a in zip(beams, al, strict=True)]
                for beams, al in zip(prefixes, alive, strict=True)
            ]
            if all(n.doc >= 0 for row in nodes for n in row):
                break
            N = len(prefixes[0])
            prefix = torch.tensor(prefixes, dtype=torch.long).view(B, N, t)
            node_ids = torch.tensor([[n.id for n in row] for row in nodes], dtype=torch.long)
            logp, cache = model.decode_step(memory, memory_mask, prefix, cache, node_ids)
            # the step's output over the whole vocabulary, as a seq2seq head produces it
            logits = torch.full((B, N, vocab), neg_inf)
            logits.scatter_(2, choices[t].expand(B, N, k + 1), logp)
            mask = torch.full((B, N, vocab), neg_inf)
            for b in range(B):
                for n in range(N):
                    # dead beams (fewer candidates than beams) keep one harmless option
                    allowed = trie.allowed(prefixes[b][n]) if alive[b][n] else [trie.end]
                    mask[b, n, allowed] = 0.0
            logp = torch.log_softmax(logits + mask, -1)
            cand = (scores[..., None] + logp).flatten(1)
            scores, flat = cand.topk(min(beam, N * (k + 1)), dim=1)
            parent, token = (flat // vocab).tolist(), (flat % vocab).tolist()
            prefixes = [
                [prefixes[b][p] + [tok] for p, tok in zip(parent[b], token[b], strict=True)] for b in range(B)
            ]
            cache = cache.select(flat // vocab)
        docs = torch.tensor(
            [
                [trie.node(p).doc if np.isfinite(s) else -1 for p, s in zip(row, srow, strict=True)]
                for row, srow in zip(prefixes, scores.tolist(), strict=True)
            ],
            dtype=torch.long,
        )
        if docs.shape[1] < beam:
            docs = F.pad(docs, (0, beam - docs.shape[1]), value=-1)
            scores = F.pad(scores, (0, beam - scores.shape[1]), value=neg_inf)
        return docs, scores


def rankings_agree(
    docs_a: np.ndarray, scores_a: np.ndarray, docs_b: np.ndarray, scores_b: np.ndarray, atol: float = 1e-4
) -> tuple[bool, int]:
    """Compare two batches of rankings; positions may differ only between (near-)tied scores.

    Returns (agree, number of queries that differ)."""
    bad = 0
    for da, sa, db, sb in zip(docs_a, scores_a, docs_b, scores_b, strict=True):
        fa, fb = np.isfinite(sa), np.isfinite(sb)
        if not np.array_equal(fa, fb) or not np.allclose(sa[fa], sb[fb], atol=atol):
            bad += 1
            continue
        if np.array_equal(da, db):
            continue
        # same scores, different order: acceptable only inside groups of tied scores
        ok = True
        i = 0
        while i < len(da):
            j = i
            while j + 1 < len(da) and fa[j + 1] and abs(sa[j + 1] - sa[i]) <= atol:
                j += 1
            if set(da[i : j + 1].tolist()) != set(db[i : j + 1].tolist()):
                ok = False
                break
            i = j + 1
        bad += not ok
    return bad == 0, bad


def _encoded(model: Any, texts: Sequence[str], size: int) -> list[tuple[Any, Any]]:
    """The encoder's (memory, mask) for ``texts`` in batches of ``size``."""
    out = []
    for start in range(0, len(texts), size):
        enc = model.tokenize(list(texts[start : start + size]))
        out.append(model.encode(enc["input_ids"], enc["attention_mask"]))
    return out


def _timed(fn: Any, inputs: list[tuple[Any, Any]]) -> tuple[float, Any, Any]:
    """Seconds for ``fn`` over every batch, and its docs and scores joined over the batches."""
    import torch

    t0 = time.perf_counter()
    results = [fn(m, mm) for m, mm in inputs]
    seconds = time.perf_counter() - t0
    docs = torch.cat([d for d, _ in results]).numpy()
    scores = torch.cat([s for _, s in results]).float().numpy()
    return seconds, docs, scores


def _compare_at_beam(
    decode: Any,
    reference: Any,
    beam: int,
    batches: list[tuple[Any, Any]],
    singles: list[tuple[Any, Any]],
    n_queries: int,
) -> dict[str, Any]:
    """Ours in batches against the reference one at a time and in the same batches, at one beam."""
    decode(*batches[0], beam)  # warm-up
    fast = functools.partial(decode, beam=beam)
    reference = functools.partial(reference, beam=beam)
    fast_s, fast_docs, fast_scores = _timed(fast, batches)
    ref_s, ref_docs, ref_scores = _timed(reference, singles)
    same_s, same_docs, same_scores = _timed(reference, batches)
    agree, differ = rankings_agree(fast_docs, fast_scores, ref_docs, ref_scores)
    agree_same, differ_same = rankings_agree(fast_docs, fast_scores, same_docs, same_scores)
    return {
        "fast_qps": n_queries / fast_s,
        "reference_qps": n_queries / ref_s,
        "reference_same_batch_qps": n_queries / same_s,
        "ratio": ref_s / fast_s,
        "ratio_same_batch": same_s / fast_s,
        "identical": agree and agree_same,
        "queries_differing": max(differ, differ_same),
    }


def decode_speed(
    model: Any, trie: Any, texts: Sequence[str], beams: Sequence[int], batch_size: int, progress: bool = False
) -> dict[str, Any]:
    """Time our constrained decoding against :func:`reference_beam_search` on encoded queries.

    Ours runs in batches of ``batch_size`` queries. The reference runs twice: one query at a time,
    as the NCI reference code decodes (``ratio``), and in the same batches as ours
    (``ratio_same_batch``). Encoding is done once beforehand and not timed."""
    from nci.retrieval.nci import nci_decoder

    t0 = time.perf_counter()
    decode = nci_decoder(model, trie)
    setup_s = time.perf_counter() - t0
    max_depth = int(np.asarray(trie.depth).max())
    reference = functools.partial(
        reference_beam_search, model, trie=PythonTrie(trie, model.config.k), max_depth=max_depth
    )
    batches, singles = _encoded(model, texts, batch_size), _encoded(model, texts, 1)
    out: dict[str, Any] = {"queries": len(texts), "batch_size": batch_size, "setup_s": setup_s}
    for beam in beams:
        r = _compare_at_beam(decode, reference, beam, batches, singles, len(texts))
        out[f"beam{beam}"] = r
        log.info(
            "decode beam %d: ours %.1f q/s; reference %.1f q/s one at a time (%.1fx), "
            "%.1f q/s in batches of %d (%.1fx); identical: %s",
            beam,
            r["fast_qps"],
            r["reference_qps"],
            r["ratio"],
            r["reference_same_batch_qps"],
            batch_size,
            r["ratio_same_batch"],
            r["identical"],
        )
    return out
