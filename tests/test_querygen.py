"""Pseudo-queries: doc-as-query, doc2query training and sampling (tiny random models, seconds)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from nci import doc2query, querygen
from nci.data import load_corpus, load_qrels
from nci.doc2query import Doc2QueryConfig, GeneratorError, training_pairs
from nci.manifest import read_manifest
from nci.querygen import (
    DaqConfig,
    GenerateConfig,
    SentenceConfig,
    doc_as_queries,
    read_pseudo_queries,
    sentences_as_queries,
    split_sentences,
)

FAST = {"max_doc_length": 32, "max_query_length": 6}


def rows_of(directory: Path) -> list[tuple[str, str, str]]:
    return [(r["doc_id"], r["text"], r["source"]) for r in read_pseudo_queries(directory)]


def per_doc(rows: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for doc_id, text, _ in rows:
        out.setdefault(doc_id, []).append(text)
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, most of all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """12 synthetic documents: generation with the real 30k-token vocabulary stays fast."""
    from nci.synthetic import make_corpus, write_beir

    return write_beir(make_corpus(n_docs=12, n_topics=3, seed=1), tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def generator(tiny_encoder, small_data, tmp_path_factory) -> Path:
    """A tiny encoder-decoder trained for a couple of steps on the synthetic training split."""
    out = tmp_path_factory.mktemp("d2q") / "model"
    config = Doc2QueryConfig(base_model=str(tiny_encoder), decoder_layers=1, batch_size=8, epochs=0.5, **FAST)
    querygen.train(small_data, out, config)
    return out


# --------------------------------------------------------------------------------------------
# doc-as-query


def test_daq_gives_title_first_words_and_n_distinct_windows(synthetic_data, tmp_path):
    config = DaqConfig(n=4, window=8, seed=3)
    querygen.write_daq(synthetic_data, tmp_path / "daq", config)
    corpus = load_corpus(synthetic_data)
    got = per_doc(rows_of(tmp_path / "daq"))
    assert list(got) == list(corpus)  # every document, in corpus order
    for doc_id, queries in got.items():
        words = corpus[doc_id]["text"].split()
        assert queries[0] == f"{corpus[doc_id]['title']}. {' '.join(words[:8])}"
        windows = queries[1:]
        assert len(windows) == 4 and len(set(windows)) == 4
        for w in windows:  # each is 8 consecutive words of the document, not its beginning
            assert len(w.split()) == 8 and w in corpus[doc_id]["text"] and w != " ".join(words[:8])
    manifest = read_manifest(tmp_path / "daq", stage="querygen")
    assert manifest["source"] == "daq" and manifest["config"] == {"n": 4, "window": 8, "seed": 3}
    assert manifest["counts"]["pairs"] == 5 * len(corpus)
    assert manifest["inputs"]["data"]["sha256"]


def test_daq_is_seeded(synthetic_data, tmp_path):
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        querygen.write_daq(synthetic_data, tmp_path / name, DaqConfig(n=3, window=8, seed=seed))
    a, b, c = (rows_of(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c


def test_daq_short_document_has_only_its_first_query():
    doc = {"title": "Short", "text": "only five words in here"}
    assert doc_as_queries("x", doc, DaqConfig(n=10, window=64)) == ["Short. only five words in here"]
    assert doc_as_queries("x", {"title": "", "text": ""}, DaqConfig()) == []


def test_sentences_end_at_stops_before_a_capital_and_short_pieces_join_the_next():
    text = 'The U.S. Army won in 1990. It rained! Was it? "Yes," he said (twice.) Then 3 more came.'
    assert split_sentences(text) == [
        "The U.S.",  # an abbreviation before a capital looks like a sentence end
        "Army won in 1990.",
        "It rained!",
        "Was it?",
        '"Yes," he said (twice.)',
        "Then 3 more came.",
    ]
    assert split_sentences(text, min_words=4) == [
        "The U.S. Army won in 1990.",
        "It rained! Was it?",
        '"Yes," he said (twice.)',
        "Then 3 more came.",
    ]
    assert split_sentences("one two.") == ["one two."] and split_sentences("  ") == []
    assert split_sentences("Short one. Two.", min_words=3) == ["Short one. Two."]  # a short tail joins


def test_sentence_queries_are_up_to_n_sentences_in_order_cut_to_max_words():
    text = " ".join(f"Sentence number {i} has a few words in it." for i in range(8))
    doc = {"title": "T", "text": text + " Sentence number 0 has a few words in it."}  # a repeat
    every = sentences_as_queries("d", doc, SentenceConfig(n=20))
    assert every == [f"Sentence number {i} has a few words in it." for i in range(8)]
    some = sentences_as_queries("d", doc, SentenceConfig(n=3, seed=1))
    assert len(some) == 3 and some == sorted(some, key=every.index)  # a subset, in document order
    assert some == sentences_as_queries("d", doc, SentenceConfig(n=3, seed=1))
    assert {tuple(sentences_as_queries("d", doc, SentenceConfig(n=3, seed=s))) for s in range(5)} != {
        tuple(some)
    }
    assert sentences_as_queries("d", doc, SentenceConfig(max_words=2))[0] == "Sentence number"


def test_sentences_cli_writes_pseudo_queries_with_their_unit(synthetic_data, tmp_path):
    assert (
        querygen.main(["sentences", "--data", str(synthetic_data), "--out", str(tmp_path / "s"), "--n", "2"])
        == 0
    )
    corpus = load_corpus(synthetic_data)
    got = per_doc(rows_of(tmp_path / "s"))
    assert list(got) == list(corpus)
    for doc_id, queries in got.items():  # synthetic texts have no stops: one sentence each
        assert queries == [" ".join(corpus[doc_id]["text"].split()[:64])]
    manifest = read_manifest(tmp_path / "s", stage="querygen")
    assert manifest["unit"] == "sentences" and manifest["config"]["n"] == 2
    assert (
        querygen.main(["sentences", "--data", str(synthetic_data), "--out", str(tmp_path / "t"), "--n", "0"])
        == 2
    )


# --------------------------------------------------------------------------------------------
# Training data never includes test queries


def write_toy(root: Path, train: list[tuple[str, str]], test: list[tuple[str, str]] | None) -> Path:
    root.mkdir(parents=True)
    (root / "qrels").mkdir()
    docs = {d for _, d in train + (test or [])} | {"d9"}
    with open(root / "corpus.jsonl", "w") as f:
        for d in sorted(docs):
            f.write(json.dumps({"_id": d, "title": "", "text": f"document {d} about {d} things"}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q in sorted({q for q, _ in train + (test or [])}):
            f.write(json.dumps({"_id": q, "text": f"what is {q}"}) + "\n")
    for split, rows in [("train", train), ("test", test)]:
        if rows is not None:
            lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, d in rows]
            (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_training_pairs_come_from_the_train_split_only(tmp_path):
    # "leak" is judged in both splits: it is a test query and must not be trained on.
    data = write_toy(
        tmp_path / "toy",
        train=[("q1", "d1"), ("q2", "d1"), ("q3", "d2"), ("leak", "d2")],
        test=[("t1", "d1"), ("t2", "d2"), ("leak", "d1")],
    )
    pairs = training_pairs(data)
    assert pairs == [("q1", "d1"), ("q2", "d1"), ("q3", "d2")]
    assert not {q for q, _ in pairs} & set(load_qrels(data, "test"))


def test_generator_saw_no_test_query(generator, small_data):
    seen = set((generator / doc2query.TRAIN_QUERY_IDS).read_text().split())
    train, test = load_qrels(small_data, "train"), load_qrels(small_data, "test")
    assert seen == set(train) and not seen & set(test)
    manifest = read_manifest(generator, stage="doc2query")
    assert manifest["counts"]["training_pairs"] == len(training_pairs(small_data))
    assert manifest["inputs"]["data"]["sha256"]


def test_training_config_loads_back_from_the_manifest(generator):
    saved = read_manifest(generator, stage="doc2query")["config"]
    assert Doc2QueryConfig(**saved) == Doc2QueryConfig(
        base_model=saved["base_model"], decoder_layers=1, batch_size=8, epochs=0.5, **FAST
    )


def test_frozen_encoder_by_default_or_trained_on_request(tiny_encoder, small_data, tmp_path):
    def encoder_weights(directory: Path) -> dict:
        return {
            k: v for k, v in load_file(directory / "model.safetensors").items() if k.startswith("encoder.")
        }

    base = {"base_model": str(tiny_encoder), "decoder_layers": 1, "batch_size": 8, "epochs": 1.0, **FAST}
    querygen.train(small_data, tmp_path / "frozen", Doc2QueryConfig(**base))
    querygen.train(small_data, tmp_path / "full", Doc2QueryConfig(**base, finetune_all=True))
    frozen, full = encoder_weights(tmp_path / "frozen"), encoder_weights(tmp_path / "full")
    # Both start from the same warm start; only the fully trained one has moved.
    word = "encoder.embeddings.word_embeddings.weight"
    original = AutoModel.from_pretrained(tiny_encoder).embeddings.word_embeddings.weight
    assert torch.equal(frozen[word], original)
    assert not torch.equal(full[word], original)
    decoder_words = load_file(tmp_path / "frozen" / "model.safetensors")[
        "decoder.bert.embeddings.word_embeddings.weight"
    ]
    assert torch.equal(decoder_words, original)
    report = read_manifest(tmp_path / "full", stage="doc2query")["training"]
    assert report["trained_parameters"] > read_manifest(tmp_path / "frozen")["training"]["trained_parameters"]


def test_training_without_train_queries_fails_clearly(tiny_encoder, tmp_path):
    data = write_toy(tmp_path / "zero", train=[], test=[("t1", "d1")])
    (data / "qrels" / "train.tsv").unlink()
    with pytest.raises(GeneratorError, match="no training queries"):
        querygen.train(data, tmp_path / "m", Doc2QueryConfig(base_model=str(tiny_encoder)))
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------------
# doc2query generation


def test_saved_generator_loads_as_auto_seq2seq(generator):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(generator, local_files_only=True)
    assert type(model).__name__ == "EncoderDecoderModel"
    assert (generator / "model.safetensors").is_file()


def test_generate_n_distinct_queries_per_document_with_provenance(generator, small_data, tmp_path):
    config = GenerateConfig(model=str(generator), n=3, **FAST)
    querygen.generate(small_data, tmp_path / "d2q", config)
    rows = rows_of(tmp_path / "d2q")
    got = per_doc(rows)
    assert list(got) == list(load_corpus(small_data))
    for queries in got.values():
        assert len(queries) == 3
        assert all(q.strip() for q in queries) and len({q.casefold() for q in queries}) == 3
    assert {source for _, _, source in rows} == {"d2q"}
    manifest = read_manifest(tmp_path / "d2q", stage="querygen")
    assert manifest["generator"]["stage"] == "doc2query"
    assert manifest["generator"]["trained_on"]["sha256"] == manifest["inputs"]["data"]["sha256"]
    assert manifest["counts"]["pairs"] == len(rows)
    assert not (tmp_path / "d2q.partial").exists()


def test_generation_is_seeded_and_independent_of_batching(generator, small_data, tmp_path):
    runs = {
        "a": GenerateConfig(model=str(generator), n=2, batch_size=16, chunk_size=64, **FAST),
        "b": GenerateConfig(model=str(generator), n=2, batch_size=1, chunk_size=5, **FAST),
        "c": GenerateConfig(model=str(generator), n=2, seed=1, **FAST),
    }
    for name, config in runs.items():
        querygen.generate(small_data, tmp_path / name, config)
    a, b, c = (rows_of(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c


def test_duplicates_and_empties_are_dropped(generator, small_data):
    corpus = load_corpus(small_data)
    docs = [(d, corpus[d]["text"]) for d in list(corpus)[:4]]
    tokenizer, model = doc2query.load_generator(generator)
    # top-k 1 is greedy: every sample of a document is the same text.
    config = doc2query.SamplingConfig(n=4, top_k=1, max_rounds=2, **FAST)
    queries, counts = doc2query.sample_queries(tokenizer, model, docs, config)
    assert all(len(qs) <= 1 for qs in queries)
    # a second round asks again for what each document is missing
    assert counts["samples"] == 4 * 4 + sum(4 - len(qs) for qs in queries)
    assert counts["duplicates"] + counts["empty"] == counts["samples"] - sum(map(len, queries))


@pytest.mark.parametrize("vocabulary", ["document", "none"])
def test_document_vocabulary_keeps_queries_to_its_words(vocabulary, generator, small_data, monkeypatch):
    tokenizer, model = doc2query.load_generator(generator)
    written = []
    decode = tokenizer.batch_decode
    monkeypatch.setattr(tokenizer, "batch_decode", lambda ids, **kw: written.append(ids) or decode(ids, **kw))
    corpus = load_corpus(small_data)
    docs = [(d, corpus[d]["text"]) for d in list(corpus)[:3]]
    config = doc2query.SamplingConfig(n=3, vocabulary=vocabulary, **FAST)
    doc2query.sample_queries(tokenizer, model, docs, config)
    words = [*doc2query.QUERY_WORDS, *(w.capitalize() for w in doc2query.QUERY_WORDS)]
    allowed = set(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) | {
        tokenizer.cls_token_id,  # the decoder start
        tokenizer.sep_token_id,  # the end
        tokenizer.pad_token_id,  # after the end
    }
    outside = 0
    for row, ids in enumerate(written[0]):  # first round: 3 rows per document, in order
        doc_tokens = tokenizer(docs[row // 3][1], truncation=True, max_length=FAST["max_doc_length"])
        outside += len(set(ids.tolist()) - allowed - set(doc_tokens["input_ids"]))
    # An untrained model writes tokens from all over its vocabulary unless restricted.
    assert (outside == 0) == (vocabulary == "document")


def test_interrupted_generation_resumes_from_finished_chunks(generator, small_data, tmp_path, monkeypatch):
    config = GenerateConfig(model=str(generator), n=2, batch_size=3, chunk_size=6, **FAST)
    real = doc2query.sample_queries
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the first batch of the second chunk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(doc2query, "sample_queries", failing)
    with pytest.raises(KeyboardInterrupt):
        querygen.generate(small_data, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()
    assert len(list((tmp_path / "out.partial").glob("chunk-*[0-9].jsonl"))) == 1

    calls["n"] = -100
    querygen.generate(small_data, tmp_path / "out", config)
    assert calls["n"] == -100 + 2  # 12 documents: only chunk 2 is left, two batches
    querygen.generate(small_data, tmp_path / "fresh", config)
    assert rows_of(tmp_path / "out") == rows_of(tmp_path / "fresh")


def test_shards_then_merge_equal_one_process(generator, small_data, tmp_path, monkeypatch, capsys):
    from nci.shards import Shard

    # 12 documents in chunks of 5: chunks 0 and 2 are shard 0/2's, chunk 1 is shard 1/2's
    config = GenerateConfig(model=str(generator), n=2, batch_size=3, chunk_size=5, **FAST)
    querygen.generate(small_data, tmp_path / "whole", config)
    out, partial = tmp_path / "sharded", tmp_path / "sharded.partial"
    assert querygen.generate(small_data, out, config, shard=Shard.parse("1/2")) is None
    assert not out.exists()
    assert sorted(p.name for p in partial.glob("chunk-*[0-9].jsonl")) == ["chunk-00000005.jsonl"]
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    merge = ["generate", "--data", str(small_data), "--out", str(out), "--model", str(generator), "--n", "2",
             "--chunk-size", "5", "--batch-size", "3", "--max-doc-length", "32", "--max-query-length", "6",
             "--merge"]  # fmt: skip
    assert querygen.main(merge) == 2
    assert "2 of 3 chunks are missing (chunk 0, 2)" in capsys.readouterr().err
    assert querygen.generate(small_data, out, config, shard=Shard.parse("0/2")) is None

    def refuse(*args, **kwargs):
        raise AssertionError("--merge generates nothing")

    monkeypatch.setattr(doc2query, "sample_queries", refuse)
    monkeypatch.setattr(doc2query, "load_generator", refuse)
    assert querygen.main(merge) == 0
    jsonl = querygen.PSEUDO_QUERIES
    assert (out / jsonl).read_bytes() == (tmp_path / "whole" / jsonl).read_bytes()  # byte for byte
    whole, merged = read_manifest(tmp_path / "whole"), read_manifest(out)
    for key in ("stage", "config", "inputs", "counts", "source", "generator"):
        assert merged[key] == whole[key], key
    assert not partial.exists()


@pytest.mark.parametrize("bad", ["missing", "empty_dir", "deep/missing/path"])
def test_bad_model_path_is_a_clear_error(bad, small_data, tmp_path, capsys):
    model = tmp_path / bad
    if bad == "empty_dir":
        model.mkdir()
    argv = ["generate", "--data", str(small_data), "--model", str(model), "--out", str(tmp_path / "o")]
    assert querygen.main(argv) == 2
    err = capsys.readouterr().err
    assert str(model) in err and "Traceback" not in err
    assert "no such model directory" in err or "not a model directory" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(GeneratorError, match="could not load"):
        doc2query.load_generator("no-such-org/no-such-doc2query-model")


def test_any_seq2seq_directory_works(tiny_encoder, small_data, tmp_path):
    """A T5 directory (tiny, random, with the BERT tokenizer) is used unchanged."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    config = T5Config(
        vocab_size=tokenizer.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    querygen.generate(small_data, tmp_path / "out", GenerateConfig(model=str(tmp_path / "t5"), n=2, **FAST))
    got = per_doc(rows_of(tmp_path / "out"))
    assert len(got) == len(load_corpus(small_data)) and all(len(q) == 2 for q in got.values())


def test_zero_shot_corpus_uses_a_generator_trained_elsewhere(generator, tmp_path):
    data = write_toy(tmp_path / "zero", train=[], test=[("t1", "d1"), ("t2", "d2")])
    (data / "qrels" / "train.tsv").unlink()
    with open(data / "corpus.jsonl", "a") as f:  # an empty document gets no made-up queries
        f.write(json.dumps({"_id": "empty", "title": "", "text": ""}) + "\n")
    querygen.generate(data, tmp_path / "out", GenerateConfig(model=str(generator), n=2, **FAST))
    manifest = read_manifest(tmp_path / "out", stage="querygen")
    assert manifest["generator"]["trained_on"]["sha256"] != manifest["inputs"]["data"]["sha256"]
    assert set(per_doc(rows_of(tmp_path / "out"))) == set(load_corpus(data)) - {"empty"}
    assert manifest["counts"]["documents_without_queries"] == 1


def test_whole_cli_runs_without_network(tiny_encoder, small_data, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    common = ["--data", str(small_data), "--threads", "1"]
    model = tmp_path / "model"
    assert querygen.main(["daq", *common[:2], "--out", str(tmp_path / "daq"), "--window", "8"]) == 0
    assert (
        querygen.main(
            [
                "train",
                *common,
                "--out",
                str(model),
                "--base-model",
                str(tiny_encoder),
                "--decoder-layers",
                "1",
                "--epochs",
                "0.2",
                "--max-doc-length",
                "32",
                "--max-query-length",
                "6",
            ]
        )  # fmt: skip
        == 0
    )
    out = tmp_path / "d2q"
    args = [
        "generate",
        *common,
        "--model",
        str(model),
        "--out",
        str(out),
        "--n",
        "2",
        "--max-query-length",
        "6",
    ]
    assert querygen.main(args) == 0
    assert read_manifest(out, stage="querygen")["counts"]["min_per_document"] == 2
    assert querygen.main(args) == 2  # an existing output is not replaced without --overwrite
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_real_squad_with_the_packaged_minilm_generator(tmp_path):
    """The MiniLM encoder-decoder trains briefly on real SQuAD pairs and writes question-like text."""
    import os

    from nci.data import prepare
    from nci.settings import get_settings

    if not os.environ.get("NCI_DATASETS"):
        pytest.skip("set NCI_DATASETS to the folder holding squad-v1.1-dev/")
    get_settings.cache_clear()
    data = tmp_path / "squad"
    prepare("squad", data)
    daq = querygen.write_daq(data, tmp_path / "daq", DaqConfig())
    assert daq["counts"]["documents"] == 2067 and daq["counts"]["documents_without_queries"] == 0
    # A few steps only: the test checks the real model's plumbing, not its quality.
    tokenizer, model, report = doc2query.train_generator(
        data, Doc2QueryConfig(epochs=0.02, max_doc_length=64, max_query_length=16), progress=False
    )
    assert report["loss_last"] < report["loss_first"]
    assert not set(report["query_ids"]) & set(load_qrels(data, "test"))
    corpus = load_corpus(data)
    docs = [(d, corpus[d]["text"]) for d in list(corpus)[:2]]
    queries, _ = doc2query.sample_queries(tokenizer, model, docs, doc2query.SamplingConfig(n=3, **FAST))
    assert all(1 <= len(qs) <= 3 for qs in queries)
