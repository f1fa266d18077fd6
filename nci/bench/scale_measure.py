"""``nci bench scale``'s measurements of one built index, each in a fresh process.

A task names what to measure (``kind``: a method's loading and queries, or live updates) and
carries its inputs; :func:`measure` loads what it needs from the index directory through the
method registry (the same loaders the service uses), times it and reads its own peak memory.
:func:`in_fresh_process` runs a task in a spawned process, as ``nci bench`` isolates methods.

Query encoding is excluded everywhere: dense and PQ search query *vectors*, NCI decodes from
encoder states computed before the clock starts, BM25 gets the query strings (its tokenizer is
part of the method). So the speeds are the cost of the index, whatever the encoder costs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nci.bench.machine import mb, reset_peak_rss, status_kb

log = logging.getLogger(__name__)


def limit_threads(n: int) -> None:
    """``n`` threads in torch, FAISS and the BLAS/OpenMP pools numpy and scikit-learn use."""
    from threadpoolctl import threadpool_limits

    from nci.retrieval import set_threads

    set_threads(n)
    threadpool_limits(limits=n)


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _speed(batches: list[Any], singles: list[Any], run: Callable[[Any], Any], size: int) -> dict[str, float]:
    """Queries per second over ``batches`` (``size`` queries each) and one at a time over
    ``singles``, with the one-at-a-time p50 and p99 in milliseconds."""
    run(batches[0])  # warm-up: lazy initialisation, allocator
    run(singles[0])
    batched = sum(_seconds(lambda b=b: run(b)) for b in batches)
    times = np.array([_seconds(lambda s=s: run(s)) for s in singles]) * 1000
    return {
        "qps_b64": len(batches) * size / batched,
        "qps_b1": len(times) / (times.sum() / 1000),
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def _chunks(items: Any, size: int) -> list[Any]:
    return [items[s : s + size] for s in range(0, len(items), size)]


# --- one method ------------------------------------------------------------------------------
# Each kind returns its figures and, optionally, work to time after the peak memory is read (so
# that it does not count in the peak): ``(figures, after)``, ``after() -> more figures``.

Measured = tuple[dict[str, Any], Callable[[], dict[str, Any]] | None]


def _nci(task: dict[str, Any]) -> Measured:
    """Load NCI (id space, model, per-node heads), then decode at each beam; query states are
    encoded before timing. After the peak: one more build of the per-node heads, timed."""
    from nci.decoding import NodeHeads, TrieTensors
    from nci.retrieval import Searcher, load_index

    start = time.perf_counter()
    searcher = Searcher(load_index(task["index"]))
    id_space_s = _seconds(lambda: searcher.corpus.ids)
    retriever = searcher.load("nci")
    out: dict[str, Any] = {"load_s": time.perf_counter() - start, "id_space_s": id_space_s}
    out["node_heads_bytes"] = retriever.decode.heads.nbytes
    batches = [retriever.encode(t) for t in _chunks(task["texts"], task["batch_size"])]
    singles = [retriever.encode([t]) for t in task["single_texts"]]
    for beam in task["beams"]:

        def run(states: tuple[Any, Any], beam: int = beam) -> Any:
            docs, _ = retriever.decode(*states, beam)
            return docs.cpu().numpy()

        out[f"beam{beam}"] = _speed(batches, singles, run, task["batch_size"])

    def heads() -> dict[str, Any]:
        trie = TrieTensors.from_trie(retriever.ids.built_trie)
        return {"node_heads_s": _seconds(lambda: NodeHeads.build(retriever.model, trie))}

    return out, heads


def _search(task: dict[str, Any]) -> Measured:
    """Load dense, pq or bm25 and search: vectors (dense, pq) or strings (bm25)."""
    from nci.retrieval import Searcher, load_index

    method, k = task["kind"], task["k"]
    start = time.perf_counter()
    retriever = Searcher(load_index(task["index"])).load(method)
    load_s = time.perf_counter() - start
    if method == "bm25":
        queries, singles = task["texts"], [[t] for t in task["single_texts"]]

        def run(q: Any) -> Any:
            return retriever.search(list(q), k)
    else:
        queries = np.asarray(task["vectors"], dtype=np.float32)
        singles = [v[None] for v in np.asarray(task["single_vectors"], dtype=np.float32)]

        def run(q: Any) -> Any:
            return retriever.search_vectors(q, k)

    speed = _speed(_chunks(queries, task["batch_size"]), singles, run, task["batch_size"])
    return {"load_s": load_s, **speed}, None


def _live(task: dict[str, Any]) -> Measured:
    """A LiveIndex with nci, dense and pq loaded: add documents one at a time, then the rest in
    one batch, then delete built documents one at a time. After the peak: BM25 loaded and
    rebuilt over the live corpus, as every change makes it, timed."""
    from nci.live.index import LiveIndex
    from nci.retrieval import load_index

    start = time.perf_counter()
    live = LiveIndex(load_index(task["index"]), updates_dir=task["updates"])
    try:
        for method in ("nci", "dense", "pq"):
            live.loaded(method)
        _ = live.corpus.store, live.corpus.built_rows  # read on first use: not an update's cost
        load_s = time.perf_counter() - start
        docs, vectors = task["add_docs"], np.asarray(task["add_vectors"], dtype=np.float32)
        single = task["add_single"]
        add_ms = [
            _seconds(lambda i=i: live.add([docs[i]], vectors=vectors[i : i + 1])) * 1000
            for i in range(single)
        ]
        batch = len(docs) - single
        batch_ms = (
            _seconds(lambda: live.add(docs[single:], vectors=vectors[single:])) * 1000 if batch else None
        )
        delete_ms = [_seconds(lambda d=d: live.delete(d)) * 1000 for d in task["delete_ids"]]
    except BaseException:
        live.close()
        raise
    out = {
        "load_s": load_s,
        "add_p50_ms": float(np.percentile(add_ms, 50)),
        "add_p99_ms": float(np.percentile(add_ms, 99)),
        "add_batch_ms": batch_ms,
        "add_batch_docs": batch,
        "delete_p50_ms": float(np.percentile(delete_ms, 50)),
        "delete_p99_ms": float(np.percentile(delete_ms, 99)),
    }

    def bm25_rebuild() -> dict[str, Any]:
        try:
            retriever = live.loaded("bm25")  # catches up with the changes, so it is stale
            return {"bm25_rebuild_s": _seconds(retriever.refresh)}
        finally:
            live.close()

    return out, bm25_rebuild


KINDS: dict[str, Callable[[dict[str, Any]], Measured]] = {
    "nci": _nci,
    "dense": _search,
    "pq": _search,
    "bm25": _search,
    "live": _live,
}


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task; adds ``peak_rss_mb`` (VmHWM) and ``added_rss_mb`` (over the RSS before it)."""
    if task.get("child"):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        for name in ("faiss.loader", "bm25s"):
            logging.getLogger(name).setLevel(logging.WARNING)
        limit_threads(task["threads"])
    else:
        reset_peak_rss()
    rss_before = status_kb("VmRSS")
    out, after = KINDS[task["kind"]](task)
    peak = status_kb("VmHWM")
    out["peak_rss_mb"] = mb(peak)
    out["added_rss_mb"] = mb(None if peak is None or rss_before is None else peak - rss_before)
    if after is not None:
        out.update(after())
    return out


def in_fresh_process(task: dict[str, Any]) -> dict[str, Any]:
    """:func:`measure` in a spawned process, so its peak memory is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(measure, {**task, "child": True}).result()
