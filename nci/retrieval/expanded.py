"""``bm25-expanded``: BM25 over each document's text and the training queries judged relevant to it.

Document expansion with real queries: a question about a passage shares words with the other
questions asked about it (names, the passage's own terms in the askers' phrasing) that the passage
may state differently. The queries are the ones the index's NCI model learned from (the training
split less the share ``nci train`` held out, so the fusion is fitted on queries neither method has
seen), or every training query when the index has no model. A corpus without training queries has
no such method. Plain ``bm25`` stays the lexical baseline; this method is a part of ``fusion``,
whose fit sets its weight.

Files, under ``bm25-expanded/``: the bm25s index and ``queries.jsonl`` (one line per expanded
document: ``{"doc_id": ..., "queries": [...]}``). Live changes rebuild BM25 over the live corpus as
``bm25`` does; a document added live has no queries, and one added or deleted under an id that had
them loses them (they were asked about the text it replaced).
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
    from nci.retrieval.bm25 import index_bm25

    if ctx.data is None:
        return {"unavailable": "built without the dataset, so without its training queries"}
    from nci.train.data import learned_queries, read_train_config

    cfg = read_train_config(ctx.out / "model") if ctx.has_model else None
    queries = learned_queries(ctx.data, ctx.doc_ids, cfg)
    if not queries:
        return {"unavailable": "the dataset has no training queries to expand documents with"}
    texts = [expanded_text(t, queries.get(d, ())) for d, t in zip(ctx.doc_ids, ctx.texts(), strict=True)]
    (ctx.out / DIRECTORY).mkdir()
    with open(ctx.out / QUERIES, "w") as f:
        for doc_id in ctx.doc_ids:
            if doc_id in queries:
                f.write(json.dumps({"doc_id": doc_id, "queries": queries[doc_id]}) + "\n")
    n = sum(len(q) for q in queries.values())
    log.info("%s: %d documents expanded with %d training queries", NAME, len(queries), n)
    settings = index_bm25(texts, ctx.out / DIRECTORY, ctx.config)
    return {
        "files": [DIRECTORY],
        "expanded_documents": len(queries),
        "queries": n,
        "queries_from": "the training queries the model learned from" if cfg else "every training query",
        **settings,
    }


def _load(ctx: LoadContext) -> ExpandedBM25:
    from nci.retrieval.bm25 import open_bm25

    index, corpus = ctx.index, ctx.corpus
    queries: dict[str, list[str]] = {}
    with open(Path(index.path) / QUERIES) as f:
        for line in f:
            row = json.loads(line)
            queries[row["doc_id"]] = row["queries"]

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
