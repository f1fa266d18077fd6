"""Shared fixtures: a tiny random BERT and the seeded synthetic corpus (see nci.synthetic)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `make test` runs one pytest-xdist worker per core: each worker (and what it starts) then uses
# one thread, since two torch processes with two threads each on two cores run many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    from tiny_bert import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """The synthetic corpus in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/)."""
    from nci.synthetic import make_corpus, write_beir

    return write_beir(make_corpus(), tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(autouse=True, scope="session")
def one_faiss_thread():
    # OpenMP spin-waiting makes multi-threaded FAISS crawl on a busy machine; tests need no speed
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_embeddings(tiny_encoder, synthetic_data, tmp_path_factory) -> Path:
    """The synthetic corpus embedded with the tiny BERT (an ``nci embed`` directory)."""
    from nci.embed import EmbedConfig, embed_corpus

    out = tmp_path_factory.mktemp("synthetic_emb") / "emb"
    return embed_corpus(synthetic_data, out, EmbedConfig(model=str(tiny_encoder), max_length=64))


@pytest.fixture(scope="session")
def plain_index(synthetic_data, synthetic_embeddings, tmp_path_factory) -> Path:
    """An index of the synthetic corpus without ids or model: dense, pq and bm25 only.
    Shared by the whole session: tests must not write into it."""
    from nci.index import build_index

    return build_index(synthetic_data, synthetic_embeddings, tmp_path_factory.mktemp("plain") / "index")


@pytest.fixture(scope="session")
def tiny_index(tiny_encoder, synthetic_data, synthetic_embeddings, tmp_path_factory) -> Path:
    """An index with every method: ids (k=4, leaf size 4), an untrained NCI model with the
    centroid prior, and the fusion fitted on 20 validation queries. Shared by the whole session:
    tests must not write into it (each service gets its own updates directory)."""
    from tiny_index import save_tiny_model

    from nci.index import build_index
    from nci.semantic_ids import IdsConfig, build

    root = tmp_path_factory.mktemp("tiny_index")
    ids = build(synthetic_embeddings, root / "ids", IdsConfig(k=4, leaf_size=4))
    save_tiny_model(ids, tiny_encoder, root / "model", centroid_prior=True)
    emb = synthetic_embeddings
    dev = validation_copy(synthetic_data, root / "dev-data")
    return build_index(
        synthetic_data, emb, root / "index", ids=root / "ids", model=root / "model", fusion=dev
    )


def validation_copy(data: Path, out: Path, n: int = 20) -> Path:
    """A copy of a dataset whose first ``n`` training judgements also form a dev split (the
    validation queries the fusion method is fitted on)."""
    import shutil

    copy = shutil.copytree(data, out)
    train = (copy / "qrels" / "train.tsv").read_text().splitlines()
    (copy / "qrels" / "dev.tsv").write_text("\n".join(train[: n + 1]) + "\n")  # header + n lines
    return copy
