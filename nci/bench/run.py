"""The benchmark run: every planned method measured on the same queries, then one report written."""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nci.bench.machine import machine_info, mb, reset_peak_rss, status_kb
from nci.bench.plan import method_plan
from nci.bench.reference import decode_speed
from nci.bench.report import AIMS, plot, results_markdown
from nci.manifest import atomic_output_dir, git_commit
from nci.retrieval import method_names
from nci.retrieval.hybrid import HYBRID_WEIGHT

log = logging.getLogger(__name__)

METRIC_KEYS = ("success@1", "success@10", "success@100", "recall@10", "recall@100", "mrr@100", "ndcg@10")
SPEED_KEYS = ("qps_b1", "qps_b64", "p50_ms", "p99_ms")


@dataclass(frozen=True)
class BenchConfig:
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(method_names()))  # every registered one
    split: str = "test"
    k: int = 100
    batch_size: int = 64
    # NCI beam sizes; the first is the "nci" entry, others are "nci-beam{B}"
    beams: tuple[int, ...] = (100, 10)
    pq_rerank: int = 0  # > 0 adds "pq-rerank{R}": PQ candidates re-ranked with exact vectors
    hybrid_weight: float = HYBRID_WEIGHT  # nci+dense: weight of the cosine (beam: the first of beams)
    latency_queries: int = 200
    decode_beams: tuple[int, ...] = (10, 100)
    decode_queries: int = 256
    threads: int = 2
    seed: int = 0
    max_queries: int | None = None
    isolate: bool = True


@dataclass(frozen=True)
class BenchQueries:
    """The judged queries of the split, in order, and the sample timed one at a time."""

    qids: list[str]
    texts: list[str]
    qrels: dict[str, Any]
    latency_idx: list[int]


# --- one method ------------------------------------------------------------------------------


def measure_method(task: dict[str, Any]) -> dict[str, Any]:
    """Load one method from an index and time it; runs in a fresh process unless --in-process."""
    from nci.retrieval import load_index, search_batched, set_threads

    if task.get("child"):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
        set_threads(task["threads"])
    else:
        reset_peak_rss()
    rss_before = status_kb("VmRSS")
    texts: list[str] = task["texts"]
    k, batch_size = task["k"], task["batch_size"]

    t0 = time.perf_counter()
    index = load_index(task["index"])
    retriever = index.retriever(task["method"], **task["opts"])
    retriever.search(texts[: min(len(texts), batch_size)], k)  # warm-up: lazy init, allocator
    retriever.search(texts[:1], k)
    load_s = time.perf_counter() - t0

    # The collector off while searching: the hits kept here for scoring (a tuple type the
    # collector tracks) would make each of its full passes rescan them; a server keeps none.
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        results = search_batched(retriever, texts, k, batch_size, progress=task.get("progress", False))
        batched_s = time.perf_counter() - t0
        times = []
        for i in task["latency_idx"]:
            t = time.perf_counter()
            retriever.search([texts[i]], k)
            times.append(time.perf_counter() - t)
    finally:
        gc.enable()
    times_ms = np.asarray(times) * 1000

    peak = status_kb("VmHWM")
    return {
        "results": results,
        "qps_b64": len(texts) / batched_s,
        "qps_b1": len(times) / (times_ms.sum() / 1000) if len(times) else None,
        "p50_ms": float(np.percentile(times_ms, 50)) if len(times) else None,
        "p99_ms": float(np.percentile(times_ms, 99)) if len(times) else None,
        "load_s": load_s,
        "index_bytes": index.size_bytes(task["method"], **task["opts"]),
        "peak_rss_mb": mb(peak),
        "added_rss_mb": mb(None if peak is None or rss_before is None else peak - rss_before),
    }


def run_isolated(task: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure_method` in a fresh (spawned) process, so its peak memory is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(measure_method, {**task, "child": True}).result()


def _measure(
    index_dir: Path, method: str, opts: dict[str, Any], queries: BenchQueries, config: BenchConfig
) -> dict[str, Any]:
    task = {
        "index": str(index_dir),
        "method": method,
        "opts": opts,
        "texts": queries.texts,
        "k": config.k,
        "batch_size": config.batch_size,
        "latency_idx": queries.latency_idx,
        "threads": config.threads,
        "progress": not config.isolate,
    }
    return run_isolated(task) if config.isolate else measure_method(task)


# --- the benchmark ---------------------------------------------------------------------------


def load_queries(data: Path, config: BenchConfig, rng: np.random.Generator) -> BenchQueries:
    """The split's judged queries (a seeded subsample with --max-queries) and the latency sample."""
    from nci.data import load_qrels, split_queries
    from nci.evaluate import judged_queries

    qrels = load_qrels(data, config.split)
    queries = split_queries(data, config.split)
    qids = [q for q in judged_queries(qrels) if q in queries]
    if not qids:
        raise ValueError(f"{data}: no judged queries in split '{config.split}'")
    if config.max_queries and config.max_queries < len(qids):
        qids = [qids[i] for i in sorted(rng.choice(len(qids), config.max_queries, replace=False))]
    latency_idx = sorted(
        rng.choice(len(qids), min(config.latency_queries, len(qids)), replace=False).tolist()
    )
    return BenchQueries(
        qids=qids,
        texts=[queries[q] for q in qids],
        qrels={q: qrels[q] for q in qids},
        latency_idx=latency_idx,
    )


def dataset_name(data: Path) -> str:
    """The dataset's name from its manifest, else its folder's name."""
    from nci.manifest import read_manifest

    try:
        return (read_manifest(data, stage="data").get("config") or {}).get("dataset") or data.name
    except Exception:  # a dataset without a manifest still benchmarks; name it by its folder
        return data.name


def decode_ratios(
    index: Any, texts: list[str], config: BenchConfig, rng: np.random.Generator
) -> dict[str, Any]:
    """Our decoding against the reference on a seeded sample; fails if their rankings differ."""
    model, ids = index.nci_model(), index.semantic_ids()
    sample = sorted(rng.choice(len(texts), min(config.decode_queries, len(texts)), replace=False).tolist())
    decode = decode_speed(model, ids.trie, [texts[i] for i in sample], config.decode_beams, config.batch_size)
    speed: dict[str, Any] = {"decode": decode}
    for beam in config.decode_beams:
        speed[f"decode_vs_generate_beam{beam}"] = decode[f"beam{beam}"]["ratio"]
        speed[f"decode_vs_generate_same_batch_beam{beam}"] = decode[f"beam{beam}"]["ratio_same_batch"]
    wrong = [b for b in config.decode_beams if not decode[f"beam{b}"]["identical"]]
    if wrong:
        raise AssertionError(
            f"our constrained decoding and the reference ranked differently at beam {wrong}: "
            + "; ".join(f"beam {b}: {decode[f'beam{b}']['queries_differing']} queries" for b in wrong)
        )
    return speed


def measure_methods(
    index_dir: Path,
    available: dict[str, str | None],
    queries: BenchQueries,
    config: BenchConfig,
    notes: list[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every planned method's metrics and speed, and its run; a method the index lacks is skipped
    with a note."""
    from nci.evaluate import evaluate, ranked_run, scored_run

    methods: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    for key, method, opts in method_plan(config):
        if available.get(method):
            if key != method:  # variants of a skipped method add nothing
                continue
            notes.append(f"{key}: skipped, {available[method]}")
            log.warning("%s: skipped (%s)", key, available[method])
            methods[key] = {m: None for m in METRIC_KEYS + SPEED_KEYS} | {"skipped": available[method]}
            continue
        log.info(
            "%s: %d queries (batch %d), %d at batch 1",
            key,
            len(queries.texts),
            config.batch_size,
            len(queries.latency_idx),
        )
        measured = _measure(index_dir, method, opts, queries, config)
        results = measured.pop("results")
        metrics = evaluate(ranked_run(queries.qids, results), queries.qrels)
        runs[key] = scored_run(queries.qids, results)
        methods[key] = {**{m: metrics[m] for m in METRIC_KEYS}, **measured, "options": opts}
        log.info(
            "%s: success@1 %.3f, @10 %.3f, MRR@100 %.3f; %.1f q/s b%d, %.1f q/s b1",
            key,
            metrics["success@1"],
            metrics["success@10"],
            metrics["mrr@100"],
            measured["qps_b64"],
            config.batch_size,
            measured["qps_b1"] or float("nan"),
        )
    return methods, runs


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def add_nci_vs_dense(
    methods: dict[str, dict[str, Any]], speed: dict[str, Any], config: BenchConfig, notes: list[str]
) -> None:
    """NCI's QPS over dense exact's (per extra beam too) into ``speed``; every aimed-for ratio
    key present, None where it was not measured."""
    if "nci" in methods and not methods["nci"].get("skipped"):
        notes.append(f"nci is NCI at beam {config.beams[0]}; nci-beam<B> rows are other beam sizes")
    dense = methods.get("dense", {})
    for key in [k for k in methods if k == "nci" or k.startswith("nci-beam")]:
        ratios = {
            f"nci_vs_dense_qps_{b}": _ratio(methods[key].get(f"qps_{b}"), dense.get(f"qps_{b}"))
            for b in ("b1", "b64")
        }
        if key == "nci":
            speed.update(ratios)
        else:
            speed.setdefault("nci_vs_dense_by_beam", {})[key] = ratios
    for key in (
        "decode_vs_generate_beam10",
        "decode_vs_generate_beam100",
        "nci_vs_dense_qps_b1",
        "nci_vs_dense_qps_b64",
    ):
        speed.setdefault(key, None)
    if speed["decode_vs_generate_beam10"] is None:
        notes.append("decode ratios need the nci method (an index built with --ids and --model)")


def write_outputs(out: Path, report: dict[str, Any], runs: dict[str, Any], overwrite: bool) -> None:
    """results.json, results.md, recall_vs_qps.png and runs/, all or nothing."""
    from nci.evaluate import write_trec_run

    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "results.md").write_text(results_markdown(report))
        plot(report, tmp / "recall_vs_qps.png")
        for key, run in runs.items():
            write_trec_run(tmp / "runs" / f"{key}.trec", run, tag=key)


def run_bench(
    data: Path,
    index_dir: Path,
    out: Path,
    config: BenchConfig,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md, recall_vs_qps.png and runs/."""
    from nci.retrieval import load_index, set_threads

    set_threads(config.threads)
    data, index_dir, out = Path(data), Path(index_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    rng = np.random.default_rng(config.seed)
    queries = load_queries(data, config, rng)
    dataset = dataset_name(data)

    index = load_index(index_dir)
    available = index.methods()
    speed: dict[str, Any] = {}
    if "nci" in config.methods and not available["nci"] and config.decode_beams:
        speed.update(decode_ratios(index, queries.texts, config, rng))
    notes: list[str] = []
    methods, runs = measure_methods(index_dir, available, queries, config, notes)
    add_nci_vs_dense(methods, speed, config, notes)

    report = {
        "dataset": dataset,
        "split": config.split,
        "queries": len(queries.qids),
        "latency_queries": len(queries.latency_idx),
        "methods": methods,
        "speed": speed,
        "aims": AIMS,
        "config": asdict(config),
        "machine": machine_info(config.threads),
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "index": str(index_dir),
        "notes": notes,
    }
    write_outputs(out, report, runs, overwrite)
    log.info("results -> %s", out)
    return report
