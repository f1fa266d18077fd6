"""Trie-constrained beam search, vectorised over queries and beams.

The usual way to constrain a sequence-to-sequence model to valid identifiers (the NCI reference
code, GENRE and DSI through transformers' ``prefix_allowed_tokens_fn``) runs the full model step for
every beam, then asks a Python trie for each beam's allowed tokens, one beam at a time.
:func:`nci.bench.reference_beam_search` is that method; ``nci bench`` times this module against it.

Here the search state is tensors: every beam carries its trie node id, the allowed digits of all
beams come from one gather into ``child[node]``, and invalid digits get ``-inf``. Three more things
make a step cheap:

- **PAWA heads per trie edge.** The PAWA weight delta depends only on the prefix, that is, on the
  trie node a beam sits at, never on the query. :class:`NodeHeads` runs the PAWA transformer once
  per internal node and stores the output row (shared projection + delta) of each existing child;
  decoding gathers the rows of a beam's children instead of running the PAWA transformer per beam
  per step.
- **Finished beams cost nothing.** Ids are prefix-free, so a beam at a leaf can only write END,
  whose renormalised log-probability is 0: it keeps its score without a model step.
- **Only live beams run.** Each step sorts every query's beams so the ones at internal nodes come
  first, and runs the decoder on that many rows (the most any query of the batch needs).

Scores are sums of log-probabilities renormalised over each node's existing children, exactly the
scores of the reference search, so the two return the same rankings (up to ties).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nci.model import START, NCIModel, autocast
from nci.semantic_ids import digit_to_token


@dataclass
class TrieTensors:
    """The docid trie as tensors (see ``nci.trie.Trie``)."""

    child: torch.Tensor  # [n_nodes, k] int64, -1 = no such child
    doc: torch.Tensor  # [n_nodes] int64, document index of a leaf, else -1
    max_depth: int

    @classmethod
    def from_trie(cls, trie: Any, device: torch.device | str = "cpu") -> TrieTensors:
        if isinstance(trie, TrieTensors):
            return trie
        return cls(
            child=torch.as_tensor(np.asarray(trie.child), dtype=torch.long, device=device),
            doc=torch.as_tensor(np.asarray(trie.doc), dtype=torch.long, device=device),
            max_depth=int(np.asarray(trie.depth).max()),
        )


def node_paths(child: torch.Tensor, doc: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Internal nodes grouped by depth: ``[(nodes [M], tokens [M, t]), ...]`` for t = 0, 1, ...,
    where ``tokens`` are the docid tokens on the path from the root to each node."""
    out = []
    nodes = torch.zeros(1, dtype=torch.long, device=child.device)
    tokens = torch.zeros(1, 0, dtype=torch.long, device=child.device)
    t = 0
    while len(nodes):
        internal = doc[nodes] < 0
        nodes, tokens = nodes[internal], tokens[internal]
        if len(nodes):
            out.append((nodes, tokens))
        kids = child[nodes]  # [M, k]
        parent, digit = (kids >= 0).nonzero(as_tuple=True)
        step = digit_to_token(t, digit, k)
        nodes = kids[parent, digit]
        tokens = torch.cat([tokens[parent], step[:, None]], 1)
        t += 1
    return out


@dataclass
class NodeHeads:
    """The output layer of every trie edge: the row that scores the digit leading to a node.

    ``weight[c]`` [d] and ``bias[c]`` score the step from node ``c``'s parent to ``c`` from the
    decoder state; the digits below node ``n`` are scored by the rows ``child[n]`` (the centroid
    prior, already a table per node, is read from the model). Stored by edge, not as a
    ``k x d`` block per internal node: k-means leaves many internal nodes with only a few
    children (10,000 synthetic documents: 2,461 internal nodes, 12,461 nodes), so a block per
    node would be mostly rows for digits that do not exist. Size: ``nodes x (d_model + 1)``
    floats. The root's row is never read.
    """

    weight: torch.Tensor  # [n_nodes, d]
    bias: torch.Tensor  # [n_nodes]

    @classmethod
    @torch.inference_mode()
    def build(cls, model: NCIModel, trie: TrieTensors, chunk: int = 1024) -> NodeHeads:
        cfg = model.config
        k = cfg.k
        if trie.child.shape[1] != k:
            raise ValueError(f"the trie has k={trie.child.shape[1]}, the model k={k}")
        n_nodes = trie.child.shape[0]
        groups = node_paths(trie.child, trie.doc, k)
        if groups and len(groups) > cfg.max_depth:
            raise ValueError(f"the trie is deeper ({len(groups)} digits) than the model ({cfg.max_depth})")
        if cfg.centroid_prior and model.node_weight.shape[0] < n_nodes:
            raise ValueError(
                f"the trie has {n_nodes} nodes, the model's centroid prior {model.node_weight.shape[0]}"
            )
        device = trie.child.device
        weight = torch.zeros(n_nodes, cfg.d_model, device=device)
        bias = torch.zeros(n_nodes, device=device)
        for t, (nodes, tokens) in enumerate(groups):
            digits = model.choices[t, :k]
            shared_w, shared_b = model.out_weight[digits], model.out_bias[digits]  # [k, d], [k]
            for s in range(0, len(nodes), chunk):
                kids = trie.child[nodes[s : s + chunk]]  # [m, k]
                edge = kids >= 0
                if cfg.pawa:
                    # prefix_weights reads position t's prefix from targets[:, :t]; the last
                    # target is never read
                    targets = F.pad(tokens[s : s + chunk], (0, 1), value=START)
                    delta = model.prefix_weights(targets, position=t)[:, :k]  # [m, k, d]
                    block = shared_w + delta
                else:
                    block = shared_w.expand(len(kids), -1, -1)
                weight[kids[edge]] = block[edge].float()
                bias[kids[edge]] = shared_b.expand(len(kids), -1)[edge].float()
        return cls(weight=weight, bias=bias)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.weight, self.bias))

    def save(self, out: Path) -> None:
        """``out/weight.npy`` and ``out/bias.npy``, which :meth:`load` memory-maps."""
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "weight.npy", self.weight.cpu().numpy())
        np.save(out / "bias.npy", self.bias.cpu().numpy())

    @classmethod
    def load(cls, path: Path, n_nodes: int, d_model: int, device: torch.device | str = "cpu") -> NodeHeads:
        """Heads saved by :meth:`save`, memory-mapped on the CPU (pages are read as searches
        touch them), for a trie of ``n_nodes`` nodes and a model of width ``d_model``."""
        weight = np.load(path / "weight.npy", mmap_mode="c")
        bias = np.load(path / "bias.npy", mmap_mode="c")
        if weight.shape != (n_nodes, d_model) or bias.shape != (n_nodes,) or weight.dtype != np.float32:
            raise ValueError(
                f"{path}: heads of shape {weight.shape} {weight.dtype} do not fit a trie of {n_nodes} "
                f"nodes and a model of width {d_model}"
            )
        heads = cls(weight=torch.from_numpy(weight), bias=torch.from_numpy(bias))
        if torch.device(device).type != "cpu":
            heads = cls(weight=heads.weight.to(device), bias=heads.bias.to(device))
        return heads


class ConstrainedDecoder:
    """``decoder(memory, memory_mask, beam) -> (doc_index [B, beam], scores [B, beam])``.

    Built once per (model, trie), with the trie's heads if they were saved (:meth:`NodeHeads.save`;
    ``nci index build`` does), else computing them; :meth:`set_trie` swaps in an updated trie
    with the same node numbering (live deletions prune children; node ids never change), keeping
    the node heads.
    Changing the model's weights needs a new decoder.
    """

    def __init__(self, model: NCIModel, trie: Any, heads: NodeHeads | None = None):
        self.model = model
        self.trie = TrieTensors.from_trie(trie, model.device)
        if heads is not None and heads.weight.shape[0] != self.trie.child.shape[0]:
            n = self.trie.child.shape[0]
            raise ValueError(f"heads for {heads.weight.shape[0]} nodes, the trie has {n}")
        self.heads = heads if heads is not None else NodeHeads.build(model, self.trie)

    def set_trie(self, trie: Any) -> None:
        trie = TrieTensors.from_trie(trie, self.model.device)
        if trie.child.shape[0] > self.heads.weight.shape[0]:
            raise ValueError("the new trie has nodes the decoder has no heads for; build a new decoder")
        self.trie = trie

    def __call__(self, memory: torch.Tensor, memory_mask: torch.Tensor, beam: int = 10):
        return self.search(memory, memory_mask, beam)

    @torch.inference_mode()
    def search(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, beam: int = 10
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(doc_index [B, beam] int64, scores [B, beam] float)``, best first;
        ``doc_index`` indexes the semantic ids' ``doc_ids``; -1 (score -inf) where fewer than
        ``beam`` documents can be reached."""
        if beam < 1:
            raise ValueError(f"beam must be at least 1, got {beam}")
        model, tt, heads = self.model, self.trie, self.heads
        k = model.config.k
        device = memory.device
        B = memory.shape[0]
        with autocast(device):
            cache = model.start(memory, memory_mask)
        query = None if cache.query is None else cache.query.float()
        nodes = torch.zeros(B, 1, dtype=torch.long, device=device)  # every search starts at the root
        scores = torch.zeros(B, 1, device=device)
        inputs = torch.full((B, 1), START, dtype=torch.long, device=device)  # next decoder input
        parents = torch.zeros(B, 1, dtype=torch.long, device=device)  # cache row of each beam
        neg_inf = torch.tensor(float("-inf"), device=device)
        for t in range(min(tt.max_depth, model.config.max_depth)):
            live = (tt.doc[nodes] < 0) & torch.isfinite(scores)
            if not bool(live.any()):
                break
            # live beams first; run the decoder on as many rows as the busiest query needs
            order = torch.sort((~live).to(torch.int8), dim=1, stable=True).indices
            nodes, scores, inputs, parents, live = (
                x.gather(1, order) for x in (nodes, scores, inputs, parents, live)
            )
            n = int(live.sum(1).max())
            cache = cache.select(parents[:, :n])
            with autocast(device):
                h, cache = model.decoder_states(inputs[:, :n, None], cache)
            h = h[:, :, 0].float()  # [B, n, d]
            run = nodes[:, :n]
            child = tt.child[run]  # [B, n, k]
            rows = child.clamp(min=0)
            logits = torch.einsum("bnd,bnjd->bnj", h, heads.weight[rows]) + heads.bias[rows]
            if query is not None:  # the centroid prior
                prior = torch.einsum("bd,bnjd->bnj", query, model.node_weight[run].float())
                logits = logits + model.node_scale.float() * prior
            ok = (child >= 0) & live[:, :n, None]
            logp = torch.log_softmax(logits.masked_fill(~ok, float("-inf")), -1)
            logp = torch.where(ok, logp, neg_inf)  # rows with no valid child give NaN above
            # candidates: finished beams keep their score; live beams offer their children
            done = torch.where(live, neg_inf, scores)  # [B, N]
            grown = (scores[:, :n, None] + logp).flatten(1)  # [B, n*k]
            cand = torch.cat([done, grown], 1)
            N = done.shape[1]
            scores, pick = cand.topk(min(beam, cand.shape[1]), dim=1)
            is_child = pick >= N
            c = (pick - N).clamp(min=0)
            parent, digit = c // k, c % k
            kept = nodes.gather(1, pick.clamp(max=N - 1))
            grown_node = child.flatten(1).gather(1, c)
            nodes = torch.where(is_child, grown_node, kept)
            nodes = torch.where(torch.isfinite(scores), nodes, torch.zeros_like(nodes))
            inputs = digit_to_token(t, digit, k)
            parents = parent  # only meaningful for children, the only beams that run again
        docs = tt.doc[nodes]
        docs = torch.where(torch.isinf(scores) | (docs < 0), torch.full_like(docs, -1), docs)
        if docs.shape[1] < beam:  # fewer candidates than beams (tiny tries)
            pad = beam - docs.shape[1]
            docs = F.pad(docs, (0, pad), value=-1)
            scores = F.pad(scores, (0, pad), value=float("-inf"))
        return docs, scores


def beam_search(
    model: NCIModel, memory: torch.Tensor, memory_mask: torch.Tensor, trie: Any, beam: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off search (builds the node heads each call; keep a :class:`ConstrainedDecoder` to
    search many batches)."""
    return ConstrainedDecoder(model, trie)(memory, memory_mask, beam)
