"""``bm25-expanded``: BM25 over each document's text and the training queries judged relevant to it.

Document expansion with real queries: a question about a passage shares words with the other
questions asked about it (names, the passage's own terms in the askers' phrasing) that the passage
may state differently. The queries are the ones the index's NCI model learned from (the training
split less the share ``nci train`` held out, so the fusion is fitted on queries neither method has
seen), or every training query when the index has no model (or a model without its training
config). A corpus without training queries has no such method. Plain ``bm25`` stays the lexical
baseline; this method is a part of ``fusion``, whose fit sets its weight.

Files, under ``bm25-expanded/``: the bm25s index and ``queries.jsonl`` (one line per expanded
document: ``{"doc_id": ..., "query_ids": [...], "queries": [...]}``). The fusion fit leaves the
method out when any of its validation queries expands a document (:func:`overlap`: a dev split
that repeats training queries, or ``--fusion`` data other than the index's). Live changes
rebuild BM25 over the live corpus as ``bm25`` does; a document added live has no queries, and one
added or deleted under an id that had them loses them (they were asked about the text it
replaced).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nci.retrieval.hits import Hits
from nci.retrieval.registry import BuildContext, LiveDocument, LoadContext, Method, register

log = logging.getLogger(__name__)

NAME = "bm25-expanded"
DIRECTORY = "bm25-expanded"
QUERIES = f"{DIRECTORY}/queries.jsonl"


def expanded_text(text: str, queries: Sequence[str]) -> str:
    """A document's text with its queries appended."""
    return " ".join([text, *queries]) if queries else text


@dataclass
class ExpandedBM25:
    """BM25 over expanded documents; ``queries`` (doc id -> its queries) follows live changes."""

    name: str
    inner: Any  # BM25Retriever over the expanded texts
    queries: dict[str, list[str]]

    def search(self, queries: list[str], k: int) -> list[Hits]:
        return self.inner.search(queries, k)

    def add(self, documents: Sequence[LiveDocument]) -> None:
        for d in documents:
            self.queries.pop(d.doc_id, None)
        self.inner.add(documents)

    def remove(self, doc_ids: Sequence[str]) -> None:
        for doc_id in doc_ids:
            self.queries.pop(doc_id, None)
        self.inner.remove(doc_ids)

    def refresh(self) -> None:
        self.inner.refresh()


def _build(ctx: BuildContext) -> dict[str, Any]:
    from nci.manifest import ArtifactError
    from nci.retrieval.bm25 import index_bm25

    if ctx.data is None:
        return {"unavailable": "built without the dataset, so without its training queries"}
    from nci.train.data import learned_queries, read_train_config

    try:
        cfg = read_train_config(ctx.out / "model") if ctx.has_model else None
        queries = learned_queries(ctx.data, ctx.doc_ids, cfg)
    except (ArtifactError, OSError, TypeError, ValueError) as e:
        return {"unavailable": f"cannot read the training queries: {e}"}
    if not queries:
        return {"unavailable": "the dataset has no training queries to expand documents with"}
    texts = [
        expanded_text(t, list(queries.get(d, {}).values()))
        for d, t in zip(ctx.doc_ids, ctx.texts(), strict=True)
    ]
    (ctx.out / DIRECTORY).mkdir()
    with open(ctx.out / QUERIES, "w") as f:
        for doc_id in ctx.doc_ids:
            if doc_id in queries:
                row = {
                    "doc_id": doc_id,
                    "query_ids": list(queries[doc_id]),
                    "queries": list(queries[doc_id].values()),
                }
                f.write(json.dumps(row) + "\n")
    distinct = len({q for qs in queries.values() for q in qs})
    pairs = sum(len(qs) for qs in queries.values())
    log.info("%s: %d documents expanded with %d training queries", NAME, len(queries), distinct)
    settings = index_bm25(texts, ctx.out / DIRECTORY, ctx.config)
    return {
        "files": [DIRECTORY],
        "expanded_documents": len(queries),
        "queries": distinct,
        "query_document_pairs": pairs,
        "queries_from": (
            "the training queries the model learned from (its held-out share left out)"
            if cfg
            else "every training query (no model training config)"
        ),
        **settings,
    }


def read_expansions(index_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``queries.jsonl``: ``doc_id``, ``query_ids`` and ``queries``."""
    with open(Path(index_dir) / QUERIES) as f:
        return [json.loads(line) for line in f]


def overlap(index_dir: Path, queries: dict[str, str]) -> str | None:
    """Why ``queries`` (id -> text) cannot score bm25-expanded fairly (some of them expand its
    documents), or None. A validation query whose text only repeats another training query's (SQuAD
    asks some questions twice) is a duplicate in the data, as it is for NCI, and does not count."""
    rows = read_expansions(index_dir)
    ids = {q for row in rows for q in row.get("query_ids", ())}
    texts = {t for row in rows for t in row["queries"]}
    by_id = sum(q in ids for q in queries)
    if by_id:
        by_text = sum(t in texts for t in queries.values())
        return (
            f"{by_id} of the {len(queries)} validation queries expand its documents ({by_text} of "
            "their texts among its queries): its fit would score what it was built from"
        )
    return None


def _load(ctx: LoadContext) -> ExpandedBM25:
    from nci.retrieval.bm25 import open_bm25

    index, corpus = ctx.index, ctx.corpus
    queries = {row["doc_id"]: row["queries"] for row in read_expansions(index.path)}

    def live_texts() -> tuple[list[str], list[str]]:
        doc_ids = list(corpus.store)
        return doc_ids, [expanded_text(corpus.text(d), queries.get(d, ())) for d in doc_ids]

    info = index.manifest["methods"][NAME]
    inner = open_bm25(NAME, index.path / DIRECTORY, info, index.doc_ids, live_texts)
    return ExpandedBM25(NAME, inner, queries)


register(
    Method(
        name=NAME,
        summary="BM25 over each document's text and the training queries judged relevant to it",
        load=_load,
        build=_build,
        score="BM25 score of the expanded document",
    )
)
