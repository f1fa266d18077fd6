"""``nci bench scale``: what building, loading, searching and updating cost as the corpus grows.

``nci bench scale --n 10000 100000 --out DIR`` does, for each N, in one run:

1. a seeded synthetic corpus (:mod:`nci.synthetic`): N texts for BM25 and N vectors of the real
   dimension (384) given directly by the generator (no BERT embedding), written as a dataset and
   an ``nci embed`` artifact; plus held-out documents to add live;
2. the semantic ids (default config: k=30, leaf 30) and the trie, timed step by step, written as
   ``nci ids build`` writes them;
3. an untrained NCI model of the default training configuration (``TrainConfig()``: its decoder
   size, PAWA; untrained weights decode as fast as trained ones), and an index directory built by
   ``nci index build``'s own function, with every method;
4. per method, in a fresh process (:mod:`nci.bench.scale_measure`): load time, peak memory and
   queries per second at batch 64 and 1 (NCI at each beam), query encoding excluded; then live
   additions and deletions through :class:`nci.live.LiveIndex`.

It writes ``results.json`` (config, machine, one row of figures per N), ``results.md`` (a table
per group of figures, rows N, and the log-log growth slopes) and ``scale.png`` into ``--out``.
The built corpora and indexes go to a work directory beside ``--out``, removed at the end unless
``--work DIR`` names one to keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nci.bench.machine import machine_info, mb, reset_peak_rss, status_kb
from nci.bench.scale_measure import in_fresh_process, limit_threads, measure
from nci.bench.scale_report import figures, plot, results_markdown
from nci.manifest import atomic_output_dir, git_commit
from nci.semantic_ids import IdsConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleConfig:
    ns: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    dim: int = 384
    clusters: int = 200  # Gaussian modes of the synthetic vectors (as `nci bench ids`)
    topics: int = 200  # topic vocabularies of the synthetic texts
    k: int = IdsConfig.k
    leaf_size: int = IdsConfig.leaf_size
    encoder: str | None = None  # the NCI model's encoder and the query encoder; None: packaged MiniLM
    beams: tuple[int, ...] = (10, 100)
    batch_size: int = 64
    batches: int = 4  # batches of batch_size queries timed per method
    latency_queries: int = 64  # queries timed one at a time per method
    k_results: int = 100  # hits per query of dense, pq and bm25 (NCI returns its beam)
    query_noise: float = 0.5  # a query vector: a document vector plus noise of this norm
    live_docs: int = 200  # added one at a time, and as many built documents deleted one at a time
    live_batch: int = 10  # then added in one request
    threads: int = 1
    seed: int = 0
    isolate: bool = True  # every measurement in a fresh process
    # NCI (and the live index, which loads it) is skipped when its per-node heads alone would
    # take more memory than this (a row per trie node: about 1.9 GB at 1M documents)
    max_heads_gb: float = 6.0

    def __post_init__(self) -> None:
        if not self.ns or min(self.ns) < 64:
            raise ValueError(f"every N must be at least 64, got {self.ns}")
        if self.batches < 1 or self.latency_queries < 1 or self.live_docs < 1 or self.batch_size < 1:
            raise ValueError("batches, latency queries, live docs and batch size must be at least 1")


@dataclass
class Built:
    """One N's index and the inputs of its measurements."""

    index: Path
    figures: dict[str, Any]
    details: dict[str, Any]
    texts: list[str]  # batched queries
    vectors: np.ndarray
    single_texts: list[str]  # queries timed one at a time
    single_vectors: np.ndarray
    add_docs: list[dict[str, str]]
    add_vectors: np.ndarray
    delete_ids: list[str]


# --- building one N --------------------------------------------------------------------------


def _write_inputs(root: Path, corpus: dict[str, dict[str, str]], vectors: np.ndarray, encoder: str) -> None:
    """``data/`` (BEIR layout) and ``emb/`` (an ``nci embed`` artifact of the given vectors)."""
    from nci.manifest import write_manifest
    from nci.synthetic import SyntheticCorpus, write_beir

    write_beir(SyntheticCorpus(corpus=corpus, queries={}, qrels={}), root / "data")
    (root / "emb").mkdir()
    np.save(root / "emb" / "embeddings.npy", vectors)
    (root / "emb" / "doc_ids.txt").write_text("\n".join(corpus) + "\n")
    write_manifest(
        root / "emb",
        stage="embed",
        config={"model": encoder, "pooling": "mean", "max_length": 256, "synthetic": True},
        counts={"documents": len(corpus), "dimension": int(vectors.shape[1])},
        extra={"model_source": encoder},
    )


def _build_ids(root: Path, doc_ids: list[str], vectors: np.ndarray, cfg: IdsConfig) -> tuple[Any, dict]:
    """The ids artifact, written as ``nci ids build`` writes it (its three steps timed apart,
    which ``semantic_ids.build`` does not report)."""
    from nci.manifest import write_manifest
    from nci.semantic_ids import (
        SemanticIds,
        build_semantic_ids,
        depth_histogram,
        node_centroids,
        write_docids,
    )
    from nci.trie import Trie

    t0 = time.perf_counter()
    ids = build_semantic_ids(vectors, cfg)
    t1 = time.perf_counter()
    trie = Trie.build(ids, cfg.k)
    t2 = time.perf_counter()
    centroids = node_centroids(trie, vectors)
    t3 = time.perf_counter()
    out = root / "ids"
    with atomic_output_dir(out) as tmp:
        write_docids(tmp / "docids.tsv", doc_ids, ids)
        trie.save(tmp)
        np.save(tmp / "centroids.npy", centroids)
        hist = depth_histogram(ids)
        counts = {"documents": len(ids), "trie_nodes": trie.n_nodes, "max_depth": trie.max_depth}
        counts["depth_histogram"] = {str(d): c for d, c in hist.items()}
        write_manifest(
            tmp,
            stage="ids",
            config=cfg,
            inputs={"embeddings": root / "emb"},
            counts=counts,
            wall_seconds=t3 - t0,
        )
    sem = SemanticIds(doc_ids, ids, cfg.k, trie.max_depth, trie, centroids, cfg)
    figs = {
        "ids_s": t1 - t0,
        "trie_s": t2 - t1,
        "centroids_s": t3 - t2,
        "trie_nodes": trie.n_nodes,
        "internal_nodes": int((trie.doc < 0).sum()),
    }
    return sem, {"figures": figs, "depth_histogram": counts["depth_histogram"]}


def _save_model(root: Path, sem: Any, config: ScaleConfig) -> Path:
    """An untrained NCI model of the default training configuration, saved as ``nci train`` does."""
    import torch

    from nci.model_build import build_model
    from nci.train.config import TrainConfig, resolve_config

    cfg = resolve_config(TrainConfig(encoder=config.encoder, seed=config.seed), torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, sem)
    model.save_pretrained(root / "model")
    return root / "model"


def _index_sizes(index_dir: Path) -> dict[str, Any]:
    """MB on disk of each method's files, less the query encoder (the same for all, shared by NCI)."""
    from nci.retrieval import dir_bytes, load_index

    index = load_index(index_dir)
    encoder = index.manifest["query_encoder"]["path"]
    encoder_bytes = dir_bytes(index_dir / encoder)
    sizes = {}
    for method in ("nci", "dense", "pq", "bm25"):
        files = index.method_files(method)
        has_encoder = any(encoder == f or encoder.startswith(f.rstrip("/") + "/") for f in files)
        sizes[f"{method}_index_mb"] = (
            index.size_bytes(method) - (encoder_bytes if has_encoder else 0)
        ) / 2**20
    sizes["centroids_mb"] = dir_bytes(index_dir / "ids" / "centroids.npy") / 2**20
    return {"figures": sizes, "encoder_mb": encoder_bytes / 2**20}


def heads_mb(model_dir: Path, nodes: int) -> float:
    """MB that ``nci.decoding.NodeHeads`` will take: a ``d_model`` float32 row and a bias per
    trie node (one per edge)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    return nodes * (cfg["d_model"] + 1) * 4 / 2**20


def _unit(rng: np.random.Generator, x: np.ndarray, noise: float) -> np.ndarray:
    """Rows of ``x`` plus Gaussian noise of norm ``noise`` (in expectation), L2-normalised."""
    y = x + noise * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(x.shape[1])
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def build_one(n: int, root: Path, config: ScaleConfig) -> Built:
    """Corpus, ids, model and index for ``n`` documents under ``root``, and the measurement inputs."""
    from nci.encoder import resolve_encoder
    from nci.index import IndexConfig, build_index
    from nci.synthetic import make_corpus, make_vectors

    held = config.live_docs + config.live_batch
    t0 = time.perf_counter()
    synthetic = make_corpus(n + held, n_topics=config.topics, queries_per_doc=1, seed=config.seed)
    all_vectors = make_vectors(n + held, config.dim, n_clusters=config.clusters, seed=config.seed)
    doc_ids = list(synthetic.corpus)
    corpus = {d: synthetic.corpus[d] for d in doc_ids[:n]}
    vectors = all_vectors[:n]
    encoder = resolve_encoder(config.encoder)
    _write_inputs(root, corpus, vectors, encoder)
    log.info("N=%s: corpus and vectors in %.1f s", f"{n:,}", time.perf_counter() - t0)

    rng = np.random.default_rng(config.seed)
    n_batched = config.batches * config.batch_size
    picks = rng.choice(n, n_batched + config.latency_queries, replace=n_batched + config.latency_queries > n)
    texts = [synthetic.queries[f"q{i}_0"] for i in picks]
    qvecs = _unit(rng, vectors[picks], config.query_noise)
    deletes = [doc_ids[i] for i in sorted(rng.choice(n, min(config.live_docs, n // 2), replace=False))]
    add_docs = [{"_id": d, **synthetic.corpus[d]} for d in doc_ids[n:]]
    del synthetic

    ids_cfg = IdsConfig(k=config.k, leaf_size=config.leaf_size, seed=config.seed)
    sem, ids_info = _build_ids(root, doc_ids[:n], vectors, ids_cfg)
    f = ids_info["figures"]
    log.info(
        "N=%s: semantic ids %.1f s, trie %.1f s, centroids %.1f s; %s trie nodes (%s internal), depths %s",
        f"{n:,}",
        f["ids_s"],
        f["trie_s"],
        f["centroids_s"],
        f"{f['trie_nodes']:,}",
        f"{f['internal_nodes']:,}",
        ids_info["depth_histogram"],
    )
    model = _save_model(root, sem, config)
    del sem
    t0 = time.perf_counter()
    # The sentence methods are not among those measured here (their cost is one encoder pass per
    # sentence at build time): not built.
    no_sentences = IndexConfig(sentence_max_docs=0)
    index = build_index(
        root / "data", root / "emb", root / "index", ids=root / "ids", model=model, config=no_sentences
    )
    f["index_build_s"] = time.perf_counter() - t0
    sizes = _index_sizes(index)
    f.update(sizes["figures"])
    log.info(
        "N=%s: index built in %.1f s; MB on disk: %s",
        f"{n:,}",
        f["index_build_s"],
        ", ".join(f"{k.removesuffix('_mb')} {v:.1f}" for k, v in sizes["figures"].items()),
    )
    return Built(
        index=index,
        figures=f,
        details={
            "depth_histogram": ids_info["depth_histogram"],
            "encoder_mb": sizes["encoder_mb"],
            "node_heads_mb_expected": heads_mb(model, f["trie_nodes"]),
        },
        texts=texts[:n_batched],
        vectors=qvecs[:n_batched],
        single_texts=texts[n_batched:],
        single_vectors=qvecs[n_batched:],
        add_docs=add_docs,
        add_vectors=all_vectors[n:],
        delete_ids=deletes,
    )


# --- measuring one N -------------------------------------------------------------------------


def _task(kind: str, built: Built, root: Path, config: ScaleConfig) -> dict[str, Any]:
    task: dict[str, Any] = {"kind": kind, "index": str(built.index), "threads": config.threads}
    if kind == "live":
        return task | {
            "updates": str(root / f"updates-{time.time_ns()}"),
            "add_docs": built.add_docs,
            "add_vectors": built.add_vectors,
            "add_single": config.live_docs,
            "delete_ids": built.delete_ids,
        }
    return task | {
        "texts": built.texts,
        "single_texts": built.single_texts,
        "vectors": built.vectors,
        "single_vectors": built.single_vectors,
        "batch_size": config.batch_size,
        "beams": config.beams,
        "k": config.k_results,
    }


def _figures_of(kind: str, r: dict[str, Any], beams: tuple[int, ...]) -> dict[str, Any]:
    """A measurement's figures under their ``results.json`` keys."""
    f = {f"{kind}_load_s": r["load_s"], f"{kind}_peak_rss_mb": r["peak_rss_mb"]}
    if kind == "nci":
        f |= {"id_space_s": r["id_space_s"], "node_heads_s": r["node_heads_s"]}
        f["node_heads_mb"] = r["node_heads_bytes"] / 2**20
        for beam in beams:
            f |= {f"nci_beam{beam}_qps_{b}": r[f"beam{beam}"][f"qps_{b}"] for b in ("b1", "b64")}
    elif kind == "live":
        f |= {f"live_{key}": r[key] for key in ("add_p50_ms", "add_p99_ms", "delete_p50_ms", "delete_p99_ms")}
        f |= {"live_add_batch_ms": r["add_batch_ms"], "bm25_rebuild_s": r["bm25_rebuild_s"]}
    else:
        f |= {f"{kind}_qps_{b}": r[f"qps_{b}"] for b in ("b1", "b64")}
    return f


def _summary(kind: str, r: dict[str, Any]) -> str:
    if kind == "nci":
        speeds = "; ".join(
            f"{key}: {v['qps_b1']:.1f} q/s b1, {v['qps_b64']:.1f} q/s b64"
            for key, v in r.items()
            if key.startswith("beam")
        )
        return f"heads {r['node_heads_bytes'] / 2**20:.1f} MB built in {r['node_heads_s']:.2f} s; {speeds}"
    if kind == "live":
        return (
            f"add p50 {r['add_p50_ms']:.1f} ms p99 {r['add_p99_ms']:.1f} ms; delete p50 "
            f"{r['delete_p50_ms']:.1f} ms p99 {r['delete_p99_ms']:.1f} ms; "
            f"BM25 rebuild {r['bm25_rebuild_s']:.1f} s"
        )
    return f"{r['qps_b1']:.1f} q/s b1, {r['qps_b64']:.1f} q/s b64"


def measure_one(n: int, built: Built, root: Path, config: ScaleConfig) -> dict[str, Any]:
    """Every method's load, memory and speed, then live updates; one row of ``results.json``."""
    figs = dict(built.figures)
    raw: dict[str, Any] = {}
    kinds = ("nci", "dense", "pq", "bm25", "live")
    expected = built.details["node_heads_mb_expected"]
    if expected > config.max_heads_gb * 1024:
        kinds = ("dense", "pq", "bm25")
        built.details["skipped"] = (
            f"nci and live skipped at N={n:,}: NCI's per-node heads would take {expected / 1024:.1f} GB "
            f"(--max-heads-gb {config.max_heads_gb:g})"
        )
        log.warning("%s", built.details["skipped"])
    for kind in kinds:
        task = _task(kind, built, root, config)
        r = in_fresh_process(task) if config.isolate else measure(task)
        raw[kind] = r
        figs |= _figures_of(kind, r, config.beams)
        log.info(
            "N=%s: %s loaded in %.2f s, peak RSS %.0f MB; %s",
            f"{n:,}",
            kind,
            r["load_s"],
            r["peak_rss_mb"] or float("nan"),
            _summary(kind, r),
        )
    return {"n": n, "figures": figs, "details": built.details | {"measurements": raw}}


# --- the run ---------------------------------------------------------------------------------


NOTES = (
    "Query encoding is excluded from every speed: dense and pq search query vectors (a document "
    "vector plus Gaussian noise of norm {noise}, normalised); NCI decodes from encoder states computed "
    "before timing (the model's encoder on the generator's query strings); BM25 gets the query strings "
    "(its tokenizer is part of the method).",
    "b64: {batches} batches of {batch} queries; b1: {single} queries one at a time. dense, pq and bm25 "
    "return {k} hits; NCI returns its beam.",
    "Index MB: the files each method loads, less the query encoder ({encoder:.1f} MB, the same for "
    "every method; NCI shares it as its model's encoder); nci = the decoder's weights and the ids "
    "(docids.tsv, trie arrays, centroids.npy). NodeHeads: the decoder's per-edge output "
    "tables (nci.decoding.NodeHeads) in memory, and the time to build them.",
    "Build peak RSS: VmHWM of the process that generated the corpus and built the ids, the model and "
    "the index (reset before each N).",
    "Load s: load_index and the method's loader until it can search (nci: the id space, the model and "
    "its NodeHeads; IdSpace s is the id space alone). Peak RSS: VmHWM of the process that loaded only "
    "that method and ran its queries (Python, torch and the query encoder included).",
    "Live: nci.live.LiveIndex with nci, dense and pq loaded and an SQLite store: {live} held-out "
    "documents added one at a time (their vectors given: no embedding), then {live_batch} in one request "
    "(add batch ms), then {live} built documents deleted one at a time. BM25 is not loaded for these: "
    "it rebuilds over the whole live corpus after every change (BM25 rebuild s, timed once), and a "
    "change waits for the rebuild the previous one started.",
)


def _notes(config: ScaleConfig, rows: list[dict[str, Any]]) -> list[str]:
    encoder = rows[0]["details"]["encoder_mb"] if rows else 0.0
    notes = [
        n.format(
            noise=config.query_noise,
            batches=config.batches,
            batch=config.batch_size,
            single=config.latency_queries,
            k=config.k_results,
            encoder=encoder,
            live=config.live_docs,
            live_batch=config.live_batch,
        )
        for n in NOTES
    ]
    notes += [row["details"]["skipped"] for row in rows if row["details"].get("skipped")]
    if not config.isolate:
        notes.append(
            "--in-process: every measurement ran in this process, its peak reset before it (Linux "
            "clear_refs), so peak RSS includes what the run held (corpus, vectors)."
        )
    return notes


def run_scale(
    out: Path,
    config: ScaleConfig,
    work: Path | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Build and measure every N; write results.json, results.md and scale.png into ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    limit_threads(config.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    keep = work is not None
    work = Path(work) if keep else Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))
    rows = []
    try:
        for n in config.ns:
            root = work / f"n{n}"
            if root.exists():
                raise FileExistsError(f"{root} exists; choose another --work")
            root.mkdir(parents=True)
            start = time.perf_counter()
            reset_peak_rss()
            built = build_one(n, root, config)
            built.figures["build_peak_rss_mb"] = mb(status_kb("VmHWM"))
            rows.append(measure_one(n, built, root, config))
            rows[-1]["wall_s"] = time.perf_counter() - start
            log.info("N=%s: done in %.0f s", f"{n:,}", rows[-1]["wall_s"])
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "config": asdict(config),
        "figures": [asdict(f) for f in figures({"config": asdict(config)})],
        "rows": rows,
        "machine": machine_info(config.threads),
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "notes": [],
    }
    report["notes"] = _notes(config, rows)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "results.md").write_text(results_markdown(report))
        plot(report, tmp / "scale.png")
    log.info("results -> %s", out)
    return report


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ScaleConfig()
    p.add_argument("--n", type=int, nargs="+", default=list(d.ns), help="corpus sizes (default 10k 100k 1M)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--work", type=Path, default=None, help="keep the built corpora and indexes here")
    p.add_argument("--dim", type=int, default=d.dim)
    p.add_argument("--clusters", type=int, default=d.clusters, help="Gaussian modes of the vectors")
    p.add_argument("--topics", type=int, default=d.topics, help="topic vocabularies of the texts")
    p.add_argument("--k", type=int, default=d.k, help="ids: clusters per level (default 30)")
    p.add_argument("--leaf-size", type=int, default=d.leaf_size, help="ids: largest leaf (default 30)")
    p.add_argument("--encoder", default=d.encoder, help="encoder directory (default: packaged MiniLM)")
    p.add_argument("--beams", type=int, nargs="+", default=list(d.beams), help="NCI beams (default 10 100)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--batches", type=int, default=d.batches, help="batches timed per method (default 4)")
    p.add_argument("--latency-queries", type=int, default=d.latency_queries, help="timed one at a time")
    p.add_argument("--live-docs", type=int, default=d.live_docs, help="added, and deleted, one at a time")
    p.add_argument("--live-batch", type=int, default=d.live_batch, help="added in one request")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--in-process", action="store_true", help="measure in this process (weaker memory figures)"
    )
    p.add_argument(
        "--max-heads-gb",
        type=float,
        default=d.max_heads_gb,
        help="skip nci and live where NCI's per-node heads would exceed this (default 6)",
    )
    p.add_argument("--overwrite", action="store_true")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=prog, description="Build, load, search and update seeded synthetic corpora of growing size."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        config = ScaleConfig(
            ns=tuple(args.n),
            dim=args.dim,
            clusters=args.clusters,
            topics=args.topics,
            k=args.k,
            leaf_size=args.leaf_size,
            encoder=args.encoder,
            beams=tuple(args.beams),
            batch_size=args.batch_size,
            batches=args.batches,
            latency_queries=args.latency_queries,
            live_docs=args.live_docs,
            live_batch=args.live_batch,
            threads=args.threads,
            seed=args.seed,
            isolate=not args.in_process,
            max_heads_gb=args.max_heads_gb,
        )
        IdsConfig(k=config.k, leaf_size=config.leaf_size)  # fail on bad ids settings before building
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    command = " ".join([prog or "nci bench scale", *argv])
    report = run_scale(args.out, config, work=args.work, overwrite=args.overwrite, command=command)
    print(results_markdown(report))
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
