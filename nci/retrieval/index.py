"""An index directory, loaded: its manifest, files, document store and shared pieces.

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
    sentences/         dense-sentences and bm25-sentences: doc_ids.txt (the document of each
                       sentence), dense.faiss (sentence vectors), bm25/ (BM25 over sentences)
    bm25-expanded/     BM25 over documents expanded with their training queries (bm25s format)
                       and queries.jsonl (each expanded document's query ids and texts)
    ids/               semantic ids and the docid trie (nci ids build)
    model/             the NCI model (nci train)
    nci_heads/         the NCI decoder's output row per trie edge (weight.npy, bias.npy), computed
                       from model/ and ids/ at build time and memory-mapped at load
    updates/           live additions and deletions made by a server (nci.live), when any

``load_index(path)`` checks the manifest and that every listed file is present with its recorded
size. Which methods an index serves, and how each loads, is the method registry's
(:mod:`nci.retrieval.registry`); :meth:`Index.retriever` returns one through
:class:`nci.retrieval.searcher.Searcher`, the one search path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nci.manifest import ArtifactError, read_manifest
from nci.retrieval.registry import get_method, method_names

if TYPE_CHECKING:
    from nci.retrieval.encoder import QueryEncoder
    from nci.retrieval.registry import Retriever

log = logging.getLogger(__name__)

STAGE = "index"
DOCUMENTS = "documents.jsonl"
DOC_IDS = "doc_ids.txt"
EMBEDDINGS = "embeddings.npy"
ENCODER = "encoder"
IDS = "ids"
MODEL = "model"
HEADS = "nci_heads"


def dir_bytes(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
        """Each registered method -> None when this index serves it, else why not."""
        out: dict[str, str | None] = {}
        built = self.manifest.get("methods", {})
        names = method_names()
        for name in names:  # methods with files of their own
            method = get_method(name)
            if method.needs:
                continue
            if method.build is None:
                out[name] = None
            else:
                info = built.get(name)
                out[name] = (info or {}).get("unavailable") if info else "not in this index"
        for name in names:  # methods composed of others (and, if they have a builder, its files)
            method = get_method(name)
            if method.needs:
                missing = [m for m in method.needs if out.get(m, "not registered")]
                out[name] = f"needs {' and '.join(missing)}" if missing else None
                if not missing and method.build is not None:
                    info = built.get(name)
                    out[name] = (info or {}).get("unavailable") if info else "not in this index"
        return {name: out[name] for name in names}

    def method_files(self, method: str, **opts: Any) -> list[str]:
        """Index-relative paths a method loads (besides the document store)."""
        self.check_method(method)
        spec = get_method(method)
        entry = self.manifest.get("methods", {}).get(method, {})
        files = list(entry.get("files", []))
        # a composed method with fitted weights loads only the parts it weights (fusion), its
        # needs or others (its sentence methods); without weights, all its needs
        weights = entry.get("weights")
        for part in spec.needs:
            if weights is None or weights.get(part):
                files += self.method_files(part)
        for part, weight in (weights or {}).items():
            if weight and part not in spec.needs:
                files += self.method_files(part)
        files += spec.extra_files(opts)
        return sorted(set(files)) if spec.needs else list(dict.fromkeys(files))

    def size_bytes(self, method: str, **opts: Any) -> int:
        """Bytes on disk of everything ``method`` loads (query encoder or model included)."""
        return sum(dir_bytes(self.path / f) for f in self.method_files(method, **opts))

    def check_method(self, method: str) -> None:
        """Raise ValueError for an unknown method, ArtifactError for one this index lacks."""
        available = self.methods()
        if method not in available:
            raise ValueError(f"unknown method '{method}'; choose from {', '.join(available)}")
        if available[method]:
            raise ArtifactError(f"{self.path}: method '{method}' is not available: {available[method]}")

    @cached_property
    def query_encoder(self) -> QueryEncoder:
        from nci.retrieval.encoder import QueryEncoder

        info = self.manifest["query_encoder"]
        return QueryEncoder(self.path / info["path"], pooling=info["pooling"], max_length=info["max_length"])

    def read_faiss(self, name: str) -> Any:
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
        """A retriever for ``method`` with fixed options (``beam=B`` for nci and nci+dense,
        ``rerank=R`` for pq, ``weight=W`` for nci+dense), through a :class:`Searcher` over this
        index; ``search(queries, k)`` on it is ``Searcher.search(method, queries, k, **opts)``."""
        from nci.retrieval.searcher import Searcher

        return Searcher(self).retriever(method, **opts)

    def model_config(self) -> dict[str, Any]:
        """The NCI model's config.json (k, max_depth, ...), without loading its weights."""
        path = self.path / MODEL / "config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{path}: cannot read the NCI model config ({e}); rebuild the index") from e

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
