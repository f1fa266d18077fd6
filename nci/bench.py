"""``nci bench``: NCI and every baseline on the same test queries, in one run.

``nci bench --data DIR --index DIR --out DIR`` writes

- ``results.json``: ``{"dataset", "methods": {name: metrics and speed}, "speed": ratios, ...}``,
- ``results.md``: the same as a table, with the machine, commit and date,
- ``recall_vs_qps.png``: success@1 and success@10 against queries per second at batch 64,
- ``runs/<method>.trec``: every method's ranking of every test query.

What is measured, per method (queries are raw strings, so dense methods and NCI pay for their
query encoder, BM25 for its tokenizer):

- metrics (nci.evaluate) over all test queries, searched in batches of ``--batch-size``;
- ``qps_b64``: test queries / wall time of that full batched run;
- ``qps_b1``, ``p50_ms``, ``p99_ms``: one query at a time over a seeded sample of test queries;
- ``index_bytes``: bytes on disk of every file the method loads (encoder or model included);
- ``peak_rss_mb``: peak resident memory (VmHWM) of a fresh process that loads only this method
  and runs all of the above; ``added_rss_mb`` subtracts what that process held before loading.
  With ``--in-process`` methods share one process and the peak is reset between them (Linux
  ``clear_refs``), so the figures are the growth over what earlier methods left resident.

Speed ratios (``speed`` in results.json):

- ``decode_vs_generate_beam{B}``: the time of a reference constrained beam search that asks a
  Python trie for each beam's allowed tokens at every step and masks a full-vocabulary step in
  Python (what the NCI reference code does, and transformers' ``prefix_allowed_tokens_fn`` in
  GENRE and DSI code), divided by the time of our constrained decoding, with the same model,
  the same encoded queries and the same beam; their rankings must agree (the run fails if not).
- ``nci_vs_dense_qps_b1`` / ``_b64``: NCI's queries per second over dense exact's, end to end.

``nci bench ids`` benchmarks semantic id building instead (``nci.semantic_ids.bench_main``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import atomic_output_dir, git_commit
from nci.retrieval import HYBRID_WEIGHT

log = logging.getLogger(__name__)

METRIC_KEYS = ("success@1", "success@10", "success@100", "recall@10", "recall@100", "mrr@100", "ndcg@10")
SPEED_KEYS = ("qps_b1", "qps_b64", "p50_ms", "p99_ms")
AIMS = {"decode_vs_generate": 10.0, "nci_vs_dense": 0.5}


@dataclass(frozen=True)
class BenchConfig:
    methods: tuple[str, ...] = ("nci", "dense", "pq", "bm25", "nci+dense")
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


# --- memory ----------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


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
    rss_before = _status_kb("VmRSS")
    texts: list[str] = task["texts"]
    k, batch_size = task["k"], task["batch_size"]

    t0 = time.perf_counter()
    index = load_index(task["index"])
    retriever = index.retriever(task["method"], **task["opts"])
    retriever.search(texts[: min(len(texts), batch_size)], k)  # warm-up: lazy init, allocator
    retriever.search(texts[:1], k)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = search_batched(retriever, texts, k, batch_size, progress=task.get("progress", False))
    batched_s = time.perf_counter() - t0

    times = []
    for i in task["latency_idx"]:
        t = time.perf_counter()
        retriever.search([texts[i]], k)
        times.append(time.perf_counter() - t)
    times_ms = np.asarray(times) * 1000

    peak = _status_kb("VmHWM")
    return {
        "results": results,
        "qps_b64": len(texts) / batched_s,
        "qps_b1": len(times) / (times_ms.sum() / 1000) if len(times) else None,
        "p50_ms": float(np.percentile(times_ms, 50)) if len(times) else None,
        "p99_ms": float(np.percentile(times_ms, 99)) if len(times) else None,
        "load_s": load_s,
        "index_bytes": index.size_bytes(task["method"], **task["opts"]),
        "peak_rss_mb": _mb(peak),
        "added_rss_mb": _mb(None if peak is None or rss_before is None else peak - rss_before),
    }


def _run_isolated(task: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(measure_method, {**task, "child": True}).result()


# --- reference constrained decoding ----------------------------------------------------------


class _Node:
    __slots__ = ("id", "doc", "children")

    def __init__(self, node_id: int, doc: int):
        self.id, self.doc, self.children = node_id, doc, {}


class PythonTrie:
    """Docid tokens in nested Python dicts, walked from the root for every query, beam and step:
    the ``prefix_allowed_tokens_fn`` of GENRE/DSI-style code and of the NCI reference."""

    def __init__(self, trie: Any, k: int, end: int = 1):
        from nci.semantic_ids import digit_to_token

        self.end = end
        child, depth, doc = np.asarray(trie.child), np.asarray(trie.depth), np.asarray(trie.doc)
        nodes = [_Node(i, int(doc[i])) for i in range(len(doc))]
        for n in range(len(doc)):
            for d in range(k):
                c = int(child[n, d])
                if c >= 0:
                    nodes[n].children[digit_to_token(int(depth[n]), d, k)] = nodes[c]
        self.root = nodes[0]

    def node(self, prefix: Sequence[int]) -> _Node:
        node = self.root
        for token in prefix:
            if token != self.end:  # END repeats once an id is finished: the node stays
                node = node.children[token]
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.node(prefix)
        return list(node.children) + ([self.end] if node.doc >= 0 else [])


def reference_beam_search(
    model: Any, memory: Any, memory_mask: Any, trie: PythonTrie, beam: int, max_depth: int
) -> tuple[Any, Any]:
    """Constrained beam search the usual way: the model's full step (decoder, PAWA transformer,
    output layer) for every beam, then a full-vocabulary mask built in Python from each beam's
    allowed tokens. Same model, same scoring and the same output as ``nci.decoding``."""
    import torch
    import torch.nn.functional as F

    cfg = model.config
    k, vocab = cfg.k, cfg.vocab_size
    choices = model.choices
    B = memory.shape[0]
    neg_inf = float("-inf")
    with torch.inference_mode():
        prefixes: list[list[list[int]]] = [[[]] for _ in range(B)]
        scores = torch.zeros(B, 1)
        cache = None
        for t in range(min(max_depth, cfg.max_depth)):
            alive = torch.isfinite(scores).tolist()
            nodes = [
                [trie.node(p) if a else trie.root for p, a in zip(beams, al, strict=True)]
                for beams, al in zip(prefixes, alive, strict=True)
            ]
            if all(n.doc >= 0 for row in nodes for n in row):
                break
            N = len(prefixes[0])
            prefix = torch.tensor(prefixes, dtype=torch.long).view(B, N, t)
            node_ids = torch.tensor([[n.id for n in row] for row in nodes], dtype=torch.long)
            logp, cache = model.decode_step(memory, memory_mask, prefix, cache, node_ids)
            # the step's output over the whole vocabulary, as a seq2seq head produces it
            logits = torch.full((B, N, vocab), neg_inf)
            logits.scatter_(2, choices[t].expand(B, N, k + 1), logp)
            mask = torch.full((B, N, vocab), neg_inf)
            for b in range(B):
                for n in range(N):
                    # dead beams (fewer candidates than beams) keep one harmless option
                    allowed = trie.allowed(prefixes[b][n]) if alive[b][n] else [trie.end]
                    mask[b, n, allowed] = 0.0
            logp = torch.log_softmax(logits + mask, -1)
            cand = (scores[..., None] + logp).flatten(1)
            scores, flat = cand.topk(min(beam, N * (k + 1)), dim=1)
            parent, token = (flat // vocab).tolist(), (flat % vocab).tolist()
            prefixes = [
                [prefixes[b][p] + [tok] for p, tok in zip(parent[b], token[b], strict=True)] for b in range(B)
            ]
            cache = cache.select(flat // vocab)
        docs = torch.tensor(
            [
                [trie.node(p).doc if np.isfinite(s) else -1 for p, s in zip(row, srow, strict=True)]
                for row, srow in zip(prefixes, scores.tolist(), strict=True)
            ],
            dtype=torch.long,
        )
        if docs.shape[1] < beam:
            docs = F.pad(docs, (0, beam - docs.shape[1]), value=-1)
            scores = F.pad(scores, (0, beam - scores.shape[1]), value=neg_inf)
        return docs, scores


def rankings_agree(
    docs_a: np.ndarray, scores_a: np.ndarray, docs_b: np.ndarray, scores_b: np.ndarray, atol: float = 1e-4
) -> tuple[bool, int]:
    """Compare two batches of rankings; positions may differ only between (near-)tied scores.

    Returns (agree, number of queries that differ)."""
    bad = 0
    for da, sa, db, sb in zip(docs_a, scores_a, docs_b, scores_b, strict=True):
        fa, fb = np.isfinite(sa), np.isfinite(sb)
        if not np.array_equal(fa, fb) or not np.allclose(sa[fa], sb[fb], atol=atol):
            bad += 1
            continue
        if np.array_equal(da, db):
            continue
        # same scores, different order: acceptable only inside groups of tied scores
        ok = True
        i = 0
        while i < len(da):
            j = i
            while j + 1 < len(da) and fa[j + 1] and abs(sa[j + 1] - sa[i]) <= atol:
                j += 1
            if set(da[i : j + 1].tolist()) != set(db[i : j + 1].tolist()):
                ok = False
                break
            i = j + 1
        bad += not ok
    return bad == 0, bad


def decode_speed(
    model: Any, trie: Any, texts: Sequence[str], beams: Sequence[int], batch_size: int, progress: bool = False
) -> dict[str, Any]:
    """Time our constrained decoding against :func:`reference_beam_search` on encoded queries.

    Ours runs in batches of ``batch_size`` queries. The reference runs twice: one query at a time,
    as the NCI reference code decodes (``ratio``), and in the same batches as ours
    (``ratio_same_batch``). Encoding is done once beforehand and not timed."""
    import torch

    from nci.retrieval import nci_decoder

    t0 = time.perf_counter()
    decode = nci_decoder(model, trie)
    setup_s = time.perf_counter() - t0
    ptrie = PythonTrie(trie, model.config.k)
    max_depth = int(np.asarray(trie.depth).max())

    def encoded(size: int) -> list[tuple[Any, Any]]:
        out = []
        for start in range(0, len(texts), size):
            enc = model.tokenize(list(texts[start : start + size]))
            out.append(model.encode(enc["input_ids"], enc["attention_mask"]))
        return out

    batches, singles = encoded(batch_size), encoded(1)
    out: dict[str, Any] = {"queries": len(texts), "batch_size": batch_size, "setup_s": setup_s}

    def timed(fn: Any, inputs: list[tuple[Any, Any]]) -> tuple[float, Any, Any]:
        t0 = time.perf_counter()
        results = [fn(m, mm) for m, mm in inputs]
        seconds = time.perf_counter() - t0
        docs = torch.cat([d for d, _ in results]).numpy()
        scores = torch.cat([s for _, s in results]).float().numpy()
        return seconds, docs, scores

    for beam in beams:
        decode(*batches[0], beam)  # warm-up
        fast = functools.partial(decode, beam=beam)
        reference = functools.partial(
            reference_beam_search, model, trie=ptrie, beam=beam, max_depth=max_depth
        )
        fast_s, fast_docs, fast_scores = timed(fast, batches)
        ref_s, ref_docs, ref_scores = timed(reference, singles)
        same_s, same_docs, same_scores = timed(reference, batches)
        agree, differ = rankings_agree(fast_docs, fast_scores, ref_docs, ref_scores)
        agree_same, differ_same = rankings_agree(fast_docs, fast_scores, same_docs, same_scores)
        out[f"beam{beam}"] = {
            "fast_qps": len(texts) / fast_s,
            "reference_qps": len(texts) / ref_s,
            "reference_same_batch_qps": len(texts) / same_s,
            "ratio": ref_s / fast_s,
            "ratio_same_batch": same_s / fast_s,
            "identical": agree and agree_same,
            "queries_differing": max(differ, differ_same),
        }
        log.info(
            "decode beam %d: ours %.1f q/s; reference %.1f q/s one at a time (%.1fx), "
            "%.1f q/s in batches of %d (%.1fx); identical: %s",
            beam,
            len(texts) / fast_s,
            len(texts) / ref_s,
            ref_s / fast_s,
            len(texts) / same_s,
            batch_size,
            same_s / fast_s,
            agree and agree_same,
        )
    return out


# --- the benchmark ---------------------------------------------------------------------------


def method_plan(config: BenchConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(result key, index method, retriever options) for every measured configuration."""
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for method in config.methods:
        if method == "nci":
            for i, beam in enumerate(config.beams):
                plan.append(("nci" if i == 0 else f"nci-beam{beam}", "nci", {"beam": beam}))
        elif method == "pq":
            plan.append(("pq", "pq", {}))
            if config.pq_rerank:
                plan.append((f"pq-rerank{config.pq_rerank}", "pq", {"rerank": config.pq_rerank}))
        elif method in {"dense", "bm25"}:
            plan.append((method, method, {}))
        elif method == "nci+dense":
            plan.append((method, method, {"beam": config.beams[0], "weight": config.hybrid_weight}))
        else:
            raise ValueError(f"unknown method '{method}'; choose from nci, dense, pq, bm25, nci+dense")
    return plan


def machine_info(threads: int) -> dict[str, Any]:
    import faiss
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "platform": platform.platform(),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def run_bench(
    data: Path,
    index_dir: Path,
    out: Path,
    config: BenchConfig,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write results.json, results.md, recall_vs_qps.png and runs/."""
    from nci.data import load_qrels, split_queries
    from nci.evaluate import evaluate, judged_queries, ranked_run, scored_run, write_trec_run
    from nci.manifest import read_manifest
    from nci.retrieval import load_index, set_threads

    set_threads(config.threads)
    data, index_dir, out = Path(data), Path(index_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    qrels = load_qrels(data, config.split)
    queries = split_queries(data, config.split)
    qids = [q for q in judged_queries(qrels) if q in queries]
    if not qids:
        raise ValueError(f"{data}: no judged queries in split '{config.split}'")
    rng = np.random.default_rng(config.seed)
    if config.max_queries and config.max_queries < len(qids):
        qids = [qids[i] for i in sorted(rng.choice(len(qids), config.max_queries, replace=False))]
    qrels = {q: qrels[q] for q in qids}
    texts = [queries[q] for q in qids]
    latency_idx = sorted(
        rng.choice(len(qids), min(config.latency_queries, len(qids)), replace=False).tolist()
    )
    try:
        dataset = (read_manifest(data, stage="data").get("config") or {}).get("dataset") or data.name
    except Exception:  # a dataset without a manifest still benchmarks; name it by its folder
        dataset = data.name

    index = load_index(index_dir)
    available = index.methods()
    notes: list[str] = []
    methods: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    speed: dict[str, Any] = {}

    if "nci" in config.methods and not available["nci"] and config.decode_beams:
        model, ids = index.nci_model(), index.semantic_ids()
        sample = sorted(
            rng.choice(len(texts), min(config.decode_queries, len(texts)), replace=False).tolist()
        )
        decode = decode_speed(
            model, ids.trie, [texts[i] for i in sample], config.decode_beams, config.batch_size
        )
        speed["decode"] = decode
        for beam in config.decode_beams:
            speed[f"decode_vs_generate_beam{beam}"] = decode[f"beam{beam}"]["ratio"]
            speed[f"decode_vs_generate_same_batch_beam{beam}"] = decode[f"beam{beam}"]["ratio_same_batch"]
        wrong = [b for b in config.decode_beams if not decode[f"beam{b}"]["identical"]]
        if wrong:
            raise AssertionError(
                f"our constrained decoding and the reference ranked differently at beam {wrong}: "
                + "; ".join(f"beam {b}: {decode[f'beam{b}']['queries_differing']} queries" for b in wrong)
            )
        del model

    for key, method, opts in method_plan(config):
        if available.get(method):
            if key != method:  # variants of a skipped method add nothing
                continue
            notes.append(f"{key}: skipped, {available[method]}")
            log.warning("%s: skipped (%s)", key, available[method])
            methods[key] = {m: None for m in METRIC_KEYS + SPEED_KEYS} | {"skipped": available[method]}
            continue
        log.info(
            "%s: %d queries (batch %d), %d at batch 1", key, len(texts), config.batch_size, len(latency_idx)
        )
        task = {
            "index": str(index_dir),
            "method": method,
            "opts": opts,
            "texts": texts,
            "k": config.k,
            "batch_size": config.batch_size,
            "latency_idx": latency_idx,
            "threads": config.threads,
            "progress": not config.isolate,
        }
        measured = _run_isolated(task) if config.isolate else measure_method(task)
        results = measured.pop("results")
        metrics = evaluate(ranked_run(qids, results), qrels)
        runs[key] = scored_run(qids, results)
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

    report = {
        "dataset": dataset,
        "split": config.split,
        "queries": len(qids),
        "latency_queries": len(latency_idx),
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
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "results.md").write_text(results_markdown(report))
        plot(report, tmp / "recall_vs_qps.png")
        for key, run in runs.items():
            write_trec_run(tmp / "runs" / f"{key}.trec", run, tag=key)
    log.info("results -> %s", out)
    return report


# --- output ----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Retrieval benchmark: {report['dataset']}",
        "",
        f"{report['queries']} {report['split']} queries, top {report['config']['k']}, "
        f"batch {report['config']['batch_size']}; "
        f"latency over {report['latency_queries']} queries one at a time.",
        f"{m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} threads; torch {m['torch']}, "
        f"faiss {m['faiss']}; commit {report['commit'] or 'unknown'}; {report['date']}.",
        "",
        "| method | success@1 | success@10 | success@100 | MRR@100 | nDCG@10 | recall@100 | QPS b1 "
        "| QPS b64 | p50 ms | p99 ms | index MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in report["methods"].items():
        if r.get("skipped"):
            lines.append(f"| {key} | skipped: {r['skipped']} |" + " |" * 11)
            continue
        lines.append(
            f"| {key} | {_fmt(r['success@1'])} | {_fmt(r['success@10'])} | {_fmt(r['success@100'])} "
            f"| {_fmt(r['mrr@100'])} | {_fmt(r['ndcg@10'])} | {_fmt(r.get('recall@100'))} "
            f"| {_fmt(r['qps_b1'], 1)} | {_fmt(r['qps_b64'], 1)} "
            f"| {_fmt(r['p50_ms'], 1)} | {_fmt(r['p99_ms'], 1)} | {_fmt(r['index_bytes'] / 2**20, 1)} "
            f"| {_fmt(r['peak_rss_mb'], 0)} |"
        )
    s = report["speed"]
    lines += ["", "## Speed ratios", "", "| ratio | value | aim | met |", "|---|---|---|---|"]
    for key, aim in [
        ("decode_vs_generate_beam10", AIMS["decode_vs_generate"]),
        ("decode_vs_generate_beam100", AIMS["decode_vs_generate"]),
        ("decode_vs_generate_same_batch_beam10", AIMS["decode_vs_generate"]),
        ("decode_vs_generate_same_batch_beam100", AIMS["decode_vs_generate"]),
        ("nci_vs_dense_qps_b1", AIMS["nci_vs_dense"]),
        ("nci_vs_dense_qps_b64", AIMS["nci_vs_dense"]),
    ]:
        v = s.get(key)
        met = "–" if v is None else ("yes" if v >= aim else "no")
        lines.append(f"| {key} | {_fmt(v, 2)}{'' if v is None else 'x'} | >= {aim}x | {met} |")
    for key, ratios in (s.get("nci_vs_dense_by_beam") or {}).items():
        for name, v in ratios.items():
            lines.append(
                f"| {name} ({key}) | {_fmt(v, 2)}{'' if v is None else 'x'} | >= {AIMS['nci_vs_dense']}x | "
                f"{'–' if v is None else ('yes' if v >= AIMS['nci_vs_dense'] else 'no')} |"
            )
    if "decode" in s:
        d = s["decode"]
        lines += [
            "",
            f"Decoding alone ({d['queries']} queries, encoder excluded; ours in batches of "
            f"{d['batch_size']}, {d.get('setup_s', 0.0):.2f} s to build the per-node heads once). "
            "The reference is the full model step plus a Python trie per beam per step, run one query "
            f"at a time as the NCI reference code does (decode_vs_generate) and in batches of "
            f"{d['batch_size']} (decode_vs_generate_same_batch):",
            "",
        ]
        for key, v in d.items():
            if key.startswith("beam"):
                lines.append(
                    f"- {key}: ours {v['fast_qps']:.1f} q/s; reference {v['reference_qps']:.1f} q/s one "
                    f"at a time, {v.get('reference_same_batch_qps', float('nan')):.1f} q/s batched; "
                    f"identical rankings: {'yes' if v['identical'] else 'NO'}"
                )
    lines += [
        "",
        "## Notes",
        "",
        "- success@k is 1 when a relevant document is in the top k (the NCI paper's Recall@k); "
        "means over every judged test query (a query with no results scores 0).",
        "- QPS b64: test queries / wall time searching them in batches, query encoding included; "
        "QPS b1, p50, p99: one query at a time.",
        "- index MB: every file the method loads (its query encoder or model included), "
        "document store excluded.",
        "- peak RSS MB: peak resident memory of a fresh process that loaded only this method "
        "and ran all its queries (Python and libraries included)."
        if report["config"]["isolate"]
        else "- peak RSS MB: measured in one shared process (--in-process): peak resident memory "
        "after resetting the peak before each method, so earlier methods' memory is included.",
        "- nci returns at most beam documents: success@100 of a beam-10 run counts its 10.",
    ]
    lines += [f"- {n}" for n in report["notes"]]
    if report.get("command"):
        lines += ["", "Command:", "", f"    {report['command']}"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """success@1 (filled) and success@10 (hollow) against QPS at batch 64, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, r) in enumerate((k, r) for k, r in report["methods"].items() if not r.get("skipped")):
        c = colors[i % len(colors)]
        x = r["qps_b64"]
        ax.plot([x, x], [r["success@1"], r["success@10"]], color=c, alpha=0.4, linewidth=1)
        ax.scatter(x, r["success@1"], color=c, marker="o", label=key, zorder=3)
        ax.scatter(x, r["success@10"], facecolors="white", edgecolors=c, marker="s", zorder=3)
        ax.annotate(key, (x, r["success@1"]), textcoords="offset points", xytext=(6, -4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.2)
    ax.set_xlabel(
        f"queries per second at batch {report['config']['batch_size']}, encoder included (log scale)"
    )
    ax.set_ylabel("success@k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{report['dataset']}: success@1 (filled circle) and success@10 (hollow square)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- CLI -------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    p.add_argument("--data", required=True, type=Path, help="prepared dataset (BEIR layout)")
    p.add_argument("--index", required=True, type=Path, help="index directory (nci index build)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--methods", default=",".join(d.methods), help="comma-separated (default all)")
    p.add_argument("--split", default=d.split)
    p.add_argument("--k", type=int, default=d.k, help="results per query (default 100)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--beams",
        type=_ints,
        default=d.beams,
        help="NCI beam sizes; the first is reported as 'nci' (default 100,10)",
    )
    p.add_argument(
        "--pq-rerank",
        type=int,
        default=d.pq_rerank,
        help="also run PQ re-ranking k*R candidates exactly (default 0: off)",
    )
    p.add_argument(
        "--hybrid-weight",
        type=float,
        default=d.hybrid_weight,
        help="nci+dense: weight of the cosine similarity beside the NCI log-probability (default 20)",
    )
    p.add_argument(
        "--latency-queries",
        type=int,
        default=d.latency_queries,
        help="seeded sample timed one query at a time (default 200)",
    )
    p.add_argument(
        "--decode-beams",
        type=_ints,
        default=d.decode_beams,
        help="beams for the decoding-vs-reference ratio (default 10,100)",
    )
    p.add_argument(
        "--decode-queries",
        type=int,
        default=d.decode_queries,
        help="queries for the decoding-vs-reference ratio (default 256)",
    )
    p.add_argument(
        "--threads", type=int, default=d.threads, help="CPU threads for torch and FAISS (default 2)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-queries", type=int, default=None, help="seeded subsample of the test queries")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure every method in this process (faster start; memory figures are weaker)",
    )
    p.add_argument("--overwrite", action="store_true")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or "nci bench"
    if argv and argv[0] == "ids":
        from nci.semantic_ids import bench_main

        return bench_main(argv[1:], prog=f"{prog} ids")
    parser = argparse.ArgumentParser(
        prog=prog, description="Benchmark NCI and the baselines on one dataset (or: nci bench ids ...)."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are not ours
    config = BenchConfig(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        split=args.split,
        k=args.k,
        batch_size=args.batch_size,
        beams=args.beams,
        pq_rerank=args.pq_rerank,
        hybrid_weight=args.hybrid_weight,
        latency_queries=args.latency_queries,
        decode_beams=args.decode_beams,
        decode_queries=args.decode_queries,
        threads=args.threads,
        seed=args.seed,
        max_queries=args.max_queries,
        isolate=not args.in_process,
    )
    method_plan(config)  # fail on a bad method name before loading anything
    report = run_bench(
        args.data, args.index, args.out, config, overwrite=args.overwrite, command=" ".join([prog, *argv])
    )
    print(results_markdown(report))
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
