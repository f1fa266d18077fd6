"""``nci``: encode the query, then trie-constrained beam search over semantic ids.

Returns at most ``beam`` documents per query (the beam's finished ids, best first), so ``k``
larger than ``beam`` gives ``beam`` results; the beam defaults to :func:`resolve_beam`'s rule.

Live updates: beam search walks the id space's decoding trie (documents the model was trained on,
deletions pruned). The model has never seen an added document, so added documents reach NCI's
results through a dense fallback: the query is embedded with the query encoder, and each added
document that dense retrieval ranks in the top ``k`` is placed in the NCI ranking where dense
retrieval would put it among NCI's own hits (:func:`merge_fallback`); such hits carry
``source="dense"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nci.manifest import ArtifactError
from nci.retrieval.hits import Hits, hits_from_arrays, merge_fallback, resolve_beam
from nci.retrieval.index import HEADS, IDS, MODEL
from nci.retrieval.registry import BuildContext, LiveDocument, LoadContext, Method, Option, register

log = logging.getLogger(__name__)


def nci_decoder(model: Any, trie: Any, heads: Any = None) -> Callable[[Any, Any, int], tuple[Any, Any]]:
    """Our constrained decoding: ``decode(memory, memory_mask, beam) -> (doc_index, scores)``.

    The one place that picks the implementation, shared by the retriever and ``nci bench``.
    ``heads``: the trie's saved :class:`nci.decoding.NodeHeads` (else they are computed).
    """
    from nci.decoding import ConstrainedDecoder

    return ConstrainedDecoder(model, trie, heads)


def decoding_trie(ids: Any, device: Any) -> Any:
    """The id space's decoding trie as tensors (:class:`nci.decoding.TrieTensors`)."""
    import torch

    from nci.decoding import TrieTensors

    return TrieTensors(
        child=torch.as_tensor(ids.decode_child, dtype=torch.long, device=device),
        doc=torch.as_tensor(ids.decode_doc, dtype=torch.long, device=device),
        max_depth=ids.decode_depth,
    )


@dataclass
class NCIRetriever:
    name: str
    model: Any  # nci.model.NCIModel
    ids: Any  # nci.retrieval.id_space.IdSpace: the decoding trie and its doc ids
    encoder: Any = None  # query encoder, for the dense fallback over added documents
    vector: Callable[[str], np.ndarray] | None = None  # doc id -> vector, for the fallback
    added: dict[str, np.ndarray] = field(default_factory=dict)  # added documents -> vector
    heads: Any = None  # the built trie's nci.decoding.NodeHeads, when the index holds them
    _version: int = field(init=False, default=-1)
    _added_matrix: tuple[list[str], np.ndarray] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """Follow the id space's decoding trie (node numbering is stable: keep the node heads)."""
        if self._version == self.ids.version:
            return
        if self._version < 0:
            self.decode = nci_decoder(self.model, self.ids.built_trie, self.heads)
            self.heads = None  # the decoder holds them
        if self.ids.version > 0:
            self.decode.set_trie(decoding_trie(self.ids, self.model.device))
        self._version = self.ids.version

    def encode(self, queries: list[str]) -> tuple[Any, Any]:
        """``(memory, memory_mask)`` for a batch of query strings."""
        batch = self.model.tokenize(queries)
        return self.model.encode(batch["input_ids"], batch["attention_mask"])

    def search(self, queries: list[str], k: int, beam: int | None = None) -> list[Hits]:
        if not queries:
            return []
        self._refresh()
        memory, memory_mask = self.encode(queries)
        labels, scores = self.decode(memory, memory_mask, resolve_beam(k, beam))
        labels = labels[:, :k].cpu().numpy()
        scores = scores[:, :k].float().cpu().numpy()
        results = hits_from_arrays(self.ids.sem_doc_ids, labels, scores, "nci")
        return self._with_fallback(queries, results, k) if self.added else results

    def _with_fallback(self, queries: list[str], results: list[Hits], k: int) -> list[Hits]:
        assert self.encoder is not None and self.vector is not None
        if self._added_matrix is None:
            ids = list(self.added)
            self._added_matrix = (ids, np.stack([self.added[i] for i in ids]))
        ids, matrix = self._added_matrix
        qv = self.encoder.encode(queries)
        sims = qv @ matrix.T
        merged = []
        for q, hits in enumerate(results):
            top = np.argsort(-sims[q], kind="stable")[:k]
            fallback = [(ids[j], float(sims[q, j])) for j in top]
            hit_sims = [float(self.vector(h.doc_id) @ qv[q]) for h in hits]
            merged.append(merge_fallback(hits, hit_sims, fallback, k))
        return merged

    def add(self, documents: Sequence[LiveDocument]) -> None:
        for d in documents:
            self.added[d.doc_id] = np.asarray(d.vector, dtype=np.float32)
        self._added_matrix = None

    def remove(self, doc_ids: Sequence[str]) -> None:
        for doc_id in doc_ids:
            if self.added.pop(doc_id, None) is not None:
                self._added_matrix = None
        self._refresh()


def _build(ctx: BuildContext) -> dict[str, Any]:
    """The model and ids are placed by the index builder; the method needs both. It adds the
    decoder's per-edge heads (:class:`nci.decoding.NodeHeads`), computed once here so that a
    load memory-maps them instead (they are the slow part of loading a large index)."""
    if not (ctx.has_ids and ctx.has_model):
        return {"unavailable": "the index was built without --ids and --model"}
    from nci.decoding import NodeHeads, TrieTensors
    from nci.model import NCIModel
    from nci.semantic_ids import load_semantic_ids

    model = NCIModel.from_pretrained(ctx.out / MODEL)
    trie = TrieTensors.from_trie(load_semantic_ids(ctx.out / IDS).trie, model.device)
    start = time.perf_counter()
    NodeHeads.build(model, trie).save(ctx.out / HEADS)
    n_nodes, seconds = trie.child.shape[0], time.perf_counter() - start
    log.info("NCI decoder heads for %d trie nodes in %.1f s", n_nodes, seconds)
    return {"files": [MODEL, IDS, HEADS]}


def _load(ctx: LoadContext) -> NCIRetriever:
    index, corpus = ctx.index, ctx.corpus
    model = index.nci_model()
    heads = None
    if (index.path / HEADS).is_dir():  # indexes built before the heads were saved compute them
        from nci.decoding import NodeHeads

        trie = corpus.ids.built_trie
        try:
            heads = NodeHeads.load(index.path / HEADS, len(trie.doc), model.config.d_model, model.device)
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{index.path / HEADS}: {e}; rebuild the index (nci index build)") from e
    return NCIRetriever("nci", model, corpus.ids, index.query_encoder, corpus.vector, heads=heads)


register(
    Method(
        name="nci",
        summary="Neural Corpus Indexer: the model writes semantic ids, beam search constrained to the trie",
        load=_load,
        build=_build,
        options=(
            Option(
                "beam",
                int,
                None,
                "beam size (default max(k, 10)); NCI returns at most `beam` results",
                1,
            ),
        ),
        score="log-probability of the semantic id",
        bench=lambda cfg: [
            ("nci" if i == 0 else f"nci-beam{b}", {"beam": b}) for i, b in enumerate(cfg.beams)
        ],
        label=lambda opts: f"nci-beam{opts['beam']}" if opts.get("beam") else "nci",
    )
)
