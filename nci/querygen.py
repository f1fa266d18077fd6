"""Pseudo-queries (``nci querygen``): every document reachable from queries the model has seen.

Two sources, each reproducible from a seed (Wang et al. 2022, section 3.2):

- ``daq`` (document as query): the title with the first 64 words, and N random 64-word windows;
  ``sentences``, the same source cut at sentence ends instead: up to N of the document's sentences,
  each a query of its own (questions are often about one sentence).
- ``d2q`` (doc2query): N queries per document sampled from a sequence-to-sequence generator,
  either trained here (``nci querygen train``, see ``nci.doc2query``) or any saved
  ``AutoModelForSeq2SeqLM`` directory. A corpus without training queries (Cranfield) uses a
  generator trained on another dataset; the manifest records which.

``daq`` and ``generate`` write ``pseudo_queries.jsonl`` (one ``{"doc_id", "text", "source"}``
object a line, documents in corpus order) and ``manifest.json`` (stage ``querygen``). ``train``
writes a model directory (``save_pretrained``, safetensors) with its manifest and the ids of
the training queries it saw. ``generate`` works in resumable chunks, which ``--shard I/N`` splits
across processes or machines and ``--merge`` assembles (``nci.shards``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from nci.data.layout import split_sentences
from nci.manifest import ArtifactError, Timer, atomic_output_dir, fingerprint, read_manifest, write_manifest
from nci.shards import (
    Shard,
    add_shard_arguments,
    barrier,
    check_complete,
    launched,
    open_partial,
    stops_after_its_chunks,
    temporary_name,
    threads_per_process,
)

if TYPE_CHECKING:
    from nci.doc2query import SamplingConfig

log = logging.getLogger(__name__)

STAGE = "querygen"
PSEUDO_QUERIES = "pseudo_queries.jsonl"
PSEUDO_QUERY_KINDS = ("daq", "d2q")  # the "source" value of each pseudo_queries.jsonl row


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _check_out(out: Path, overwrite: bool) -> None:
    # Checked before any long work, not only when the output is finally renamed into place.
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")


def _write_jsonl(path: Path, rows: Iterator[tuple[str, str, str]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text, source in rows:
            f.write(json.dumps({"doc_id": doc_id, "text": text, "source": source}, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_pseudo_queries(directory: str | Path) -> list[dict[str, str]]:
    """The pairs of a finished ``querygen`` directory (fails clearly on an unfinished one)."""
    read_manifest(Path(directory), stage=STAGE)
    path = Path(directory) / PSEUDO_QUERIES
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{path}, line {lineno}: not JSON ({e.msg})") from e
            if not isinstance(row, dict) or not {"doc_id", "text", "source"} <= row.keys():
                raise ArtifactError(f"{path}, line {lineno}: needs the fields doc_id, text and source")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Document as query


@dataclass(frozen=True)
class DaqConfig:
    n: int = 10  # random windows per document, besides the title + first words
    window: int = 64  # words
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 0 or self.window < 1:
            raise ValueError("n must be >= 0 and window >= 1")


def doc_as_queries(doc_id: str, doc: dict[str, str], config: DaqConfig) -> list[str]:
    """Title + first ``window`` words, then up to ``n`` distinct random windows.

    Windows start at distinct random word positions after the first (so none repeats the
    first query); a document of at most ``window`` words has only the first query.
    """
    from nci.data import document_text
    from nci.doc2query import stable_seed

    words = (doc.get("text") or "").split()
    first = document_text({"title": doc.get("title") or "", "text": " ".join(words[: config.window])})
    starts = len(words) - config.window  # window start positions 1..starts
    picked: list[int] = []
    if starts > 0 and config.n > 0:
        rng = np.random.default_rng(stable_seed(config.seed, doc_id))
        picked = sorted((1 + rng.choice(starts, size=min(config.n, starts), replace=False)).tolist())
    out, seen = [], set()
    for text in [first] + [" ".join(words[s : s + config.window]) for s in picked]:
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


@dataclass(frozen=True)
class SentenceConfig:
    n: int = 10  # sentences per document at most (a seeded random choice of them beyond that)
    max_words: int = 64  # a longer sentence keeps its first words
    min_words: int = 4  # a shorter piece (an abbreviation's cut, a heading) joins the next one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_words < 1 or self.min_words < 1:
            raise ValueError("n, max_words and min_words must be >= 1")


def sentences_as_queries(doc_id: str, doc: dict[str, str], config: SentenceConfig) -> list[str]:
    """Up to ``n`` distinct sentences of the document's text, in document order, each cut to
    ``max_words`` words; a random (seeded per document) choice of them when there are more."""
    from nci.doc2query import stable_seed

    sentences = [
        " ".join(s.split()[: config.max_words])
        for s in split_sentences(doc.get("text") or "", config.min_words)
    ]
    if len(sentences) > config.n:
        rng = np.random.default_rng(stable_seed(config.seed, doc_id))
        sentences = [sentences[i] for i in sorted(rng.choice(len(sentences), size=config.n, replace=False))]
    out, seen = [], set()
    for text in sentences:
        if text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


def write_daq(
    data_dir: str | Path, out: str | Path, config: DaqConfig | SentenceConfig, overwrite: bool = False
) -> dict:
    """Doc-as-query pseudo-queries for every document of a prepared dataset: windows of words
    (``DaqConfig``) or sentences (``SentenceConfig``)."""
    from nci.data import load_corpus

    out = Path(out)
    _check_out(out, overwrite)
    corpus = load_corpus(data_dir)
    sentences = isinstance(config, SentenceConfig)
    queries_of = sentences_as_queries if sentences else doc_as_queries
    per_doc: list[int] = []
    rows: list[tuple[str, str, str]] = []
    with Timer() as timer:
        for doc_id, doc in tqdm(corpus.items(), desc="doc-as-query", unit="doc"):
            queries = queries_of(doc_id, doc, config)
            per_doc.append(len(queries))
            rows.extend((doc_id, q, "daq") for q in queries)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        n = _write_jsonl(tmp / PSEUDO_QUERIES, iter(rows))
        manifest = write_manifest(
            tmp,
            stage=STAGE,
            config=config,
            inputs={"data": data_dir},
            counts=_per_doc_counts(per_doc, n, wanted=config.n if sentences else 1 + config.n),
            wall_seconds=timer.seconds,
            extra={"source": "daq", "unit": "sentences" if sentences else "words"},
        )
    _warn_empty(corpus, per_doc)
    log.info("%d doc-as-query pairs for %d documents -> %s", n, len(per_doc), out)
    return manifest


def _warn_empty(corpus: dict[str, dict[str, str]], per_doc: list[int]) -> None:
    empty = [d for d, k in zip(corpus, per_doc, strict=True) if k == 0]
    if empty:
        log.warning(
            "%d documents have no text and so no pseudo-queries (e.g. '%s'); they are reachable only "
            "through real queries",
            len(empty),
            empty[0],
        )


def _per_doc_counts(per_doc: list[int], pairs: int, wanted: int) -> dict[str, Any]:
    return {
        "documents": len(per_doc),
        "pairs": pairs,
        "min_per_document": min(per_doc, default=0),
        "max_per_document": max(per_doc, default=0),
        "documents_without_queries": sum(1 for k in per_doc if k == 0),
        "documents_short": sum(1 for k in per_doc if k < wanted),
    }


# --------------------------------------------------------------------------------------------
# doc2query: train


def train(data_dir: str | Path, out: str | Path, config, overwrite: bool = False) -> dict:
    """Train a generator on ``data_dir``'s training pairs and save it to ``out``."""
    from nci.doc2query import TRAIN_QUERY_IDS, TRAIN_STAGE, train_generator
    from nci.encoder import resolve_encoder

    out = Path(out)
    _check_out(out, overwrite)
    cpu = time.process_time()
    with Timer() as timer:
        tokenizer, model, report = train_generator(data_dir, config)
    # CPU seconds (all threads) next to wall time: on a shared machine wall time says little.
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    report["threads"] = _torch_threads()
    query_ids = report.pop("query_ids")
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAIN_QUERY_IDS).write_text("".join(f"{q}\n" for q in query_ids))
        # The config goes into the manifest only: config.json here is the model's own.
        manifest = write_manifest(
            tmp,
            stage=TRAIN_STAGE,
            config=asdict(config),
            inputs={"data": data_dir, "base_model": resolve_encoder(config.base_model)},
            counts={k: report[k] for k in ("training_pairs", "training_queries", "documents", "steps")},
            wall_seconds=timer.seconds,
            extra={"training": report},
        )
    log.info(
        "trained on %d pairs, %d steps in %.0f s (loss %s -> %s) -> %s",
        report["training_pairs"],
        report["steps"],
        timer.seconds,
        report["loss_first"],
        report["loss_last"],
        out,
    )
    return manifest


# --------------------------------------------------------------------------------------------
# doc2query: generate


@dataclass(frozen=True)
class GenerateConfig:
    model: str
    n: int = 10
    top_k: int | None = 10
    top_p: float | None = None
    temperature: float = 1.0
    max_doc_length: int = 192
    max_query_length: int = 32
    max_rounds: int = 3
    vocabulary: str = "document"  # or "none" (see nci.doc2query.SamplingConfig)
    seed: int = 0
    # Speed only: the queries of a document do not depend on these (see nci.doc2query).
    batch_size: int = 16
    chunk_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")
        self.sampling()  # validates the rest

    def sampling(self) -> SamplingConfig:
        from nci.doc2query import SamplingConfig

        return SamplingConfig(
            n=self.n,
            top_k=self.top_k,
            top_p=self.top_p,
            temperature=self.temperature,
            max_doc_length=self.max_doc_length,
            max_query_length=self.max_query_length,
            max_rounds=self.max_rounds,
            vocabulary=self.vocabulary,
            seed=self.seed,
        )


def _generator_provenance(model: str) -> dict[str, Any]:
    """What the generator was trained on, when it is a directory written by ``train``."""
    path = Path(model).expanduser()
    if not (path / "manifest.json").is_file():
        return {"model": model, "local": path.is_dir()}
    m = json.loads((path / "manifest.json").read_text())
    return {
        "model": str(path),
        "local": True,
        "stage": m.get("stage"),
        "trained_on": m.get("inputs", {}).get("data"),
        "training_pairs": m.get("counts", {}).get("training_pairs"),
    }


def _chunk_file(partial: Path, start: int, suffix: str) -> Path:
    return partial / f"chunk-{start:08d}{suffix}"


def _open_partial(
    out: Path,
    config: GenerateConfig,
    data_dir: str | Path,
    model_path: Path,
    documents: int,
    shard: Shard | None = None,
    merge: bool = False,
) -> Path:
    """``<out>.partial/`` with this run's plan; a single run discards chunks of another plan
    (shards and merges refuse them instead, see :func:`nci.shards.open_partial`)."""
    partial = out.with_name(out.name + ".partial")
    key = {k: v for k, v in asdict(config).items() if k not in {"batch_size", "device"}}
    plan = {
        "config": key,
        "data": fingerprint(data_dir),
        "model": fingerprint(model_path) if model_path.is_dir() else config.model,
        "documents": documents,
    }
    return open_partial(partial, plan, shard, merge)


def _sample_chunk(
    chunk: list[str],
    corpus: dict[str, dict[str, str]],
    generator: tuple[Any, Any],
    sampling: SamplingConfig,
    batch_size: int,
    bar: tqdm,
) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """The pseudo-query rows of ``chunk``'s documents, and its sample counts and queries per document."""
    from nci.data import document_text
    from nci.doc2query import sample_queries

    tokenizer, model = generator
    rows: list[tuple[str, str, str]] = []
    stats = {"samples": 0, "empty": 0, "duplicates": 0, "per_doc": []}
    for b in range(0, len(chunk), batch_size):
        ids = chunk[b : b + batch_size]
        texts = {d: document_text(corpus[d]) for d in ids}
        # An empty document gets no queries: anything generated would be made up.
        docs = [(d, t) for d, t in texts.items() if t.strip()]
        queries, counts = sample_queries(tokenizer, model, docs, sampling) if docs else ([], {})
        got = dict(zip([d for d, _ in docs], queries, strict=True))
        for d in ids:
            rows.extend((d, q, "d2q") for q in got.get(d, []))
            stats["per_doc"].append(len(got.get(d, [])))
        for k, v in counts.items():
            stats[k] += v
        bar.update(len(ids))
    return rows, stats


def _generate_chunks(
    partial: Path,
    corpus: dict[str, dict[str, str]],
    generator: tuple[Any, Any],
    sampling: SamplingConfig,
    config: GenerateConfig,
    shard: Shard | None = None,
) -> None:
    """Sample every chunk (of ``shard``, when given) not yet finished in ``partial``, writing
    each as soon as it is done."""
    doc_ids = list(corpus)
    starts = [
        s for c, s in enumerate(range(0, len(doc_ids), config.chunk_size)) if shard is None or shard.owns(c)
    ]
    total = sum(len(doc_ids[s : s + config.chunk_size]) for s in starts)
    desc = "doc2query" if shard is None else f"doc2query (shard {shard})"
    bar = tqdm(total=total, desc=desc, unit="doc")
    for start in starts:
        path = _chunk_file(partial, start, ".jsonl")
        chunk = doc_ids[start : start + config.chunk_size]
        if path.is_file():
            bar.update(len(chunk))
            continue
        rows, stats = _sample_chunk(chunk, corpus, generator, sampling, config.batch_size, bar)
        # Stats first, the chunk file last: its presence marks the chunk finished. Temporary
        # names of their own: another shard may be writing the same chunk.
        stats_path = _chunk_file(partial, start, ".stats.json")
        tmp = temporary_name(stats_path)
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, stats_path)
        tmp = temporary_name(path)
        _write_jsonl(tmp, iter(rows))
        os.replace(tmp, path)
    bar.close()


def _join_chunks(partial: Path, starts: range, path: Path) -> tuple[int, list[int], dict[str, int]]:
    """Concatenate the chunks into ``path``; returns the pairs written, the queries per document
    and the dropped-sample counts summed over the chunks."""
    per_doc: list[int] = []
    dropped = {"samples": 0, "empty": 0, "duplicates": 0}
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for start in starts:
            stats = json.loads(_chunk_file(partial, start, ".stats.json").read_text())
            per_doc += stats.pop("per_doc")
            for k in dropped:
                dropped[k] += stats[k]
            with open(_chunk_file(partial, start, ".jsonl"), encoding="utf-8") as part:
                for line in part:
                    f.write(line)
                    n += 1
    return n, per_doc, dropped


def generate(
    data_dir: str | Path,
    out: str | Path,
    config: GenerateConfig,
    overwrite: bool = False,
    shard: Shard | None = None,
    merge: bool = False,
) -> dict | None:
    """doc2query pseudo-queries for every document, resumable chunk by chunk.

    Finished chunks are kept in ``<out>.partial/``; a run started again with the same settings,
    data and model skips them. The output is assembled and renamed into place at the end.
    With ``shard``, only that shard's chunks are generated and None is returned (under torchrun
    rank 0 then merges); with ``merge``, nothing is generated (see :mod:`nci.shards`).
    """
    from nci.data import load_corpus
    from nci.doc2query import load_generator, pick_device

    out = Path(out)
    _check_out(out, overwrite)
    corpus = load_corpus(data_dir)
    device = pick_device(config.device)
    if shard is not None and shard.launched and device.type == "cuda" and device.index is None:
        device = pick_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")  # one GPU per process
    generator = None if merge else load_generator(config.model, device)  # fails fast on a bad path
    model_path = Path(config.model).expanduser()
    inputs: dict[str, str | Path] = {"data": data_dir}
    if model_path.is_dir():
        inputs["model"] = model_path

    partial = _open_partial(out, config, data_dir, model_path, len(corpus), shard, merge)
    sampling = config.sampling()
    starts = range(0, len(corpus), config.chunk_size)
    done = [s for s in starts if _chunk_file(partial, s, ".jsonl").is_file()]
    if done and not merge:
        log.info("resuming: %d of %d chunks already generated", len(done), len(starts))
    cpu = time.process_time()
    with Timer() as timer:
        if generator is not None:
            _generate_chunks(partial, corpus, generator, sampling, config, shard)
        barrier(shard)  # under torchrun: every rank's chunks are written
    cpu_seconds = time.process_time() - cpu
    if stops_after_its_chunks(shard, partial, len(starts)):
        return None
    check_complete(partial, [_chunk_file(partial, s, ".jsonl").is_file() for s in starts], shard)

    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        n, per_doc, dropped = _join_chunks(partial, starts, tmp / PSEUDO_QUERIES)
        counts = _per_doc_counts(per_doc, n, wanted=config.n)
        counts.update(
            samples=dropped["samples"],
            dropped_empty=dropped["empty"],
            dropped_duplicates=dropped["duplicates"],
        )
        manifest = write_manifest(
            tmp,
            stage=STAGE,
            config=config,
            inputs=inputs,
            counts=counts,
            wall_seconds=timer.seconds,
            extra={
                "source": "d2q",
                "device": str(device),
                "cpu_seconds": round(cpu_seconds, 1),
                "threads": _torch_threads(),
                "generator": _generator_provenance(config.model),
            },
        )
    shutil.rmtree(partial, ignore_errors=True)
    _warn_empty(corpus, per_doc)
    log.info("%d doc2query pairs for %d documents in %.0f s -> %s", n, len(per_doc), timer.seconds, out)
    return manifest


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nci.doc2query import Doc2QueryConfig

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, required=True, help="directory written by `nci data prepare`")
    common.add_argument("--out", type=Path, required=True, help="output directory")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    torch_opts = argparse.ArgumentParser(add_help=False)
    torch_opts.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    torch_opts.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: all cores; on a busy machine 1 can be faster)",
    )

    d = sub.add_parser("daq", parents=[common], help="document as query: title + first words, random windows")
    d.add_argument("--n", type=int, default=DaqConfig.n, help="random windows per document (default 10)")
    d.add_argument("--window", type=int, default=DaqConfig.window, help="words per window (default 64)")

    s = sub.add_parser(
        "sentences", parents=[common], help="document as query, cut at sentence ends: up to N sentences"
    )
    s.add_argument(
        "--n", type=int, default=SentenceConfig.n, help="sentences per document at most (default 10)"
    )
    s.add_argument(
        "--max-words",
        type=int,
        default=SentenceConfig.max_words,
        help="words kept of a sentence (default 64)",
    )
    s.add_argument(
        "--min-words",
        type=int,
        default=SentenceConfig.min_words,
        help="shorter pieces join the next sentence (default 4)",
    )

    t = sub.add_parser(
        "train",
        parents=[common, torch_opts],
        help="train a doc2query generator on a dataset's training pairs",
    )
    t.add_argument(
        "--base-model",
        default=Doc2QueryConfig.base_model,
        help="BERT encoder to warm-start both halves from (default: packaged all-MiniLM-L6-v2)",
    )
    t.add_argument(
        "--decoder-layers",
        type=int,
        default=Doc2QueryConfig.decoder_layers,
        help="BERT layers kept for the decoder (default 3; 0 = all)",
    )
    t.add_argument("--epochs", type=float, default=Doc2QueryConfig.epochs)
    t.add_argument(
        "--finetune-all",
        action="store_true",
        help="train the encoder and word embeddings too (for a GPU); default: they stay frozen and "
        "encoder states are computed once",
    )
    t.add_argument(
        "--batch-size", type=int, default=Doc2QueryConfig.batch_size, help="(query, document) pairs"
    )
    t.add_argument("--lr", type=float, default=Doc2QueryConfig.lr)
    t.add_argument("--max-doc-length", type=int, default=Doc2QueryConfig.max_doc_length, help="tokens")
    t.add_argument("--max-query-length", type=int, default=Doc2QueryConfig.max_query_length, help="tokens")
    t.add_argument("--max-minutes", type=float, default=None, help="stop and save when this budget is spent")

    g = sub.add_parser("generate", parents=[common, torch_opts], help="sample N queries per document")
    g.add_argument(
        "--model",
        required=True,
        help="directory from `nci querygen train`, or any seq2seq model directory / hub id",
    )
    # torchrun's own parser rejects `--n` as an ambiguous abbreviation of its options: under
    # torchrun, write --queries-per-doc
    g.add_argument("--n", "--queries-per-doc", type=int, default=10, help="queries per document (default 10)")
    g.add_argument("--top-k", type=int, default=10, help="top-k sampling (default 10; 0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling, e.g. 0.9")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument(
        "--vocabulary",
        choices=["document", "none"],
        default="document",
        help="document (default): write only the document's tokens and common query words; none: any",
    )
    g.add_argument("--max-doc-length", type=int, default=192, help="tokens")
    g.add_argument("--max-query-length", type=int, default=32, help="tokens")
    g.add_argument("--batch-size", type=int, default=16, help="documents per batch (speed only)")
    g.add_argument(
        "--chunk-size", type=int, default=256, help="documents per resumable chunk, the unit of --shard"
    )
    add_shard_arguments(g)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "nci querygen", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from nci.data import DataError
    from nci.doc2query import Doc2QueryConfig, GeneratorError

    if args.action not in ("daq", "sentences"):
        import torch

        torch.set_num_threads(args.threads or threads_per_process())
    try:
        if args.action == "daq":
            manifest = write_daq(
                args.data,
                args.out,
                DaqConfig(n=args.n, window=args.window, seed=args.seed),
                overwrite=args.overwrite,
            )
        elif args.action == "sentences":
            manifest = write_daq(
                args.data,
                args.out,
                SentenceConfig(n=args.n, max_words=args.max_words, min_words=args.min_words, seed=args.seed),
                overwrite=args.overwrite,
            )
        elif args.action == "train":
            config = Doc2QueryConfig(
                base_model=args.base_model,
                decoder_layers=args.decoder_layers or None,
                epochs=args.epochs,
                finetune_all=args.finetune_all,
                batch_size=args.batch_size,
                lr=args.lr,
                max_doc_length=args.max_doc_length,
                max_query_length=args.max_query_length,
                max_minutes=args.max_minutes,
                seed=args.seed,
                device=args.device,
            )
            manifest = train(args.data, args.out, config, overwrite=args.overwrite)
        else:
            config = GenerateConfig(
                model=args.model,
                n=args.n,
                top_k=args.top_k or None,
                top_p=args.top_p,
                temperature=args.temperature,
                vocabulary=args.vocabulary,
                max_doc_length=args.max_doc_length,
                max_query_length=args.max_query_length,
                seed=args.seed,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                device=args.device,
            )
            with launched(args.shard, args.merge) as shard:
                manifest = generate(
                    args.data, args.out, config, overwrite=args.overwrite, shard=shard, merge=args.merge
                )
            if manifest is None:  # one shard's chunks, in OUT.partial/
                return 0
    except (GeneratorError, DataError, ArtifactError, ValueError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    print(f"{args.out}: {json.dumps(manifest['counts'])}")
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
