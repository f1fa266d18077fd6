"""One seeded synthetic corpus, shared by tests and benchmarks.

Documents are built from topic vocabularies so that lexical, dense and generative retrievers
all have something to find; queries are short word samples of their document. Vectors are
Gaussian clusters, for code that needs embeddings without a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "do", "fa", "gu", "hi", "jo", "pe", "su"]


@dataclass(frozen=True)
class SyntheticCorpus:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> query id -> doc id -> grade


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4))) for _ in range(n)]


def make_corpus(
    n_docs: int = 60,
    n_topics: int = 6,
    queries_per_doc: int = 3,
    test_fraction: float = 0.34,
    doc_words: int = 40,
    seed: int = 0,
) -> SyntheticCorpus:
    """A deterministic corpus of ``n_docs`` documents over ``n_topics`` topics."""
    rng = np.random.default_rng(seed)
    topic_vocab = [_words(rng, 30) for _ in range(n_topics)]
    corpus, queries = {}, {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for i in range(n_docs):
        topic = i % n_topics
        own = _words(rng, 8)  # words that identify this document
        words = list(rng.choice(topic_vocab[topic] + own * 2, size=doc_words))
        doc_id = f"d{i}"
        corpus[doc_id] = {"title": f"topic {topic} {own[0]}", "text": " ".join(words)}
        for j in range(queries_per_doc):
            qid = f"q{i}_{j}"
            queries[qid] = " ".join(rng.choice(own, size=3, replace=False))
            split = "test" if rng.random() < test_fraction else "train"
            qrels[split][qid] = {doc_id: 1}
    return SyntheticCorpus(corpus=corpus, queries=queries, qrels=qrels)


def write_beir(data: SyntheticCorpus, out: str | Path) -> Path:
    """Write a synthetic corpus in the BEIR layout (no manifest: tests add what they need)."""
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        for doc_id, doc in data.corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    with open(out / "queries.jsonl", "w") as f:
        for qid, text in data.queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rels in data.qrels.items():
        with open(out / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in rels.items():
                for doc_id, grade in docs.items():
                    f.write(f"{qid}\t{doc_id}\t{grade}\n")
    return out


def make_vectors(n: int, dim: int, n_clusters: int = 50, seed: int = 0) -> np.ndarray:
    """``n`` L2-normalised float32 vectors drawn around ``n_clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    x = centres[labels] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
