"""One retriever interface for NCI and the baselines, and loading an index directory.

An index directory (written by ``nci index build``) holds everything a search needs::

    manifest.json      stage "index": config, inputs, every file with its size, methods
    config.json        the IndexConfig it was built with
    documents.jsonl    the document store ({"_id", "title", "text"}, corpus order)
    doc_ids.txt        document ids, one a line, in the order of embeddings.npy and the FAISS ids
    embeddings.npy     float32 [n_docs, dim] L2-normalised document vectors
    encoder/           the query encoder (the BERT that embedded the documents); absent when the
                       NCI model's model/encoder/ holds the same weights and serves instead
    dense.faiss        exact inner product (IndexFlatIP)
    pq.faiss           4-bit product quantization, fast-scan (PQ{M}x4fs): the Bolt-style baseline
    bm25/              BM25 index (bm25s format)
    ids/               semantic ids and the docid trie (nci ids build)
    model/             the NCI model (nci train)

``load_index(path)`` checks the manifest and that every listed file is present with its recorded
size, and ``Index.retriever(method)`` returns an object with ``search(queries, k)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nci.manifest import ArtifactError, read_manifest

if TYPE_CHECKING:
    from nci.baselines import QueryEncoder

log = logging.getLogger(__name__)

STAGE = "index"
DOCUMENTS = "documents.jsonl"
DOC_IDS = "doc_ids.txt"
EMBEDDINGS = "embeddings.npy"
ENCODER = "encoder"
DENSE = "dense.faiss"
PQ = "pq.faiss"
BM25 = "bm25"
IDS = "ids"
MODEL = "model"

METHODS = ("nci", "dense", "pq", "bm25", "nci+dense")
HYBRID_WEIGHT = 20.0  # nci+dense: weight of the cosine similarity beside the NCI log-probability

Hits = list[tuple[str, float]]


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks documents for a batch of query strings."""

    name: str

    def search(self, queries: list[str], k: int) -> list[Hits]:
        """For each query, up to ``k`` ``(doc id, score)`` pairs, best first."""
        ...


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch and FAISS (call from entry points only)."""
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def search_batched(
    retriever: Retriever, queries: Sequence[str], k: int, batch_size: int = 64, progress: bool = False
) -> list[Hits]:
    """``retriever.search`` over ``queries`` in batches of ``batch_size``."""
    from tqdm import tqdm

    results: list[Hits] = []
    starts = range(0, len(queries), batch_size)
    for start in tqdm(starts, desc="search", unit="batch", disable=not progress, leave=False):
        results.extend(retriever.search(list(queries[start : start + batch_size]), k))
    return results


def dir_bytes(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- retrievers ------------------------------------------------------------------------------


def hits_from_arrays(doc_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray) -> list[Hits]:
    """FAISS-style ``(labels, scores)`` arrays to hit lists; -1 labels (no result) are dropped."""
    return [
        [(doc_ids[i], float(s)) for i, s in zip(row_i.tolist(), row_s.tolist(), strict=True) if i >= 0]
        for row_i, row_s in zip(labels, scores, strict=True)
    ]


def nci_decoder(model: Any, trie: Any) -> Callable[[Any, Any, int], tuple[Any, Any]]:
    """Our constrained decoding: ``decode(memory, memory_mask, beam) -> (doc_index, scores)``.

    The one place that picks the implementation, shared by the retriever, the service and
    ``nci bench``.
    """
    from nci.decoding import ConstrainedDecoder

    return ConstrainedDecoder(model, trie)


@dataclass
class NCIRetriever:
    """NCI: encode the query, then trie-constrained beam search over document ids.

    Returns at most ``beam`` documents per query (the beam's finished ids, best first), so ``k``
    larger than ``beam`` gives ``beam`` results.
    """

    name: str
    model: Any  # nci.model.NCIModel
    trie: Any  # nci.trie.Trie
    doc_ids: list[str]
    beam: int = 10

    def __post_init__(self) -> None:
        self.decode = nci_decoder(self.model, self.trie)

    def encode(self, queries: list[str]) -> tuple[Any, Any]:
        """``(memory, memory_mask)`` for a batch of query strings."""
        batch = self.model.tokenize(queries)
        return self.model.encode(batch["input_ids"], batch["attention_mask"])

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        memory, memory_mask = self.encode(queries)
        labels, scores = self.decode(memory, memory_mask, self.beam)
        labels = labels[:, :k].cpu().numpy()
        scores = scores[:, :k].float().cpu().numpy()
        return hits_from_arrays(self.doc_ids, labels, scores)


@dataclass
class HybridRetriever:
    """``nci+dense``: NCI's beam re-scored with dense similarity.

    Each document NCI returns gets ``log p_NCI(id | query) + weight * cos(query, document)``, with
    the query embedded by the index's query encoder and the document vector from
    ``embeddings.npy``. The candidates are NCI's alone (at most ``beam``); dense search adds none.
    """

    name: str
    nci: NCIRetriever
    encoder: Any  # nci.baselines.QueryEncoder
    embeddings: np.ndarray  # [n_docs, dim], rows in ``positions`` order
    positions: dict[str, int]  # doc id -> row of embeddings
    weight: float = HYBRID_WEIGHT

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        beams = self.nci.search(queries, self.nci.beam)
        vectors = self.encoder.encode(queries)
        out = []
        for q, hits in zip(vectors, beams, strict=True):
            if not hits:
                out.append([])
                continue
            rows = np.array([self.positions[d] for d, _ in hits])
            cos = np.asarray(self.embeddings[rows], dtype=np.float32) @ q
            scored = [(d, s + self.weight * float(c)) for (d, s), c in zip(hits, cos, strict=True)]
            out.append(sorted(scored, key=lambda h: -h[1])[:k])
        return out


def rank_vote(rankings: Sequence[Hits], k: int) -> Hits:
    """Fuse rankings by the NCI paper's rank voting: a document at rank ``r`` (1-based) of a
    ranking gets ``1 / (r / 5 + 1)`` votes; votes add up over rankings; best ``k`` first (ties by
    first appearance)."""
    votes: dict[str, float] = {}
    for hits in rankings:
        for r, (doc_id, _) in enumerate(hits, 1):
            votes[doc_id] = votes.get(doc_id, 0.0) + 1.0 / (r / 5 + 1)
    return sorted(votes.items(), key=lambda v: -v[1])[:k]


@dataclass
class EnsembleRetriever:
    """Several NCI models, typically trained on id variants (``nci ids build --seed S``) of one
    corpus, each in its own index directory; their rankings are fused by :func:`rank_vote`."""

    name: str
    members: list[Retriever]

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        per_member = [m.search(queries, k) for m in self.members]
        return [rank_vote([rankings[i] for rankings in per_member], k) for i in range(len(queries))]


def add_ensemble_argument(p: Any, note: str = "") -> None:
    """The ``--ensemble INDEX...`` flag of ``nci evaluate`` and ``nci search``."""
    p.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        default=None,
        metavar="INDEX",
        help="nci only: more index directories (other id variants of the same corpus) whose NCI "
        "rankings are fused with --index's by rank voting" + note,
    )


def ensemble(indexes: Sequence[Index], beam: int = 10) -> EnsembleRetriever:
    """An :class:`EnsembleRetriever` over the NCI models of ``indexes`` (same documents)."""
    if len(indexes) < 2:
        raise ValueError("an ensemble needs at least two index directories")
    first = set(indexes[0].doc_ids)
    for other in indexes[1:]:
        if set(other.doc_ids) != first:
            raise ArtifactError(f"{other.path}: holds other documents than {indexes[0].path}")
    members: list[Retriever] = [ix.retriever("nci", beam=beam) for ix in indexes]
    return EnsembleRetriever(f"nci-ensemble{len(members)}-beam{beam}", members)


# --- the index directory ---------------------------------------------------------------------


@dataclass
class Index:
    """A loaded index directory; retrievers are built on demand and share the query encoder."""

    path: Path
    manifest: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}

    @cached_property
    def doc_ids(self) -> list[str]:
        return (self.path / DOC_IDS).read_text().splitlines()

    @cached_property
    def documents(self) -> dict[str, dict[str, str]]:
        """doc id -> {"title", "text"} from the document store."""
        docs: dict[str, dict[str, str]] = {}
        path = self.path / DOCUMENTS
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                    docs[rec["_id"]] = {"title": rec.get("title", ""), "text": rec.get("text", "")}
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ArtifactError(
                        f"{path}:{lineno}: corrupt document record ({e}); rebuild the index"
                    ) from e
        return docs

    def document(self, doc_id: str) -> dict[str, str]:
        return self.documents[doc_id]

    def methods(self) -> dict[str, str | None]:
        """Each method -> None when it can be used, else why not."""
        out = {}
        for method in METHODS:
            if method == "nci+dense":
                needs = [m for m in ("nci", "dense") if out[m]]
                out[method] = f"needs {' and '.join(needs)}" if needs else None
                continue
            info = self.manifest.get("methods", {}).get(method)
            out[method] = (info or {}).get("unavailable") if info else "not in this index"
        return out

    def method_files(self, method: str, **opts: Any) -> list[str]:
        """Index-relative paths a method loads (besides the document store)."""
        self._check_method(method)
        if method == "nci+dense":
            return sorted(set(self.method_files("nci") + self.method_files("dense") + [EMBEDDINGS]))
        files = list(self.manifest["methods"][method].get("files", []))
        if method == "pq" and opts.get("rerank"):
            files.append(EMBEDDINGS)
        return files

    def size_bytes(self, method: str, **opts: Any) -> int:
        """Bytes on disk of everything ``method`` loads (query encoder or model included)."""
        return sum(dir_bytes(self.path / f) for f in self.method_files(method, **opts))

    def _check_method(self, method: str) -> None:
        available = self.methods()
        if method not in available:
            raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        if available[method]:
            raise ArtifactError(f"{self.path}: method '{method}' is not available: {available[method]}")

    @cached_property
    def query_encoder(self) -> QueryEncoder:
        from nci.baselines import QueryEncoder

        info = self.manifest["query_encoder"]
        return QueryEncoder(self.path / info["path"], pooling=info["pooling"], max_length=info["max_length"])

    def _read_faiss(self, name: str) -> Any:
        import faiss

        try:
            return faiss.read_index(str(self.path / name))
        except RuntimeError as e:
            raise ArtifactError(
                f"{self.path / name}: cannot read the FAISS index ({e}); rebuild the index"
            ) from e

    @cached_property
    def embeddings(self) -> np.ndarray:
        return np.load(self.path / EMBEDDINGS, mmap_mode="r")

    def retriever(self, method: str, **opts: Any) -> Retriever:
        """A retriever for ``method``: "dense", "pq" (``rerank=R``), "bm25", "nci" (``beam=B``) or
        "nci+dense" (``beam=B``, ``weight=W``)."""
        from nci.baselines import BM25Retriever, FaissRetriever

        self._check_method(method)
        if method == "dense":
            return FaissRetriever("dense", self._read_faiss(DENSE), self.doc_ids, self.query_encoder)
        if method == "pq":
            rerank = int(opts.get("rerank", 0))
            return FaissRetriever(
                "pq" if not rerank else f"pq+rerank{rerank}",
                self._read_faiss(PQ),
                self.doc_ids,
                self.query_encoder,
                embeddings=self.embeddings if rerank else None,
                rerank=rerank,
            )
        if method == "bm25":
            import bm25s

            bm25_cfg = self.manifest["methods"]["bm25"]
            try:
                model = bm25s.BM25.load(str(self.path / BM25), mmap=True, show_progress=False)
            except (OSError, ValueError, KeyError) as e:
                raise ArtifactError(
                    f"{self.path / BM25}: cannot load the BM25 index ({e}); rebuild the index"
                ) from e
            return BM25Retriever(
                "bm25",
                model,
                self.doc_ids,
                stopwords=bm25_cfg["stopwords"],
                stemmer_language=bm25_cfg["stemmer"],
            )
        if method == "nci":
            return self._nci_retriever(beam=int(opts.get("beam", 10)))
        if method == "nci+dense":
            nci = self._nci_retriever(beam=int(opts.get("beam", 10)))
            weight = float(opts.get("weight", HYBRID_WEIGHT))
            return HybridRetriever(
                f"nci+dense-beam{nci.beam}",
                nci,
                self.query_encoder,
                self.embeddings,
                {d: i for i, d in enumerate(self.doc_ids)},
                weight,
            )
        raise AssertionError(method)

    def nci_model(self) -> Any:
        """The NCI model of this index (``nci.model.NCIModel``), in eval mode."""
        from nci.model import NCIModel

        try:
            return NCIModel.from_pretrained(self.path / MODEL)
        except (OSError, ValueError) as e:
            raise ArtifactError(
                f"{self.path / MODEL}: cannot load the NCI model ({e}); rebuild the index"
            ) from e

    def semantic_ids(self) -> Any:
        """The semantic ids and trie (``nci.semantic_ids.SemanticIds``)."""
        from nci.semantic_ids import load_semantic_ids

        return load_semantic_ids(self.path / IDS)

    def _nci_retriever(self, beam: int) -> NCIRetriever:
        ids = self.semantic_ids()
        return NCIRetriever(f"nci-beam{beam}", self.nci_model(), ids.trie, ids.doc_ids, beam=beam)


def load_index(path: str | Path) -> Index:
    """Open an index directory, checking that every file its manifest lists is there and whole."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such index directory; build one with `nci index build`")
    manifest = read_manifest(path, stage=STAGE)
    problems = []
    for rel, info in manifest.get("files", {}).items():
        f = path / rel
        if not f.is_file():
            problems.append(f"{rel}: missing")
        elif f.stat().st_size != info["bytes"]:
            problems.append(
                f"{rel}: {f.stat().st_size} bytes, the manifest says {info['bytes']} (truncated or changed)"
            )
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise ArtifactError(
            f"{path}: index is incomplete or corrupt: {shown}. Rebuild it with `nci index build`."
        )
    index = Index(path=path, manifest=manifest)
    n = manifest.get("counts", {}).get("documents")
    if n is not None and len(index.doc_ids) != n:
        raise ArtifactError(f"{path / DOC_IDS}: {len(index.doc_ids)} ids, the manifest says {n} documents")
    return index
