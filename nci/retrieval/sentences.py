"""``dense-sentences`` and ``bm25-sentences``: a document scored by its best sentence.

Each document ("title. text") is cut into sentences (:func:`nci.data.layout.split_sentences`,
pieces under four words joined to the next) and the sentences are indexed as units: by the
query encoder's vectors (exact inner product, FAISS ``IndexFlatIP``) and by BM25 (bm25s, the
stemmer and stopwords of ``bm25``). A document's score is that of its best sentence (MaxP, Dai &
Callan, SIGIR 2019). A question about one sentence of a long passage matches that sentence
better than the passage's one pooled vector or its length-normalised term counts; as a part of
``fusion`` the two add that evidence beside the passage-level methods.

Files, under ``sentences/``: ``doc_ids.txt`` (the document of each sentence, in row order),
``dense.faiss`` and ``bm25/``. Live changes: an added document's sentences are encoded and scored
beside the index (as ``dense`` does) or BM25 is rebuilt over the live corpus's sentences (as
``bm25`` does); a deleted document's sentences are skipped.

Cost: one vector per sentence (about five to ten per document on the sets measured), so the
methods are built only for corpora of at most ``IndexConfig.sentence_max_docs`` documents.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nci.retrieval.hits import Hit, Hits
from nci.retrieval.registry import BuildContext, LiveDocument, LoadContext, Method, register

log = logging.getLogger(__name__)

SENTENCES = "sentences"
ROWS = f"{SENTENCES}/doc_ids.txt"
DENSE = f"{SENTENCES}/dense.faiss"
BM25 = f"{SENTENCES}/bm25"
MIN_WORDS = 4
# A sentence's key in the inner retriever: "<doc id>\t<n>" (a tab cannot be in a doc id: qrels
# files are tab-separated).
SEP = "\t"


def document_sentences(title: str, text: str) -> list[str]:
    """The sentences a document is scored by."""
    from nci.data.layout import document_text, split_sentences

    return split_sentences(document_text({"title": title, "text": text}), MIN_WORDS)


def sentence_key(doc_id: str, n: int) -> str:
    """The key of a document's ``n``-th sentence: "<doc id>\\t<n>"."""
    return f"{doc_id}{SEP}{n}"


def sentence_keys(rows: Sequence[str]) -> list[str]:
    """Keys of sentences listed by document (``doc_ids.txt`` rows)."""
    seen: dict[str, int] = {}
    keys = []
    for doc_id in rows:
        n = seen.get(doc_id, 0)
        keys.append(sentence_key(doc_id, n))
        seen[doc_id] = n + 1
    return keys


@dataclass
class BestSentence:
    """Ranks documents by their best sentence, over a retriever whose ids are sentence keys.

    ``counts`` (doc id -> sentences in the inner retriever) turns a deletion into its keys;
    ``encode`` (texts -> vectors) is set when added documents' sentences need vectors.
    """

    name: str
    inner: Any  # FaissRetriever or BM25Retriever over sentence keys
    counts: dict[str, int]
    encode: Any = None
    total: int = field(init=False)  # live sentences: sum of counts, kept by add and remove

    def __post_init__(self) -> None:
        self.total = sum(self.counts.values())

    def search(self, queries: list[str], k: int) -> list[Hits]:
        if not queries:
            return []
        total = self.total
        if not total:  # no live document has a sentence
            return [[] for _ in queries]
        depth = min(4 * k, total)
        while True:
            lists = self.inner.search(queries, depth)
            out = [self._documents(hits, k) for hits in lists]
            short = any(len(docs) < k and len(hits) == depth for docs, hits in zip(out, lists, strict=True))
            if not short or depth >= total:
                return out
            depth = min(4 * depth, total)

    def _documents(self, hits: Hits, k: int) -> Hits:
        best: dict[str, float] = {}
        for key, score, _ in hits:  # best first: a document's first sentence is its best
            doc_id = key.rpartition(SEP)[0]
            if doc_id not in best:
                best[doc_id] = score
                if len(best) == k:
                    break
        return [Hit(d, s, self.name) for d, s in best.items()]

    def add(self, documents: Sequence[LiveDocument]) -> None:
        live = []
        for d in documents:
            sentences = document_sentences(d.title, d.text)
            self.counts[d.doc_id] = len(sentences)
            self.total += len(sentences)
            vectors = [None] * len(sentences)
            if self.encode is not None and sentences:
                vectors = list(self.encode(sentences))
            live += [
                LiveDocument(sentence_key(d.doc_id, i), "", s, v)
                for i, (s, v) in enumerate(zip(sentences, vectors, strict=True))
            ]
        self.inner.add(live)

    def remove(self, doc_ids: Sequence[str]) -> None:
        keys = [sentence_key(d, i) for d in doc_ids for i in range(self.counts.pop(d, 0))]
        self.total -= len(keys)
        self.inner.remove(keys)

    def refresh(self) -> None:
        refresh = getattr(self.inner, "refresh", None)
        if refresh is not None:
            refresh()


# --- building -------------------------------------------------------------------------------


def _sentences(ctx: BuildContext) -> tuple[list[str], list[str]] | str:
    """(document of each sentence, sentences), written to ``doc_ids.txt`` once; or why not."""
    limit = ctx.config.sentence_max_docs
    if len(ctx.doc_ids) > limit:
        return (
            f"the corpus has {len(ctx.doc_ids)} documents; sentence methods are built for at most "
            f"{limit} (IndexConfig.sentence_max_docs)"
        )
    from nci.data.layout import split_sentences

    rows, sentences = [], []
    for doc_id, text in zip(ctx.doc_ids, ctx.texts(), strict=True):
        for s in split_sentences(text, MIN_WORDS):
            rows.append(doc_id)
            sentences.append(s)
    path = ctx.out / ROWS
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"{d}\n" for d in rows))
    return rows, sentences


def _build_dense(ctx: BuildContext) -> dict[str, Any]:
    import faiss

    found = _sentences(ctx)
    if isinstance(found, str):
        return {"unavailable": found}
    rows, sentences = found
    log.info("dense-sentences: encoding %d sentences of %d documents", len(sentences), len(ctx.doc_ids))
    vectors = ctx.encoder().encode(sentences, progress=True)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    faiss.write_index(flat, str(ctx.out / DENSE))
    return {"files": [ROWS, DENSE, ctx.encoder_dir], "sentences": len(rows), "min_words": MIN_WORDS}


def _build_bm25(ctx: BuildContext) -> dict[str, Any]:
    from nci.retrieval.bm25 import index_bm25

    found = _sentences(ctx)
    if isinstance(found, str):
        return {"unavailable": found}
    rows, sentences = found
    log.info("bm25-sentences: %d sentences", len(sentences))
    settings = index_bm25(sentences, ctx.out / BM25, ctx.config)
    return {"files": [ROWS, BM25], "sentences": len(rows), "min_words": MIN_WORDS, **settings}


# --- loading --------------------------------------------------------------------------------


def _rows(path: Path) -> tuple[list[str], dict[str, int]]:
    rows = (path / ROWS).read_text().splitlines()
    counts: dict[str, int] = {}
    for doc_id in rows:
        counts[doc_id] = counts.get(doc_id, 0) + 1
    return sentence_keys(rows), counts


def _load_dense(ctx: LoadContext) -> BestSentence:
    from nci.retrieval.dense import FaissRetriever

    index = ctx.index
    keys, counts = _rows(index.path)
    encoder = index.query_encoder
    inner = FaissRetriever("dense-sentences", index.read_faiss(DENSE), keys, encoder)
    return BestSentence("dense-sentences", inner, counts, encode=encoder.encode)


def _load_bm25(ctx: LoadContext) -> BestSentence:
    from nci.retrieval.bm25 import open_bm25

    index, corpus = ctx.index, ctx.corpus
    keys, counts = _rows(index.path)

    def live_texts() -> tuple[list[str], list[str]]:
        live_keys, texts = [], []
        for doc_id, doc in corpus.store.items():
            for i, s in enumerate(document_sentences(doc.get("title", ""), doc.get("text", ""))):
                live_keys.append(sentence_key(doc_id, i))
                texts.append(s)
        return live_keys, texts

    info = index.manifest["methods"]["bm25-sentences"]
    inner = open_bm25("bm25-sentences", index.path / BM25, info, keys, live_texts)
    return BestSentence("bm25-sentences", inner, counts)


register(
    Method(
        name="dense-sentences",
        summary="each document by its best sentence: exact inner product over sentence vectors",
        load=_load_dense,
        build=_build_dense,
        score="inner product of the query and the document's best sentence",
    )
)
register(
    Method(
        name="bm25-sentences",
        summary="each document by its best sentence: BM25 over sentences",
        load=_load_bm25,
        build=_build_bm25,
        score="BM25 score of the document's best sentence",
    )
)
